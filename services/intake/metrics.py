"""Intake's own metrics (the HTTP and Kafka ones come from shared/)."""

from prometheus_client import Counter

SOURCES = ("upr", "treaty_body", "plan", "unknown")
# accepted: acknowledged by the broker; rejected: invalid item or row;
# not_acknowledged: valid, but the broker did not acknowledge it (answered 503).
OUTCOMES = ("accepted", "rejected", "not_acknowledged")

ITEMS = Counter("hrtrack_intake_items", "Recommendations received", ["source", "outcome"])
BROKER_UNAVAILABLE = Counter(
    "hrtrack_intake_broker_unavailable", "Requests answered 503 because the broker did not ack"
)

# Every label pair exists from the start at 0, so increase() sees the first event.
for _source in SOURCES:
    for _outcome in OUTCOMES:
        ITEMS.labels(source=_source, outcome=_outcome)
