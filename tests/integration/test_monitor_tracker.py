"""Every job from the moment it is accepted: waiting and delayed jobs in the monitor before a worker takes them.

Real nats-server, the real monitor app (its tracker, ingest and sampler), SQLite and PostgreSQL stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient

from jetqueue.catalog import Backoff, Catalog
from jetqueue.client import JobClient
from jetqueue.control import Controller
from jetqueue.processors import JobContext, ProcessorRegistry
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_worker.runtime import Worker
from tests.conftest import eventually
from tests.integration.tokens import OPERATOR, TOKENS, VIEWER

Q = "email-send"
API = "/admin/worker-monitor"


def _settings(common: CommonSettings, database_url: str) -> MonitorSettings:
    return MonitorSettings(
        common=common,
        database_url=database_url,
        tokens=TOKENS,
        sample_interval_s=0.3,
        track_check_interval_s=0.3,
        reconcile_every_s=0.5,
    )


@pytest.fixture
def app(common: CommonSettings, catalog: Catalog, database_url: str) -> Litestar:
    return create_app(_settings(common, database_url), catalog=catalog)


@pytest.fixture
async def monitor(app: Litestar, nc: NatsClient) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=app) as http:
        yield http


async def _jobs(http: AsyncTestClient[Any], query: str, headers: dict[str, str] = VIEWER) -> list[dict[str, Any]]:
    r = await http.get(f"{API}/jobs?{query}", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _worker(nc: NatsClient, catalog: Catalog, *, fail: bool = False) -> Worker:
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> dict[str, Any]:
        if fail:
            raise RuntimeError("upstream refused")
        return {"sent": True}

    reg.register(Q, proc)
    return Worker(nc, catalog, Q, reg, worker_id="w-track", heartbeat_s=0.5, idle_wait_s=0.3)


async def test_waiting_and_delayed_jobs_are_listed_searchable_and_filterable(
    monitor: AsyncTestClient[Any], client: JobClient
) -> None:
    urgent = await client.enqueue(Q, "urgent", {"to": "a"}, priority=1, user_id="u-1")
    normal = await client.enqueue(Q, "normal", {"to": "b"}, user_id="u-2")
    low = await client.enqueue(Q, "low", {"to": "c"}, priority=5)
    later = await client.enqueue(Q, "reminder", {"to": "d"}, delay_ms=3_600_000, user_id="u-1")

    async def listed() -> list[dict[str, Any]] | None:
        rows = await _jobs(monitor, f"queue={Q}&status=waiting")
        return rows if len(rows) == 3 else None

    waiting = await eventually(listed, timeout=10, what="waiting jobs listed")
    assert {j["job_id"]: j["level"] for j in waiting} == {urgent.job_id: 0, normal.job_id: 1, low.job_id: 2}
    assert all(j["created_at"] and j["started_at"] is None for j in waiting)
    # the Waiting KPI and the list agree
    ov = (await monitor.get(f"{API}/overview", headers=VIEWER)).json()
    assert ov["waiting"] == 3 and ov["delayed"] == 1
    # filter by priority level, by user; search by id prefix
    assert [j["job_id"] for j in await _jobs(monitor, "status=waiting&level=0")] == [urgent.job_id]
    assert {j["job_id"] for j in await _jobs(monitor, "user_id=u-1")} == {urgent.job_id, later.job_id}
    [delayed] = await _jobs(monitor, "status=scheduled")
    assert delayed["job_id"] == later.job_id and delayed["name"] == "reminder"
    run_at = datetime.fromisoformat(delayed["run_at"])
    assert abs((run_at - datetime.now(UTC)).total_seconds() - 3600) < 60
    assert [j["job_id"] for j in await _jobs(monitor, f"q={later.job_id[:20]}")] == [later.job_id]
    # its drawer: created and due times, its data (for an operator), a summary that says when it runs
    d = (await monitor.get(f"{API}/jobs/{later.job_id}", headers=OPERATOR)).json()
    assert d["created_at"] and d["run_at"] == delayed["run_at"] and d["data"] == {"to": "d"}
    assert "scheduled to run at" in d["summary"]["en"] and "예약" in d["summary"]["ko"]
    w = (await monitor.get(f"{API}/jobs/{urgent.job_id}", headers=VIEWER)).json()
    assert "waiting for a worker (priority level 0)" in w["summary"]["en"]


async def test_a_workers_records_fold_into_the_row_the_enqueue_made(
    monitor: AsyncTestClient[Any], client: JobClient, nc: NatsClient, catalog: Catalog
) -> None:
    job = await client.enqueue(Q, "welcome", {"to": "x"}, user_id="u-9")

    async def waiting() -> list[dict[str, Any]] | None:
        return await _jobs(monitor, f"q={job.job_id}&status=waiting") or None

    [before] = await eventually(waiting, timeout=10, what="the job waits")
    w = _worker(nc, catalog)
    await w.start()
    try:

        async def completed() -> list[dict[str, Any]] | None:
            return await _jobs(monitor, f"q={job.job_id}&status=completed") or None

        [after] = await eventually(completed, timeout=15, what="the job completed")
    finally:
        await w.stop(grace_s=1)
    rows = await _jobs(monitor, f"q={job.job_id}")
    assert len(rows) == 1  # one row for the job's whole life
    assert after["created_at"] == before["created_at"] and after["user_id"] == "u-9" and after["level"] == 1
    assert after["attempts_made"] == 1 and after["started_at"] and after["finished_at"]


async def test_a_retry_waiting_for_its_backoff_is_scheduled_with_its_time(
    monitor: AsyncTestClient[Any], client: JobClient, nc: NatsClient, catalog: Catalog
) -> None:
    job = await client.enqueue(Q, "flaky", {}, attempts=3, backoff=Backoff(type="fixed", delay_ms=600_000))
    w = _worker(nc, catalog, fail=True)
    await w.start()
    try:

        async def retry_wait() -> list[dict[str, Any]] | None:
            rows = await _jobs(monitor, f"q={job.job_id}&status=scheduled")
            return rows if rows and rows[0]["run_at"] else None

        [row] = await eventually(retry_wait, timeout=15, what="the retry wait listed with its time")
    finally:
        await w.stop(grace_s=1)
    assert row["attempts_made"] == 1 and "upstream refused" in row["error"]
    assert abs((datetime.fromisoformat(row["run_at"]) - datetime.now(UTC)).total_seconds() - 600) < 60


async def test_jobs_enqueued_while_the_monitor_was_down_are_reconciled_at_start(
    app: Litestar, client: JobClient, nc: NatsClient
) -> None:
    waiting = await client.enqueue(Q, "missed", {})
    delayed = await client.enqueue(Q, "missed-later", {}, delay_ms=600_000)
    async with AsyncTestClient(app=app) as http:

        async def both() -> dict[str, str] | None:
            rows = {j["job_id"]: j["status"] for j in await _jobs(http, f"queue={Q}")}
            return rows if len(rows) == 2 else None

        rows = await eventually(both, timeout=10, what="missed jobs reconciled")
    assert rows == {waiting.job_id: "waiting", delayed.job_id: "scheduled"}


async def test_changes_made_elsewhere_are_reconciled(
    monitor: AsyncTestClient[Any], client: JobClient, nc: NatsClient, catalog: Catalog
) -> None:
    """A drain from the CLI, a cancel through the SDK, a delay whose time came: nothing the monitor is told."""
    drained = [(await client.enqueue(Q, "drain-me", {})).job_id for _ in range(3)]
    cancelled = (await client.enqueue(Q, "cancel-me", {}, delay_ms=600_000)).job_id
    due = (await client.enqueue(Q, "due-soon", {}, delay_ms=5000)).job_id  # fires after the drain

    async def all_listed() -> bool:
        return len(await _jobs(monitor, f"queue={Q}")) == 5

    await eventually(all_listed, timeout=10, what="jobs listed")
    await Controller(nc, catalog, source="cli").drain(Q, actor="cli:test")
    await client.cancel(cancelled)

    async def settled() -> dict[str, str] | None:
        rows = {j["job_id"]: j["status"] for j in await _jobs(monitor, f"queue={Q}")}
        ok = not set(drained) & set(rows) and rows.get(cancelled) == "cancelled" and rows.get(due) == "waiting"
        return rows if ok else None

    rows = await eventually(settled, timeout=20, what="drain, cancel and due delay reconciled")
    assert rows == {cancelled: "cancelled", due: "waiting"}


async def test_jobs_a_cron_schedule_fires_are_listed(monitor: AsyncTestClient[Any], client: JobClient) -> None:
    """The broker fires them (no publish a subscriber sees): the store's count falls behind, a reconcile finds them."""
    await client.schedule(Q, "tick", "@every 1s", data={"n": 1})
    try:

        async def fired() -> list[dict[str, Any]] | None:
            rows = await _jobs(monitor, "q=cron-tick-&status=waiting")
            return rows if len(rows) >= 2 else None

        rows = await eventually(fired, timeout=20, what="fired jobs listed")
    finally:
        await client.unschedule(Q, "tick")
    assert all(r["name"] == "tick" and r["queue"] == Q and r["job_id"].split("-")[-1].isdigit() for r in rows)
    d = (await monitor.get(f"{API}/jobs/{rows[0]['job_id']}", headers=OPERATOR)).json()
    assert d["data"] == {"n": 1}


async def test_a_message_the_store_cannot_hold_does_not_stop_the_others(
    monitor: AsyncTestClient[Any], client: JobClient, nc: NatsClient
) -> None:
    """Anyone may publish onto a job subject: a NUL in the data, an id past the column, no name at all."""
    js = nc.jetstream()
    await js.publish(f"jq.{Q}.job.p1.nul-data", b'{"v": 1, "name": "x", "data": {"s": "a\\u0000b"}}')
    await js.publish(f"jq.{Q}.job.p1.{'x' * 200}", b'{"v": 1, "name": "too-long-id"}')
    await js.publish(f"jq.{Q}.job.p1.no-name", b'{"v": 1, "data": {}}')
    fine = await client.enqueue(Q, "fine", {"ok": True})

    async def listed() -> dict[str, dict[str, Any]] | None:
        rows = {j["job_id"]: j for j in await _jobs(monitor, f"queue={Q}", OPERATOR)}
        return rows if fine.job_id in rows and "nul-data" in rows else None

    rows = await eventually(listed, timeout=10, what="the good jobs listed")
    assert set(rows) == {fine.job_id, "nul-data"}
    assert rows["nul-data"]["data"] == {"_omitted": "the data holds a NUL character"}
