"""Minute and hourly rollups, the windows read from them, and the finished totals the sampler stores.

On SQLite and PostgreSQL: what the overview reports over a day must be what
the minute rows add up to, whichever rows the read takes; the hourly table
built by migration 0004 from existing minute rows must match them too.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from nats.aio.client import Client as NatsClient
from sqlalchemy import select
from sqlalchemy.engine import Connection

from jetqueue.catalog import Catalog
from jetqueue_monitor import queries
from jetqueue_monitor.clock import utcnow
from jetqueue_monitor.db.engine import _alembic_config, make_engine, migrate
from jetqueue_monitor.db.models import JobStat, JobStatHourly, QueueSample
from jetqueue_monitor.rollups import Stats
from jetqueue_monitor.sampler import Sampler
from jetqueue_monitor.store import Store

QUEUES = ("email-send", "audit-log")


def finished(n: int, *, hours: float, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` finished attempts spread over the last ``hours`` hours, on two queues."""
    rnd = random.Random(seed)
    now = int(utcnow().timestamp() * 1000)
    out = []
    for i in range(n):
        kind = rnd.choices(["completed", "failed", "retrying"], [8, 1, 1])[0]
        out.append(
            {
                "type": kind,
                "job_id": f"r{i}",
                "queue": QUEUES[i % 2],
                "name": "x",
                "attempt": 1,
                "attempts": 3,
                "worker": "w1",
                "ts": now - rnd.randint(0, int(hours * 3600_000)),
                "duration_ms": rnd.choice([3, 40, 700, 4000, 65000]),
                "error": None if kind == "completed" else "boom",
            }
        )
    return out


async def minute_sums(store: Store, since: datetime) -> dict[str, Stats]:
    """The reference: every minute row since ``since``, summed the plain way (not with ``Stats.add``)."""
    out: dict[str, Stats] = {}
    async with store.sessions() as s:
        for row in (await s.execute(select(JobStat).where(JobStat.minute >= since))).scalars():
            d = out.setdefault(row.queue, Stats())
            d.completed += row.completed
            d.failed += row.failed
            d.retried += row.retried
            d.duration_sum_ms += row.duration_sum_ms
            d.duration_count += row.duration_count
            d.hist = dict(Counter(d.hist) + Counter(row.hist))
    return out


def _comparable(stats: dict[str, Stats]) -> dict[str, dict[str, Any]]:
    return {q: {"completed": d.completed, "failed": d.failed, "retried": d.retried, "sum": d.duration_sum_ms,
                "count": d.duration_count, "hist": dict(d.hist)} for q, d in stats.items()}  # fmt: skip


@pytest.mark.parametrize("window", [timedelta(minutes=15), timedelta(hours=1), timedelta(hours=5, minutes=17),
                                    timedelta(hours=24)])  # fmt: skip
async def test_windows_read_from_both_rollups_equal_the_minute_rows(store: Store, window: timedelta) -> None:
    records = finished(3000, hours=30)
    for i in range(0, len(records), 250):  # in batches, as ingest applies them
        await store.apply_records(records[i : i + 250])
    since = utcnow() - window
    got = await queries.stats_since(store, since)
    want = await minute_sums(store, since)
    assert want, "the records should fall in every window"
    assert _comparable(got) == _comparable(want)
    one = await queries.stats_since(store, since, "audit-log")
    assert _comparable(one) == {"audit-log": _comparable(want)["audit-log"]}


async def test_hourly_rows_are_the_sum_of_their_minutes(store: Store) -> None:
    await store.apply_records(finished(1500, hours=6, seed=3))
    async with store.sessions() as s:
        minutes = (await s.execute(select(JobStat))).scalars().all()
        hours = {(h.queue, h.hour.replace(tzinfo=UTC)): h for h in (await s.execute(select(JobStatHourly))).scalars()}
    want: dict[tuple[str, datetime], Counter[str]] = {}
    for m in minutes:
        key = (m.queue, m.minute.replace(tzinfo=UTC).replace(minute=0))
        c = want.setdefault(key, Counter())
        c.update({"completed": m.completed, "failed": m.failed, "retried": m.retried, "sum": m.duration_sum_ms})
    assert set(hours) == set(want)
    for key, c in want.items():
        h = hours[key]
        assert (h.completed, h.failed, h.retried, h.duration_sum_ms) == (
            c["completed"], c["failed"], c["retried"], c["sum"]
        )  # fmt: skip


