"""Browser fixtures: the monitor under uvicorn on a loopback port, real in-process workers, Debian's Chromium.

The browser tests skip when Chromium or Playwright is missing locally and fail
under CI=true (``make browser`` installs Debian's chromium).
"""

from __future__ import annotations

import asyncio
import random
import struct
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from nats.aio.client import Client as NatsClient

from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.processors import JobContext, PermanentError, ProcessorRegistry
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_worker.runtime import Worker
from tests.conftest import IN_CI, eventually
from tests.servers import serve

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
API = "/admin/worker-monitor"
TEST_TOKEN = "e2e-admin-token"
USERS = {"ada": ("admin", "pw-ada"), "otto": ("operator", "pw-otto"), "vic": ("viewer", "pw-vic")}
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

# The world the browser looks at: queues with workers, one without, one paused.
EMAIL = "email-send"  # worker; completes, fails with retries, fails with artifacts
NOTIFY = "notification-send"  # worker; also takes the admin notices of dead-lettered jobs
REPORT = "report-generate"  # worker; slow-ish jobs and delayed ones
DISPATCH = "dispatch-optimize"  # no worker: jobs wait, a no_worker incident, Degraded
ANALYTICS = "analytics-aggregate"  # paused with jobs waiting


def _need_browser() -> None:
    problem = None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        problem = "the playwright package is missing (pip install --require-hashes -r requirements/dev.txt)"
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium)"
    if problem:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)


