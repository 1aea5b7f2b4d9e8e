"""read paths at a million jobs: hourly rollups, job search indexes

job_stats_hourly: day-long windows read 24 rows per queue, not 1,440.
ix_jobs_job_id_pattern (PostgreSQL): job-id prefix search as an index range.
ix_jobs_errored_created: newest-first walk of the jobs that have an error, for error search.
ix_job_attempts_worker_finished: a worker's latest attempts, for the DEGRADED rule.
ix_jobs_error_trgm (PostgreSQL with pg_trgm): a rare word in the errors without reading every errored job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    hourly = op.create_table(
        "job_stats_hourly",
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("retried", sa.Integer(), nullable=False),
        sa.Column("duration_sum_ms", sa.BigInteger(), nullable=False),
        sa.Column("duration_count", sa.Integer(), nullable=False),
        sa.Column("hist", JSON, nullable=False),
        sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("queue", "hour"),
    )
    with op.batch_alter_table("job_stats_hourly", schema=None) as batch_op:
        batch_op.create_index("ix_job_stats_hourly_hour", ["hour"], unique=False)
    _backfill(hourly)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_errored_created",
            ["created_at", "job_id"],
            unique=False,
            postgresql_where=sa.text("error IS NOT NULL"),
            sqlite_where=sa.text("error IS NOT NULL"),
        )
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_job_attempts_worker_finished", ["worker_id", "finished_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        _trigram_index()
        op.create_index(
            "ix_jobs_job_id_pattern", "jobs", ["job_id"], unique=False, postgresql_ops={"job_id": "varchar_pattern_ops"}
        )


def _backfill(hourly: sa.Table) -> None:
    """Sum the existing minute rows per hour (streamed; the histograms are merged here, portably)."""
    minute = sa.table(
        "job_stats",
        *(sa.column(c) for c in ("queue", "completed", "failed", "retried", "duration_sum_ms", "duration_count")),
        sa.column("minute", sa.DateTime(timezone=True)),
        sa.column("hist", JSON),
        sa.column("last_finished_at", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(minute).order_by(minute.c.minute, minute.c.queue))
    acc: dict[tuple[str, datetime], dict[str, Any]] = {}
    for r in rows:
        m = r.minute if r.minute.tzinfo else r.minute.replace(tzinfo=UTC)
        key = (r.queue, m.replace(minute=0, second=0, microsecond=0))
        d = acc.setdefault(key, {"completed": 0, "failed": 0, "retried": 0, "sum": 0, "count": 0,
                                 "hist": Counter(), "last": None})  # fmt: skip
        d["completed"] += r.completed
        d["failed"] += r.failed
        d["retried"] += r.retried
        d["sum"] += r.duration_sum_ms
        d["count"] += r.duration_count
        d["hist"].update(r.hist or {})
        if r.last_finished_at is not None and (d["last"] is None or r.last_finished_at > d["last"]):
            d["last"] = r.last_finished_at
    batch = [
        {"queue": q, "hour": h, "completed": d["completed"], "failed": d["failed"], "retried": d["retried"],
         "duration_sum_ms": d["sum"], "duration_count": d["count"], "hist": dict(d["hist"]),
         "last_finished_at": d["last"]}
        for (q, h), d in acc.items()
    ]  # fmt: skip
    for i in range(0, len(batch), 1000):
        op.bulk_insert(hourly, batch[i : i + 1000])


def _trigram_index() -> None:
    """pg_trgm is a trusted extension (PostgreSQL >= 13): a database owner may create it. Where it is
    not installed or not allowed, search still works, by walking the errored jobs newest first."""
    bind = op.get_bind()
    available = bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first()
    if available is None:
        return
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            bind.execute(
                sa.text(
                    "CREATE INDEX ix_jobs_error_trgm ON jobs USING gin (error gin_trgm_ops) WHERE error IS NOT NULL"
                )
            )
    except sa.exc.DBAPIError:
        pass  # not permitted here: the partial index serves error search alone


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_jobs_error_trgm")
        op.drop_index("ix_jobs_job_id_pattern", table_name="jobs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_errored_created")
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_job_attempts_worker_finished")
    with op.batch_alter_table("job_stats_hourly", schema=None) as batch_op:
        batch_op.drop_index("ix_job_stats_hourly_hour")
    op.drop_table("job_stats_hourly")