async def test_migration_0004_builds_the_hourly_rows_from_existing_minutes(database_url: str, catalog: Catalog) -> None:
    engine = make_engine(database_url)
    try:

        def to(rev: str) -> Any:
            def run(conn: Connection) -> None:
                command.upgrade(_alembic_config(conn), rev)

            return run

        async with engine.begin() as conn:
            await conn.run_sync(to("0003"))
        old = Store(engine, catalog)
        # ingest as the code before 0004 did: minute rows only (the hourly table does not exist yet)
        records = finished(800, hours=10, seed=11)
        async with engine.begin() as conn:
            rows = _minute_rows(records)
            await conn.execute(JobStat.__table__.insert(), rows)
        await migrate(engine)
        since = utcnow() - timedelta(hours=24)
        got = await queries.stats_since(old, since)
        want = await minute_sums(old, since)
        assert want and _comparable(got) == _comparable(want)
    finally:
        await engine.dispose()


def _minute_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    acc: dict[tuple[str, datetime], dict[str, Any]] = {}
    for r in records:
        ts = r["ts"]
        minute = datetime.fromtimestamp((ts - ts % 60_000) / 1000, UTC)
        d = acc.setdefault((r["queue"], minute), {"queue": r["queue"], "minute": minute, "completed": 0, "failed": 0,
                                                  "retried": 0, "duration_sum_ms": 0, "duration_count": 0,
                                                  "hist": {}, "last_finished_at": None})  # fmt: skip
        key = {"completed": "completed", "failed": "failed", "retrying": "retried"}[r["type"]]
        d[key] += 1
        if r["type"] == "completed":
            d["duration_sum_ms"] += r["duration_ms"]
            d["duration_count"] += 1
            d["hist"]["3"] = d["hist"].get("3", 0) + 1
    return list(acc.values())


async def test_samples_carry_finished_totals_that_survive_a_restart(
    nc: NatsClient, store: Store, catalog: Catalog
) -> None:
    records = finished(400, hours=3, seed=5)
    want = Counter(r["queue"] for r in records if r["type"] == "completed")
    await store.load_finished_totals()
    await store.apply_records(records)
    sampler = Sampler(nc.jetstream(), catalog, store, interval_s=60)
    await sampler.sample_once()
    assert await _latest_totals(store) == dict(want)
    # a monitor started on the same database counts on from what the rollups hold
    again = Store(store.engine, catalog)
    await again.load_finished_totals()
    await again.apply_records(finished(10, hours=0.1, seed=99))
    more = Counter(r["queue"] for r in finished(10, hours=0.1, seed=99) if r["type"] == "completed")
    assert {q: t["completed"] for q, t in again.finished_totals.items()} == dict(want + more)


async def _latest_totals(store: Store) -> dict[str, int]:
    async with store.sessions() as s:
        rows = (await s.execute(select(QueueSample).order_by(QueueSample.ts))).scalars().all()
    return {r.queue: r.completed_total for r in rows if r.completed_total}


# ---------------------------------------------------------------- job search
def _search_jobs() -> list[dict[str, Any]]:
    """Jobs whose ids and errors overlap on purpose; many share a creation time (cursor ties)."""
    rnd = random.Random(21)
    t0 = int(utcnow().timestamp() * 1000) - 3600_000
    errors = [None, None, "TimeoutError: mailbox timed out", "ValueError: 50%_off is not a code", "boom"]
    out = []
    for i in range(240):
        prefix = rnd.choice(["inv-", "timeout-", "ord_", "50%"])
        job_id = f"{prefix}{i:04d}"
        error = rnd.choice(errors)
        created = t0 + (i // 4) * 1000  # four jobs per second
        kind = "failed" if error else "completed"
        base = {"job_id": job_id, "queue": QUEUES[i % 2], "name": "x", "attempts": 1, "worker": "w1"}
        out.append({**base, "type": "started", "attempt": 1, "ts": created + 10, "enqueued_at": created})
        out.append({**base, "type": kind, "attempt": 1, "ts": created + 20, "duration_ms": 10, "error": error})
    return out


@pytest.mark.parametrize("q", ["inv-", "timeout", "50%", "ord_", "_", "TIMEOUT", "inv-01", "mailbox"])
async def test_search_pages_through_exactly_the_matching_jobs(store: Store, q: str) -> None:
    from jetqueue_monitor.queries import JobFilter

    records = _search_jobs()
    await store.apply_records(records)
    jobs = {r["job_id"]: r for r in records if r["type"] != "started"}
    created = {r["job_id"]: r["enqueued_at"] for r in records if r["type"] == "started"}
    want = sorted(
        (j for j, r in jobs.items() if j.startswith(q) or (r["error"] and q.lower() in r["error"].lower())),
        key=lambda j: (created[j], j),
        reverse=True,
    )
    got: list[str] = []
    cursor = None
    for _ in range(100):
        page = await queries.list_jobs(store, JobFilter(q=q), cursor, 7, payloads=False)
        got += [j["job_id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert want, "the fixture should give every query some matches"
    assert got == want
    # with another filter on top: only that queue's matches
    page = await queries.list_jobs(store, JobFilter(q=q, queue=QUEUES[0]), None, 500, payloads=False)
    assert [j["job_id"] for j in page["items"]] == [j for j in want if jobs[j]["queue"] == QUEUES[0]]
