"""Every read of the monitor: overview, queues, job lists and search, workers, audit (writes: store.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Select, func, literal, select, text, tuple_, union

from jetqueue.catalog import Catalog
from jetqueue_monitor import incidents
from jetqueue_monitor.clock import aware, utcnow
from jetqueue_monitor.db.models import (
    AuditLog,
    Job,
    JobAttempt,
    JobStat,
    JobStatHourly,
    QueueSample,
    WorkerHeartbeat,
    WorkerStatus,
)
from jetqueue_monitor.rollups import Stats, percentile
from jetqueue_monitor.sampler import Snapshot
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_monitor.store import Store


def iso(dt: datetime | None) -> str | None:
    return aware(dt).isoformat() if dt is not None else None  # type: ignore[union-attr]


def stats_statements(since: datetime, queue: str | None = None) -> list[Select[Any]]:
    """The rollup rows whose sum is the totals since ``since``.

    Windows over two hours read the minute rows up to the first whole hour and
    the hourly rows after it: a day is 24 rows per queue plus at most 59, not 1,440.
    """
    edge: datetime | None = None
    if utcnow() - since > timedelta(hours=2):
        floor = since.replace(minute=0, second=0, microsecond=0)
        edge = floor if floor == since else floor + timedelta(hours=1)
    minutes = _stat_columns(JobStat).where(JobStat.minute >= since)
    if edge is not None:
        minutes = minutes.where(JobStat.minute < edge)
    stmts = [minutes.where(JobStat.queue == queue) if queue else minutes]
    if edge is not None:
        hours = _stat_columns(JobStatHourly).where(JobStatHourly.hour >= edge)
        stmts.append(hours.where(JobStatHourly.queue == queue) if queue else hours)
    return stmts


def _stat_columns(model: type[JobStat] | type[JobStatHourly]) -> Select[Any]:
    return select(
        model.queue,
        model.completed,
        model.failed,
        model.retried,
        model.duration_sum_ms,
        model.duration_count,
        model.hist,
        model.last_finished_at,
    )


async def stats_since(store: Store, since: datetime, queue: str | None = None) -> dict[str, Stats]:
    """Per-queue totals of the rollups since ``since`` (the same as summing the minute rows).

    Rows come back as plain tuples (no ORM objects) and are summed here, where
    the duration histograms merge the same way on SQLite and PostgreSQL.
    """
    out: dict[str, Stats] = {}
    async with store.sessions() as s:
        for stmt in stats_statements(since, queue):
            for row in await s.execute(stmt):
                out.setdefault(row.queue, Stats()).add(Stats.of_row(row))
    return out


def _merge(stats: dict[str, Stats]) -> Stats:
    total = Stats()
    for d in stats.values():
        total.add(d)
    return total


async def worker_counts(store: Store) -> dict[str, dict[str, int]]:
    """{queue: {status: n}}."""
    out: dict[str, dict[str, int]] = {}
    async with store.sessions() as s:
        rows = await s.execute(
            select(WorkerHeartbeat.queue_name, WorkerHeartbeat.status, func.count()).group_by(
                WorkerHeartbeat.queue_name, WorkerHeartbeat.status
            )
        )
        for queue, status, n in rows:
            out.setdefault(queue, {})[status] = n
    return out


async def overview(store: Store, snap: Snapshot, settings: MonitorSettings, catalog: Catalog) -> dict[str, Any]:
    now = utcnow()
    day = _merge(await stats_since(store, now - timedelta(hours=24)))
    workers = await worker_counts(store)
    online = sum(n for per in workers.values() for st, n in per.items() if st != "OFFLINE")
    queues = snap.queues.values()
    return {
        "online_workers": online,
        "waiting": sum(q.info.waiting for q in queues),
        "active": sum(q.info.active for q in queues),
        "delayed": sum(q.info.scheduled for q in queues),
        "dead_lettered": sum(q.info.dead_lettered for q in queues),
        "failed_24h": day.failed,
        "completed_24h": day.completed,
        "success_rate": day.success_rate,
        "avg_duration_ms": day.avg_duration_ms,
        "p95_duration_ms": day.p95_duration_ms,
        "incidents": await incidents.with_acks(store, await incidents.current(store, snap, settings, catalog)),
        "sampled_at": snap.at,
    }


def _queue_status(paused: bool, degraded: bool) -> str:
    return "Paused" if paused else ("Degraded" if degraded else "Running")


async def queues(
    store: Store,
    snap: Snapshot,
    settings: MonitorSettings,
    catalog: Catalog,
    *,
    current: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every queue of the catalog; ``current``: the incidents if the caller has them already."""
    now = utcnow()
    hour = await stats_since(store, now - timedelta(hours=1))
    five = await stats_since(store, now - timedelta(minutes=5))
    day = await stats_since(store, now - timedelta(hours=24))
    inc = current if current is not None else await incidents.current(store, snap, settings, catalog)
    bad = {i["queue"] for i in inc if i["severity"] == "critical"}
    workers = await worker_counts(store)
    out = []
    for spec in catalog.queues:
        ql = snap.queues.get(spec.name)
        info = ql.info if ql else None
        h = hour.get(spec.name, Stats())
        d = day.get(spec.name, Stats())
        out.append(
            {
                "name": spec.name,
                "display_name": spec.display_name,
                "display_name_en": spec.display_name_en,
                "status": _queue_status(bool(info and info.paused), spec.name in bad),
                "paused": bool(info and info.paused),
                "pause_until": info.pause_until if info else None,
                "waiting": info.waiting if info else None,
                "waiting_by_level": info.waiting_by_level if info else None,
                "active": info.active if info else None,
                "delayed": info.scheduled if info else None,
                "failed": info.dead_lettered if info else None,
                "lag_seconds": ql.oldest_waiting_s if ql else None,
                "jobs_per_min": round(five.get(spec.name, Stats()).completed / 5, 2),
                "completed_1h": h.completed,
                "failed_1h": h.failed,
                "completed_24h": d.completed,
                "failed_24h": d.failed,
                "avg_duration_ms": h.avg_duration_ms,
                "p95_duration_ms": h.p95_duration_ms,
                "last_processed_at": iso(d.last),
                "workers": workers.get(spec.name, {}),
                "concurrency": spec.concurrency,
                "priority": spec.priority,
            }
        )
    return out


WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


async def queue_detail(
    store: Store, snap: Snapshot, settings: MonitorSettings, catalog: Catalog, name: str, window: str = "1h"
) -> dict[str, Any]:
    """One queue: its row of :func:`queues`, the trend over ``window``, top errors and incidents.

    The last hour's ``trend`` comes from the samples (every few seconds); for 24 hours
    and 7 days ``history`` has one point per hour from the hourly rollups.
    """
    catalog.get(name)
    current = await incidents.with_acks(store, await incidents.current(store, snap, settings, catalog))
    base = next(q for q in await queues(store, snap, settings, catalog, current=current) if q["name"] == name)
    now = utcnow()
    base["window"] = window
    base["trend"] = await _trend(store, name, now) if window == "1h" else []
    base["history"] = await _history(store, name, now - WINDOWS[window]) if window != "1h" else []
    async with store.sessions() as s:
        # grouped by position: PostgreSQL sees bound parameters in the select and the group-by as different
        errs = await s.execute(
            select(func.coalesce(Job.error_type, "Error"), func.substr(Job.error, 1, 120), func.count())
            .where(Job.queue == name, Job.status == "failed", Job.finished_at >= now - timedelta(hours=24))
            .group_by(text("1"), text("2"))
            .order_by(func.count().desc())
            .limit(5)
        )
        base["top_errors"] = [{"type": t, "message": m, "count": n} for t, m, n in errs]
    base["incidents"] = [i for i in current if i["queue"] == name]
    return base


async def _trend(store: Store, name: str, now: datetime) -> list[dict[str, Any]]:
    async with store.sessions() as s:
        samples = await s.execute(
            select(
                QueueSample.ts,
                QueueSample.waiting,
                QueueSample.active,
                QueueSample.delayed,
                QueueSample.dlq,
                QueueSample.completed_total,
            )
            .where(QueueSample.queue == name, QueueSample.ts >= now - timedelta(hours=1))
            .order_by(QueueSample.ts)
        )
        return [
            {"ts": iso(ts), "waiting": w, "active": a, "delayed": dl, "dlq": dq, "completed_total": ct}
            for ts, w, a, dl, dq, ct in samples
        ]


