"""The monitor's store: SQLAlchemy models, engine and migrations."""
