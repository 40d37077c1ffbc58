"""level_results.suspect_reason: why a level measured the load generator or the machine, not the server

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('level_results', sa.Column('suspect_reason', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('level_results', 'suspect_reason')
