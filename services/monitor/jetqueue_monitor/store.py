"""Writes and reads of the monitor's store; every write is idempotent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from jetqueue.catalog import Catalog
from jetqueue.events import Heartbeat
from jetqueue.job import TERMINAL_STATUSES, EventType, JobStatus
from jetqueue_monitor.clock import ms_to_dt, utcnow
from jetqueue_monitor.db.models import (
    AuditLog,
    IncidentAck,
    IngestOffset,
    Job,
    JobAttempt,
    JobStat,
    JobStatHourly,
    QueueSample,
    WorkerHeartbeat,
    WorkerStatus,
)
from jetqueue_monitor.rollups import COUNTED, Stats

TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
# known from their message alone: no worker has taken them yet
UNSETTLED = (JobStatus.WAITING.value, JobStatus.SCHEDULED.value)
STATS_HOURLY_KEEP_DAYS = 90
# lifecycle record type -> the job's status after it
STATUS_OF: dict[str, str] = {
    EventType.STARTED: JobStatus.ACTIVE,
    EventType.PROGRESS: JobStatus.ACTIVE,
    EventType.COMPLETED: JobStatus.COMPLETED,
    EventType.RETRYING: JobStatus.SCHEDULED,
    EventType.FAILED: JobStatus.FAILED,
    EventType.CANCELLED: JobStatus.CANCELLED,
    EventType.STALLED: JobStatus.ACTIVE,
}


class Store:
    """The monitor's data access (one instance per app; sessions per call)."""

    def __init__(self, engine: AsyncEngine, catalog: Catalog) -> None:
        self.engine = engine
        self.catalog = catalog
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.dialect = engine.dialect.name
        # Completed / failed jobs per queue, ever (as far as the rollups reach back): seeded from the
        # hourly rollups by load_finished_totals, then counted up by ingest after each commit. The
        # sampler stores them in queue_samples, where the UI derives throughput from their increase.
        self.finished_totals: dict[str, dict[str, int]] = {}
        # One writer of job rows at a time: the tracker's enqueue rows and ingest's records of the same
        # job would otherwise race to insert it (and one transaction would fail on the primary key).
        self.job_writes = asyncio.Lock()

    async def load_finished_totals(self) -> None:
        """Seed ``finished_totals`` from the hourly rollups (once, at start)."""
        async with self.sessions() as s:
            rows = await s.execute(
                select(JobStatHourly.queue, func.sum(JobStatHourly.completed), func.sum(JobStatHourly.failed)).group_by(
                    JobStatHourly.queue
                )
            )
            for queue, completed, failed in rows:
                t = self.finished_totals.setdefault(queue, {"completed": 0, "failed": 0})
                t["completed"] += int(completed or 0)
                t["failed"] += int(failed or 0)

    def _count_finished(self, totals: dict[str, dict[str, int]]) -> None:
        for queue, d in totals.items():
            t = self.finished_totals.setdefault(queue, {"completed": 0, "failed": 0})
            t["completed"] += d["completed"]
            t["failed"] += d["failed"]

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    # ------------------------------------------------------------ ingest
    async def apply_events(
        self, messages: Sequence[tuple[int, list[dict[str, Any]]]], *, source: str = "events"
    ) -> int:
        """Apply events-stream messages ``(stream seq, records)`` exactly once.

        The highest applied sequence is stored in the same transaction as the
        rows, so a message delivered again (ingest crashed before its ack) is
        skipped; a failed transaction applies nothing and the message comes
        back. Returns the number of records applied.
        """
        async with self.job_writes, self.sessions.begin() as s:
            off = await s.get(IngestOffset, source, with_for_update=True)
            if off is None:
                off = IngestOffset(source=source, seq=0, updated_at=utcnow())
                s.add(off)
            fresh = [(seq, recs) for seq, recs in messages if seq > off.seq]
            if not fresh:
                return 0
            records = [r for _seq, recs in fresh for r in recs]
            n = await self._fold_records(s, records)
            totals = await self._rollup(s, records)
            off.seq = max(seq for seq, _ in fresh)
            off.updated_at = utcnow()
        self._count_finished(totals)
        return n

    async def apply_records(self, records: Sequence[dict[str, Any]]) -> int:
        """Fold records into jobs, attempts and rollups without an offset (tests, backfills)."""
        async with self.job_writes, self.sessions.begin() as s:
            n = await self._fold_records(s, records)
            totals = await self._rollup(s, records)
        self._count_finished(totals)
        return n

    async def _fold_records(self, s: AsyncSession, records: Sequence[dict[str, Any]]) -> int:
        """Fold lifecycle records into jobs and job_attempts.

        A record carries its time (``ts``); one older than what a job row
        already reflects never moves the job backwards, so late records change
        nothing.
        """
        by_job: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            if isinstance(r, dict) and r.get("job_id") and r.get("type") in STATUS_OF:
                by_job.setdefault(str(r["job_id"]), []).append(r)
        if not by_job:
            return 0
        existing = {j.job_id: j for j in (await s.execute(select(Job).where(Job.job_id.in_(list(by_job))))).scalars()}
        attempt_rows: dict[tuple[str, int, int], dict[str, Any]] = {}
        for job_id, recs in by_job.items():
            recs.sort(key=lambda r: (r.get("ts", 0), _ORDER.get(r["type"], 5)))
            job = existing.get(job_id)
            if job is None:
                first = recs[0]
                job = Job(
                    job_id=job_id,
                    queue=str(first.get("queue", "")),
                    name=str(first.get("name", "")),
                    status=STATUS_OF[first["type"]],
                    attempts_made=0,
                    stalls=0,
                    last_event_ms=0,
                    created_at=ms_to_dt(first.get("enqueued_at") or first.get("ts")) or utcnow(),
                )
                s.add(job)
                existing[job_id] = job
            for r in recs:
                self._fold(job, r, attempt_rows)
        await s.flush()
        if attempt_rows:
            await self._upsert_attempts(s, list(attempt_rows.values()))
        return sum(len(v) for v in by_job.values())

    async def _rollup(self, s: AsyncSession, records: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
        """Add finished attempts to the minute and hour rollups; returns completed/failed per queue."""
        deltas: dict[tuple[str, datetime], Stats] = {}
        for r in records:
            kind = r.get("type") if isinstance(r, dict) else None
            if kind not in COUNTED or not r.get("queue") or not r.get("ts"):
                continue
            ts = int(r["ts"])
            key = (str(r["queue"]), datetime.fromtimestamp((ts - ts % 60_000) / 1000, UTC))
            deltas.setdefault(key, Stats()).count(kind, r.get("duration_ms"), ms_to_dt(ts))
        if not deltas:
            return {}
        hours: dict[tuple[str, datetime], Stats] = {}
        for (queue, minute), d in deltas.items():
            hours.setdefault((queue, minute.replace(minute=0)), Stats()).add(d)
        for model, rows in ((JobStat, deltas), (JobStatHourly, hours)):
            for key, d in rows.items():
                await self._add_stat(s, model, key, d)
        totals: dict[str, dict[str, int]] = {}
        for (queue, _hour), h in hours.items():
            t = totals.setdefault(queue, {"completed": 0, "failed": 0})
            t["completed"] += h.completed
            t["failed"] += h.failed
        return totals

    @staticmethod
    async def _add_stat(s: AsyncSession, model: Any, key: tuple[str, datetime], d: Stats) -> None:
        """Add the totals ``d`` to the rollup row ``key`` of ``model`` (created when missing)."""
        row = await s.get(model, key)
        if row is None:
            row = model(queue=key[0], completed=0, failed=0, retried=0, duration_sum_ms=0, duration_count=0, hist={})
            setattr(row, "minute" if model is JobStat else "hour", key[1])
            s.add(row)
        cur = Stats.of_row(row)
        cur.add(d)
        cur.write_to(row)

    def _fold(self, job: Job, r: dict[str, Any], attempts: dict[tuple[str, int, int], dict[str, Any]]) -> None:
        ts = int(r.get("ts") or 0)
        kind = r["type"]
        attempt = int(r.get("attempt") or 1)
        delivery = max(int(r.get("delivery") or 1), 1)
        row = _attempt_row(attempts, job, attempt, delivery)
        if kind in ("started", "stalled"):
            row.setdefault("status", "active")
            row["worker_id"] = r.get("worker")
            row.setdefault("started_at", ms_to_dt(ts))
            if kind == "stalled" and delivery > 1:
                # Sent by the worker that got the job again: the delivery before died (or lost its
                # lease) mid-run. It keeps a row of its own, so this run does not overwrite it.
                dead = _attempt_row(attempts, job, attempt, delivery - 1)
                if dead.get("status", "active") == "active":
                    dead.update(status="stalled", finished_at=ms_to_dt(ts), error=r.get("error"), error_type="Stalled")
        elif kind != "progress":
            if r.get("started_ts"):  # the run started in the same batch: this record stands for "started" too
                row.setdefault("started_at", ms_to_dt(r["started_ts"]))
            row["status"] = {"retrying": "failed"}.get(kind, kind)
            row["finished_at"] = ms_to_dt(ts)
            row["duration_ms"] = r.get("duration_ms")
            row["error"] = r.get("error")
            row["error_type"] = r.get("error_type")
            row["worker_id"] = r.get("worker")
        # What the job is (not how it is doing) is filled in by whichever record brings it, in any
        # order: the started record of a worker that died may never arrive, and the stalled record
        # of the next one carries the same.
        if "data" in r and job.data is None:
            job.data = r["data"]
        if r.get("user_id") and not job.user_id:
            job.user_id = str(r["user_id"])
        if r.get("enqueued_at") and job.enqueued_at is None:
            job.enqueued_at = ms_to_dt(r["enqueued_at"])
        if ts < job.last_event_ms:
            return  # older than what the row reflects (a re-delivery, or late)
        if ts == job.last_event_ms and job.status in TERMINAL and kind not in TERMINAL:
            return
        if kind == "stalled" and ts > job.last_event_ms:
            job.stalls = (job.stalls or 0) + 1
        job.last_event_ms = ts
        job.status = STATUS_OF[kind]
        job.attempts_made = max(job.attempts_made or 0, attempt) if kind != "progress" else job.attempts_made
        if r.get("attempts"):
            job.max_attempts = int(r["attempts"])
        if r.get("worker"):
            job.worker_id = str(r["worker"])
        if r.get("artifacts"):
            job.artifacts = r["artifacts"]
        if kind == "started":
            job.run_at = None
            job.started_at = ms_to_dt(ts)
            job.progress = job.progress if attempt == job.attempts_made and job.progress else None
            job.finished_at = None
            job.expires_at = None
        elif kind == "progress":
            job.progress = r.get("progress")
        elif kind in TERMINAL or kind == "retrying":
            if r.get("started_ts"):
                job.started_at = ms_to_dt(r["started_ts"])
            job.error = r.get("error") if kind != "completed" else None
            job.error_type = r.get("error_type") if kind != "completed" else None
            job.duration_ms = r.get("duration_ms")
            if kind == "completed":
                job.result = r.get("result")
                job.progress = 100.0
            if kind in TERMINAL:
                job.finished_at = ms_to_dt(ts)
                spec = self.catalog.get(job.queue) if job.queue in self.catalog else None
                keep = (spec.retention_s if kind == "completed" else spec.failed_retention_s) if spec else 7 * 86400
                job.expires_at = ms_to_dt(ts + keep * 1000)

    async def _upsert_attempts(self, s: AsyncSession, rows: list[dict[str, Any]]) -> None:
        cols = ["status", "worker_id", "started_at", "finished_at", "duration_ms", "error", "error_type"]
        for row in rows:
            values = {"status": "active", **row}
            stmt = self._insert(JobAttempt).values(**values)
            # Finished outcomes win over "active" and "stalled" (a worker that lost its lease may
            # still have finished); "stalled" wins over "active" only; started_at keeps its first value.
            set_: dict[str, Any] = {}
            for c in cols:
                if c not in row:
                    continue
                if c == "started_at":
                    set_[c] = func.coalesce(JobAttempt.started_at, stmt.excluded.started_at)
                elif c == "status" and row.get("status") == "active":
                    continue
                elif row.get("status") == "stalled" and c in ("status", "finished_at", "error", "error_type"):
                    set_[c] = case((JobAttempt.status == "active", stmt.excluded[c]), else_=getattr(JobAttempt, c))
                else:
                    set_[c] = stmt.excluded[c]
            key = ["job_id", "attempt", "delivery"]
            stmt = (
                stmt.on_conflict_do_update(index_elements=key, set_=set_)
                if set_
                else stmt.on_conflict_do_nothing(index_elements=key)
            )
            await s.execute(stmt)

    # ------------------------------------------------------------ jobs before any worker took them
    async def apply_enqueued(self, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert jobs seen as messages (waiting, or delayed with ``run_at``); see :mod:`jetqueue_monitor.tracker`.

        A row's ``last_event_ms`` is the job's ``enqueued_at``, so a job a worker
        has taken (its records are newer) stays as it is; a newer message under a
        known id (the id used again after its job ended) starts the job afresh,
        and the same message moved from its delay to its level (run now) makes
        a delayed job waiting.
        """
        if not rows:
            return
        # Core, not ORM: an executemany of one multi-row statement per batch, no objects per job
        stmt = self._insert(Job.__table__)
        fresh = {c: stmt.excluded[c] for c in _ENQUEUED_COLUMNS}
        fresh.update({c: None for c in _RUN_COLUMNS})
        fresh.update(attempts_made=0, stalls=0)
        newer = stmt.excluded.last_event_ms > Job.last_event_ms
        # literal values: an executemany takes no expanding IN parameter
        unsettled = text("jobs.status IN ('waiting', 'scheduled')")
        moved = and_(stmt.excluded.last_event_ms == Job.last_event_ms, unsettled)
        stmt = stmt.on_conflict_do_update(index_elements=["job_id"], set_=fresh, where=newer | moved)
        # a new row leaves the run columns NULL (no JSON to encode per job for result and artifacts)
        async with self.job_writes, self.sessions.begin() as s:
            await s.execute(stmt, [r | {"attempts_made": 0, "stalls": 0} for r in rows])

    async def set_run_at(self, due: Sequence[tuple[str, datetime]]) -> None:
        """When the retries that just went back to their delay are due (their records carry no time)."""
        if due:
            jobs = Job.__table__
            stmt = (
                update(jobs)  # type: ignore[arg-type]
                .where(jobs.c.job_id == bindparam("id"))
                .values(run_at=bindparam("due"))
            )
            async with self.job_writes, self.sessions.begin() as s:
                await s.execute(stmt, [{"id": i, "due": at} for i, at in due])

    async def job_queue(self, job_id: str) -> str | None:
        """The queue of a job the store knows."""
        async with self.sessions() as s:
            return (await s.execute(select(Job.queue).where(Job.job_id == job_id))).scalar_one_or_none()

    async def unsettled(self, queue: str) -> dict[str, tuple[str, int]]:
        """``{job_id: (status, last_event_ms)}`` of a queue's waiting and delayed jobs."""
        async with self.sessions() as s:
            rows = await s.execute(
                select(Job.job_id, Job.status, Job.last_event_ms).where(Job.queue == queue, Job.status.in_(UNSETTLED))
            )
            return {j: (st, int(ms)) for j, st, ms in rows}

    async def unsettled_counts(self) -> dict[tuple[str, str], int]:
        """``{(queue, status): n}`` of the waiting and delayed jobs."""
        async with self.sessions() as s:
            rows = await s.execute(
                select(Job.queue, Job.status, func.count())
                .where(Job.status.in_(UNSETTLED))
                .group_by(Job.queue, Job.status)
            )
            return {(q, st): int(n) for q, st, n in rows}

    async def due(self, before: datetime, limit: int) -> list[tuple[str, str, int]]:
        """``(job_id, queue, last_event_ms)`` of delayed jobs due before ``before``: their time came."""
        async with self.sessions() as s:
            rows = await s.execute(
                select(Job.job_id, Job.queue, Job.last_event_ms)
                .where(Job.status == JobStatus.SCHEDULED, Job.run_at <= before)
                .order_by(Job.run_at)
                .limit(limit)
            )
            return [(j, q, int(ms)) for j, q, ms in rows]

    async def mark_waiting(self, job_id: str, *, seen_ms: int | None = None) -> bool:
        """A delayed job is now waiting (its time came, or it was told to run now).

        With ``seen_ms`` only if the row still is what the caller saw (nothing newer arrived meanwhile).
        """
        cond = [Job.job_id == job_id, Job.status == JobStatus.SCHEDULED]
        if seen_ms is not None:
            cond.append(Job.last_event_ms == seen_ms)
        async with self.sessions.begin() as s:
            res = await s.execute(update(Job).where(*cond).values(status=JobStatus.WAITING, run_at=None))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def mark_requeued(self, job_id: str, ts_ms: int) -> None:
        """A dead-lettered job is waiting again (its message was requeued)."""
        async with self.sessions.begin() as s:
            await s.execute(
                update(Job)
                .where(Job.job_id == job_id, Job.last_event_ms <= ts_ms)
                .values(status=JobStatus.WAITING, finished_at=None, expires_at=None, run_at=None, last_event_ms=ts_ms)
            )

    async def mark_cancelled(self, job_id: str, *, error: str | None, ts_ms: int, seen_ms: int | None = None) -> bool:
        """A job removed before it ran, as cancelled (kept for the queue's failed retention)."""
        cond = [Job.job_id == job_id, Job.status.in_(UNSETTLED)]
        if seen_ms is not None:
            cond.append(Job.last_event_ms == seen_ms)
        async with self.sessions.begin() as s:
            queue = (await s.execute(select(Job.queue).where(*cond))).scalar_one_or_none()
            if queue is None:
                return False
            spec = self.catalog.get(queue) if queue in self.catalog else None
            keep = spec.failed_retention_s if spec else 7 * 86400
            await s.execute(
                update(Job)
                .where(*cond)
                .values(
                    status=JobStatus.CANCELLED,
                    error=error,
                    run_at=None,
                    finished_at=ms_to_dt(ts_ms),
                    expires_at=ms_to_dt(ts_ms + keep * 1000),
                    last_event_ms=max(ts_ms, seen_ms or 0),
                )
            )
        return True

    async def forget(self, job_ids: Sequence[str], *, unsettled_since: dict[str, int] | None = None) -> int:
        """Delete job records and their attempts (a job deleted or drained: it will never run).

        With ``unsettled_since`` (``{job_id: last_event_ms}``) only jobs still waiting or delayed as
        the caller saw them.
        """
        removed = 0
        async with self.sessions.begin() as s:
            for i in range(0, len(job_ids), 500):
                ids = list(job_ids[i : i + 500])
                if unsettled_since is not None:
                    rows = await s.execute(
                        select(Job.job_id, Job.last_event_ms).where(Job.job_id.in_(ids), Job.status.in_(UNSETTLED))
                    )
                    ids = [j for j, ms in rows if unsettled_since.get(j) == ms]
                if ids:
                    await s.execute(delete(JobAttempt).where(JobAttempt.job_id.in_(ids)))
                    removed += (await s.execute(delete(Job).where(Job.job_id.in_(ids)))).rowcount  # type: ignore[attr-defined]
        return removed

    async def save_incident_ack(
        self, kind: str, queue: str, how: str, *, actor: str, reason: str | None, until: datetime | None = None
    ) -> None:
        """Acknowledge (``how`` ack) or snooze an incident of rule ``kind`` on ``queue``; replaces an earlier one."""
        values = {"type": kind, "queue": queue, "kind": how, "until": until, "actor": actor[:200], "reason": reason}
        stmt = self._insert(IncidentAck).values(**values, created_at=utcnow())
        stmt = stmt.on_conflict_do_update(
            index_elements=["type", "queue"], set_={**values, "created_at": stmt.excluded.created_at}
        )
        async with self.sessions.begin() as s:
            await s.execute(stmt)

    async def upsert_heartbeat(self, hb: Heartbeat) -> None:
        now = utcnow()
        values = {
            "worker_id": hb.worker_id,
            "queue_name": hb.queue,
            "hostname": hb.hostname,
            "version": hb.version,
            "pid": hb.pid,
            "concurrency": hb.concurrency,
            "active_jobs": hb.active_jobs,
            "processed_jobs": hb.processed_jobs,
            "failed_jobs": hb.failed_jobs,
            "last_heartbeat": ms_to_dt(hb.ts),
            "started_at": ms_to_dt(hb.started_at),
            "reported_status": hb.status,
            "status": WorkerStatus.OFFLINE.value if hb.status == "OFFLINE" else WorkerStatus.ONLINE.value,
            "created_at": now,
            "updated_at": now,
        }
        stmt = self._insert(WorkerHeartbeat).values(**values)
        upd: dict[str, Any] = {k: stmt.excluded[k] for k in values if k not in ("worker_id", "created_at")}
        # A beat proves the worker is alive, not that it is healthy: DEGRADED
        # stays until housekeeping re-evaluates the worker's recent failures.
        upd["status"] = case(
            (stmt.excluded.reported_status == "OFFLINE", WorkerStatus.OFFLINE.value),
            (WorkerHeartbeat.status == WorkerStatus.DEGRADED.value, WorkerStatus.DEGRADED.value),
            else_=WorkerStatus.ONLINE.value,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["worker_id"],
            set_=upd,
            where=WorkerHeartbeat.last_heartbeat <= stmt.excluded.last_heartbeat,
        )
        async with self.sessions.begin() as s:
            await s.execute(stmt)

    async def insert_audit(self, rec: dict[str, Any], *, source_seq: int | None = None) -> None:
        values = {
            "source_seq": source_seq,
            "actor": str(rec.get("actor", "?"))[:200],
            "role": rec.get("role"),
            "action": str(rec.get("action", "?")),
            "entity_type": str(rec.get("entity_type", "?")),
            "entity_id": str(rec.get("entity_id", ""))[:200],
            "reason": rec.get("reason"),
            "params": rec.get("params") or {},
            "result": rec.get("result") or {},
            "ok": bool(rec.get("ok")),
            "error": rec.get("error"),
            "source": str(rec.get("source", "api")),
            "created_at": ms_to_dt(rec.get("ts")) or utcnow(),
            "queue": audit_queue(rec),
        }
        stmt = self._insert(AuditLog).values(**values)
        if source_seq is not None:
            stmt = stmt.on_conflict_do_nothing(index_elements=["source_seq"])
        async with self.sessions.begin() as s:
            await s.execute(stmt)

    async def ping(self) -> None:
        """Raise unless the database answers (a statement bounded by the engine's timeouts)."""
        async with self.engine.connect() as c:
            await c.exec_driver_sql("SELECT 1")

    async def insert_samples(self, samples: Iterable[dict[str, Any]]) -> None:
        rows = list(samples)
        if rows:
            async with self.sessions.begin() as s:
                await s.execute(insert(QueueSample), rows)

    # ------------------------------------------------------- housekeeping
    async def refresh_worker_statuses(self, *, offline_after_s: float, degraded_ratio: float, window: int = 20) -> None:
        """OFFLINE after silence; DEGRADED when >= ratio of its recent finished jobs failed.

        What an OFFLINE worker still had running is marked stalled: it runs nothing
        any more, and the broker hands those jobs to another worker after ack_wait.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=offline_after_s)
        async with self.sessions.begin() as s:
            await s.execute(
                update(WorkerHeartbeat)
                .where(WorkerHeartbeat.last_heartbeat < cutoff, WorkerHeartbeat.status != WorkerStatus.OFFLINE.value)
                .values(status=WorkerStatus.OFFLINE.value, updated_at=now)
            )
            offline = select(WorkerHeartbeat.worker_id).where(WorkerHeartbeat.status == WorkerStatus.OFFLINE.value)
            # finished_at IS NULL: the few unfinished attempts, through their partial index (migration 0005)
            await s.execute(
                update(JobAttempt)
                .where(
                    JobAttempt.finished_at.is_(None),
                    JobAttempt.status == "active",
                    JobAttempt.worker_id.in_(offline),
                )
                .values(
                    status="stalled",
                    finished_at=now,
                    error="the worker went offline while running it",
                    error_type="Stalled",
                )
            )
            live = (
                (await s.execute(select(WorkerHeartbeat).where(WorkerHeartbeat.status != WorkerStatus.OFFLINE.value)))
                .scalars()
                .all()
            )
            for w in live:
                recent = (
                    (
                        await s.execute(
                            select(JobAttempt.status)
                            .where(JobAttempt.worker_id == w.worker_id, JobAttempt.status.in_(("completed", "failed")))
                            .order_by(JobAttempt.finished_at.desc())
                            .limit(window)
                        )
                    )
                    .scalars()
                    .all()
                )
                failed = sum(1 for x in recent if x == "failed")
                degraded = len(recent) >= 5 and failed / len(recent) >= degraded_ratio
                new = WorkerStatus.DEGRADED.value if degraded else WorkerStatus.ONLINE.value
                if w.status != new:
                    w.status = new
                    w.updated_at = now

    async def count_finished(self, queue: str, status: str, older_than_s: float) -> int:
        async with self.sessions() as s:
            cond = await _finished_filter(queue, status, older_than_s)
            return int((await s.execute(select(func.count()).select_from(Job).where(cond))).scalar_one())

    async def delete_finished(self, queue: str, status: str, older_than_s: float) -> int:
        """Delete job records (and attempts) of a queue in a final state, older than an age."""
        removed = 0
        async with self.sessions.begin() as s:
            cond = await _finished_filter(queue, status, older_than_s)
            while ids := (await s.execute(select(Job.job_id).where(cond).limit(5000))).scalars().all():
                await s.execute(delete(JobAttempt).where(JobAttempt.job_id.in_(ids)))
                await s.execute(delete(Job).where(Job.job_id.in_(ids)))
                removed += len(ids)
        return removed

    async def expire(self, *, sample_keep_s: float = 7 * 86400) -> int:
        """Delete job records past their retention (and their attempts), and old samples."""
        now = utcnow()
        async with self.sessions.begin() as s:
            ids = (await s.execute(select(Job.job_id).where(Job.expires_at < now).limit(5000))).scalars().all()
            if ids:
                await s.execute(delete(JobAttempt).where(JobAttempt.job_id.in_(ids)))
                await s.execute(delete(Job).where(Job.job_id.in_(ids)))
            await s.execute(delete(QueueSample).where(QueueSample.ts < now - timedelta(seconds=sample_keep_s)))
            # the API reads at most a day of rollups; the hourly ones stay longer for the totals
            await s.execute(delete(JobStat).where(JobStat.minute < now - timedelta(seconds=sample_keep_s)))
            hourly_cut = now - timedelta(days=STATS_HOURLY_KEEP_DAYS)
            await s.execute(delete(JobStatHourly).where(JobStatHourly.hour < hourly_cut))
        return len(ids)


def audit_queue(rec: dict[str, Any]) -> str | None:
    """The queue an audit record is about: a queue or bulk action's entity, the first part of a schedule's or
    an incident's (``<queue>/<name>``), else the queue its result or parameters name (a job's)."""
    kind, entity = str(rec.get("entity_type", "")), str(rec.get("entity_id", ""))
    if kind in ("QUEUE", "JOBS"):
        return entity[:100] if entity != "*" else None
    if kind in ("SCHEDULE", "INCIDENT"):
        return entity.split("/", 1)[0][:100] or None
    for part in (rec.get("result"), rec.get("params")):
        if isinstance(part, dict) and isinstance(part.get("queue"), str):
            return str(part["queue"])[:100]
    return None


async def _finished_filter(queue: str, status: str, older_than_s: float) -> Any:
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    return and_(Job.queue == queue, Job.status == status, Job.finished_at <= cutoff)


def _attempt_row(
    rows: dict[tuple[str, int, int], dict[str, Any]], job: Job, attempt: int, delivery: int
) -> dict[str, Any]:
    """The pending upsert of one delivery of one attempt (created empty)."""
    return rows.setdefault(
        (job.job_id, attempt, delivery),
        {"job_id": job.job_id, "attempt": attempt, "delivery": delivery, "queue": job.queue},
    )


# What a job message tells (the tracker's rows); the rest is what its runs tell, reset for a new job.
_ENQUEUED_COLUMNS = (
    "queue", "name", "status", "user_id", "data", "max_attempts", "enqueued_at", "created_at", "last_event_ms",
    "run_at", "level",
)  # fmt: skip
_RUN_COLUMNS = (
    "error", "error_type", "result", "progress", "worker_id", "duration_ms", "started_at", "finished_at",
    "expires_at", "artifacts",
)  # fmt: skip

_ORDER = {"started": 0, "stalled": 0, "progress": 1, "retrying": 2, "completed": 3, "failed": 3, "cancelled": 3}