async def _history(store: Store, name: str, since: datetime) -> list[dict[str, Any]]:
    """One point per hour since ``since`` (the hour it falls in included): finished attempts and durations."""
    floor = since.replace(minute=0, second=0, microsecond=0)
    async with store.sessions() as s:
        rows = await s.execute(
            select(
                JobStatHourly.hour,
                JobStatHourly.completed,
                JobStatHourly.failed,
                JobStatHourly.retried,
                JobStatHourly.duration_sum_ms,
                JobStatHourly.duration_count,
                JobStatHourly.hist,
            )
            .where(JobStatHourly.queue == name, JobStatHourly.hour >= floor)
            .order_by(JobStatHourly.hour)
        )
        return [
            {
                "ts": iso(hour),
                "completed": completed,
                "failed": failed,
                "retried": retried,
                "avg_duration_ms": round(dsum / dcount, 1) if dcount else None,
                "p95_duration_ms": percentile(dict(hist or {}), 0.95),
            }
            for hour, completed, failed, retried, dsum, dcount, hist in rows
        ]


PAYLOAD_FIELDS = ("data", "result")


def job_row(j: Job, *, payloads: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "job_id": j.job_id,
        "queue": j.queue,
        "name": j.name,
        "status": j.status,
        "user_id": j.user_id,
        "attempts_made": j.attempts_made,
        "max_attempts": j.max_attempts,
        "progress": j.progress,
        "duration_ms": j.duration_ms,
        "error": j.error,
        "error_type": j.error_type,
        "worker_id": j.worker_id,
        "stalls": j.stalls,
        "created_at": iso(j.created_at),
        "enqueued_at": iso(j.enqueued_at),
        "started_at": iso(j.started_at),
        "finished_at": iso(j.finished_at),
        "run_at": iso(j.run_at),
        "level": j.level,
    }
    if payloads:
        d["data"] = j.data
        d["result"] = j.result
        d["artifacts"] = j.artifacts or []
    return d


