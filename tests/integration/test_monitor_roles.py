"""The monitor API's role matrix, bad input on every mutating endpoint, and the SSE stream.

Real nats-server and a real HTTP server (uvicorn on a loopback port: Litestar's
test client buffers whole responses, so it cannot read an endless SSE stream).
The store is SQLite only here: roles do not depend on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from nats.aio.client import Client as NatsClient

from jetqueue import artifacts, names
from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.control import H_ERROR, H_REASON
from jetqueue.errors import JobNotFound
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app
from jetqueue_monitor.settings import MonitorSettings
from tests import servers
from tests.conftest import eventually
from tests.integration.tokens import ADMIN, OPERATOR, TOKENS, VIEWER

Q = "email-send"
BASE = "/admin/worker-monitor"
HEADERS: dict[str, dict[str, str]] = {
    "anonymous": {},
    "bad-token": {"Authorization": "Bearer not-a-token"},
    "viewer": VIEWER,
    "operator": OPERATOR,
    "admin": ADMIN,
}

# What each caller gets on a route that needs a given role.
EXPECTED: dict[str, dict[str, int]] = {
    "anonymous": {"viewer": 401, "operator": 401, "admin": 401},
    "bad-token": {"viewer": 401, "operator": 401, "admin": 401},
    "viewer": {"viewer": 200, "operator": 403, "admin": 403},
    "operator": {"viewer": 200, "operator": 200, "admin": 403},
    "admin": {"viewer": 200, "operator": 200, "admin": 200},
}


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # as Litestar lists it (app.routes)
    need: str  # the lowest role that may call it
    body: dict[str, Any] | None = None
    action: str | None = None  # the audit action of a control route: its 403s are audited
    check: Callable[[Any], bool] | None = None  # on a 200 body
    stream: bool = False
    job: str = "waiting"  # which seeded job "{job_id:str}" stands for
    refused_as: tuple[str, str] | None = None  # the entity a refusal is audited on, when not the queue or job
    ok: int = 200  # the status an allowed call answers

    def url(self, jobs: dict[str, str], bulk_id: str) -> str:
        if "/artifacts/" in self.template:
            return self.template.replace("{job_id:str}", jobs["waiting"]).replace("{name:str}", "note.txt")
        if "{queue:str}" in self.template:
            return self.template.replace("{queue:str}", Q).replace("{name:str}", SCHEDULE)
        return (
            self.template.replace("{name:str}", Q)
            .replace("{job_id:str}", jobs[self.job])
            .replace("{bulk_id:str}", bulk_id)
        )

    def entity(self, jobs: dict[str, str]) -> tuple[str, str]:
        if self.refused_as is not None:
            return self.refused_as
        return ("QUEUE", Q) if "{name:str}" in self.template else ("JOB", jobs[self.job])


def _r(method: str, tail: str, need: str, **kw: Any) -> Route:
    return Route(method, BASE + tail, need, **kw)


SCHEDULE = "roles"
DRY_RUN = {"job_ids": ["no-such-job"], "dry_run": True}
INCIDENT = {"type": "no_worker", "queue": Q}
AS_SCHEDULE = ("SCHEDULE", f"{Q}/{SCHEDULE}")


def _dry(body: Any) -> bool:
    return bool(body["dry_run"]) and body["matched"] == 0


# Every route of the monitor API plus /auth/me. The order matters for the allowed roles: pause comes
# before resume, the seeded schedule is deleted last. "{job_id:str}" is the
# seeded job that suits the route (waiting, delayed, dead-lettered, or one to cancel or delete).
ROUTES: list[Route] = [
    Route("GET", "/auth/me", "viewer", check=lambda b: b["via"] == "token"),
    _r("GET", "/overview", "viewer", check=lambda b: "incidents" in b and "online_workers" in b),
    _r("GET", "/queues", "viewer", check=lambda b: Q in {q["name"] for q in b}),
    _r("GET", "/queues/{name:str}", "viewer", check=lambda b: b["name"] == Q and "trend" in b),
    _r("GET", "/jobs", "viewer", check=lambda b: "items" in b and "next_cursor" in b),
    _r("GET", "/jobs/{job_id:str}", "viewer", check=lambda b: b["status"] == "waiting"),
    # files are payloads: a viewer gets 403 unless viewer_sees_payloads is set
    _r("GET", "/jobs/{job_id:str}/artifacts/{name:str}", "operator", check=lambda b: b == "hello"),
    _r("GET", "/workers", "viewer", check=lambda b: isinstance(b, list)),
    _r("GET", "/audit", "viewer", check=lambda b: "items" in b),
    _r("GET", "/stream", "viewer", stream=True),
    # the job retry runs before the queue's retry-failed, which would take that job too
    _r("POST", "/jobs/{job_id:str}/retry", "operator", body={}, check=lambda b: b["state"] == "waiting",
       action="JOB_RETRY", job="dead"),
    _r("POST", "/jobs/{job_id:str}/cancel", "operator", body={}, check=lambda b: b["state"] == "cancelled",
       action="JOB_CANCEL", job="cancel"),
    _r("POST", "/jobs/{job_id:str}/promote", "operator", body={}, check=lambda b: b["state"] == "waiting",
       action="JOB_PROMOTE", job="delayed"),
    _r("POST", "/jobs/{job_id:str}/delete", "admin", body={}, check=lambda b: b["removed"]["waiting"] == 1,
       action="JOB_DELETE", job="delete"),
    _r("POST", "/queues/{name:str}/pause", "operator", body={"reason": "roles"}, check=lambda b: b["paused"] is True,
       action="QUEUE_PAUSE"),
    _r("POST", "/queues/{name:str}/resume", "operator", body={}, check=lambda b: b["paused"] is False,
       action="QUEUE_RESUME"),
    _r("POST", "/queues/{name:str}/retry-failed", "operator", body={}, check=lambda b: b["retried"] == 1,
       action="QUEUE_RETRY_FAILED"),
    _r("DELETE", "/queues/{name:str}/drain", "admin", body={}, check=lambda b: b["confirm_required"] is True,
       action="QUEUE_DRAIN"),
    _r("POST", "/queues/{name:str}/clean", "admin", body={}, check=lambda b: b["confirm_required"] is True,
       action="QUEUE_CLEAN"),
    _r("GET", "/schedules", "viewer", check=lambda b: isinstance(b, list)),
    _r("PUT", "/schedules/{queue:str}/{name:str}", "admin", body={"cron": "0 4 * * *"},
       check=lambda b: b["cron"] == "0 4 * * *", action="SCHEDULE_UPDATE", refused_as=AS_SCHEDULE),
    _r("POST", "/schedules/{queue:str}/{name:str}/pause", "operator", body={}, check=lambda b: b["paused"] is True,
       action="SCHEDULE_PAUSE", refused_as=AS_SCHEDULE),
    _r("POST", "/schedules/{queue:str}/{name:str}/resume", "operator", body={},
       check=lambda b: b["paused"] is False, action="SCHEDULE_RESUME", refused_as=AS_SCHEDULE),
    _r("POST", "/schedules/{queue:str}/{name:str}/trigger", "operator", body={},
       check=lambda b: b["job_id"].startswith(f"cron-{SCHEDULE}-t"), action="SCHEDULE_TRIGGER", refused_as=AS_SCHEDULE),
    _r("POST", "/schedules/{queue:str}/{name:str}/delete", "admin", body={}, check=lambda b: b["deleted"] is True,
       action="SCHEDULE_DELETE", refused_as=AS_SCHEDULE),
    _r("GET", "/bulk", "viewer", check=lambda b: isinstance(b, list)),
    _r("GET", "/bulk/{bulk_id:str}", "viewer", check=lambda b: b["status"] == "done"),
    _r("POST", "/bulk/retry", "operator", body=DRY_RUN, check=_dry, action="BULK_RETRY", refused_as=("JOBS", "*")),
    _r("POST", "/bulk/cancel", "operator", body=DRY_RUN, check=_dry, action="BULK_CANCEL", refused_as=("JOBS", "*")),
    _r("POST", "/bulk/promote", "operator", body=DRY_RUN, check=_dry, action="BULK_PROMOTE",
       refused_as=("JOBS", "*")),
    _r("POST", "/bulk/delete", "admin", body=DRY_RUN, check=_dry, action="BULK_DELETE", refused_as=("JOBS", "*")),
    _r("POST", "/incidents/ack", "operator", body=INCIDENT, check=lambda b: b["kind"] == "ack",
       action="INCIDENT_ACK", refused_as=("INCIDENT", "*")),
    _r("POST", "/incidents/snooze", "operator", body={**INCIDENT, "minutes": 5}, check=lambda b: b["kind"] == "snooze",
       action="INCIDENT_SNOOZE", refused_as=("INCIDENT", "*")),
]  # fmt: skip
# The principal each bearer token stands for (TOKENS), as the audit log names it.
ACTOR = {"viewer": "vic", "operator": "otto", "admin": "ada"}


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}"


def _settings(common: CommonSettings, url: str, **kw: Any) -> MonitorSettings:
    return MonitorSettings(common=common, database_url=url, tokens=TOKENS, sample_interval_s=0.5, **kw)


@contextlib.asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app`` under uvicorn on a free loopback port; yield a client for it."""
    async with servers.serve(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        yield http


@pytest.fixture
async def monitor(common: CommonSettings, catalog: Catalog, sqlite_url: str, nc: NatsClient) -> AsyncIterator[Any]:
    async with serve(create_app(_settings(common, sqlite_url), catalog=catalog)) as http:
        yield http


async def dead_letter(nc: NatsClient, client: JobClient, catalog: Catalog, name: str = "doomed") -> str:
    """A job in the dead-letter stream, as a worker leaves it after its last attempt."""
    js = nc.jetstream()
    spec = catalog.get(Q)
    job = await client.enqueue(Q, name, {"to": "x"})
    msg = await js.get_last_msg(spec.stream, names.job_subject_any_level(Q, job.job_id))
    await js.publish(
        names.dlq_subject(Q, job.job_id), msg.data or b"", headers={H_REASON: "failed", H_ERROR: "RuntimeError: boom"}
    )
    await js.purge_stream(spec.stream, subject=names.job_subject_any_level(Q, job.job_id))
    return str(job.job_id)


async def dlq_ids(nc: NatsClient) -> set[str]:
    si = await nc.jetstream().stream_info(names.DLQ_STREAM, subjects_filter=names.dlq_filter())
    return {s.rsplit(".", 1)[1] for s in (si.state.subjects or {})}


def _no_trace(r: httpx.Response) -> None:
    assert "Traceback" not in r.text and 'File "' not in r.text, r.text


# ---------------------------------------------------------------- the table is complete
def test_the_table_covers_every_route(catalog: Catalog, sqlite_url: str) -> None:
    common = CommonSettings(nats_url="nats://127.0.0.1:1")  # never connected: no lifespan runs
    app = create_app(_settings(common, sqlite_url), catalog=catalog)
    served = {
        (m, r.path)
        for r in app.routes
        if r.path.startswith(BASE) or r.path == "/auth/me"
        for m in getattr(r, "methods", ())
        if m not in ("OPTIONS", "HEAD")
    }
    table = {(r.method, r.template) for r in ROUTES}
    assert served == table, f"routes without a role-table entry: {served - table}; stale entries: {table - served}"


# ---------------------------------------------------------------- the matrix
async def _seed(
    monitor: httpx.AsyncClient, nc: NatsClient, client: JobClient, catalog: Catalog
) -> tuple[dict[str, str], str]:
    """A job for each kind of route, an open incident to acknowledge, and a finished bulk action to read."""
    jobs = {
        "waiting": (await client.enqueue(Q, "read-me", {"to": "r"})).job_id,
        "cancel": (await client.enqueue(Q, "cancel-me", {"to": "c"})).job_id,
        "delete": (await client.enqueue(Q, "delete-me", {"to": "d"})).job_id,
        "delayed": (await client.enqueue(Q, "run-me-now", {"to": "p"}, delay_ms=3_600_000)).job_id,
        "dead": await dead_letter(nc, client, catalog),
    }
    await dead_letter(nc, client, catalog, "doomed-too")  # for retry-failed
    await artifacts.put(nc.jetstream(), jobs["waiting"], "note.txt", b"hello", "text/plain")
    await client.schedule(Q, SCHEDULE, "0 3 * * *", data={"for": "roles"})

    async def incident_open() -> bool:
        ov = (await monitor.get(f"{BASE}/overview", headers=ADMIN)).json()
        return any(i["type"] == "no_worker" and i["queue"] == Q for i in ov["incidents"])

    await eventually(incident_open, timeout=10, what="a no_worker incident to acknowledge")
    r = await monitor.post(f"{BASE}/bulk/promote", json={"job_ids": ["no-such-job"]}, headers=ADMIN)
    assert r.status_code == 202, r.text
    bulk_id = r.json()["id"]

    async def bulk_done() -> bool:
        return bool((await monitor.get(f"{BASE}/bulk/{bulk_id}", headers=ADMIN)).json()["status"] == "done")

    await eventually(bulk_done, timeout=10, what="the seeded bulk action done")
    return jobs, bulk_id


async def _call(monitor: httpx.AsyncClient, route: Route, url: str, headers: dict[str, str]) -> tuple[int, str, Any]:
    """(status, text, body) of one call; for the event stream, its first event as the body."""
    if not route.stream:
        r = await monitor.request(route.method, url, headers=headers, json=route.body)
        body = (r.json() if "/artifacts/" not in url else r.text) if r.status_code < 300 else None
        return r.status_code, r.text, body
    async with monitor.stream("GET", url + "?interval_s=0.5", headers=headers) as r:
        if r.status_code != 200:
            return r.status_code, (await r.aread()).decode(), None
        [(_t, kind, data)] = await asyncio.wait_for(_events(r, 1), 10)
        return 200, "", {"event": kind, **data}


@pytest.mark.parametrize("role", list(EXPECTED))
async def test_role_matrix(
    role: str, monitor: httpx.AsyncClient, nc: NatsClient, client: JobClient, catalog: Catalog
) -> None:
    jobs, bulk_id = await _seed(monitor, nc, client, catalog)
    headers = HEADERS[role]
    failures: list[str] = []
    refused: dict[tuple[str, str, str], str] = {}  # (action, entity type, entity id) -> the 403's detail
    for route in ROUTES:
        url = route.url(jobs, bulk_id)
        want = EXPECTED[role][route.need]
        want = route.ok if want == 200 else want
        got, text, body = await _call(monitor, route, url, headers)
        if got != want:
            failures.append(f"{role} {route.method} {url}: expected {want}, got {got}: {text[:300]}")
            continue
        assert "Traceback" not in text
        if route.stream and got == 200 and (body["event"] != "update" or "overview" not in body):
            failures.append(f"{role} GET {url}: 200 but no update event: {body}")
        if got < 300 and route.check is not None and not route.stream and not route.check(body):
            failures.append(f"{role} {route.method} {url}: unexpected {got} body {text[:300]}")
        if got == 200 and route.template == "/auth/me" and body["role"] != role:
            failures.append(f"/auth/me says role {body['role']!r} for {role}")
        if got == 403:
            detail = json.loads(text)["detail"]
            if route.need != "viewer" and "/artifacts/" not in url and f"{route.need} role required" not in detail:
                failures.append(f"{role} {route.method} {url}: 403 without the role it needs: {detail}")
            if route.action:
                refused[(route.action, *route.entity(jobs))] = detail
    assert not failures, "\n".join(failures)
    await _refusals_audited(monitor, role, refused)
    await _nothing_forbidden_happened(role, nc, client, catalog, jobs)


async def _refusals_audited(monitor: httpx.AsyncClient, role: str, refused: dict[tuple[str, str, str], str]) -> None:
    """Every 403 on a control route is in the audit log: who, what, on which entity, and why."""
    assert bool(refused) == (role in ("viewer", "operator")), refused
    if not refused:
        return

    async def audited() -> dict[tuple[str, str, str], dict[str, Any]] | None:
        r = await monitor.get(f"{BASE}/audit?actor={ACTOR[role]}&ok=false&limit=100", headers=ADMIN)
        rows = {(a["action"], a["entity_type"], a["entity_id"]): a for a in r.json()["items"]}
        return rows if set(refused) <= set(rows) else None

    rows = await eventually(audited, timeout=10, what=f"{role}'s refusals audited")
    for key, detail in refused.items():
        row = rows[key]
        assert (row["role"], row["error"], row["source"]) == (role, detail, "monitor"), row


async def _nothing_forbidden_happened(
    role: str, nc: NatsClient, client: JobClient, catalog: Catalog, jobs: dict[str, str]
) -> None:
    """Forbidden calls changed nothing; allowed ones did what they said."""
    dlq = await dlq_ids(nc)
    operator_ok = EXPECTED[role]["operator"] == 200
    assert not (dlq & {jobs["dead"]}) if operator_ok else jobs["dead"] in dlq
    assert (await client.status(jobs["cancel"])).state.value == ("cancelled" if operator_ok else "waiting")
    assert (await client.status(jobs["delayed"])).state.value == ("waiting" if operator_ok else "scheduled")
    admin = EXPECTED[role]["admin"] == 200
    assert {s.name for s in await client.list_schedules(Q)} == (set() if admin else {SCHEDULE})
    try:
        await client.status(jobs["delete"])
        deleted = False
    except JobNotFound:
        deleted = True
    assert deleted == admin


async def test_viewer_sees_payloads_only_when_configured(
    common: CommonSettings, catalog: Catalog, sqlite_url: str, nc: NatsClient, client: JobClient
) -> None:
    job = (await client.enqueue(Q, "peek", {"secret": 1})).job_id
    await artifacts.put(nc.jetstream(), job, "note.txt", b"hello", "text/plain")
    app = create_app(_settings(common, sqlite_url, viewer_sees_payloads=True), catalog=catalog)
    async with serve(app) as http:
        detail = await http.get(f"{BASE}/jobs/{job}", headers=VIEWER)
        assert detail.status_code == 200 and detail.json()["data"] == {"secret": 1}
        r = await http.get(f"{BASE}/jobs/{job}/artifacts/note.txt", headers=VIEWER)
        assert r.status_code == 200 and r.text == "hello"
        # still no mutations for a viewer
        r = await http.post(f"{BASE}/queues/{Q}/pause", json={}, headers=VIEWER)
        assert r.status_code == 403


# ---------------------------------------------------------------- bad input
MUTATIONS: list[tuple[str, str]] = [
    ("POST", f"{BASE}/queues/{Q}/pause"),
    ("POST", f"{BASE}/queues/{Q}/resume"),
    ("POST", f"{BASE}/queues/{Q}/retry-failed"),
    ("DELETE", f"{BASE}/queues/{Q}/drain"),
    ("POST", f"{BASE}/queues/{Q}/clean"),
    ("POST", f"{BASE}/jobs/some-job/retry"),
    ("POST", f"{BASE}/jobs/some-job/cancel"),
    ("POST", f"{BASE}/jobs/some-job/promote"),
    ("POST", f"{BASE}/jobs/some-job/delete"),
    ("PUT", f"{BASE}/schedules/{Q}/some-schedule"),
    ("POST", f"{BASE}/schedules/{Q}/some-schedule/delete"),
    ("POST", f"{BASE}/schedules/{Q}/some-schedule/pause"),
    ("POST", f"{BASE}/schedules/{Q}/some-schedule/resume"),
    ("POST", f"{BASE}/schedules/{Q}/some-schedule/trigger"),
    ("POST", f"{BASE}/bulk/retry"),
    ("POST", f"{BASE}/bulk/cancel"),
    ("POST", f"{BASE}/bulk/promote"),
    ("POST", f"{BASE}/bulk/delete"),
    ("POST", f"{BASE}/incidents/ack"),
    ("POST", f"{BASE}/incidents/snooze"),
]
JSON_CT = {"content-type": "application/json"}
# (label, raw body) sent to every mutating endpoint: each must be a 400
BAD_BODIES: list[tuple[str, bytes]] = [
    ("malformed JSON", b'{"reason": '),
    ("not JSON at all", b"reason=x"),
    ("a JSON array", b'["reason"]'),
    ("JSON null", b"null"),
    ("a number for reason", b'{"reason": 123}'),
    ("a list for reason", b'{"reason": ["a"]}'),
    ("an unknown field", b'{"reason": "x", "bogus": true}'),
    ("a reason over 500 chars", json.dumps({"reason": "x" * 501}).encode()),
    ("no body", b""),
]
# (method, url, json body, status, words the detail must contain)
SPECIFIC: list[tuple[str, str, Any, int, str]] = [
    ("POST", f"{BASE}/queues/{Q}/pause", {"until": "next tuesday"}, 400, ""),
    ("POST", f"{BASE}/queues/{Q}/pause", {"until": "2001-01-01T00:00:00Z"}, 400, "in the past"),
    ("POST", f"{BASE}/queues/{Q}/pause", {"until": "2099-01-01T00:00:00"}, 400, "time zone"),
    ("POST", f"{BASE}/queues/{Q}/pause", {"until": [2030]}, 400, ""),
    ("DELETE", f"{BASE}/queues/{Q}/drain", {"include_delayed": "maybe"}, 400, ""),
    ("DELETE", f"{BASE}/queues/{Q}/drain", {"token": 5}, 400, ""),
    ("DELETE", f"{BASE}/queues/{Q}/drain", {"token": "forged.sig", "confirm": "DRAIN"}, 403, "invalid"),
    ("DELETE", f"{BASE}/queues/{Q}/drain", {"token": "no-dot", "confirm": "DRAIN"}, 403, "invalid"),
    ("POST", f"{BASE}/queues/{Q}/clean", {"state": "everything"}, 400, ""),
    ("POST", f"{BASE}/queues/{Q}/clean", {"older_than_s": -1}, 400, ""),
    ("POST", f"{BASE}/queues/{Q}/clean", {"older_than_s": "old"}, 400, ""),
    ("POST", f"{BASE}/queues/{Q}/clean", {"token": "forged.sig", "confirm": "CLEAN"}, 403, "invalid"),
    # unknown queue
    ("POST", f"{BASE}/queues/nope/pause", {}, 404, "nope"),
    ("POST", f"{BASE}/queues/nope/resume", {}, 404, "nope"),
    ("POST", f"{BASE}/queues/nope/retry-failed", {}, 404, "nope"),
    ("DELETE", f"{BASE}/queues/nope/drain", {}, 404, "nope"),
    ("POST", f"{BASE}/queues/nope/clean", {}, 404, "nope"),
    ("POST", f"{BASE}/queues/nope/clean", {"state": "completed"}, 404, "nope"),
    ("GET", f"{BASE}/queues/nope", None, 404, "nope"),
    ("GET", f"{BASE}/jobs?queue=nope", None, 404, "nope"),
    # unknown or invalid job
    ("POST", f"{BASE}/jobs/no-such-job/retry", {}, 404, "no-such-job"),
    ("POST", f"{BASE}/jobs/no-such-job/cancel", {}, 404, "no-such-job"),
    ("GET", f"{BASE}/jobs/no-such-job", None, 404, "no-such-job"),
    ("POST", f"{BASE}/jobs/a.b/cancel", {}, 400, "job_id"),
    ("GET", f"{BASE}/jobs/a.b", None, 400, "job_id"),
    # query strings
    ("GET", f"{BASE}/jobs?status=bogus", None, 400, "bogus"),
    ("GET", f"{BASE}/jobs?limit=0", None, 400, ""),
    ("GET", f"{BASE}/jobs?limit=501", None, 400, ""),
    ("GET", f"{BASE}/jobs?since=yesterday", None, 400, ""),
    ("GET", f"{BASE}/audit?before_id=x", None, 400, ""),
    ("GET", f"{BASE}/stream?interval_s=soon", None, 400, ""),
    ("GET", f"{BASE}/jobs?level=10", None, 400, ""),
    ("GET", f"{BASE}/queues/{Q}?window=1y", None, 400, ""),
    ("GET", f"{BASE}/audit?ok=maybe", None, 400, ""),
    # the new actions: unknown things are 404s, bad bodies 400s
    ("POST", f"{BASE}/jobs/no-such-job/promote", {}, 404, "no-such-job"),
    ("POST", f"{BASE}/jobs/no-such-job/delete", {}, 404, "no-such-job"),
    ("POST", f"{BASE}/schedules/{Q}/no-such-schedule/delete", {}, 404, "no-such-schedule"),
    ("POST", f"{BASE}/schedules/{Q}/no-such-schedule/trigger", {}, 404, "no-such-schedule"),
    ("PUT", f"{BASE}/schedules/nope/x", {"cron": "@daily"}, 404, "nope"),
    ("PUT", f"{BASE}/schedules/{Q}/x", {"cron": "@daily", "priority": 0}, 400, ""),
    ("POST", f"{BASE}/bulk/retry", {"job_ids": []}, 400, ""),
    ("POST", f"{BASE}/bulk/retry", {"job_ids": ["a.b"]}, 400, ""),
    ("POST", f"{BASE}/bulk/retry", {"filter": {"status": "bogus"}}, 400, ""),
    ("POST", f"{BASE}/bulk/retry", {"filter": {"queue": "nope"}, "dry_run": True}, 404, "nope"),
    ("POST", f"{BASE}/bulk/retry", {"filter": {}, "token": "forged.sig"}, 403, "invalid"),
    ("GET", f"{BASE}/bulk/0123456789ab", None, 404, ""),
    ("POST", f"{BASE}/incidents/ack", {"type": "bogus", "queue": Q}, 400, ""),
    ("POST", f"{BASE}/incidents/snooze", {"type": "no_worker", "queue": Q, "minutes": 0}, 400, ""),
    # login
    ("POST", "/auth/login", {"username": 1, "password": []}, 400, ""),
    ("POST", "/auth/login", {"username": "ada"}, 400, ""),
    ("POST", "/auth/login", {"username": "ada", "password": "x", "role": "admin"}, 400, ""),
]


async def test_bad_input_is_a_4xx_never_a_500(monitor: httpx.AsyncClient, nc: NatsClient, client: JobClient) -> None:
    await client.enqueue(Q, "stay", {})
    failures: list[str] = []

    def check(label: str, r: httpx.Response, want: int, words: str = "") -> None:
        if r.status_code != want or "Traceback" in r.text or (words and words not in r.text):
            failures.append(
                f"{label}: expected {want}{f' with {words!r}' if words else ''}, got {r.status_code}: {r.text[:300]}"
            )
            return
        if not isinstance(r.json().get("detail"), str):
            failures.append(f"{label}: error body without a detail: {r.text[:300]}")

    for method, url in [*MUTATIONS, ("POST", "/auth/login")]:
        for label, raw in BAD_BODIES:
            r = await monitor.request(method, url, content=raw, headers={**ADMIN, **JSON_CT})
            check(f"{method} {url} with {label}", r, 400)
    for method, url, body, want, words in SPECIFIC:
        r = await monitor.request(method, url, json=body, headers=ADMIN)
        check(f"{method} {url} {body}", r, want, words)
    assert not failures, "\n".join(failures)
    # none of it changed anything: the queue is not paused and the job still waits
    q = (await monitor.get(f"{BASE}/queues/{Q}", headers=ADMIN)).json()
    assert q["paused"] is False and q["waiting"] == 1


async def test_pause_until_in_the_future_then_resume(monitor: httpx.AsyncClient) -> None:
    until = "2099-01-01T00:00:00+09:00"
    r = await monitor.post(
        f"{BASE}/queues/{Q}/pause", json={"until": until, "reason": "x"}, headers=HEADERS["operator"]
    )
    assert r.status_code == 200 and r.json() == {"paused": True, "pause_until": "2098-12-31T15:00:00Z"}
    q = (await monitor.get(f"{BASE}/queues/{Q}", headers=VIEWER)).json()
    assert q["paused"] is True and q["status"] == "Paused"
    r = await monitor.post(f"{BASE}/queues/{Q}/resume", json={}, headers=HEADERS["operator"])
    assert r.status_code == 200
    assert (await monitor.get(f"{BASE}/queues/{Q}", headers=VIEWER)).json()["paused"] is False


async def test_pause_without_an_end_reports_no_end(monitor: httpx.AsyncClient) -> None:
    r = await monitor.post(f"{BASE}/queues/{Q}/pause", json={"reason": "x"}, headers=HEADERS["operator"])
    assert r.status_code == 200 and r.json() == {"paused": True, "pause_until": None}
    for url in (f"{BASE}/queues/{Q}", f"{BASE}/queues"):
        body = (await monitor.get(url, headers=VIEWER)).json()
        q = body if isinstance(body, dict) else next(x for x in body if x["name"] == Q)
        assert q["paused"] is True and q["pause_until"] is None, q


@pytest.mark.parametrize("wildcard", ["%2A", "%3E"])
async def test_retry_with_a_wildcard_job_id_is_rejected(
    wildcard: str, monitor: httpx.AsyncClient, nc: NatsClient, client: JobClient, catalog: Catalog
) -> None:
    victim = await dead_letter(nc, client, catalog)
    r = await monitor.post(f"{BASE}/jobs/{wildcard}/retry", json={}, headers=ADMIN)
    assert victim in await dlq_ids(nc), "another job was taken out of the dead-letter stream"
    assert r.status_code == 400, r.text


async def test_clean_with_a_huge_age_is_not_a_500(monitor: httpx.AsyncClient) -> None:
    r = await monitor.post(f"{BASE}/queues/{Q}/clean", json={"state": "completed", "older_than_s": 1e12}, headers=ADMIN)
    _no_trace(r)
    assert r.status_code in (200, 400), r.text


# ---------------------------------------------------------------- server-sent events
async def _events(r: httpx.Response, n: int) -> list[tuple[float, str, dict[str, Any]]]:
    """The first ``n`` events of an SSE response: (arrival time, event name, data)."""
    out: list[tuple[float, str, dict[str, Any]]] = []
    buf = ""
    async for chunk in r.aiter_text():
        buf += chunk.replace("\r\n", "\n")
        while "\n\n" in buf:
            raw, buf = buf.split("\n\n", 1)
            fields: dict[str, str] = {}
            for line in raw.split("\n"):
                key, _, value = line.partition(":")
                fields[key] = fields.get(key, "") + value.removeprefix(" ")
            if "data" in fields:
                out.append((time.monotonic(), fields.get("event", "message"), json.loads(fields["data"])))
            if len(out) == n:
                return out
    raise AssertionError(f"the stream ended after {len(out)} event(s)")


async def test_stream_sends_overview_and_queues(
    common: CommonSettings, catalog: Catalog, sqlite_url: str, nc: NatsClient, client: JobClient
) -> None:
    await client.enqueue(Q, "waiting", {})  # before the app starts: its first sample sees it
    async with serve(create_app(_settings(common, sqlite_url), catalog=catalog)) as http:
        async with http.stream("GET", f"{BASE}/stream?interval_s=0.5", headers=VIEWER) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = await asyncio.wait_for(_events(r, 2), 10)
        (t1, kind, data), (t2, _, _) = events
        assert kind == "update" and set(data) >= {"overview", "queues", "ts"}
        ov = data["overview"]
        assert ov["waiting"] == 1 and ov["online_workers"] == 0 and isinstance(ov["incidents"], list)
        assert any(i["type"] == "no_worker" and i["queue"] == Q for i in ov["incidents"])
        queues = {q["name"]: q for q in data["queues"]}
        assert set(queues) == set(catalog.names) and queues[Q]["waiting"] == 1
        assert 0.3 <= t2 - t1 < 5, t2 - t1
        # the interval is 0.5 to 60 s, as the schema says: outside, a 400 instead of a silent clamp
        for interval in ("0.01", "61"):
            r = await http.get(f"{BASE}/stream?interval_s={interval}", headers=VIEWER)
            assert r.status_code == 400 and "interval_s" in r.text, r.text
        async with http.stream("GET", f"{BASE}/stream") as r:
            assert r.status_code == 401
