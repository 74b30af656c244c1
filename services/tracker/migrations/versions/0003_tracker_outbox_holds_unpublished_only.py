"""tracker: the outbox holds only events not yet published

The relay deletes events once the broker has acknowledged them, in the same statement that
claims them, instead of stamping `published_at` on each (a second version of every row and
an index update per event: the relay's largest cost). Kafka keeps the published events and
`history` the audit trail. Event ids are random UUIDs: no unique index to maintain.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 15:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM tracker.outbox WHERE published_at IS NOT NULL")
    op.drop_index('ix_outbox_unpublished', table_name='outbox', schema='tracker',
                  postgresql_where=sa.text('published_at IS NULL'))
    op.drop_column('outbox', 'published_at', schema='tracker')
    op.drop_constraint('outbox_event_id_key', 'outbox', schema='tracker', type_='unique')


def downgrade() -> None:
    op.create_unique_constraint('outbox_event_id_key', 'outbox', ['event_id'], schema='tracker')
    op.add_column('outbox', sa.Column('published_at', sa.DateTime(timezone=True),
                                      nullable=True), schema='tracker')
    op.create_index('ix_outbox_unpublished', 'outbox', ['id'], unique=False, schema='tracker',
                    postgresql_where=sa.text('published_at IS NULL'))
