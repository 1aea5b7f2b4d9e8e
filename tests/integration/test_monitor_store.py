"""The monitor store on SQLite and PostgreSQL: idempotent ingest of lifecycle records."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from jetqueue.catalog import load_catalog
from jetqueue.events import Heartbeat
from jetqueue_monitor.db.engine import make_engine, migrate
from jetqueue_monitor.db.models import AuditLog, Job, JobAttempt, JobStat, WorkerHeartbeat
from jetqueue_monitor.store import Store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    engine = make_engine(database_url)
    await migrate(engine)
    await migrate(engine)  # idempotent
    yield Store(engine, load_catalog())
    await engine.dispose()


def rec(type_: str, ts: int, attempt: int = 1, job: str = "j1", **kw: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "job_id": job,
        "queue": "email-send",
        "name": "welcome",
        "attempt": attempt,
        "attempts": 3,
        "worker": "w1",
        "ts": ts,
        **kw,
    }


LIFE = [
    rec("started", 1000, data={"to": "x"}, user_id="u1", enqueued_at=900),
    rec("progress", 1100, progress=50),
    rec("retrying", 1200, duration_ms=200, error="RuntimeError: boom"),
    rec("started", 2000, attempt=2),
    rec("completed", 2300, attempt=2, duration_ms=300, result={"ok": True}),
]


async def _job(store: Store, job_id: str = "j1") -> Job:
    async with store.sessions() as s:
        return (await s.execute(select(Job).where(Job.job_id == job_id))).scalar_one()


async def _attempts(store: Store, job_id: str = "j1") -> list[tuple[int, str, str | None]]:
    async with store.sessions() as s:
        rows = (
            (await s.execute(select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.attempt)))
            .scalars()
            .all()
        )
        return [(r.attempt, r.status, r.error) for r in rows]


async def test_lifecycle_folds_into_job_and_attempts(store: Store) -> None:
    await store.apply_records(LIFE)
    job = await _job(store)
    assert (job.status, job.attempts_made, job.max_attempts, job.result, job.progress) == (
        "completed",
        2,
        3,
        {"ok": True},
        100.0,
    )
    assert job.data == {"to": "x"} and job.user_id == "u1" and job.error is None
    assert job.finished_at is not None and job.expires_at is not None
    assert await _attempts(store) == [(1, "failed", "RuntimeError: boom"), (2, "completed", None)]


async def test_duplicate_delivery_changes_nothing(store: Store) -> None:
    await store.apply_events([(1, LIFE[:3]), (2, LIFE[3:])])
    before = await _job(store)
    assert await store.apply_events([(1, LIFE[:3]), (2, LIFE[3:])]) == 0  # the same messages again
    await store.apply_records(LIFE[:2])  # old records, late
    after = await _job(store)
    assert (after.status, after.attempts_made, after.last_event_ms, after.stalls) == (
        before.status,
        before.attempts_made,
        before.last_event_ms,
        before.stalls,
    )
    assert await _attempts(store) == [(1, "failed", "RuntimeError: boom"), (2, "completed", None)]
    async with store.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(JobAttempt))).scalar_one() == 2
        stat = (await s.execute(select(JobStat))).scalar_one()
    assert (stat.completed, stat.retried, stat.failed, stat.duration_count) == (1, 1, 0, 1)


async def test_records_split_across_batches_in_any_order(store: Store) -> None:
    await store.apply_records(LIFE[3:])
    await store.apply_records(LIFE[:3])
    job = await _job(store)
    assert job.status == "completed" and job.attempts_made == 2
    assert await _attempts(store) == [(1, "failed", "RuntimeError: boom"), (2, "completed", None)]


async def test_failed_and_stalled(store: Store) -> None:
    await store.apply_records(
        [
            rec("started", 10, job="j2"),
            rec("stalled", 20, job="j2", error="redelivered"),
            rec("failed", 30, job="j2", error="ValueError: x", error_type="ValueError"),
        ]
    )
    await store.apply_records([rec("stalled", 20, job="j2", error="redelivered")])
    job = await _job(store, "j2")
    assert (job.status, job.error_type, job.stalls) == ("failed", "ValueError", 1)


async def test_heartbeat_upsert_keeps_newest(store: Store) -> None:
    hb = Heartbeat(
        worker_id="w1",
        queue="email-send",
        hostname="h",
        pid=1,
        version="0.1",
        started_at=1000,
        active_jobs=2,
        processed_jobs=10,
        failed_jobs=1,
        concurrency=20,
        ts=5000,
    )
    await store.upsert_heartbeat(hb)
    hb.ts, hb.processed_jobs = 4000, 5  # an older beat arriving late
    await store.upsert_heartbeat(hb)
    async with store.sessions() as s:
        row = (await s.execute(select(WorkerHeartbeat))).scalar_one()
    assert row.processed_jobs == 10 and row.status == "ONLINE"


async def test_audit_ingest_is_idempotent_by_sequence(store: Store) -> None:
    r = {
        "actor": "alice",
        "action": "QUEUE_PAUSE",
        "entity_type": "QUEUE",
        "entity_id": "email-send",
        "ok": True,
        "ts": 1000,
    }
    await store.insert_audit(r, source_seq=7)
    await store.insert_audit(r, source_seq=7)
    async with store.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(AuditLog))).scalar_one() == 1


# ---------------------------------------------------------------- a worker killed mid-job
async def _runs(store: Store, job_id: str) -> list[tuple[int, int, str, str | None, str | None]]:
    """(attempt, delivery, status, worker, error type) of each run of a job."""
    async with store.sessions() as s:
        rows = (
            await s.execute(
                select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.attempt, JobAttempt.delivery)
            )
        ).scalars()
        return [(r.attempt, r.delivery, r.status, r.worker_id, r.error_type) for r in rows]


def killed(job: str, *, with_start: bool = True) -> list[dict[str, Any]]:
    """Worker w-dead is SIGKILLed running attempt 1; after ack_wait the broker hands it to w2 (delivery 2)."""
    what = {"data": {"to": "x"}, "user_id": "u1", "enqueued_at": 900}
    dead = [rec("started", 1000, job=job, worker="w-dead", delivery=1, **what)] if with_start else []
    return [
        *dead,
        rec("stalled", 31_000, job=job, worker="w2", delivery=2, error="redelivered (delivery 2)", **what),
        rec("started", 31_001, job=job, worker="w2", delivery=2),
        rec("completed", 31_500, job=job, worker="w2", delivery=2, duration_ms=499, result={"ok": True}),
    ]


@pytest.mark.parametrize("dead_last", [False, True])
async def test_the_killed_delivery_stays_as_a_stalled_attempt(store: Store, dead_last: bool) -> None:
    records = killed("k1")
    if dead_last:  # the dead worker's last batch reaches the monitor after the rerun's
        await store.apply_records(records[1:])
        await store.apply_records(records[:1])
    else:
        await store.apply_records(records)
    await store.apply_records(records)  # and everything once more: nothing changes
    assert await _runs(store, "k1") == [(1, 1, "stalled", "w-dead", "Stalled"), (1, 2, "completed", "w2", None)]
    job = await _job(store, "k1")
    assert (job.status, job.attempts_made, job.stalls, job.worker_id) == ("completed", 1, 1, "w2")


async def test_a_stalled_record_fills_in_what_the_lost_start_carried(store: Store) -> None:
    await store.apply_records(killed("k2", with_start=False))
    assert await _runs(store, "k2") == [(1, 1, "stalled", None, "Stalled"), (1, 2, "completed", "w2", None)]
    job = await _job(store, "k2")
    assert (job.data, job.user_id, job.enqueued_at is not None) == ({"to": "x"}, "u1", True)
    assert job.enqueued_at.timestamp() == 0.9  # type: ignore[union-attr]


async def test_a_stall_never_overwrites_an_outcome(store: Store) -> None:
    # the first worker lost its lease (a long GC pause) yet finished: both runs happened
    await store.apply_records(
        [
            rec("started", 1000, job="k3", worker="w-slow", delivery=1),
            rec("completed", 40_000, job="k3", worker="w-slow", delivery=1, duration_ms=39_000),
        ]
    )
    await store.apply_records(killed("k3", with_start=False)[:2])  # its stalled record arrives later
    assert await _runs(store, "k3") == [(1, 1, "completed", "w-slow", None), (1, 2, "active", "w2", None)]


def _beat(worker_id: str, ts: int) -> Heartbeat:
    return Heartbeat(
        worker_id=worker_id,
        queue="email-send",
        hostname="h",
        pid=1,
        version="0.1",
        started_at=ts - 60_000,
        active_jobs=1,
        processed_jobs=0,
        failed_jobs=0,
        concurrency=4,
        ts=ts,
    )


async def test_an_offline_worker_s_unfinished_attempts_are_stalled(store: Store) -> None:
    now = int(time.time() * 1000)
    await store.upsert_heartbeat(_beat("w-gone", now - 60_000))  # silent for a minute
    await store.upsert_heartbeat(_beat("w-live", now))
    await store.apply_records(
        [
            rec("started", now - 70_000, job="done", worker="w-gone"),
            rec("completed", now - 69_000, job="done", worker="w-gone", duration_ms=1000),
            rec("started", now - 65_000, job="hung", worker="w-gone"),
            rec("started", now - 1000, job="busy", worker="w-live"),
        ]
    )
    await store.refresh_worker_statuses(offline_after_s=30, degraded_ratio=0.3)
    assert await _runs(store, "hung") == [(1, 1, "stalled", "w-gone", "Stalled")]
    assert await _runs(store, "done") == [(1, 1, "completed", "w-gone", None)]
    assert await _runs(store, "busy") == [(1, 1, "active", "w-live", None)]
    async with store.sessions() as s:
        hung = (await s.execute(select(JobAttempt).where(JobAttempt.job_id == "hung"))).scalar_one()
    assert hung.finished_at is not None and hung.error == "the worker went offline while running it"
    # the job itself runs again once the broker redelivers it; its row still says active
    assert (await _job(store, "hung")).status == "active"


async def test_a_completed_record_standing_for_its_start(store: Store) -> None:
    """A job shorter than the worker's batch interval sends one record: ``completed`` with ``started_ts``."""
    await store.apply_records(
        [
            rec(
                "completed",
                5300,
                job="f1",
                started_ts=5000,
                duration_ms=300,
                data={"to": "y"},
                user_id="u9",
                enqueued_at=4900,
            )
        ]
    )
    job = await _job(store, "f1")
    assert (job.status, job.data, job.user_id, job.attempts_made) == ("completed", {"to": "y"}, "u9", 1)
    assert job.started_at is not None and job.started_at.timestamp() == 5.0
    assert job.enqueued_at is not None and job.enqueued_at.timestamp() == 4.9
    async with store.sessions() as s:
        row = (await s.execute(select(JobAttempt).where(JobAttempt.job_id == "f1"))).scalar_one()
    assert row.status == "completed" and row.started_at is not None and row.started_at.timestamp() == 5.0
