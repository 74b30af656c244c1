"""tracker: recommendation_versions keeps the versions a change replaced, not the current one

The current version is the recommendation row itself (payload, content hash, version); a
copy of it in recommendation_versions at every creation was one row in six of what the
tracker wrote per recommendation, and most recommendations never change. A change now
copies the version it replaces there first. The copies of current versions go.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 22:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        DELETE FROM tracker.recommendation_versions v USING tracker.recommendations r
        WHERE v.recommendation_id = r.id AND v.version = r.version
    """)


def downgrade() -> None:
    op.execute("""
        INSERT INTO tracker.recommendation_versions
               (recommendation_id, version, content_hash, payload, created_at)
        SELECT id, version, content_hash, payload, updated_at FROM tracker.recommendations
        ON CONFLICT (recommendation_id, version) DO NOTHING
    """)
