"""notifier: due_dates carry the assignment's agency, status and role; digests remember
whether their last failure was the SMTP server being unreachable

The due-set query then reads one table: `due_date IN (...)` on its index, no join with a
million assignments (about half the pages a pass reads when the data is not cached).

The consumer writes the three columns with each due row. Two triggers keep them right
whoever writes: a row inserted without them (a bulk load, a manual fix) takes them from its
assignment, and a change of an assignment's status, role or agency reaches its due rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 15:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A digest that failed because the server was unreachable is retried as soon as a probe
    # of the server succeeds, not only when its backoff ends.
    op.add_column('digests', sa.Column('server_unreachable', sa.Boolean(), nullable=False,
                                       server_default=sa.false()), schema='notifier')
    op.add_column('due_dates', sa.Column('agency_id', sa.Uuid(), nullable=True), schema='notifier')
    op.add_column('due_dates', sa.Column('status', sa.String(), nullable=True), schema='notifier')
    op.add_column('due_dates', sa.Column('role', sa.String(), nullable=True), schema='notifier')
    op.execute("""
        UPDATE notifier.due_dates d
        SET agency_id = a.agency_id, status = a.status, role = a.role
        FROM notifier.assignments a WHERE a.id = d.assignment_id
    """)
    op.execute("""
        CREATE FUNCTION notifier.due_dates_fill_state() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.agency_id IS NULL OR NEW.status IS NULL OR NEW.role IS NULL THEN
                SELECT a.agency_id, a.status, a.role INTO NEW.agency_id, NEW.status, NEW.role
                FROM notifier.assignments a WHERE a.id = NEW.assignment_id;
            END IF;
            RETURN NEW;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER due_dates_fill_state BEFORE INSERT ON notifier.due_dates
        FOR EACH ROW EXECUTE FUNCTION notifier.due_dates_fill_state()
    """)
    op.execute("""
        CREATE FUNCTION notifier.assignments_state_to_due_dates() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE notifier.due_dates
            SET agency_id = NEW.agency_id, status = NEW.status, role = NEW.role
            WHERE assignment_id = NEW.id;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER assignments_state_to_due_dates AFTER UPDATE ON notifier.assignments
        FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                           OR OLD.role IS DISTINCT FROM NEW.role
                           OR OLD.agency_id IS DISTINCT FROM NEW.agency_id)
        EXECUTE FUNCTION notifier.assignments_state_to_due_dates()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER assignments_state_to_due_dates ON notifier.assignments")
    op.execute("DROP FUNCTION notifier.assignments_state_to_due_dates()")
    op.execute("DROP TRIGGER due_dates_fill_state ON notifier.due_dates")
    op.execute("DROP FUNCTION notifier.due_dates_fill_state()")
    op.drop_column('due_dates', 'role', schema='notifier')
    op.drop_column('due_dates', 'status', schema='notifier')
    op.drop_column('due_dates', 'agency_id', schema='notifier')
    op.drop_column('digests', 'server_unreachable', schema='notifier')
