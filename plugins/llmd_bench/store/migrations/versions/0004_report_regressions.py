"""reports.regressions: the regressions beyond noise a report found (read by the Airflow notifications)

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Reports stored before this revision found none that anyone recorded: an empty list.
    op.add_column('reports', sa.Column('regressions', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                       server_default=sa.text("'[]'::jsonb")))
    op.alter_column('reports', 'regressions', server_default=None)


def downgrade() -> None:
    op.drop_column('reports', 'regressions')
