"""Tables of the monitor (PostgreSQL in deployments, SQLite locally)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite has no 64-bit autoincrement for BIGINT, only for INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class WorkerStatus(StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    DEGRADED = "DEGRADED"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONType, Any: JSONType}


class WorkerHeartbeat(Base):
    """The seed's WorkerHeartbeat: one row per worker, upserted on every beat."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    worker_id: Mapped[str] = mapped_column(String(200), unique=True)
    queue_name: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(16), default=WorkerStatus.ONLINE.value)
    reported_status: Mapped[str] = mapped_column(String(16), default="ONLINE")  # what the worker said
    hostname: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(50))
    pid: Mapped[int | None] = mapped_column(Integer)
    concurrency: Mapped[int | None] = mapped_column(Integer)
    active_jobs: Mapped[int] = mapped_column(Integer, default=0)
    processed_jobs: Mapped[int] = mapped_column(BigInteger, default=0)
    failed_jobs: Mapped[int] = mapped_column(BigInteger, default=0)
    last_heartbeat: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditLog(Base):
    """Every control action, from the monitor API or the operator, successful or not."""

    __tablename__ = "audit_logs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Idempotent ingest: the events-stream sequence of the record (NULL for rows written directly).
    source_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str | None] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(40), index=True)
    entity_type: Mapped[str] = mapped_column(String(20))
    entity_id: Mapped[str] = mapped_column(String(200), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(40), default="api")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # the queue the action touched (its entity, or the queue of its job or schedule), for the audit view's filter
    queue: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (Index("ix_audit_logs_queue_id", "queue", "id"),)


class Job(Base):
    """The latest known state of a job (one row per job id)."""

    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    queue: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[Any] = mapped_column(JSONType, nullable=True)
    result: Mapped[Any] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(100))
    attempts_made: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[float | None] = mapped_column(Float)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    stalls: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # first seen
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_event_ms: Mapped[int] = mapped_column(BigInteger, default=0)  # orders out-of-order records
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    artifacts: Mapped[Any] = mapped_column(JSONType, nullable=True)  # [{name, content_type, size}]
    run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # scheduled: when it is due
    level: Mapped[int | None] = mapped_column(Integer)  # priority level of its subject (0: most urgent)

    __table_args__ = (
        Index("ix_jobs_created", "created_at", "job_id"),
        Index("ix_jobs_queue_created", "queue", "created_at"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_queue_status_finished", "queue", "status", "finished_at"),
        Index("ix_jobs_name_created", "name", "created_at"),
        Index("ix_jobs_user_created", "user_id", "created_at"),
        Index("ix_jobs_finished", "finished_at"),
        # search: errored jobs newest first; job-id prefixes as a range (PostgreSQL, migration 0004)
        Index(
            "ix_jobs_errored_created",
            "created_at",
            "job_id",
            postgresql_where=text("error IS NOT NULL"),
            sqlite_where=text("error IS NOT NULL"),
        ),
        # delayed jobs by due time: the tracker finds the ones whose time came (migration 0006)
        Index(
            "ix_jobs_scheduled_run_at",
            "run_at",
            postgresql_where=text("status = 'scheduled'"),
            sqlite_where=text("status = 'scheduled'"),
        ),
    )


class JobAttempt(Base):
    """One run of a job (attempt number, outcome, duration, error).

    An attempt whose worker died is delivered again under the same attempt
    number; ``delivery`` (the broker's delivery count) keeps each run apart:
    the dead one stays as a ``stalled`` row.
    """

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(128), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    delivery: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    queue: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))  # active, completed, failed, cancelled, stalled
    worker_id: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        UniqueConstraint("job_id", "attempt", "delivery", name="uq_job_attempt_delivery"),
        Index("ix_job_attempts_worker_finished", "worker_id", "finished_at"),  # DEGRADED rule
        # the few unfinished attempts, for marking an offline worker's as stalled
        Index(
            "ix_job_attempts_unfinished",
            "worker_id",
            postgresql_where=text("finished_at IS NULL"),
            sqlite_where=text("finished_at IS NULL"),
        ),
    )


class QueueSample(Base):
    """Queue counts every few seconds, for throughput and trend charts."""

    __tablename__ = "queue_samples"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(100))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    waiting: Mapped[int] = mapped_column(Integer)
    active: Mapped[int] = mapped_column(Integer)
    delayed: Mapped[int] = mapped_column(Integer)
    dlq: Mapped[int] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(Boolean)
    redelivered: Mapped[int] = mapped_column(Integer, default=0)
    completed_total: Mapped[int] = mapped_column(BigInteger, default=0)
    failed_total: Mapped[int] = mapped_column(BigInteger, default=0)
    oldest_waiting_s: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_queue_samples_queue_ts", "queue", "ts"), Index("ix_queue_samples_ts", "ts"))


class JobStat(Base):
    """Per-queue, per-minute rollup of finished attempts (throughput, success rate, durations).

    Kept in step with jobs by ingest, in the same transaction, so the overview
    reads a few thousand rows instead of scanning job records.
    """

    __tablename__ = "job_stats"

    queue: Mapped[str] = mapped_column(String(100), primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)  # dead-lettered
    retried: Mapped[int] = mapped_column(Integer, default=0)  # failed attempts with a retry after
    duration_sum_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_count: Mapped[int] = mapped_column(Integer, default=0)
    # counts per duration bucket (upper bounds in ms: DURATION_BUCKETS_MS), for percentiles
    hist: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    last_finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_job_stats_minute", "minute"),)


class JobStatHourly(Base):
    """The minute rollups summed per hour, written by ingest in the same transaction.

    Windows of a day read 24 of these per queue (plus the minutes of the
    leading partial hour) instead of 1,440 minute rows.
    """

    __tablename__ = "job_stats_hourly"

    queue: Mapped[str] = mapped_column(String(100), primary_key=True)
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    retried: Mapped[int] = mapped_column(Integer, default=0)
    duration_sum_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_count: Mapped[int] = mapped_column(Integer, default=0)
    hist: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    last_finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_job_stats_hourly_hour", "hour"),)


class IncidentAck(Base):
    """An operator's acknowledgement or snooze of an open incident (one per incident: rule and queue).

    An acknowledgement lasts while the incident stays open; a snooze until its
    time. Either is dropped once the incident has cleared.
    """

    __tablename__ = "incident_acks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(40))
    queue: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10))  # ack | snooze
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # snooze: hidden until then
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("type", "queue", name="uq_incident_ack"),)


class IngestOffset(Base):
    """Highest stream sequence applied per ingest source: a message is applied once."""

    __tablename__ = "ingest_offsets"

    source: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


DURATION_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000, 10**9)
