"""notifier: an assignment's deadline is json, not jsonb

The notifier stores the deadline document with every assignment and reads it back whole
for the digests; no query looks inside it. jsonb parses each document into its binary form
on the way in, json only checks it (the tracker's migration 0007 has the figures).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 23:45:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE notifier.assignments "
               "ALTER COLUMN deadline TYPE json USING deadline::json")


def downgrade() -> None:
    op.execute("ALTER TABLE notifier.assignments "
               "ALTER COLUMN deadline TYPE jsonb USING deadline::jsonb")
