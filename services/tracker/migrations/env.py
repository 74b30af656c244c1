from services.tracker.models import SCHEMA, metadata
from shared.migration_env import run_migrations

run_migrations(metadata, SCHEMA)
