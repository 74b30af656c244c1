from prometheus_client import Counter

ITEMS = Counter("hrtrack_intake_items", "Recommendations received", ["source", "outcome"])
BROKER_UNAVAILABLE = Counter(
    "hrtrack_intake_broker_unavailable", "Requests answered 503 because the broker did not ack"
)
