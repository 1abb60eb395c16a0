"""What the explorer shows: its database name and visible tables (no Datasette import)."""

DATABASE = "trail"
VISIBLE_TABLES = frozenset({"events", "alerts", "checkpoints"})
METERING = "metering"  # `<trail>.metering.db`, attached when it exists
METERING_TABLES = frozenset({"samples"})
