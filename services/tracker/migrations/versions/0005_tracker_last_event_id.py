"""tracker: the id of the event that last changed a recommendation

The consumer publishes the assignment events of a batch itself, right after the batch's
transaction commits, instead of writing them to the outbox (a row written and deleted per
event, and the vacuum of it all, cost more than the publishing). If the process dies in
between, the broker hands the batch over again; a re-delivered event whose id is the one
stored here is the event that made the change, so its assignments' current state is
announced again (same event ids: an assignment event's id comes from its assignment and
version).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 17:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('recommendations', sa.Column('last_event_id', sa.Uuid(), nullable=True),
                  schema='tracker')


def downgrade() -> None:
    op.drop_column('recommendations', 'last_event_id', schema='tracker')
