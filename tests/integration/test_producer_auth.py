"""Producer API tokens: 401 without a valid one, 403 without the route's scope, open probes, secure by default."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient

from jetqueue import names
from jetqueue.catalog import Catalog
from jetqueue.settings import CommonSettings
from jetqueue_producer.app import create_app
from jetqueue_producer.auth import AuthConfigError
from jetqueue_producer.settings import ProducerSettings

Q = "email-send"
SECRETS = {"enqueue": "tok-enqueue", "read": "tok-read", "cancel": "tok-cancel", "admin": "tok-admin"}
TOKENS = ",".join(f"{scope}-client:{scope}:{secret}" for scope, secret in SECRETS.items())

Http = AsyncTestClient[Litestar]

# Every route that needs a token, a request it accepts, and the scope it needs.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("POST", f"/jobs/{Q}", {"name": "n"}, "enqueue"),
    ("POST", f"/jobs/{Q}/bulk", {"jobs": [{"name": "n"}]}, "enqueue"),
    ("POST", "/fleet/ei-update", {"fleet_id": "fleet-1", "new_ei": 50}, "enqueue"),
    ("POST", "/order/bid-evaluation", {"order_id": "o-1", "bid_candidates": []}, "enqueue"),
    ("GET", "/jobs/some-job", None, "read"),
    ("GET", "/schedules", None, "read"),
    ("DELETE", "/jobs/some-job", None, "cancel"),
    ("PUT", f"/schedules/{Q}/s1", {"cron": "0 9 * * *"}, "admin"),
    ("DELETE", f"/schedules/{Q}/s1", None, "admin"),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _, _ in ROUTES]


def make_app(common: CommonSettings, catalog: Catalog, **settings: Any) -> Litestar:
    settings.setdefault("tokens", TOKENS)
    app: Litestar = create_app(ProducerSettings(common=common, register_schedules=False, **settings), catalog=catalog)
    return app


@pytest.fixture
async def http(common: CommonSettings, catalog: Catalog) -> AsyncIterator[Http]:
    async with AsyncTestClient(app=make_app(common, catalog)) as client:
        yield client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def body(r: httpx.Response) -> Any:
    """The JSON body of a response, after checking it leaks no stack trace."""
    assert "Traceback" not in r.text, r.text
    return r.json()


async def published(nc: NatsClient) -> int:
    """Jobs and schedules in the streams the routes above write to."""
    total = 0
    for queue in (Q, "ei-update", "proposal-ranking"):
        total += (await nc.jetstream().stream_info(names.job_stream(queue))).state.messages
    return total


@pytest.mark.parametrize(("method", "path", "payload", "scope"), ROUTES, ids=ROUTE_IDS)
async def test_no_token_is_401_and_changes_nothing(
    http: Http, nc: NatsClient, method: str, path: str, payload: Any, scope: str
) -> None:
    r = await http.request(method, path, json=payload)
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in body(r)["detail"]
    assert await published(nc) == 0


@pytest.mark.parametrize(
    "header", ["Bearer wrong", "Bearer ", "Basic dG9rLWFkbWluOg==", "tok-admin", "Bearer tok-admi"]
)
async def test_a_wrong_token_is_401(http: Http, nc: NatsClient, header: str) -> None:
    r = await http.post(f"/jobs/{Q}", json={"name": "n"}, headers={"Authorization": header})
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    body(r)
    assert await published(nc) == 0


async def test_an_unknown_token_is_told_apart_from_a_missing_one(http: Http) -> None:
    r = await http.get("/schedules", headers=bearer("not-a-token"))
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert body(r)["detail"] == "invalid API token"


@pytest.mark.parametrize(("method", "path", "payload", "scope"), ROUTES, ids=ROUTE_IDS)
async def test_each_route_needs_its_scope_and_admin_has_all(
    http: Http, method: str, path: str, payload: Any, scope: str
) -> None:
    for have, secret in SECRETS.items():
        r = await http.request(method, path, json=payload, headers=bearer(secret))
        if have in (scope, "admin"):
            assert r.status_code not in (401, 403), (have, r.text)
        else:
            assert r.status_code == 403, (have, r.text)
            detail = body(r)["detail"]
            assert f"'{scope}' scope is required" in detail, detail
            assert f"{have}-client" in detail and have in detail  # which token, and what it has


async def test_a_forbidden_request_changes_nothing(http: Http, nc: NatsClient) -> None:
    for secret in (SECRETS["read"], SECRETS["cancel"]):
        assert (await http.post(f"/jobs/{Q}", json={"name": "n"}, headers=bearer(secret))).status_code == 403
    r = await http.put(f"/schedules/{Q}/s1", json={"cron": "0 9 * * *"}, headers=bearer(SECRETS["enqueue"]))
    assert r.status_code == 403
    assert await published(nc) == 0


async def test_scopes_combine_and_a_secret_may_hold_colons(common: CommonSettings, catalog: Catalog) -> None:
    app = make_app(common, catalog, tokens="billing:enqueue+read:s3:cr:et,ops:admin:xyz")
    async with AsyncTestClient(app=app) as http:
        job = await http.post(f"/jobs/{Q}", json={"name": "n"}, headers=bearer("s3:cr:et"))
        assert job.status_code == 202, job.text
        assert (await http.get(f"/jobs/{body(job)['job_id']}", headers=bearer("s3:cr:et"))).status_code == 200
        assert (await http.delete(f"/jobs/{body(job)['job_id']}", headers=bearer("s3:cr:et"))).status_code == 403
        assert (await http.delete(f"/jobs/{body(job)['job_id']}", headers=bearer("xyz"))).status_code == 200


async def test_tokens_come_from_the_environment(
    common: CommonSettings, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JETQUEUE_PRODUCER_TOKENS", "billing:enqueue+read:s3cret,ops:admin:xyz")
    settings = ProducerSettings(common=common, register_schedules=False)
    async with AsyncTestClient(app=create_app(settings, catalog=catalog)) as http:
        assert (await http.post(f"/jobs/{Q}", json={"name": "n"}, headers=bearer("s3cret"))).status_code == 202
        assert (await http.delete(f"/schedules/{Q}/s1", headers=bearer("s3cret"))).status_code == 403
        assert (await http.delete(f"/schedules/{Q}/s1", headers=bearer("xyz"))).status_code == 404
    assert "s3cret" not in repr(settings)


async def test_probes_and_metrics_need_no_token(http: Http) -> None:
    assert (await http.get("/health")).status_code == 200
    assert (await http.get("/metrics")).status_code == 200


async def test_refusals_are_counted_by_reason(http: Http) -> None:
    await http.post(f"/jobs/{Q}", json={"name": "n"})
    await http.post(f"/jobs/{Q}", json={"name": "n"}, headers=bearer("wrong"))
    await http.put(f"/schedules/{Q}/s1", json={"cron": "0 9 * * *"}, headers=bearer(SECRETS["read"]))
    text = (await http.get("/metrics")).text
    assert 'jetqueue_producer_rejected_total{reason="unauthenticated"} 2.0' in text
    assert 'jetqueue_producer_rejected_total{reason="forbidden"} 1.0' in text


async def test_a_large_body_without_a_token_is_refused_unread(http: Http) -> None:
    r = await http.post(f"/jobs/{Q}", content=b"{" + b" " * 50_000_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 401  # authentication comes before the body is read or measured


# ---------------------------------------------------------------- configuration


def test_without_tokens_the_producer_refuses_to_start(common: CommonSettings) -> None:
    with pytest.raises(AuthConfigError, match="no API tokens") as err:
        create_app(ProducerSettings(common=common))
    assert "JETQUEUE_PRODUCER_TOKENS" in str(err.value)
    assert "JETQUEUE_PRODUCER_AUTH_DISABLED=true" in str(err.value)


def test_the_process_without_tokens_exits_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JETQUEUE_PRODUCER_")}
    env["JETQUEUE_NATS_URL"] = "nats://127.0.0.1:1"  # never reached: the check comes first
    proc = subprocess.run([sys.executable, "-m", "jetqueue_producer"], env=env, capture_output=True, timeout=60)
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 2, out
    assert "no API tokens" in out and "JETQUEUE_PRODUCER_TOKENS" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("billing:enqueue", "must be name:scopes:secret"),
        ("billing::s3cret-value", "must be name:scopes:secret"),
        ("billing:enqueue+write:s3cret-value", "unknown scope"),
        ("a:read:s3cret-value,b:admin:s3cret-value", "reuses another token's secret"),
        (" , ", "no API tokens"),
    ],
)
def test_a_bad_token_setting_is_refused_without_showing_the_secret(
    common: CommonSettings, spec: str, words: str
) -> None:
    with pytest.raises(AuthConfigError, match=words) as err:
        create_app(ProducerSettings(common=common, tokens=spec))
    assert "s3cret-value" not in str(err.value)


def test_tokens_and_auth_disabled_exclude_each_other(common: CommonSettings) -> None:
    with pytest.raises(AuthConfigError, match="not both"):
        create_app(ProducerSettings(common=common, tokens=TOKENS, auth_disabled=True))


async def test_auth_disabled_opens_every_route_and_warns(
    common: CommonSettings, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(ProducerSettings(common=common, auth_disabled=True, register_schedules=False), catalog=catalog)
    logger = logging.getLogger("jetqueue.producer")
    logger.addHandler(caplog.handler)  # Litestar configures the root logger at start, dropping caplog's handler
    try:
        async with AsyncTestClient(app=app) as http:
            for method, path, payload, _scope in ROUTES:
                r = await http.request(method, path, json=payload)
                assert r.status_code not in (401, 403), (method, path, r.text)
    finally:
        logger.removeHandler(caplog.handler)
    assert any("authentication is DISABLED" in rec.getMessage() for rec in caplog.records)
