from services.notifier.models import SCHEMA, metadata
from shared.migration_env import run_migrations

run_migrations(metadata, SCHEMA)
