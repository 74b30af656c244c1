"""tracker: no foreign-key triggers on the rows a batch of recommendations writes

A foreign key is checked by a trigger per inserted row (a lookup of the parent row with a
lock): measured here, 40% of the time of a batch's assignments insert. The ingest writes the
parents first in the same transaction (recommendations, then agencies it resolved or
created, then assignments and versions), and nothing deletes a recommendation or an agency,
so the references hold by construction; the integration tests check that no assignment or
version is without its parent. Reports keep their key on assignments (one row per request).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 15:30:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DROPPED = [
    ('assignments', 'assignments_recommendation_id_fkey', 'recommendation_id',
     'recommendations'),
    ('assignments', 'assignments_agency_id_fkey', 'agency_id', 'agencies'),
    ('recommendation_versions', 'recommendation_versions_recommendation_id_fkey',
     'recommendation_id', 'recommendations'),
]


def upgrade() -> None:
    for table, name, _column, _parent in DROPPED:
        op.drop_constraint(name, table, schema='tracker', type_='foreignkey')


def downgrade() -> None:
    for table, name, column, parent in DROPPED:
        op.create_foreign_key(name, table, parent, [column], ['id'], source_schema='tracker',
                              referent_schema='tracker')
