"""Alembic environment: runs on the connection handed over by :func:`jetqueue_monitor.db.engine.migrate`."""

from __future__ import annotations

from alembic import context

from jetqueue_monitor.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via migrate()
    raise RuntimeError("run migrations through jetqueue_monitor.db.engine.migrate()")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
