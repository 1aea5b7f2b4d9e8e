"""The monitor API end to end: real nats-server, a real worker, SQLite and PostgreSQL stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient

from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.processors import JobContext, ProcessorRegistry
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_worker.runtime import Worker
from tests.conftest import eventually
from tests.integration.tokens import ADMIN, OPERATOR, TOKENS, VIEWER

Q = "email-send"


@pytest.fixture
async def monitor(
    common: CommonSettings, catalog: Catalog, database_url: str, nc: NatsClient
) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = MonitorSettings(
        common=common,
        database_url=database_url,
        tokens=TOKENS,
        users="ada:admin:pw-ada,vic:viewer:pw-vic",
        secure_cookies=False,  # the test client speaks plain http: a Secure cookie would never come back
        sample_interval_s=0.5,
        offline_after_s=2,
        failure_spike_min=2,
    )
    app = create_app(settings, catalog=catalog)
    async with AsyncTestClient(app=app) as http:
        yield http


@pytest.fixture
async def worker(nc: NatsClient, catalog: Catalog) -> AsyncIterator[Worker]:
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> dict[str, Any]:
        if ctx.data.get("fail"):
            raise RuntimeError("smtp refused: mailbox full")
        await ctx.progress(50)
        return {"sent": True}

    reg.register(Q, proc)
    w = Worker(nc, catalog, Q, reg, worker_id="w-test", heartbeat_s=0.5, idle_wait_s=0.3)
    await w.start()
    yield w
    await w.stop(grace_s=1)


async def _get(http: AsyncTestClient[Any], path: str, headers: dict[str, str] = VIEWER) -> Any:
    r = await http.get(path, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_jobs_flow_into_the_store_and_the_api(
    monitor: AsyncTestClient[Any], worker: Worker, client: JobClient
) -> None:
    ok = await client.enqueue(Q, "welcome", {"to": "a"}, user_id="u1")
    bad = await client.enqueue(Q, "welcome", {"fail": True}, attempts=2, user_id="u2")

    async def both_final() -> Any:
        body = await _get(monitor, "/admin/worker-monitor/jobs?queue=email-send")
        states = {j["job_id"]: j["status"] for j in body["items"]}
        return body if states.get(ok.job_id) == "completed" and states.get(bad.job_id) == "failed" else None

    await eventually(both_final, timeout=20, what="jobs ingested")
    detail = await _get(monitor, f"/admin/worker-monitor/jobs/{bad.job_id}", OPERATOR)
    assert detail["attempts_made"] == 2 and [a["status"] for a in detail["attempts"]] == ["failed", "failed"]
    assert "mailbox full" in detail["error"] and detail["data"] == {"fail": True}
    assert "failed after 2 of 2 attempts" in detail["summary"]["en"] and "실패" in detail["summary"]["ko"]
    # viewers do not see payloads unless configured
    assert "data" not in await _get(monitor, f"/admin/worker-monitor/jobs/{bad.job_id}", VIEWER)
    # filters
    failed = await _get(monitor, "/admin/worker-monitor/jobs?status=failed")
    assert [j["job_id"] for j in failed["items"]] == [bad.job_id]
    by_user = await _get(monitor, "/admin/worker-monitor/jobs?user_id=u1")
    assert [j["job_id"] for j in by_user["items"]] == [ok.job_id]
    text = await _get(monitor, "/admin/worker-monitor/jobs?q=mailbox")
    assert [j["job_id"] for j in text["items"]] == [bad.job_id]

    async def overview_counts() -> Any:
        ov = await _get(monitor, "/admin/worker-monitor/overview")
        return ov if ov["failed_24h"] == 1 and ov["completed_24h"] == 1 else None

    ov = await eventually(overview_counts, timeout=10)
    assert ov["success_rate"] == 50.0 and ov["online_workers"] == 1 and ov["p95_duration_ms"] is not None

    async def queue_shows_failure() -> Any:
        qd = await _get(monitor, f"/admin/worker-monitor/queues/{Q}")
        return qd if qd["failed"] == 1 else None

    qd = await eventually(queue_shows_failure, timeout=10)
    # one of two runs failed and one retried: a failure-rate spike (min 2 in this test) marks it Degraded
    assert qd["status"] == "Degraded" and any(i["type"] == "failure_spike" for i in qd["incidents"])
    assert qd["top_errors"][0]["count"] == 1 and "mailbox" in qd["top_errors"][0]["message"]
    workers = await _get(monitor, "/admin/worker-monitor/workers")
    assert [w["worker_id"] for w in workers] == ["w-test"] and workers[0]["status"] in ("ONLINE", "DEGRADED")


async def test_cursor_pagination_walks_every_job_once(
    monitor: AsyncTestClient[Any], worker: Worker, client: JobClient
) -> None:
    ids = {(await client.enqueue(Q, "n", {})).job_id for _ in range(12)}

    async def all_done() -> bool:
        body = await _get(monitor, "/admin/worker-monitor/jobs?status=completed&limit=100")
        return len(body["items"]) == 12

    await eventually(all_done, timeout=20)
    seen: list[str] = []
    cursor = None
    while True:
        url = "/admin/worker-monitor/jobs?limit=5" + (f"&cursor={cursor}" if cursor else "")
        page = await _get(monitor, url)
        seen += [j["job_id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 12 and set(seen) == ids
    r = await monitor.get("/admin/worker-monitor/jobs?cursor=garbage", headers=VIEWER)
    assert r.status_code == 400


async def test_roles_and_authentication(monitor: AsyncTestClient[Any]) -> None:
    assert (await monitor.get("/admin/worker-monitor/overview")).status_code == 401
    assert (
        await monitor.get("/admin/worker-monitor/overview", headers={"Authorization": "Bearer nope"})
    ).status_code == 401
    r = await monitor.post(f"/admin/worker-monitor/queues/{Q}/pause", json={}, headers=VIEWER)
    assert r.status_code == 403 and "operator role required" in r.json()["detail"]
    r = await monitor.request("DELETE", f"/admin/worker-monitor/queues/{Q}/drain", json={}, headers=OPERATOR)
    assert r.status_code == 403
    r = await monitor.post(f"/admin/worker-monitor/queues/{Q}/pause", json={"reason": "deploy"}, headers=OPERATOR)
    assert r.status_code == 200 and r.json()["paused"]
    r = await monitor.post(f"/admin/worker-monitor/queues/{Q}/resume", json={}, headers=OPERATOR)
    assert r.status_code == 200 and not r.json()["paused"]
    assert (await monitor.get("/admin/worker-monitor/queues/nope", headers=VIEWER)).status_code == 404


async def test_session_login_needs_csrf_for_changes(monitor: AsyncTestClient[Any]) -> None:
    r = await monitor.post("/auth/login", json={"username": "ada", "password": "wrong"})
    assert r.status_code == 401
    r = await monitor.post("/auth/login", json={"username": "ada", "password": "pw-ada"})
    assert r.status_code == 200
    csrf = r.json()["csrf_token"]
    assert (await monitor.get("/admin/worker-monitor/queues")).status_code == 200  # the cookie carries the session
    r = await monitor.post(f"/admin/worker-monitor/queues/{Q}/pause", json={})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = await monitor.post(f"/admin/worker-monitor/queues/{Q}/pause", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    await monitor.post("/auth/logout")
    assert (await monitor.get("/admin/worker-monitor/queues")).status_code == 401


async def test_drain_needs_token_and_typed_word(monitor: AsyncTestClient[Any], client: JobClient) -> None:
    for _ in range(3):
        await client.enqueue(Q, "x", {})
    url = f"/admin/worker-monitor/queues/{Q}/drain"
    first = (await monitor.request("DELETE", url, json={"reason": "bad batch"}, headers=ADMIN)).json()
    assert first["confirm_required"] and first["affected"] == 3 and first["word"] == "DRAIN"
    r = await monitor.request("DELETE", url, json={"token": first["token"], "confirm": "drain"}, headers=ADMIN)
    assert r.status_code == 400
    r = await monitor.request("DELETE", url, json={"token": first["token"] + "x", "confirm": "DRAIN"}, headers=ADMIN)
    assert r.status_code == 403
    r = await monitor.request(
        "DELETE", url, json={"token": first["token"], "confirm": "DRAIN", "reason": "bad"}, headers=ADMIN
    )
    assert r.status_code == 200 and r.json()["removed"] == 3

    async def audited() -> Any:
        body = await _get(monitor, "/admin/worker-monitor/audit?action=QUEUE_DRAIN")
        return body["items"] if body["items"] else None

    rows = await eventually(audited, timeout=10)
    assert rows[0]["actor"] == "ada" and rows[0]["ok"] and rows[0]["result"]["removed"] == 3


async def test_incident_when_jobs_wait_and_no_worker_is_online(
    monitor: AsyncTestClient[Any], client: JobClient
) -> None:
    await client.enqueue(Q, "x", {})

    async def incident() -> Any:
        ov = await _get(monitor, "/admin/worker-monitor/overview")
        return [i for i in ov["incidents"] if i["type"] == "no_worker" and i["queue"] == Q] or None

    found = await eventually(incident, timeout=10)
    assert found[0]["drill_down"] == {"tab": "workers", "queue": Q}


async def test_metrics_and_health(monitor: AsyncTestClient[Any], client: JobClient) -> None:
    await client.enqueue(Q, "x", {})
    await asyncio.sleep(1.2)
    text = (await monitor.get("/metrics")).text
    assert 'jetqueue_queue_waiting{queue="email-send"} 1.0' in text
    assert "jetqueue_monitor_ingest_lag_seconds" in text
    assert (await monitor.get("/health")).json()["status"] == "ok"


async def test_artifacts_are_listed_and_served_sandboxed(
    monitor: AsyncTestClient[Any], nc: NatsClient, catalog: Catalog, client: JobClient
) -> None:
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        await ctx.attach("snap.html", b"<script>alert(1)</script><p>page</p>", "text/html")
        await ctx.attach("shot.png", b"\x89PNG\r\n\x1a\nfake", "image/png")
        raise RuntimeError("page broke")

    reg.register(Q, proc)
    w = Worker(nc, catalog, Q, reg, heartbeat_s=0.5, idle_wait_s=0.3)
    await w.start()
    try:
        r = await client.enqueue(Q, "crawl", {}, attempts=1)

        async def listed() -> Any:
            resp = await monitor.get(f"/admin/worker-monitor/jobs/{r.job_id}", headers=OPERATOR)
            body = resp.json() if resp.status_code == 200 else {}
            return body if body.get("status") == "failed" and body.get("artifacts") else None

        detail = await eventually(listed, timeout=15)
    finally:
        await w.stop(grace_s=1)
    assert {a["name"]: a["content_type"] for a in detail["artifacts"]} == {
        "snap.html": "text/html",
        "shot.png": "image/png",
    }
    page = await monitor.get(f"/admin/worker-monitor/jobs/{r.job_id}/artifacts/snap.html", headers=OPERATOR)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "sandbox" in page.headers["content-security-policy"] and b"<p>page</p>" in page.content
    img = await monitor.get(f"/admin/worker-monitor/jobs/{r.job_id}/artifacts/shot.png", headers=OPERATOR)
    assert img.status_code == 200 and img.content.startswith(b"\x89PNG")
    assert (
        await monitor.get(f"/admin/worker-monitor/jobs/{r.job_id}/artifacts/snap.html", headers=VIEWER)
    ).status_code == 403
    assert (
        await monitor.get(f"/admin/worker-monitor/jobs/{r.job_id}/artifacts/nope.txt", headers=OPERATOR)
    ).status_code == 404
