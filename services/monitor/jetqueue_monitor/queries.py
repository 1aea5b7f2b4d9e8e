"""Read models of the monitor API: overview, queues, incidents, jobs, workers, audit."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, select, text

from jetqueue.catalog import Catalog
from jetqueue_monitor.db.models import (
    DURATION_BUCKETS_MS,
    AuditLog,
    IncidentAck,
    Job,
    JobAttempt,
    JobStat,
    JobStatHourly,
    QueueSample,
    WorkerHeartbeat,
)
from jetqueue_monitor.live import Snapshot
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_monitor.store import (
    JobFilter,
    Store,
    _aware,
    add_stats,
    empty_stats,
    encode_cursor,
    job_query,
    utcnow,
)


def iso(dt: datetime | None) -> str | None:
    return _aware(dt).isoformat() if dt is not None else None  # type: ignore[union-attr]


def percentile(hist: dict[str, int], q: float) -> float | None:
    """Upper bound (ms) of the bucket holding quantile ``q`` of a merged duration histogram."""
    total = sum(hist.values())
    if not total:
        return None
    need = q * total
    seen = 0
    for i, ub in enumerate(DURATION_BUCKETS_MS):
        seen += hist.get(str(i), 0)
        if seen >= need:
            return float(ub if ub < 10**9 else DURATION_BUCKETS_MS[-2])
    return float(DURATION_BUCKETS_MS[-2])


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


async def stats_since(store: Store, since: datetime, queue: str | None = None) -> dict[str, dict[str, Any]]:
    """Per-queue totals of the rollups since ``since`` (the same as summing the minute rows).

    Rows come back as plain tuples (no ORM objects) and are summed here, where
    the duration histograms merge the same way on SQLite and PostgreSQL.
    """
    out: dict[str, dict[str, Any]] = {}
    async with store.sessions() as s:
        for stmt in stats_statements(since, queue):
            for q, completed, failed, retried, dsum, dcount, hist, last in await s.execute(stmt):
                row = {"completed": completed, "failed": failed, "retried": retried, "sum": dsum, "count": dcount,
                       "hist": hist, "last": last}  # fmt: skip
                add_stats(out.setdefault(q, empty_stats()), row)
    return out


def _merge(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    total = empty_stats()
    for d in stats.values():
        add_stats(total, d)
    return total


def _rate(completed: int, failed: int) -> float | None:
    return round(completed / (completed + failed) * 100, 2) if completed + failed else None


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


def samples_at_statement(when: datetime) -> Select[Any]:
    """The newest sample per queue taken at or before ``when`` (and at most 5 minutes before it)."""
    newest = (
        select(QueueSample.queue, func.max(QueueSample.ts).label("ts"))
        .where(QueueSample.ts <= when, QueueSample.ts > when - timedelta(minutes=5))
        .group_by(QueueSample.queue)
        .subquery()
    )
    return select(QueueSample).join(newest, and_(QueueSample.queue == newest.c.queue, QueueSample.ts == newest.c.ts))


async def _samples_at(store: Store, when: datetime) -> dict[str, QueueSample]:
    async with store.sessions() as s:
        return {row.queue: row for row in (await s.execute(samples_at_statement(when))).scalars()}


async def incidents(store: Store, snap: Snapshot, settings: MonitorSettings, catalog: Catalog) -> list[dict[str, Any]]:
    """Current anomalies, each with a drill-down the UI can follow."""
    now = utcnow()
    out: list[dict[str, Any]] = []
    online = await worker_counts(store)
    recent = await stats_since(store, now - timedelta(minutes=15))
    before10 = await _samples_at(store, now - timedelta(minutes=10))
    before15 = await _samples_at(store, now - timedelta(minutes=15))
    for name, ql in snap.queues.items():
        spec = catalog.get(name) if name in catalog else None
        label = spec.display_name if spec else name
        en = (spec.display_name_en or spec.display_name) if spec else name
        info = ql.info
        live_workers = sum(n for st, n in online.get(name, {}).items() if st != "OFFLINE")
        if info.waiting > 0 and live_workers == 0 and not info.paused:
            out.append(
                _incident(
                    "no_worker",
                    name,
                    "critical",
                    f"{label}: 대기 작업 {info.waiting}개, 온라인 워커 없음",
                    f"{en}: {info.waiting} waiting jobs and no online worker",
                    {"tab": "workers", "queue": name},
                )
            )
        old = before10.get(name)
        if (
            info.waiting >= settings.backlog_surge_min
            and old is not None
            and info.waiting >= settings.backlog_surge_factor * max(old.waiting, 1)
        ):
            out.append(
                _incident(
                    "backlog_surge",
                    name,
                    "warning",
                    f"{label}: 대기열 급증 ({old.waiting} → {info.waiting}, 10분)",
                    f"{en}: backlog surge ({old.waiting} → {info.waiting} in 10 min)",
                    {"tab": "queues", "queue": name},
                )
            )
        r = recent.get(name)
        if r and r["failed"] + r["retried"] >= settings.failure_spike_min:
            bad = r["failed"] + r["retried"]
            ratio = bad / (bad + r["completed"])
            if ratio >= settings.failure_spike_ratio:
                out.append(
                    _incident(
                        "failure_spike",
                        name,
                        "critical",
                        f"{label}: 실패율 급등 ({ratio:.0%}, 15분)",
                        f"{en}: failure rate spike ({ratio:.0%} over 15 min)",
                        {"tab": "jobs", "queue": name, "status": "failed"},
                    )
                )
        if info.redelivered > 0:
            out.append(
                _incident(
                    "stalled",
                    name,
                    "warning",
                    f"{label}: 재전달된(멈춘) 작업 {info.redelivered}개",
                    f"{en}: {info.redelivered} redelivered (stalled) job(s)",
                    {"tab": "jobs", "queue": name, "status": "active"},
                )
            )
        old15 = before15.get(name)
        if old15 is not None and info.dead_lettered > old15.dlq:
            out.append(
                _incident(
                    "dlq_growth",
                    name,
                    "warning",
                    f"{label}: 실패 보관함 증가 ({old15.dlq} → {info.dead_lettered}, 15분)",
                    f"{en}: dead-letter growth ({old15.dlq} → {info.dead_lettered} in 15 min)",
                    {"tab": "jobs", "queue": name, "status": "failed"},
                )
            )
    return out


def _incident(kind: str, queue: str, severity: str, ko: str, en: str, drill: dict[str, str]) -> dict[str, Any]:
    return {
        "type": kind,
        "queue": queue,
        "severity": severity,
        "message": {"ko": ko, "en": en},
        "drill_down": drill,
        "acknowledged": None,
        "snoozed_until": None,
    }


async def with_acks(store: Store, current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark acknowledged and snoozed incidents; drop the acknowledgements of incidents that cleared.

    An acknowledgement lasts while its incident stays open, a snooze until its
    time: either ends when the incident clears, so a rule that fires again
    later is news again.
    """
    now = utcnow()
    async with store.sessions() as s:
        acks = list((await s.execute(select(IncidentAck))).scalars())
    if not acks:
        return current
    open_ = {(i["type"], i["queue"]): i for i in current}
    stale = []
    for a in acks:
        until = _aware(a.until)
        i = open_.get((a.type, a.queue))
        if i is None or (a.kind == "snooze" and until is not None and until <= now):
            stale.append(a.id)
        elif a.kind == "ack":
            i["acknowledged"] = {"by": a.actor, "at": iso(a.created_at), "reason": a.reason}
        else:
            i["snoozed_until"] = iso(until)
    if stale:
        async with store.sessions.begin() as s:
            await s.execute(delete(IncidentAck).where(IncidentAck.id.in_(stale)))
    return current


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
        "failed_24h": day["failed"],
        "completed_24h": day["completed"],
        "success_rate": _rate(day["completed"], day["failed"]),
        "avg_duration_ms": round(day["sum"] / day["count"], 1) if day["count"] else None,
        "p95_duration_ms": percentile(dict(day["hist"]), 0.95),
        "incidents": await with_acks(store, await incidents(store, snap, settings, catalog)),
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
    inc = current if current is not None else await incidents(store, snap, settings, catalog)
    bad = {i["queue"] for i in inc if i["severity"] == "critical"}
    workers = await worker_counts(store)
    out = []
    for spec in catalog.queues:
        ql = snap.queues.get(spec.name)
        info = ql.info if ql else None
        h = hour.get(spec.name, {})
        d = day.get(spec.name, {})
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
                "jobs_per_min": round(five.get(spec.name, {}).get("completed", 0) / 5, 2),
                "completed_1h": h.get("completed", 0),
                "failed_1h": h.get("failed", 0),
                "completed_24h": d.get("completed", 0),
                "failed_24h": d.get("failed", 0),
                "avg_duration_ms": round(h["sum"] / h["count"], 1) if h.get("count") else None,
                "p95_duration_ms": percentile(dict(h["hist"]), 0.95) if h else None,
                "last_processed_at": iso(d.get("last")),
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
    current = await with_acks(store, await incidents(store, snap, settings, catalog))
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
            "uptime_s": round((now - _aware(w.started_at)).total_seconds()) if w.started_at else None,  # type: ignore[operator]
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
