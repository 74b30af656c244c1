"""notifier: the due_dates triggers of 0003 run only when they have something to do

The consumer writes agency_id, status and role with every due row, yet the BEFORE INSERT
row trigger of 0003 called its PL/pgSQL function for each of them (the largest share of
the notifier's database time when the tracker announces many assignments). With a WHEN
clause PostgreSQL evaluates the condition itself and calls the function only for rows
inserted without the three columns (a bulk load, a manual fix), which it still fills in.

Likewise the AFTER UPDATE trigger on assignments copied a new status or role onto the due
rows that the consumer deletes and writes anew right after, in the same transaction. The
consumer says so with `SET LOCAL hrtrack.replacing_due_dates = on`; any other writer's
change still reaches the due rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 15:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATE_CHANGED = """OLD.status IS DISTINCT FROM NEW.status
                   OR OLD.role IS DISTINCT FROM NEW.role
                   OR OLD.agency_id IS DISTINCT FROM NEW.agency_id"""


def upgrade() -> None:
    op.execute("DROP TRIGGER due_dates_fill_state ON notifier.due_dates")
    op.execute("""
        CREATE TRIGGER due_dates_fill_state BEFORE INSERT ON notifier.due_dates
        FOR EACH ROW WHEN (NEW.agency_id IS NULL OR NEW.status IS NULL OR NEW.role IS NULL)
        EXECUTE FUNCTION notifier.due_dates_fill_state()
    """)
    op.execute("DROP TRIGGER assignments_state_to_due_dates ON notifier.assignments")
    # current_setting(..., true): NULL, not an error, where the setting was never made.
    op.execute(f"""
        CREATE TRIGGER assignments_state_to_due_dates AFTER UPDATE ON notifier.assignments
        FOR EACH ROW WHEN (({STATE_CHANGED}) AND current_setting(
            'hrtrack.replacing_due_dates', true) IS DISTINCT FROM 'on')
        EXECUTE FUNCTION notifier.assignments_state_to_due_dates()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER assignments_state_to_due_dates ON notifier.assignments")
    op.execute(f"""
        CREATE TRIGGER assignments_state_to_due_dates AFTER UPDATE ON notifier.assignments
        FOR EACH ROW WHEN ({STATE_CHANGED})
        EXECUTE FUNCTION notifier.assignments_state_to_due_dates()
    """)
    op.execute("DROP TRIGGER due_dates_fill_state ON notifier.due_dates")
    op.execute("""
        CREATE TRIGGER due_dates_fill_state BEFORE INSERT ON notifier.due_dates
        FOR EACH ROW EXECUTE FUNCTION notifier.due_dates_fill_state()
    """)
