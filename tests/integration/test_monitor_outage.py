"""The monitor API while its database is down: 503 with Retry-After within seconds, never a 500 or a hang.

PostgreSQL goes away behind a TCP proxy (refused connections, or a network
that swallows packets); SQLite fails every statement instead. NATS stays up:
what needs only NATS keeps working, and refusals are still audited.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy.engine import make_url

from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app
from jetqueue_monitor.settings import MonitorSettings
from tests.conftest import eventually
from tests.integration.test_monitor_ingest import EngineFailure, TcpProxy
from tests.integration.test_monitor_roles import serve
from tests.integration.tokens import ADMIN, VIEWER

Q = "email-send"
BASE = "/admin/worker-monitor"
TOKENS = "ada:admin:admin-token,vic:viewer:viewer-token"
UNAVAILABLE = "the monitor database is unavailable; retry later"


async def call(http: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    """One request; an event stream is read up to its status and headers."""
    async with http.stream(method, path, json=body, headers=headers) as r:
        if not r.headers.get("content-type", "").startswith("text/event-stream"):
            await r.aread()
        return r


# Every route that reads the database, and the control action that writes it.
NEEDS_DB: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", f"{BASE}/overview", None),
    ("GET", f"{BASE}/queues", None),
    ("GET", f"{BASE}/queues/{Q}", None),
    ("GET", f"{BASE}/jobs", None),
    ("GET", f"{BASE}/jobs?queue={Q}&status=failed&q=boom", None),
    ("GET", f"{BASE}/jobs/{{job}}", None),
    ("GET", f"{BASE}/workers", None),
    ("GET", f"{BASE}/audit", None),
    ("GET", f"{BASE}/stream", None),
    ("POST", f"{BASE}/queues/{Q}/clean", {"state": "completed"}),
    ("POST", f"{BASE}/queues/{Q}/clean", {"state": "failed"}),
]


@contextlib.asynccontextmanager
async def monitor_with_outage(
    database_url: str, common: CommonSettings, catalog: Catalog, **kw: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, TcpProxy | EngineFailure]]:
    """The monitor on ``database_url`` (served over HTTP: /stream never ends), and the means to take that
    database away from it."""
    proxy: TcpProxy | None = None
    url = database_url
    if database_url.startswith("postgresql"):
        parsed = make_url(database_url)
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        await proxy.start()
        url = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = MonitorSettings(common=common, database_url=url, tokens=TOKENS, sample_interval_s=0.5, **kw)
    app = create_app(settings, catalog=catalog)
    try:
        async with serve(app) as http:
            outage = proxy if proxy is not None else EngineFailure(app.state.store.engine)
            try:
                yield http, outage
            finally:
                if isinstance(outage, TcpProxy):
                    outage.thaw()
                await outage.restore()
    finally:
        if proxy is not None:
            await proxy.cut()


async def test_reads_and_db_writes_answer_503_during_an_outage(
    database_url: str, common: CommonSettings, catalog: Catalog, nc: NatsClient, client: JobClient
) -> None:
    job = (await client.enqueue(Q, "waiting", {"to": "x"})).job_id
    async with monitor_with_outage(database_url, common, catalog) as (http, outage):
        for method, path, body in NEEDS_DB:
            r = await call(http, method, path.format(job=job), body, ADMIN)
            assert r.status_code == 200, f"{method} {path} before the outage: {r.status_code}"
        await outage.cut()
        failures: list[str] = []
        deadline = time.monotonic() + 6  # the outage goes on: every try answers the same
        while time.monotonic() < deadline:
            for method, path, body in NEEDS_DB:
                started = time.monotonic()
                r = await call(http, method, path.format(job=job), body, ADMIN)
                took = time.monotonic() - started
                ok = r.status_code == 503 and r.headers.get("retry-after") == "5" and took <= 3
                if not ok or r.json() != {"status_code": 503, "detail": UNAVAILABLE, "retry_after_s": 5}:
                    failures.append(f"{method} {path}: {r.status_code} in {took:.1f}s, {dict(r.headers)}")
        assert not failures, "\n".join(failures[:20])
        health = await http.get("/health")
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "nats": True, "database": False}
        # NATS alone: control actions that never touch the database go on, and so do the queue gauges
        r = await http.post(f"{BASE}/queues/{Q}/pause", json={"reason": "db down"}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["paused"] is True, r.text
        r = await http.post(f"{BASE}/queues/{Q}/resume", json={}, headers=ADMIN)
        assert r.status_code == 200, r.text
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200 and f'jetqueue_queue_waiting{{queue="{Q}"}} 1.0' in metrics.text
        await outage.restore()

        async def back() -> bool:
            r = await http.get(f"{BASE}/overview", headers=ADMIN)
            return r.status_code == 200

        await eventually(back, timeout=15, what="reads answer again after the outage")
        for method, path, body in NEEDS_DB:
            r = await call(http, method, path.format(job=job), body, ADMIN)
            assert r.status_code == 200, f"{method} {path} after the outage: {r.status_code}"
        assert (await http.get("/health")).json() == {"status": "ok", "nats": True, "database": True}


async def test_a_refusal_during_an_outage_is_a_403_and_is_audited_afterwards(
    database_url: str, common: CommonSettings, catalog: Catalog, nc: NatsClient
) -> None:
    async with monitor_with_outage(database_url, common, catalog) as (http, outage):
        await outage.cut()
        r = await http.post(f"{BASE}/queues/{Q}/pause", json={"reason": "sneaky"}, headers=VIEWER)
        assert r.status_code == 403 and "operator role required" in r.json()["detail"], r.text
        await outage.restore()

        async def audited() -> list[dict[str, Any]] | None:
            r = await http.get(f"{BASE}/audit?actor=vic&action=QUEUE_PAUSE", headers=ADMIN)
            return (r.json()["items"] or None) if r.status_code == 200 else None

        [row] = await eventually(audited, timeout=20, what="the refusal audited once the database is back")
        assert (row["ok"], row["role"], row["entity_id"]) == (False, "viewer", Q)
        assert "operator role required" in row["error"]


# A network that swallows packets needs a server on the other side of it: PostgreSQL only.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_silent_database_cannot_hang_health_or_reads(
    database_url: str, common: CommonSettings, catalog: Catalog, nc: NatsClient
) -> None:
    timeouts = {"db_connect_timeout_s": 1.0, "db_statement_timeout_s": 1.0, "health_timeout_s": 1.0}
    async with monitor_with_outage(database_url, common, catalog, **timeouts) as (http, outage):
        assert (await http.get(f"{BASE}/overview", headers=ADMIN)).status_code == 200
        assert isinstance(outage, TcpProxy)
        outage.freeze()
        started = time.monotonic()
        health = await http.get("/health")
        assert time.monotonic() - started < 2.5, "/health waited for a database that does not answer"
        assert health.status_code == 503 and health.json()["database"] is False
        for path in (f"{BASE}/overview", f"{BASE}/jobs", f"{BASE}/workers"):
            started = time.monotonic()
            r = await http.get(path, headers=ADMIN)
            took = time.monotonic() - started
            # a pooled connection's ping times out (statement), then a new connection does (connect)
            assert r.status_code == 503 and took < 4, f"{path}: {r.status_code} after {took:.1f}s: {r.text[:200]}"
        outage.thaw()

        async def back() -> bool:
            return (await http.get(f"{BASE}/overview", headers=ADMIN)).status_code == 200

        await eventually(back, timeout=15, what="reads answer again after the network heals")
