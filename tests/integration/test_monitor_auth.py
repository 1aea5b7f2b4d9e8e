"""Logins under attack: failures limited per username and per address, refusals audited, cookies Secure.

Real nats-server (refusals reach the audit log through the events stream, as
every audit record does) and a SQLite store.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient

from jetqueue.catalog import Catalog
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app
from jetqueue_monitor.auth import LoginLimiter
from jetqueue_monitor.settings import MonitorSettings
from tests.conftest import eventually
from tests.integration.tokens import ADMIN, VIEWER

Q = "email-send"
BASE = "/admin/worker-monitor"
USERS = "ada:admin:pw-ada,bob:viewer:pw-bob"


@contextlib.asynccontextmanager
async def monitor(
    common: CommonSettings, catalog: Catalog, tmp_path: Path, database_url: str | None = None, **kw: Any
) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = MonitorSettings(
        common=common,
        database_url=database_url or f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}",
        tokens="root:admin:admin-token,vic:viewer:viewer-token",
        users=USERS,
        **kw,
    )
    async with AsyncTestClient(app=create_app(settings, catalog=catalog)) as http:
        yield http


async def login(http: AsyncTestClient[Any], user: str, password: str) -> Any:
    return await http.post("/auth/login", json={"username": user, "password": password})


async def audit_rows(http: AsyncTestClient[Any], n: int, **filters: str) -> list[dict[str, Any]]:
    """The newest audit rows matching ``filters``, once there are ``n`` of them."""
    query = "&".join(f"{k}={v}" for k, v in filters.items())

    async def rows() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await http.get(f"{BASE}/audit?{query}", headers=ADMIN)).json()["items"]
        return items if len(items) >= n else None

    return await eventually(rows, timeout=10, what=f"{n} audit rows for {filters}")


# ---------------------------------------------------------------- the limiter alone
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_counts_failures_in_a_sliding_window() -> None:
    clock = Clock()
    lim = LoginLimiter(per_user=3, per_address=5, window_s=60, clock=clock)
    for _ in range(3):
        assert lim.retry_after("ada", "10.0.0.1") == 0
        lim.failed("ada", "10.0.0.1")
        clock.now += 10
    # failures at 1000, 1010, 1020; now 1030: the window frees at 1060
    assert lim.retry_after("ada", "10.0.0.2") == 30  # the username is limited from anywhere
    assert lim.retry_after("bob", "10.0.0.1") == 0  # the address has 2 failures left
    clock.now = 1060.5
    assert lim.retry_after("ada", "10.0.0.2") == 0  # the oldest failure left the window
    lim.failed("ada", "10.0.0.2")
    assert lim.retry_after("ada", "10.0.0.2") == math.ceil(1070 - 1060.5)


def test_limiter_success_clears_the_username_but_not_the_address() -> None:
    clock = Clock()
    lim = LoginLimiter(per_user=3, per_address=4, window_s=60, clock=clock)
    for user in ("ada", "ada", "bob"):
        lim.failed(user, "10.0.0.1")
    lim.succeeded("ada")
    lim.failed("ada", "10.0.0.1")
    assert lim.retry_after("ada", "10.0.0.9") == 0  # 1 failure since the success
    assert lim.retry_after("carol", "10.0.0.1") == 60  # the address made 4


def test_limiter_memory_is_bounded() -> None:
    lim = LoginLimiter(per_user=1, per_address=10**6, window_s=60, max_keys=100, clock=Clock())
    for i in range(1000):
        lim.failed(f"user-{i}", "10.0.0.1")
    assert len(lim._failures) == 100
    assert lim.retry_after("user-999", "10.0.0.2") > 0 and lim.retry_after("user-0", "10.0.0.2") == 0


# ---------------------------------------------------------------- over HTTP
async def test_failed_logins_are_limited_per_username_and_audited(
    common: CommonSettings, catalog: Catalog, tmp_path: Path, nc: NatsClient
) -> None:
    async with monitor(common, catalog, tmp_path, login_max_failures=3, secure_cookies=False) as http:
        for _ in range(3):
            r = await login(http, "ada", "guess")
            assert r.status_code == 401 and r.json()["detail"] == "wrong username or password"
        # over the limit: refused before the password is even looked at (the right one too)
        r = await login(http, "ada", "pw-ada")
        assert r.status_code == 429, r.text
        wait = int(r.headers["retry-after"])
        assert 0 < wait <= 300 and r.json()["retry_after_s"] == wait
        assert r.json()["detail"] == f"too many failed logins; retry in {wait} s"
        # another user from the same address is not locked out (the address limit is 20)
        assert (await login(http, "bob", "pw-bob")).status_code == 200
        rows = await audit_rows(http, 4, actor="ada", action="LOGIN")
        assert [(r["ok"], r["entity_type"], r["entity_id"], r["error"]) for r in rows] == [
            (False, "USER", "ada", f"too many failed logins; retry in {wait} s"),
            *[(False, "USER", "ada", "wrong username or password")] * 3,
        ]
        assert all(r["params"]["client"] and r["source"] == "monitor" for r in rows)


async def test_a_successful_login_resets_the_username(
    common: CommonSettings, catalog: Catalog, tmp_path: Path, nc: NatsClient
) -> None:
    async with monitor(common, catalog, tmp_path, login_max_failures=3, secure_cookies=False) as http:
        for _ in range(3):
            assert (await login(http, "ada", "guess")).status_code == 401
            assert (await login(http, "ada", "guess")).status_code == 401
            assert (await login(http, "ada", "pw-ada")).status_code == 200


async def test_failed_logins_are_limited_per_address(
    common: CommonSettings, catalog: Catalog, tmp_path: Path, nc: NatsClient
) -> None:
    async with monitor(common, catalog, tmp_path, login_max_failures_per_address=4, secure_cookies=False) as http:
        for i in range(4):  # password spraying: a different username every time
            assert (await login(http, f"user-{i}", "123456")).status_code == 401
        r = await login(http, "bob", "pw-bob")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        rows = await audit_rows(http, 1, actor="bob", action="LOGIN")
        assert rows[0]["error"].startswith("too many failed logins")


async def test_the_lockout_ends_when_the_window_frees(
    common: CommonSettings, catalog: Catalog, tmp_path: Path, nc: NatsClient
) -> None:
    async with monitor(common, catalog, tmp_path, login_max_failures=2, login_window_s=1.0) as http:
        for _ in range(2):
            assert (await login(http, "ada", "guess")).status_code == 401
        r = await login(http, "ada", "pw-ada")
        assert r.status_code == 429 and r.headers["retry-after"] == "1"

        async def let_in() -> bool:
            return bool((await login(http, "ada", "pw-ada")).status_code == 200)

        await eventually(let_in, timeout=5, interval=0.2, what="a login after the window")


# ---------------------------------------------------------------- cookies
def test_cookies_are_secure_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JETQUEUE_MONITOR_SECURE_COOKIES", raising=False)
    assert MonitorSettings().secure_cookies is True
    monkeypatch.setenv("JETQUEUE_MONITOR_SECURE_COOKIES", "false")
    assert MonitorSettings().secure_cookies is False


@pytest.mark.parametrize("secure", [True, False])
async def test_the_session_cookie_carries_the_secure_flag(
    secure: bool, common: CommonSettings, catalog: Catalog, tmp_path: Path, nc: NatsClient
) -> None:
    async with monitor(common, catalog, tmp_path, secure_cookies=secure) as http:
        r = await login(http, "ada", "pw-ada")
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("jq_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert ("Secure" in cookie) is secure, cookie


# ---------------------------------------------------------------- other refusals
async def test_csrf_and_confirmation_refusals_are_audited(
    common: CommonSettings, catalog: Catalog, tmp_path: Path, nc: NatsClient
) -> None:
    async with monitor(common, catalog, tmp_path, secure_cookies=False) as http:
        assert (await login(http, "ada", "pw-ada")).status_code == 200
        r = await http.post(f"{BASE}/queues/{Q}/pause", json={})  # the session cookie, no X-CSRF-Token
        assert r.status_code == 403 and "CSRF" in r.json()["detail"]
        [row] = await audit_rows(http, 1, actor="ada", action="QUEUE_PAUSE")
        assert (row["ok"], row["role"], row["entity_id"], row["error"]) == (False, "admin", Q, r.json()["detail"])
        r = await http.request(
            "DELETE", f"{BASE}/queues/{Q}/drain", json={"token": "forged.sig", "confirm": "DRAIN"}, headers=ADMIN
        )
        assert r.status_code == 403
        [row] = await audit_rows(http, 1, actor="root", action="QUEUE_DRAIN")
        assert (row["ok"], row["error"]) == (False, "confirmation token is invalid")


async def test_hostile_input_in_a_refusal_is_audited_as_text(
    database_url: str, common: CommonSettings, catalog: Catalog, tmp_path: Path, nc: NatsClient
) -> None:
    """A refusal comes before the input is validated: a NUL in the path must not become a row PostgreSQL
    refuses, which would stop audit ingest for good."""
    async with monitor(common, catalog, tmp_path, database_url=database_url) as http:
        r = await http.post(f"{BASE}/queues/%00evil/pause", json={}, headers=VIEWER)
        assert r.status_code == 403
        # text that is not UTF-8 (a lone surrogate) is refused before it reaches the limiter or the log
        r = await http.post(
            "/auth/login",
            content=b'{"username": "\\udc00", "password": "x"}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400, r.text
        r = await http.post(f"{BASE}/queues/{Q}/resume", json={}, headers=VIEWER)  # queued behind the first
        assert r.status_code == 403
        rows = await audit_rows(http, 2, actor="vic")
        assert [(row["action"], row["entity_id"]) for row in rows] == [
            ("QUEUE_RESUME", Q),
            ("QUEUE_PAUSE", "\\x00evil"),
        ]