async def list_jobs(store: Store, f: JobFilter, cursor: str | None, limit: int, *, payloads: bool) -> dict[str, Any]:
    async with store.sessions() as s:
        if f.q and store.dialect == "postgresql":
            # plan a search for its actual text: a generic plan (asyncpg prepares every statement and
            # PostgreSQL may switch to one after five runs) cannot tell a rare job-id prefix from a
            # common one, and walks every job in creation order for the rare one
            await s.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        rows = list((await s.execute(job_query(f, cursor, limit, dialect=store.dialect))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [job_row(j, payloads=payloads) for j in rows],
        "next_cursor": encode_cursor(rows[-1].created_at, rows[-1].job_id) if more and rows else None,
    }


async def job_detail(store: Store, job_id: str, *, payloads: bool) -> dict[str, Any] | None:
    async with store.sessions() as s:
        job = await s.get(Job, job_id)
        if job is None:
            return None
        attempts = (
            (
                await s.execute(
                    select(JobAttempt)
                    .where(JobAttempt.job_id == job_id)
                    .order_by(JobAttempt.attempt, JobAttempt.delivery)
                )
            )
            .scalars()
            .all()
        )
    d = job_row(job, payloads=payloads)
    d["attempts"] = [
        {
            "attempt": a.attempt,
            "delivery": a.delivery,
            "status": a.status,
            "worker_id": a.worker_id,
            "started_at": iso(a.started_at),
            "finished_at": iso(a.finished_at),
            "duration_ms": a.duration_ms,
            "error": a.error,
            "error_type": a.error_type,
        }
        for a in attempts
    ]
    return d


async def list_workers(store: Store) -> list[dict[str, Any]]:
    now = utcnow()
    async with store.sessions() as s:
        rows = (
            (await s.execute(select(WorkerHeartbeat).order_by(WorkerHeartbeat.queue_name, WorkerHeartbeat.worker_id)))
            .scalars()
            .all()
        )
    return [
        {
            "worker_id": w.worker_id,
            "queue": w.queue_name,
            "status": w.status,
            "hostname": w.hostname,
            "pid": w.pid,
            "version": w.version,
            "concurrency": w.concurrency,
            "active_jobs": w.active_jobs,
            "processed_jobs": w.processed_jobs,
            "failed_jobs": w.failed_jobs,
            "last_heartbeat": iso(w.last_heartbeat),
            "started_at": iso(w.started_at),
            "uptime_s": round((now - aware(w.started_at)).total_seconds()) if w.started_at else None,  # type: ignore[operator]
        }
        for w in rows
    ]


async def list_audit(
    store: Store,
    *,
    actor: str | None,
    action: str | None,
    entity_id: str | None,
    since: datetime | None,
    before_id: int | None,
    limit: int,
    queue: str | None = None,
    until: datetime | None = None,
    ok: bool | None = None,
) -> dict[str, Any]:
    stmt = select(AuditLog)
    if actor:
        stmt = stmt.where(AuditLog.actor == actor)
    if action:
        stmt = stmt.where(AuditLog.action == action)
    if entity_id:
        stmt = stmt.where(AuditLog.entity_id == entity_id)
    if queue:
        stmt = stmt.where(AuditLog.queue == queue)
    if since:
        stmt = stmt.where(AuditLog.created_at >= since)
    if until:
        stmt = stmt.where(AuditLog.created_at < until)
    if ok is not None:
        stmt = stmt.where(AuditLog.ok.is_(ok))
    if before_id:
        stmt = stmt.where(AuditLog.id < before_id)
    stmt = stmt.order_by(AuditLog.id.desc()).limit(limit + 1)
    async with store.sessions() as s:
        rows = list((await s.execute(stmt)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [
            {
                "id": a.id,
                "actor": a.actor,
                "role": a.role,
                "action": a.action,
                "entity_type": a.entity_type,
                "entity_id": a.entity_id,
                "reason": a.reason,
                "params": a.params,
                "result": a.result,
                "ok": a.ok,
                "error": a.error,
                "source": a.source,
                "queue": a.queue,
                "created_at": iso(a.created_at),
            }
            for a in rows
        ],
        "next_before_id": rows[-1].id if more and rows else None,
    }


async def lost_worker_counts(store: Store, *, window_s: float) -> dict[str, int]:
    """``{queue: n}``: workers whose heartbeats stopped within the last ``window_s`` seconds.

    A worker that stops cleanly sends a last heartbeat with status OFFLINE; one
    that crashed, was OOM-killed or lost its network just goes quiet, and the
    monitor marks it OFFLINE after ``offline_after_s``. Only the second kind is
    counted (the rows of cleanly stopped workers stay in the table for the
    UI's history, so a plain OFFLINE count only ever grows with deployments).
    A worker coming back under the same id (a restarted container) leaves the count.
    """
    since = utcnow() - timedelta(seconds=window_s)
    async with store.sessions() as s:
        rows = await s.execute(
            select(WorkerHeartbeat.queue_name, func.count())
            .where(
                WorkerHeartbeat.status == WorkerStatus.OFFLINE.value,
                WorkerHeartbeat.reported_status != WorkerStatus.OFFLINE.value,
                WorkerHeartbeat.last_heartbeat >= since,
            )
            .group_by(WorkerHeartbeat.queue_name)
        )
        return {str(queue): int(n) for queue, n in rows}


# --------------------------------------------------------------------------- job lists
@dataclass(slots=True)
class JobFilter:
    queue: str | None = None
    status: str | None = None
    statuses: tuple[str, ...] | None = None  # any of these (a bulk action's applicable states)
    ids: tuple[str, ...] | None = None  # only these jobs (a bulk action's selection)
    level: int | None = None
    name: str | None = None
    user_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Any stored job id (no NUL: the API refuses it in a query) after the creation time.
CURSOR_PATTERN = r"^([0-9]{1,16})\.([^\x00]{1,128})$"
CURSOR_RE = re.compile(CURSOR_PATTERN)


def encode_cursor(created_at: datetime, job_id: str) -> str:
    """``<created_at in µs since 1970>.<job_id>``: every string of that shape is a valid cursor, so the
    API can state it as a pattern (an opaque encoding would accept strings it then refuses)."""
    return f"{(aware(created_at) - EPOCH) // timedelta(microseconds=1)}.{job_id}"  # type: ignore[operator]


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError on a cursor this service did not make."""
    m = CURSOR_RE.fullmatch(cursor)
    if m is None:
        raise ValueError("invalid cursor")
    return EPOCH + timedelta(microseconds=int(m.group(1))), m.group(2)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def id_prefix(prefix: str, dialect: str) -> list[Any]:
    """Conditions for job ids starting with ``prefix`` (case-sensitive), served by an index on PostgreSQL."""
    if dialect != "postgresql":
        # job ids are case-sensitive: SQLite's LIKE is not, so there the prefix is compared as a substring
        return [func.substr(Job.job_id, 1, len(prefix)) == prefix]
    # the prefix as an explicit byte-order range on the pattern-ops index: the planner derives it
    # from LIKE for a constant, not for a bound parameter; LIKE stays as the exact check
    hi = prefix[:-1] + chr(min(ord(prefix[-1]) + 1, 0x10FFFF))
    return [
        Job.job_id.op("~>=~")(prefix),
        Job.job_id.op("~<~")(hi),
        Job.job_id.like(f"{_escape_like(prefix)}%", escape="\\"),
    ]


def job_query(f: JobFilter, cursor: str | None, limit: int, *, dialect: str = "sqlite") -> Select[Any]:
    """Jobs matching ``f``, newest first, ``limit + 1`` rows after ``cursor``.

    ``q`` matches a job-id prefix or a word in the error. As one condition
    (``job_id LIKE 'x%' OR error ILIKE '%x%'``) no index serves the OR, and the
    database walks every job from the newest until enough match: for a job id,
    the whole table. So each alternative is its own arm, ordered and limited,
    and the (at most 2 x (limit + 1)) rows of both are merged: the job-id arm a
    range scan of ix_jobs_job_id_pattern (PostgreSQL; the primary key cannot
    serve LIKE outside the C collation), the error arm a newest-first walk of
    the partial index of errored jobs.
    """
    conds: list[Any] = []
    if f.queue:
        conds.append(Job.queue == f.queue)
    if f.status:
        conds.append(Job.status == f.status)
    if f.statuses is not None:
        conds.append(Job.status.in_(f.statuses))
    if f.ids is not None:
        conds.append(Job.job_id.in_(f.ids))
    if f.level is not None:
        conds.append(Job.level == f.level)
    if f.name:
        conds.append(Job.name == f.name)
    if f.user_id:
        conds.append(Job.user_id == f.user_id)
    if f.since:
        conds.append(Job.created_at >= f.since)
    if f.until:
        conds.append(Job.created_at < f.until)
    if cursor:
        c_at, c_id = decode_cursor(cursor)
        # a row value: one index range instead of an OR the planner cannot use as a bound
        conds.append(tuple_(Job.created_at, Job.job_id) < tuple_(literal(c_at, DateTime(timezone=True)), c_id))
    order = (Job.created_at.desc(), Job.job_id.desc())
    if not f.q:
        return select(Job).where(*conds).order_by(*order).limit(limit + 1)
    needle = _escape_like(f.q)
    by_id = select(Job.job_id, Job.created_at).where(*conds, *id_prefix(f.q, dialect)).order_by(*order).limit(limit + 1)
    by_error = (
        select(Job.job_id, Job.created_at)
        .where(*conds, Job.error.is_not(None), Job.error.ilike(f"%{needle}%", escape="\\"))
        .order_by(*order)
        .limit(limit + 1)
    )
    hits = union(by_id.subquery().select(), by_error.subquery().select()).subquery()
    return (
        select(Job)
        .join(hits, Job.job_id == hits.c.job_id)
        .order_by(hits.c.created_at.desc(), hits.c.job_id.desc())
        .limit(limit + 1)
    )
