"""cells.served: what the servers showed they serve (served.py ServedHistory): per check (deploy, redeploy, reset) and
pod, each key wanted, served, and proven / differs / not provable with why

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('cells', sa.Column('served', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                     server_default='{}'))


def downgrade() -> None:
    op.drop_column('cells', 'served')
