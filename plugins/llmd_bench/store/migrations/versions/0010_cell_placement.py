"""cells.placement: where and beside what the cell ran (lanes: auto: its lane slot, node, GPUs, lease acquired and
released, seconds waited; otherwise kind alone or shared with the campaign's lanes), so the report says which cells
ran concurrently and the noise history compares only runs of the same placement kind

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('cells', sa.Column('placement', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                     server_default='{}'))


def downgrade() -> None:
    op.drop_column('cells', 'placement')