def tiny_png(width: int = 240, height: int = 135) -> bytes:
    """A real PNG (a fake "screenshot" with a header bar and a red error box) without an imaging library."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            if y < 18:
                px = (36, 87, 214)
            elif 50 <= y < 85 and 40 <= x < 200:
                px = (253, 232, 230) if not (y in (50, 84) or x in (40, 199)) else (194, 38, 29)
            else:
                px = (245, 246, 248) if (x // 20 + y // 20) % 2 else (255, 255, 255)
            row += bytes(px)
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


SNAPSHOT_HTML = b"""<!doctype html><html><head><style>body{font:14px sans-serif;margin:16px}
.err{color:#c2261d;border:1px solid #c2261d;padding:8px;border-radius:6px}</style></head>
<body><h1>Checkout</h1><p class="err">502 Bad Gateway from smtp relay</p>
<script>document.body.dataset.scripted = "yes"; parent.postMessage("escaped", "*");</script></body></html>"""


@dataclass
class World:
    """What the seeding left behind, for the tests to look for."""

    base_url: str
    app: Litestar
    http: httpx.AsyncClient  # the API with an admin token, for checks outside the browser
    ok_job: str = ""
    failed_job: str = ""  # failed after 2 attempts: "smtp refused: mailbox full"
    artifact_job: str = ""  # failed with a PNG and an HTML snapshot attached
    waiting_dispatch: int = 0
    delayed_job: str = ""  # a report due in 15 minutes
    users: dict[str, str] = field(default_factory=dict)

    async def api(self, path: str) -> Any:
        r = await self.http.get(API + path)
        assert r.status_code == 200, r.text
        return r.json()


async def _stop(worker: Worker) -> None:
    """``Worker.stop``, with its loops cancelled again if a cancel got lost.

    On Python 3.11 ``asyncio.wait_for`` (inside every nats-py request) swallows a
    cancel that lands just as the reply arrives; ``Worker.stop`` cancels its loops
    once and then waits for them, which can then hang for good.
    """
    stopping = asyncio.ensure_future(worker.stop(grace_s=1))
    while not (await asyncio.wait({stopping}, timeout=2))[0]:
        print(f"worker {worker.worker_id}: a cancel was lost; cancelling its loops again", file=sys.stderr)
        for t in worker._tasks:
            t.cancel()
    stopping.result()


def _registry() -> ProcessorRegistry:
    reg = ProcessorRegistry()
    rnd = random.Random(7)

    async def email(ctx: JobContext) -> dict[str, Any]:
        await asyncio.sleep(rnd.uniform(0.02, 0.25))
        if ctx.name == "newsletter":
            await ctx.attach("checkout.png", tiny_png(), "image/png")
            await ctx.attach("checkout.html", SNAPSHOT_HTML, "text/html")
            raise ConnectionError("smtp.example.net:587 unreachable (502 Bad Gateway)")
        if ctx.data.get("fail"):
            raise RuntimeError(
                "smtp refused: mailbox full\n  at relay.send (relay.py:88)\n  at worker.run (runtime.py:402)"
            )
        await ctx.progress(100)
        return {"sent": True, "to": ctx.data.get("to")}

    async def notify(ctx: JobContext) -> dict[str, Any]:
        await asyncio.sleep(rnd.uniform(0.01, 0.08))
        return {"delivered": True}

    async def report(ctx: JobContext) -> dict[str, Any]:
        await asyncio.sleep(rnd.uniform(0.2, 0.5))
        if ctx.data.get("month") == "bad":
            raise PermanentError("month must be YYYY-MM")
        return {"pages": 12}

    reg.register(EMAIL, email)
    reg.register(NOTIFY, notify)
    reg.register(REPORT, report)
    return reg


@pytest.fixture
async def world(
    common: CommonSettings, catalog: Catalog, nc: NatsClient, client: JobClient, tmp_path: Path
) -> AsyncIterator[World]:
    """A monitor (SQLite store) on a loopback port, workers for three queues, and jobs that ran through them."""
    settings = MonitorSettings(
        common=common,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}",
        tokens=f"e2e:admin:{TEST_TOKEN}",
        users=",".join(f"{u}:{role}:{pw}" for u, (role, pw) in USERS.items()),
        secure_cookies=False,  # the browser reaches the monitor over plain http on loopback
        sample_interval_s=0.5,
        failure_spike_min=2,
    )
    app = create_app(settings, catalog=catalog)
    reg = _registry()
    workers = [
        Worker(nc, catalog, q, reg, worker_id=f"{q}-w{i}", heartbeat_s=0.5, idle_wait_s=0.3, version="0.1.0")
        for i, q in ((1, EMAIL), (2, EMAIL), (1, NOTIFY), (1, REPORT))
    ]
    async with serve(app) as base_url:
        for w in workers:
            await w.start()
        try:
            async with httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=20
            ) as http:
                w = World(base_url=base_url, app=app, http=http, users={u: pw for u, (_r, pw) in USERS.items()})
                await _seed(w, client)
                yield w
        finally:
            for wk in workers:
                await _stop(wk)


async def _seed(w: World, client: JobClient) -> None:
    users = ["u-1001", "u-1002", "u-2040", "u-3177"]
    for i in range(8):
        r = await client.enqueue(EMAIL, "welcome", {"to": f"user{i}@example.com"}, user_id=users[i % 4])
        w.ok_job = w.ok_job or r.job_id
    w.failed_job = (
        await client.enqueue(EMAIL, "receipt", {"to": "full@example.com", "fail": True}, attempts=2, user_id="u-2040")
    ).job_id
    w.artifact_job = (await client.enqueue(EMAIL, "newsletter", {"issue": 42}, attempts=1, user_id="u-3177")).job_id
    for i in range(5):
        await client.enqueue(NOTIFY, "push", {"n": i}, user_id=users[i % 4])
    for m in ("2026-09", "2026-10", "bad"):
        await client.enqueue(REPORT, "monthly-report", {"month": m}, attempts=1, user_id="u-1001")
    for _ in range(2):
        r = await client.enqueue(
            REPORT, "monthly-report", {"month": "2026-11"}, delay_ms=15 * 60 * 1000, user_id="u-1001"
        )
        w.delayed_job = r.job_id
    for s in client.catalog.schedules:  # the seed's two daily schedules, as the producer registers them
        await client.schedule(s.queue, s.name, s.cron, data=s.data, time_zone=s.time_zone, job_name=s.job_name)
    w.waiting_dispatch = 4
    for i in range(w.waiting_dispatch):
        await client.enqueue(DISPATCH, "optimize-route", {"region": f"r{i}"}, user_id="u-1002")
    r = await w.http.post(f"{API}/queues/{ANALYTICS}/pause", json={"reason": "nightly maintenance"})
    assert r.status_code == 200, r.text
    for _ in range(3):
        await client.enqueue(ANALYTICS, "daily-aggregate", {"aggregation_type": "daily"})

    async def settled() -> bool:
        body = await w.api("/jobs?limit=200")
        states = {j["job_id"]: j["status"] for j in body["items"]}
        ov = await w.api("/overview")
        return (
            states.get(w.failed_job) == "failed"
            and states.get(w.artifact_job) == "failed"
            and sum(s == "completed" for s in states.values()) >= 14
            and ov["online_workers"] == 4
            and ov["delayed"] == 2
        )

    await eventually(settled, timeout=30, interval=0.2, what="seed jobs processed and ingested")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    _need_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Session:
    """A browser context signed in as one user, with the page's console errors collected."""

    page: Any
    context: Any
    errors: list[str]


@pytest.fixture
async def open_ui(browser: Any, world: World) -> AsyncIterator[Callable[..., Awaitable[Session]]]:
    """``await open_ui("ada", phone=False, lang="ko", path="/ui", viewport=None)`` → a signed-in page."""
    sessions: list[Session] = []

    async def opener(
        user: str, *, phone: bool = False, lang: str = "ko", path: str = "/ui", viewport: dict[str, int] | None = None
    ) -> Session:
        context = await browser.new_context(
            base_url=world.base_url,
            viewport=viewport or (PHONE if phone else DESKTOP),
            is_mobile=phone,
            has_touch=phone,
            device_scale_factor=1,
            locale="ko-KR" if lang == "ko" else "en-GB",
            timezone_id="Asia/Seoul",
            color_scheme="light",
        )
        context.set_default_timeout(15_000)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        await page.goto(path)
        await page.fill("#username", user)
        await page.fill("#password", world.users[user])
        await page.click("form[data-role=login] button[type=submit]")
        await page.wait_for_selector("header.top [data-role=who]")
        s = Session(page, context, errors)
        sessions.append(s)
        return s

    yield opener
    for s in sessions:
        await s.context.close()
