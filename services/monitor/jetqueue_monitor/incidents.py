"""Incidents: the rules that turn queue samples and job totals into something an admin should look at,
and their acknowledgements and snoozes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, select

from jetqueue.catalog import Catalog
from jetqueue_monitor import queries
from jetqueue_monitor.clock import aware, utcnow
from jetqueue_monitor.db.models import IncidentAck, QueueSample
from jetqueue_monitor.sampler import Snapshot
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_monitor.store import Store


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


async def current(store: Store, snap: Snapshot, settings: MonitorSettings, catalog: Catalog) -> list[dict[str, Any]]:
    """Current anomalies, each with a drill-down the UI can follow."""
    now = utcnow()
    out: list[dict[str, Any]] = []
    online = await queries.worker_counts(store)
    recent = await queries.stats_since(store, now - timedelta(minutes=15))
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
        if r and r.failed + r.retried >= settings.failure_spike_min:
            bad = r.failed + r.retried
            ratio = bad / (bad + r.completed)
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
        until = aware(a.until)
        i = open_.get((a.type, a.queue))
        if i is None or (a.kind == "snooze" and until is not None and until <= now):
            stale.append(a.id)
        elif a.kind == "ack":
            i["acknowledged"] = {"by": a.actor, "at": queries.iso(a.created_at), "reason": a.reason}
        else:
            i["snoozed_until"] = queries.iso(until)
    if stale:
        async with store.sessions.begin() as s:
            await s.execute(delete(IncidentAck).where(IncidentAck.id.in_(stale)))
    return current
