"""cells.stack_factors, config_factors, factors: a campaign's factor values (replicas, TP, memory regime, offload size)
are part of a cell's identity

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('cells', sa.Column('stack_factors', sa.Text(), nullable=False, server_default=''))
    op.add_column('cells', sa.Column('config_factors', sa.Text(), nullable=False, server_default=''))
    op.add_column('cells', sa.Column('factors', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                     server_default='{}'))
    op.drop_constraint('uq_cells_run_model_config_trial', 'cells', type_='unique')
    op.create_unique_constraint('uq_cells_run_model_config_factors_trial', 'cells',
                                ['run_id', 'model', 'config', 'stack_factors', 'config_factors', 'trial'])


def downgrade() -> None:
    op.drop_constraint('uq_cells_run_model_config_factors_trial', 'cells', type_='unique')
    op.create_unique_constraint('uq_cells_run_model_config_trial', 'cells', ['run_id', 'model', 'config', 'trial'])
    op.drop_column('cells', 'factors')
    op.drop_column('cells', 'config_factors')
    op.drop_column('cells', 'stack_factors')
