"""tracker: the JSON documents the database only stores and returns are json, not jsonb

A recommendation's payload, natural key, deadline, due dates and executors, an archived
version's payload, a history entry's data and a report's evidence links are written and
read whole; the one query that looks inside them (an assignment's history) follows a
path, `data -> 'assignments' -> id`, which json has too. jsonb parses each document into
its binary form on the way in; json only checks it: measured with the pipeline's rows, COPY of a new
recommendation's row took 13-18 us of PostgreSQL CPU as jsonb and 8.5-10 us as json.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21 23:45:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOCUMENTS = {
    'recommendations': ('natural_key', 'deadline', 'due_dates', 'executors', 'payload'),
    'recommendation_versions': ('payload',),
    'history': ('data',),
    'progress_reports': ('evidence_links',),
}


def _retype(sql_type: str) -> None:
    for table, columns in DOCUMENTS.items():
        changes = ", ".join(f"ALTER COLUMN {c} TYPE {sql_type} USING {c}::{sql_type}"
                            for c in columns)
        op.execute(f"ALTER TABLE tracker.{table} {changes}")


def upgrade() -> None:
    _retype('json')


def downgrade() -> None:
    _retype('jsonb')
