"""notifier: report due rows for a rolling window of due dates (assignments.reports_from,
reports_until)

The consumer wrote one due row per quarterly progress report owed over an assignment's
whole life: 20 and more for a five-year action, years of past quarters for an old UPR
recommendation (its largest statement, the COPY of due rows). It now writes those a pass
can look at (from the overdue horizon behind to some months ahead) and records the window
in `reports_from` and `reports_until`; each reminder pass first adds the quarters it needs.
NULL means no bound on that side, which is what the rows of assignments stored before this
migration have: they need no change.

The partial indexes hold only the assignments a pass may have to extend.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 17:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for column in ('reports_from', 'reports_until'):
        op.add_column('assignments', sa.Column(column, sa.Date(), nullable=True),
                      schema='notifier')
        op.create_index(f'ix_assignments_{column}', 'assignments', [column], schema='notifier',
                        postgresql_where=sa.text(f'{column} IS NOT NULL'))


def downgrade() -> None:
    # The rows outside an assignment's window stay missing without the passes that add
    # them: after a downgrade, replay the assignments' events to write them all.
    for column in ('reports_until', 'reports_from'):
        op.drop_index(f'ix_assignments_{column}', table_name='assignments', schema='notifier')
        op.drop_column('assignments', column, schema='notifier')
