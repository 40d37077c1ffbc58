"""reports table; index for cross-version queries

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reports',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('campaign', sa.Text(), nullable=False),
    sa.Column('dag_run_id', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('markdown', sa.Text(), nullable=False),
    sa.Column('html', sa.Text(), nullable=False),
    sa.Column('peak_table', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign', 'dag_run_id', name='uq_reports_campaign_dag_run')
    )
    op.create_index('ix_runs_campaign_version', 'runs', ['campaign', 'llmd_version'])
    op.create_index('ix_cells_run', 'cells', ['run_id'])


def downgrade() -> None:
    op.drop_index('ix_cells_run', table_name='cells')
    op.drop_index('ix_runs_campaign_version', table_name='runs')
    op.drop_table('reports')
