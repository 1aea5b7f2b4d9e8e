"""Each incident rule of incidents.current, firing and not firing (SQLite store, constructed snapshots).

The rules read the live snapshot (JetStream counts, built here directly), the
worker heartbeats, the per-minute rollups and the queue samples of 10 and 15
minutes ago (inserted with old timestamps).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jetqueue.catalog import Catalog
from jetqueue.control import QueueInfo
from jetqueue.events import Heartbeat
from jetqueue.job import now_ms
from jetqueue.settings import CommonSettings
from jetqueue_monitor import incidents as rules
from jetqueue_monitor import queries
from jetqueue_monitor.clock import utcnow
from jetqueue_monitor.db.engine import make_engine, migrate
from jetqueue_monitor.sampler import QueueLive, Snapshot
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_monitor.store import Store

Q = "email-send"
OTHER = "notification-send"


@pytest.fixture
async def store(tmp_path: Path, catalog: Catalog) -> AsyncIterator[Store]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}")
    await migrate(engine)
    yield Store(engine, catalog)
    await engine.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> MonitorSettings:
    # the defaults: surge x2 and >= 100 waiting; failure spike >= 20 % and >= 10 failures
    return MonitorSettings(common=CommonSettings(), database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")


def info(queue: str = Q, **kw: Any) -> QueueInfo:
    base: dict[str, Any] = {
        "queue": queue,
        "waiting": 0,
        "waiting_by_level": [0, 0, 0],
        "active": 0,
        "scheduled": 0,
        "recurring": 0,
        "dead_lettered": 0,
        "redelivered": 0,
        "paused": False,
        "pause_until": None,
        "idle_pullers": 0,
    }
    base.update(kw)
    return QueueInfo(**base)


def snap(*infos: QueueInfo) -> Snapshot:
    now = time.time()
    return Snapshot(queues={i.queue: QueueLive(info=i, oldest_waiting_s=None, sampled_at=now) for i in infos}, at=now)


async def worker(store: Store, worker_id: str, queue: str = Q, status: str = "ONLINE", age_s: float = 0) -> None:
    ts = now_ms() - int(age_s * 1000)
    await store.upsert_heartbeat(
        Heartbeat(
            worker_id=worker_id,
            queue=queue,
            hostname="h",
            pid=1,
            version="t",
            started_at=ts - 1000,
            active_jobs=0,
            processed_jobs=0,
            failed_jobs=0,
            concurrency=1,
            status=status,
            ts=ts,
        )
    )


async def sample(store: Store, minutes_ago: float, queue: str = Q, waiting: int = 0, dlq: int = 0) -> None:
    await store.insert_samples(
        [
            {
                "queue": queue,
                "ts": utcnow() - timedelta(minutes=minutes_ago),
                "waiting": waiting,
                "active": 0,
                "delayed": 0,
                "dlq": dlq,
                "paused": False,
                "redelivered": 0,
                "completed_total": 0,
                "failed_total": 0,
                "oldest_waiting_s": None,
            }
        ]
    )


async def finished(
    store: Store, queue: str, *, completed: int = 0, failed: int = 0, retried: int = 0, minutes_ago: float = 0
) -> None:
    ts = now_ms() - int(minutes_ago * 60_000)
    kinds = ["completed"] * completed + ["failed"] * failed + ["retrying"] * retried
    await store.apply_records(
        [
            {
                "type": kind,
                "job_id": f"{queue}-{kind}-{ts}-{i}",
                "queue": queue,
                "name": "n",
                "attempt": 1,
                "attempts": 2,
                "worker": "w",
                "ts": ts,
                "duration_ms": 10,
                **({"error": "RuntimeError: boom"} if kind != "completed" else {}),
            }
            for i, kind in enumerate(kinds)
        ]
    )


async def incidents(
    store: Store, settings: MonitorSettings, catalog: Catalog, *infos: QueueInfo
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await rules.current(store, snap(*infos), settings, catalog)
    return found


def only(found: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    assert [i["type"] for i in found] == [kind], found
    return found[0]


def shape_ok(i: dict[str, Any]) -> None:
    assert set(i) == {"type", "queue", "severity", "message", "drill_down", "acknowledged", "snoozed_until"}
    assert set(i["message"]) == {"ko", "en"} and all(i["message"].values())


# ---------------------------------------------------------------- no_worker
async def test_no_worker(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    [i] = await incidents(store, settings, catalog, info(waiting=3))
    shape_ok(i)
    assert (i["type"], i["queue"], i["severity"]) == ("no_worker", Q, "critical")
    assert i["drill_down"] == {"tab": "workers", "queue": Q}
    assert "3 waiting" in i["message"]["en"] and "3개" in i["message"]["ko"]
    # both languages name the queue by its label, not its key
    assert i["message"]["en"].startswith("Email send: ") and i["message"]["ko"].startswith("이메일 발송: ")
    # an offline worker, or one on another queue, does not count
    await worker(store, "w-off", status="OFFLINE")
    await worker(store, "w-elsewhere", queue=OTHER)
    assert [x["type"] for x in await incidents(store, settings, catalog, info(waiting=3))] == ["no_worker"]


async def test_no_worker_does_not_fire(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    assert await incidents(store, settings, catalog, info(waiting=0)) == []  # nothing waits
    assert await incidents(store, settings, catalog, info(waiting=5, paused=True)) == []  # paused on purpose
    await worker(store, "w-1")
    assert await incidents(store, settings, catalog, info(waiting=5)) == []  # someone is there
    # a DEGRADED worker still works the queue (its failures are older than the failure-spike window)
    await store.apply_records(
        [
            {
                "type": "failed",
                "job_id": f"d{k}",
                "queue": Q,
                "name": "n",
                "attempt": 1,
                "worker": "w-1",
                "ts": now_ms() - 20 * 60_000 + k,
                "error": "x",
            }
            for k in range(5)
        ]
    )
    await store.refresh_worker_statuses(offline_after_s=30, degraded_ratio=0.3)
    assert await queries.worker_counts(store) == {Q: {"DEGRADED": 1}}
    assert await incidents(store, settings, catalog, info(waiting=5)) == []


# ---------------------------------------------------------------- backlog_surge
async def test_backlog_surge(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    await worker(store, "w-1")
    await sample(store, minutes_ago=11, waiting=10)
    i = only(await incidents(store, settings, catalog, info(waiting=150)), "backlog_surge")
    shape_ok(i)
    assert (i["queue"], i["severity"], i["drill_down"]) == (Q, "warning", {"tab": "queues", "queue": Q})
    assert "10 → 150" in i["message"]["en"] and "10 → 150" in i["message"]["ko"]


@pytest.mark.parametrize(
    ("minutes_ago", "old", "now", "why"),
    [
        (11, 10, 99, "below backlog_surge_min (100)"),
        (11, 100, 150, "grew x1.5, not x2"),
        (2, 10, 150, "no sample from 10 minutes ago (only a recent one)"),
        (16, 10, 150, "no sample from 10 minutes ago (only an older one)"),
    ],
)
async def test_backlog_surge_does_not_fire(
    store: Store, settings: MonitorSettings, catalog: Catalog, minutes_ago: float, old: int, now: int, why: str
) -> None:
    await worker(store, "w-1")
    await sample(store, minutes_ago=minutes_ago, waiting=old)
    assert await incidents(store, settings, catalog, info(waiting=now)) == [], why


async def test_backlog_surge_from_empty(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    await worker(store, "w-1")
    await sample(store, minutes_ago=12, waiting=0)
    only(await incidents(store, settings, catalog, info(waiting=100)), "backlog_surge")


# ---------------------------------------------------------------- failure_spike
async def test_failure_spike(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    await worker(store, "w-1")
    await finished(store, Q, completed=5, failed=10, minutes_ago=1)
    i = only(await incidents(store, settings, catalog, info()), "failure_spike")
    shape_ok(i)
    assert (i["queue"], i["severity"]) == (Q, "critical")
    assert i["drill_down"] == {"tab": "jobs", "queue": Q, "status": "failed"}
    assert "67%" in i["message"]["en"]
    # a critical incident marks the queue Degraded in the queue list
    [row] = [q for q in await queries.queues(store, snap(info()), settings, catalog) if q["name"] == Q]
    assert row["status"] == "Degraded"


async def test_failure_spike_counts_retried_attempts(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    await worker(store, "w-1")
    await finished(store, Q, completed=30, failed=4, retried=6, minutes_ago=3)  # 10 bad of 40: 25 %
    only(await incidents(store, settings, catalog, info()), "failure_spike")


@pytest.mark.parametrize(
    ("completed", "failed", "minutes_ago", "why"),
    [
        (0, 9, 1, "9 failures: below failure_spike_min (10)"),
        (100, 10, 1, "9 % failed: below failure_spike_ratio (20 %)"),
        (0, 20, 20, "the failures are older than 15 minutes"),
    ],
)
async def test_failure_spike_does_not_fire(
    store: Store, settings: MonitorSettings, catalog: Catalog, completed: int, failed: int, minutes_ago: float, why: str
) -> None:
    await worker(store, "w-1")
    await finished(store, Q, completed=completed, failed=failed, minutes_ago=minutes_ago)
    assert await incidents(store, settings, catalog, info()) == [], why
    [row] = [q for q in await queries.queues(store, snap(info()), settings, catalog) if q["name"] == Q]
    assert row["status"] == "Running"


# ---------------------------------------------------------------- stalled
async def test_stalled(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    await worker(store, "w-1")
    i = only(await incidents(store, settings, catalog, info(redelivered=2, active=2)), "stalled")
    shape_ok(i)
    assert (i["queue"], i["severity"]) == (Q, "warning")
    assert i["drill_down"] == {"tab": "jobs", "queue": Q, "status": "active"}
    assert "2 redelivered" in i["message"]["en"]
    # a warning does not make the queue Degraded
    [row] = [q for q in await queries.queues(store, snap(info(redelivered=2)), settings, catalog) if q["name"] == Q]
    assert row["status"] == "Running"


async def test_stalled_does_not_fire(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    await worker(store, "w-1")
    assert await incidents(store, settings, catalog, info(redelivered=0, active=5)) == []


# ---------------------------------------------------------------- dlq_growth
async def test_dlq_growth(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    await worker(store, "w-1")
    await sample(store, minutes_ago=16, dlq=0)
    i = only(await incidents(store, settings, catalog, info(dead_lettered=3)), "dlq_growth")
    shape_ok(i)
    assert (i["queue"], i["severity"]) == (Q, "warning")
    assert i["drill_down"] == {"tab": "jobs", "queue": Q, "status": "failed"}
    assert "0 → 3" in i["message"]["en"]


@pytest.mark.parametrize(
    ("minutes_ago", "old", "now", "why"),
    [
        (16, 3, 3, "no growth"),
        (16, 5, 1, "shrank (retried or cleaned)"),
        (5, 0, 3, "no sample from 15 minutes ago (only a recent one)"),
        (25, 0, 3, "no sample from 15 minutes ago (only an older one)"),
    ],
)
async def test_dlq_growth_does_not_fire(
    store: Store, settings: MonitorSettings, catalog: Catalog, minutes_ago: float, old: int, now: int, why: str
) -> None:
    await worker(store, "w-1")
    await sample(store, minutes_ago=minutes_ago, dlq=old)
    assert await incidents(store, settings, catalog, info(dead_lettered=now)) == [], why


# ---------------------------------------------------------------- several queues at once
async def test_rules_are_per_queue(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    await worker(store, "w-q", queue=Q)
    await sample(store, minutes_ago=16, queue=OTHER, dlq=0)
    await finished(store, Q, failed=12, minutes_ago=1)
    found = await incidents(
        store, settings, catalog, info(Q), info(OTHER, waiting=2, dead_lettered=1), info("report-generate")
    )
    assert sorted((i["type"], i["queue"]) for i in found) == [
        ("dlq_growth", OTHER),
        ("failure_spike", Q),
        ("no_worker", OTHER),
    ]
    # queues not in the snapshot (not sampled yet) raise nothing
    assert await incidents(store, settings, catalog) == []


# ---------------------------------------------------------------- acknowledged and snoozed
async def test_acknowledged_and_snoozed_incidents_are_marked_until_they_clear(
    store: Store, settings: MonitorSettings, catalog: Catalog
) -> None:
    both = (info(Q, waiting=3), info(OTHER, waiting=1))
    await store.save_incident_ack("no_worker", Q, "ack", actor="otto", reason="deploying workers")
    await store.save_incident_ack(
        "no_worker", OTHER, "snooze", actor="otto", reason=None, until=utcnow() + timedelta(minutes=30)
    )
    found = {i["queue"]: i for i in await rules.with_acks(store, await incidents(store, settings, catalog, *both))}
    assert found[Q]["acknowledged"]["by"] == "otto" and found[Q]["acknowledged"]["reason"] == "deploying workers"
    assert found[Q]["snoozed_until"] is None
    assert found[OTHER]["acknowledged"] is None and found[OTHER]["snoozed_until"]
    # the incident on Q clears: its acknowledgement goes, so when it comes back it is news again
    await rules.with_acks(store, await incidents(store, settings, catalog, info(Q), info(OTHER, waiting=1)))
    again = {i["queue"]: i for i in await rules.with_acks(store, await incidents(store, settings, catalog, *both))}
    assert again[Q]["acknowledged"] is None and again[OTHER]["snoozed_until"]


async def test_a_snooze_ends_at_its_time(store: Store, settings: MonitorSettings, catalog: Catalog) -> None:
    await store.save_incident_ack(
        "no_worker", Q, "snooze", actor="otto", reason=None, until=utcnow() - timedelta(seconds=1)
    )
    [i] = await rules.with_acks(store, await incidents(store, settings, catalog, info(Q, waiting=3)))
    assert i["snoozed_until"] is None and i["acknowledged"] is None
