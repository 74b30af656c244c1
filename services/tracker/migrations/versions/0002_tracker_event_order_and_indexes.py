"""tracker: order guard for re-delivered events, index for status and due filters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 12:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('recommendations',
                  sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True),
                  schema='tracker')
    op.create_index('ix_assignments_status_due', 'assignments', ['status', 'due'],
                    unique=False, schema='tracker')


def downgrade() -> None:
    op.drop_index('ix_assignments_status_due', table_name='assignments', schema='tracker')
    op.drop_column('recommendations', 'last_event_at', schema='tracker')
