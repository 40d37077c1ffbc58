"""evidence: cells.config_effect and cells.observability; level_observations

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('cells', sa.Column('config_effect', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                     server_default=sa.text("'{}'::jsonb")))
    op.add_column('cells', sa.Column('observability', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                     server_default=sa.text("'{}'::jsonb")))
    op.alter_column('cells', 'config_effect', server_default=None)
    op.alter_column('cells', 'observability', server_default=None)
    op.create_table('level_observations',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('cell_id', sa.BigInteger(), nullable=False),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('metric', sa.Text(), nullable=False),
    sa.Column('value', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['cell_id'], ['cells.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cell_id', 'concurrency', 'source', 'metric', name='uq_level_observations')
    )


def downgrade() -> None:
    op.drop_table('level_observations')
    op.drop_column('cells', 'observability')
    op.drop_column('cells', 'config_effect')
