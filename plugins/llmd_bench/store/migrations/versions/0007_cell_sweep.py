"""cells.sweep: what an adaptive sweep decided (levels measured, refined, not run past saturation, why it stopped);
cells.gpu_time: GPUs held and seconds per phase (model load, warm-up, measurement, idle, teardown)

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('cells', sa.Column('sweep', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                     server_default='{}'))
    op.add_column('cells', sa.Column('gpu_time', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                     server_default='{}'))


def downgrade() -> None:
    op.drop_column('cells', 'gpu_time')
    op.drop_column('cells', 'sweep')
