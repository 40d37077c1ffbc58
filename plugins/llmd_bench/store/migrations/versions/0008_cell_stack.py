"""cells.stack: what ran in the cell (Runtime.stack_metadata): images with digests, vLLM version and args, the EPP
config and its sha256, replicas, GPU product/count/driver/CUDA per node, and what could not be told, with why

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('cells', sa.Column('stack', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                     server_default='{}'))


def downgrade() -> None:
    op.drop_column('cells', 'stack')
