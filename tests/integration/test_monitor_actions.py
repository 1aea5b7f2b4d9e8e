"""Actions on waiting and delayed jobs, bulk actions, incident acknowledgements and the audit view's filters.

Real nats-server, the real monitor app, SQLite and PostgreSQL stores.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient

from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.control import queue_info
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app
from jetqueue_monitor.db.engine import make_engine
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_monitor.store import Store
from tests.conftest import eventually
from tests.integration.test_monitor_roles import dead_letter
from tests.integration.tokens import ADMIN, OPERATOR, TOKENS, VIEWER

Q = "email-send"
API = "/admin/worker-monitor"


@pytest.fixture
async def monitor(
    common: CommonSettings, catalog: Catalog, database_url: str, nc: NatsClient
) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = MonitorSettings(
        common=common,
        database_url=database_url,
        tokens=TOKENS,
        sample_interval_s=0.3,
        track_check_interval_s=0.3,
        reconcile_every_s=0.5,
        bulk_rate_per_s=20,
    )
    async with AsyncTestClient(app=create_app(settings, catalog=catalog)) as http:
        yield http


@pytest.fixture
async def records(monitor: AsyncTestClient[Any], database_url: str, catalog: Catalog) -> AsyncIterator[Store]:
    """The monitor's database from the test's own event loop (the app runs in another): to add records."""
    engine = make_engine(database_url)
    yield Store(engine, catalog)
    await engine.dispose()


async def _get(http: AsyncTestClient[Any], path: str, headers: dict[str, str] = VIEWER) -> Any:
    r = await http.get(API + path, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def _statuses(http: AsyncTestClient[Any], query: str = f"queue={Q}") -> dict[str, str]:
    return {j["job_id"]: j["status"] for j in (await _get(http, f"/jobs?{query}&limit=500"))["items"]}


async def _listed(http: AsyncTestClient[Any], ids: list[str]) -> dict[str, str]:
    async def all_in() -> dict[str, str] | None:
        rows = await _statuses(http)
        return rows if set(ids) <= set(rows) else None

    return await eventually(all_in, timeout=10, what="jobs listed")


async def _audit(http: AsyncTestClient[Any], query: str, n: int = 1) -> list[dict[str, Any]]:
    """The audit records a query finds, once there are ``n`` (they arrive through the events stream)."""

    async def rows() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await _get(http, f"/audit?{query}"))["items"]
        return items if len(items) >= n else None

    return await eventually(rows, timeout=10, what=f"audit {query}")


async def test_run_now_cancel_and_delete_a_waiting_or_delayed_job(
    monitor: AsyncTestClient[Any], client: JobClient, nc: NatsClient, catalog: Catalog
) -> None:
    later = (await client.enqueue(Q, "later", {}, delay_ms=3_600_000)).job_id
    doomed = (await client.enqueue(Q, "doomed", {}, delay_ms=3_600_000)).job_id
    waiting = (await client.enqueue(Q, "waiting", {})).job_id
    await _listed(monitor, [later, doomed, waiting])
    # run now: it waits on its level at once, the list says so without waiting for a reconcile
    r = await monitor.post(f"{API}/jobs/{later}/promote", json={"reason": "customer asked"}, headers=OPERATOR)
    assert r.status_code == 200 and r.json()["state"] == "waiting", r.text
    assert (await _statuses(monitor))[later] == "waiting"
    spec = catalog.get(Q)
    info = await queue_info(nc.jetstream(), spec)
    assert (info.waiting, info.scheduled) == (2, 1)
    r = await monitor.post(f"{API}/jobs/{later}/promote", json={}, headers=OPERATOR)
    assert r.status_code == 409  # not delayed any more
    # cancel a waiting one: cancelled, not a ghost of "waiting"
    r = await monitor.post(f"{API}/jobs/{waiting}/cancel", json={"reason": "duplicate"}, headers=OPERATOR)
    assert r.status_code == 200 and (await _statuses(monitor))[waiting] == "cancelled"
    # delete is an admin's: the message goes, and so does the record
    r = await monitor.post(f"{API}/jobs/{doomed}/delete", json={}, headers=OPERATOR)
    assert r.status_code == 403
    r = await monitor.post(f"{API}/jobs/{doomed}/delete", json={"reason": "test data"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["removed"]["delayed"] == 1 and r.json()["records_removed"] == 1
    assert doomed not in await _statuses(monitor)
    assert (await queue_info(nc.jetstream(), spec)).scheduled == 0
    assert (await monitor.get(f"{API}/jobs/{doomed}", headers=VIEWER)).status_code == 404
    [promoted] = await _audit(monitor, f"action=JOB_PROMOTE&entity_id={later}&ok=true")
    assert promoted["actor"] == "otto" and promoted["reason"] == "customer asked" and promoted["queue"] == Q
    [deleted] = await _audit(monitor, f"action=JOB_DELETE&entity_id={doomed}&ok=true")
    assert deleted["actor"] == "ada" and deleted["ok"] and deleted["result"]["removed"]["delayed"] == 1


async def test_bulk_on_a_selection(
    monitor: AsyncTestClient[Any], records: Store, client: JobClient, nc: NatsClient, catalog: Catalog
) -> None:
    failed = [await dead_letter(nc, client, catalog, f"dead-{i}") for i in range(3)]
    waiting = (await client.enqueue(Q, "keep-waiting", {})).job_id
    await _listed(monitor, [waiting])
    # the dead letters became records through the tracker (waiting) only: tell the store they failed
    await records.apply_records(
        [
            {"type": "failed", "job_id": j, "queue": Q, "name": "x", "attempt": 1, "ts": int(time.time() * 1000)}
            for j in failed
        ]
    )
    # the selection holds a job a retry does not apply to: it is left out of the count
    body = {"job_ids": [*failed, waiting], "dry_run": True}
    r = await monitor.post(f"{API}/bulk/retry", json=body, headers=OPERATOR)
    assert r.status_code == 200 and r.json()["matched"] == 3, r.text
    r = await monitor.post(
        f"{API}/bulk/retry", json={"job_ids": [*failed, waiting], "reason": "smtp is back"}, headers=OPERATOR
    )
    assert r.status_code == 202 and r.json()["total"] == 3, r.text
    op_id = r.json()["id"]

    async def finished() -> dict[str, Any] | None:
        op = await _get(monitor, f"/bulk/{op_id}")
        return op if op["status"] == "done" else None

    op = await eventually(finished, timeout=10, what="bulk retry done")
    assert (op["done"], op["failed"]) == (3, 0)
    rows = await _statuses(monitor)
    assert [rows[j] for j in failed] == ["waiting"] * 3 and rows[waiting] == "waiting"
    assert (await queue_info(nc.jetstream(), catalog.get(Q))).dead_lettered == 0
    [audited] = await _audit(monitor, "action=BULK_RETRY&ok=true")
    assert audited["ok"] and audited["entity_type"] == "JOBS" and audited["entity_id"] == Q
    assert audited["params"]["matched"] == 3 and audited["result"]["done"] == 3 and audited["reason"] == "smtp is back"


async def test_bulk_on_a_filter_counts_first_and_is_throttled(
    monitor: AsyncTestClient[Any], client: JobClient, nc: NatsClient, catalog: Catalog
) -> None:
    ids = [(await client.enqueue(Q, "bulk-me", {"n": i}, delay_ms=3_600_000)).job_id for i in range(8)]
    other = (await client.enqueue(Q, "other-type", {}, delay_ms=3_600_000)).job_id
    await _listed(monitor, [*ids, other])
    flt = {"queue": Q, "name": "bulk-me"}
    # without the dry run's token a filter runs nothing
    r = await monitor.post(f"{API}/bulk/promote", json={"filter": flt}, headers=OPERATOR)
    assert r.status_code == 403 and "dry run" in r.json()["detail"]
    dry = (await monitor.post(f"{API}/bulk/promote", json={"filter": flt, "dry_run": True}, headers=OPERATOR)).json()
    assert dry["matched"] == 8 and dry["over_limit"] is False and dry["token"]
    # the token is bound to the filter: another one is refused
    r = await monitor.post(
        f"{API}/bulk/promote", json={"filter": {"queue": Q}, "token": dry["token"]}, headers=OPERATOR
    )
    assert r.status_code == 403
    # a job that starts matching after the count is not touched: the run takes at most what was counted
    await client.enqueue(Q, "bulk-me", {"n": "late"}, delay_ms=3_600_000)
    started = time.monotonic()
    r = await monitor.post(f"{API}/bulk/promote", json={"filter": flt, "token": dry["token"]}, headers=OPERATOR)
    assert r.status_code == 202 and r.json()["total"] == 8
    # one bulk action at a time
    again = await monitor.post(f"{API}/bulk/promote", json={"job_ids": [other]}, headers=OPERATOR)
    assert again.status_code == 409
    seen_progress = set()

    async def finished() -> dict[str, Any] | None:
        op = (await _get(monitor, "/bulk"))[0]
        seen_progress.add(op["done"])
        return op if op["status"] == "done" else None

    op = await eventually(finished, timeout=10, interval=0.05, what="bulk promote done")
    # 20 jobs a second in this test: 8 jobs take about 0.4 s, and progress shows on the way
    assert time.monotonic() - started >= 0.35 and len(seen_progress) > 1
    assert op["done"] == 8 and op["scope"]["filter"] == flt
    info = await queue_info(nc.jetstream(), catalog.get(Q))
    assert (info.waiting, info.scheduled) == (8, 2)
    [audited] = await _audit(monitor, "action=BULK_PROMOTE&ok=true")
    assert audited["params"] == {"filter": flt, "matched": 8} and audited["result"]["done"] == 8
    refused = await _audit(monitor, "action=BULK_PROMOTE&ok=false", n=2)
    assert len(refused) == 2 and all(a["entity_type"] == "JOBS" for a in refused)


async def test_an_operator_may_not_bulk_delete(monitor: AsyncTestClient[Any], client: JobClient) -> None:
    job = (await client.enqueue(Q, "x", {})).job_id
    await _listed(monitor, [job])
    r = await monitor.post(f"{API}/bulk/delete", json={"job_ids": [job]}, headers=OPERATOR)
    assert r.status_code == 403
    [refused] = await _audit(monitor, "action=BULK_DELETE&ok=false")
    assert refused["actor"] == "otto" and refused["entity_type"] == "JOBS"
    r = await monitor.post(f"{API}/bulk/delete", json={"job_ids": [job]}, headers=ADMIN)
    assert r.status_code == 202

    async def gone() -> bool:
        return job not in await _statuses(monitor)

    await eventually(gone, timeout=10, what="deleted in bulk")


async def test_acknowledge_and_snooze_an_incident(monitor: AsyncTestClient[Any], client: JobClient) -> None:
    await client.enqueue(Q, "nobody-runs-me", {})
    other = "report-generate"
    await client.enqueue(other, "nobody-runs-me-either", {})

    async def incidents() -> dict[str, dict[str, Any]] | None:
        found = {i["queue"]: i for i in (await _get(monitor, "/overview"))["incidents"] if i["type"] == "no_worker"}
        return found if {Q, other} <= set(found) else None

    await eventually(incidents, timeout=10, what="no_worker incidents")
    r = await monitor.post(
        f"{API}/incidents/ack", json={"type": "no_worker", "queue": Q, "reason": "on it"}, headers=OPERATOR
    )
    assert r.status_code == 200, r.text
    r = await monitor.post(
        f"{API}/incidents/snooze", json={"type": "no_worker", "queue": other, "minutes": 30}, headers=OPERATOR
    )
    assert r.status_code == 200, r.text
    found = await incidents()
    assert found is not None and found[Q]["acknowledged"]["by"] == "otto" and found[other]["snoozed_until"]
    # an incident that is not open cannot be acknowledged; a viewer cannot acknowledge anything
    r = await monitor.post(f"{API}/incidents/ack", json={"type": "stalled", "queue": Q}, headers=OPERATOR)
    assert r.status_code == 404
    r = await monitor.post(f"{API}/incidents/ack", json={"type": "no_worker", "queue": Q}, headers=VIEWER)
    assert r.status_code == 403
    [acked] = await _audit(monitor, "action=INCIDENT_ACK&ok=true")
    assert (acked["entity_type"], acked["entity_id"], acked["queue"]) == ("INCIDENT", f"{Q}/no_worker", Q)
    [snoozed] = await _audit(monitor, "action=INCIDENT_SNOOZE")
    assert snoozed["params"] == {"minutes": 30} and snoozed["queue"] == other
    [refused] = await _audit(monitor, "action=INCIDENT_ACK&ok=false")
    assert refused["actor"] == "vic"


async def test_the_audit_view_filters_by_queue_time_and_outcome(monitor: AsyncTestClient[Any]) -> None:
    r = await monitor.post(f"{API}/queues/{Q}/pause", json={"reason": "maintenance window"}, headers=OPERATOR)
    assert r.status_code == 200
    assert (await monitor.post(f"{API}/queues/{Q}/resume", json={}, headers=VIEWER)).status_code == 403
    assert (await monitor.post(f"{API}/queues/report-generate/pause", json={}, headers=OPERATOR)).status_code == 200

    async def three() -> list[dict[str, Any]] | None:
        got = (await _get(monitor, "/audit"))["items"]
        return got if len(got) == 3 else None

    every = await eventually(three, timeout=10, what="three audit records")
    rows = (await _get(monitor, f"/audit?queue={Q}"))["items"]
    assert {(a["action"], a["ok"]) for a in rows} == {("QUEUE_PAUSE", True), ("QUEUE_RESUME", False)}
    pause = next(a for a in rows if a["ok"])
    assert pause["reason"] == "maintenance window"  # the reason reaches the audit log
    refused = (await _get(monitor, "/audit?ok=false"))["items"]
    assert [a["actor"] for a in refused] == ["vic"]
    newest = every[0]["created_at"]
    assert (await _get(monitor, f"/audit?until={newest.replace('+00:00', 'Z')}"))["items"] == every[1:]
    assert len((await _get(monitor, f"/audit?since={newest.replace('+00:00', 'Z')}"))["items"]) == 1


async def test_the_queue_trend_over_a_day_and_a_week_comes_from_the_hourly_rollups(
    monitor: AsyncTestClient[Any], records: Store
) -> None:
    now = int(time.time() * 1000)
    store = records
    base = {"queue": Q, "name": "x", "attempt": 1, "duration_ms": 40}
    await store.apply_records(
        [
            {**base, "type": "completed", "job_id": "t-1", "ts": now - 3 * 3600_000},
            {**base, "type": "failed", "job_id": "t-2", "ts": now - 3 * 3600_000},
            {**base, "type": "completed", "job_id": "t-3", "ts": now - 3 * 86400_000},
        ]
    )
    day = await _get(monitor, f"/queues/{Q}?window=24h")
    assert day["window"] == "24h" and day["trend"] == []
    assert [(h["completed"], h["failed"]) for h in day["history"]] == [(1, 1)]
    week = await _get(monitor, f"/queues/{Q}?window=7d")
    assert [(h["completed"], h["failed"]) for h in week["history"]] == [(1, 0), (1, 1)]
    assert week["history"][0]["avg_duration_ms"] == 40.0
    assert (await monitor.get(f"{API}/queues/{Q}?window=1y", headers=VIEWER)).status_code == 400
