"""notifier: carried-over reminders, per-reminder routing, pending-delivery index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A reminder claimed after its recipient's digest of the day went out waits (NULL) for
    # the recipient's next digest.
    op.alter_column('reminder_ledger', 'digest_id', existing_type=sa.Uuid(), nullable=True,
                    schema='notifier')
    op.add_column('reminder_ledger', sa.Column('recipient_kind', sa.String(), nullable=False,
                                               server_default='agency'), schema='notifier')
    op.add_column('reminder_ledger', sa.Column('language', sa.String(), nullable=False,
                                               server_default='en'), schema='notifier')
    op.add_column('reminder_ledger', sa.Column('flags', postgresql.ARRAY(sa.String()),
                                               nullable=False, server_default='{}'),
                  schema='notifier')
    op.create_index('ix_reminder_ledger_carried', 'reminder_ledger', ['recipient'],
                    unique=False, schema='notifier',
                    postgresql_where=sa.text('digest_id IS NULL'))
    op.create_index('ix_digests_pending', 'digests', ['next_attempt_at'], unique=False,
                    schema='notifier', postgresql_where=sa.text("status = 'pending'"))
    # Digests with nothing in them are no longer kept.
    op.execute("DELETE FROM notifier.digests d WHERE d.status = 'empty' AND NOT EXISTS "
               "(SELECT 1 FROM notifier.reminder_ledger l WHERE l.digest_id = d.id)")


def downgrade() -> None:
    op.drop_index('ix_digests_pending', table_name='digests', schema='notifier')
    op.drop_index('ix_reminder_ledger_carried', table_name='reminder_ledger', schema='notifier')
    op.drop_column('reminder_ledger', 'flags', schema='notifier')
    op.drop_column('reminder_ledger', 'language', schema='notifier')
    op.drop_column('reminder_ledger', 'recipient_kind', schema='notifier')
    op.execute("DELETE FROM notifier.reminder_ledger WHERE digest_id IS NULL")
    op.alter_column('reminder_ledger', 'digest_id', existing_type=sa.Uuid(), nullable=False,
                    schema='notifier')
