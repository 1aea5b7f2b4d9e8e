"""The producer HTTP API against a real nats-server (no worker runs, so jobs stay waiting/scheduled)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from jetqueue import names
from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.embedded import EmbeddedNats
from jetqueue.job import now_ms
from jetqueue.settings import CommonSettings
from jetqueue_producer.app import create_app
from jetqueue_producer.settings import ProducerSettings
from tests.conftest import eventually

Q = "email-send"  # 3 priority levels: priority 1 -> p0, none/2 -> p1, >= 3 -> p2
STREAM = names.job_stream(Q)

STARTUP_SCHEDULES = {("analytics-aggregate", "daily-aggregate"), ("cleanup-old-data", "cleanup-old-data")}

Http = AsyncTestClient[Litestar]

ADMIN_TOKEN = "api-tests-admin"  # every scope; tests/integration/test_producer_auth.py covers the others


def make_app(common: CommonSettings, catalog: Catalog, **settings: Any) -> Litestar:
    settings.setdefault("tokens", f"api-tests:admin:{ADMIN_TOKEN}")
    app: Litestar = create_app(ProducerSettings(common=common, register_schedules=True, **settings), catalog=catalog)
    return app


def api(app: Litestar) -> Http:
    """A test client of ``app`` that sends the admin token."""
    client: Http = AsyncTestClient(app=app)
    client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    return client


@pytest.fixture
async def http(common: CommonSettings, catalog: Catalog) -> AsyncIterator[Http]:
    async with api(make_app(common, catalog)) as client:
        yield client


def body(r: httpx.Response) -> Any:
    """The JSON body of a response, after checking it leaks no stack trace."""
    assert "Traceback" not in r.text, r.text
    return r.json()


async def stream_messages(nc: NatsClient, queue: str = Q, subjects: str | None = None) -> int:
    info = await nc.jetstream().stream_info(names.job_stream(queue), subjects_filter=subjects)
    if subjects is None:
        return info.state.messages
    return sum((info.state.subjects or {}).values())


async def enqueue(http: Http, payload: dict[str, Any] | None = None, queue: str = Q, **headers: str) -> dict[str, Any]:
    r = await http.post(f"/jobs/{queue}", json=payload or {"name": "welcome"}, headers=headers)
    assert r.status_code == 202, r.text
    out: dict[str, Any] = body(r)
    return out


# ------------------------------------------------------------------ enqueue


async def test_enqueue_returns_202_and_job_is_waiting(http: Http, nc: NatsClient) -> None:
    out = await enqueue(http, {"name": "welcome", "data": {"to": "a@b.c"}, "user_id": "u1"})
    assert out["state"] == "waiting"
    assert out["queue"] == Q
    assert out["duplicate"] is False
    assert out["run_at"] is None
    assert names.is_valid_token(out["job_id"])

    r = await http.get(f"/jobs/{out['job_id']}")
    assert r.status_code == 200
    st = body(r)
    assert (st["id"], st["state"], st["name"], st["data"], st["user_id"]) == (
        out["job_id"],
        "waiting",
        "welcome",
        {"to": "a@b.c"},
        "u1",
    )
    msg = await nc.jetstream().get_last_msg(STREAM, names.job_subject_any_level(Q, out["job_id"]))
    assert json.loads(msg.data or b"")["data"] == {"to": "a@b.c"}


async def test_enqueue_with_delay_is_scheduled_with_run_at(http: Http, nc: NatsClient) -> None:
    before = now_ms()
    out = await enqueue(http, {"name": "later", "delay_ms": 60_000})
    after = now_ms()
    assert out["state"] == "scheduled"
    run_at_ms = round(datetime.fromisoformat(out["run_at"].replace("Z", "+00:00")).timestamp() * 1000)
    assert before + 60_000 <= run_at_ms <= after + 60_000

    st = body(await http.get(f"/jobs/{out['job_id']}"))
    assert st["state"] == "scheduled"
    assert st["run_at"] == run_at_ms
    # it waits as a broker schedule, not on a level subject a worker would pull
    msg = await nc.jetstream().get_last_msg(STREAM, names.sched_subject(Q, out["job_id"]))
    assert (msg.headers or {})["Nats-Schedule"].startswith("@at ")
    assert await stream_messages(nc, subjects=f"jq.{Q}.job.>") == 0


async def test_enqueue_with_run_at_is_scheduled(http: Http) -> None:
    when = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    out = await enqueue(http, {"name": "later", "run_at": when.isoformat()})
    assert out["state"] == "scheduled"
    assert datetime.fromisoformat(out["run_at"].replace("Z", "+00:00")) == when
    assert body(await http.get(f"/jobs/{out['job_id']}"))["state"] == "scheduled"


async def test_same_job_id_twice_gives_one_job(http: Http, nc: NatsClient) -> None:
    first = await enqueue(http, {"name": "welcome", "job_id": "order-42"})
    second = await enqueue(http, {"name": "welcome", "job_id": "order-42"})
    assert (first["job_id"], first["duplicate"]) == ("order-42", False)
    assert (second["job_id"], second["duplicate"]) == ("order-42", True)
    assert await stream_messages(nc) == 1


async def test_same_idempotency_key_twice_gives_one_job(http: Http, nc: NatsClient) -> None:
    first = await enqueue(http, {"name": "welcome"}, **{"Idempotency-Key": "req-7f3a"})
    second = await enqueue(http, {"name": "welcome"}, **{"Idempotency-Key": "req-7f3a"})
    assert first["duplicate"] is False
    assert second["duplicate"] is True
    assert first["job_id"] == second["job_id"]
    assert await stream_messages(nc) == 1


async def test_idempotency_key_that_is_not_a_token_is_hashed_and_stable(http: Http, nc: NatsClient) -> None:
    key = "order 42.v1/retry"  # space, dot and slash cannot travel in a subject
    first = await enqueue(http, {"name": "welcome"}, **{"Idempotency-Key": key})
    second = await enqueue(http, {"name": "welcome"}, **{"Idempotency-Key": key})
    other = await enqueue(http, {"name": "welcome"}, **{"Idempotency-Key": "order 43.v1/retry"})
    assert names.is_valid_token(first["job_id"])
    assert first["job_id"] == second["job_id"] != other["job_id"]
    assert (first["duplicate"], second["duplicate"], other["duplicate"]) == (False, True, False)
    assert await stream_messages(nc) == 2
    assert body(await http.get(f"/jobs/{first['job_id']}"))["state"] == "waiting"


async def test_idempotency_key_and_different_job_id_is_400(http: Http, nc: NatsClient) -> None:
    r = await http.post(
        f"/jobs/{Q}", json={"name": "welcome", "job_id": "other-id"}, headers={"Idempotency-Key": "req-1"}
    )
    assert r.status_code == 400
    assert "Idempotency-Key" in body(r)["detail"]
    assert await stream_messages(nc) == 0
    # the same id in both places is fine
    ok = await enqueue(http, {"name": "welcome", "job_id": "req-1"}, **{"Idempotency-Key": "req-1"})
    assert ok["job_id"] == "req-1"


@pytest.mark.parametrize(("priority", "level"), [(1, 0), (2, 1), (None, 1), (3, 2), (1000, 2)])
async def test_priority_maps_to_subject_level(http: Http, nc: NatsClient, priority: int | None, level: int) -> None:
    payload: dict[str, Any] = {"name": "welcome"}
    if priority is not None:
        payload["priority"] = priority
    out = await enqueue(http, payload)
    js = nc.jetstream()
    msg = await js.get_last_msg(STREAM, names.job_subject_any_level(Q, out["job_id"]))
    assert msg.subject == f"jq.{Q}.job.p{level}.{out['job_id']}"


# --------------------------------------------------------------------- bulk


async def test_bulk_enqueues_500_jobs(http: Http, nc: NatsClient) -> None:
    r = await http.post(f"/jobs/{Q}/bulk", json={"jobs": [{"name": "n", "data": i} for i in range(500)]})
    assert r.status_code == 202, r.text
    out = body(r)
    assert (out["count"], out["duplicates"]) == (500, 0)
    assert len({j["job_id"] for j in out["jobs"]}) == 500
    assert {j["state"] for j in out["jobs"]} == {"waiting"}
    assert await stream_messages(nc) == 500


async def test_bulk_mixes_waiting_scheduled_and_duplicates(http: Http, nc: NatsClient) -> None:
    jobs = [{"name": "a", "job_id": "b1"}, {"name": "b", "delay_ms": 60_000}, {"name": "a", "job_id": "b1"}]
    out = body(await http.post(f"/jobs/{Q}/bulk", json={"jobs": jobs}))
    assert [j["state"] for j in out["jobs"]] == ["waiting", "scheduled", "waiting"]
    assert [j["duplicate"] for j in out["jobs"]] == [False, False, True]
    assert (out["count"], out["duplicates"]) == (3, 1)
    assert await stream_messages(nc) == 2


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"data": 1}, "name"),  # refused by the request schema
        ({"name": "n", "run_at": "2099-01-01T00:00:00Z"}, "run_at"),  # refused by the SDK (> 365 days ahead)
    ],
)
async def test_bulk_with_one_bad_item_publishes_nothing(
    http: Http, nc: NatsClient, bad: dict[str, Any], field: str
) -> None:
    jobs = [{"name": "n", "data": i} for i in range(5)] + [bad] + [{"name": "n"}]
    r = await http.post(f"/jobs/{Q}/bulk", json={"jobs": jobs})
    assert r.status_code == 400
    assert field in r.text
    body(r)
    assert await stream_messages(nc) == 0


async def test_bulk_over_max_bulk_is_400(common: CommonSettings, catalog: Catalog, nc: NatsClient) -> None:
    async with api(make_app(common, catalog, max_bulk=3)) as http:
        r = await http.post(f"/jobs/{Q}/bulk", json={"jobs": [{"name": "n"}] * 4})
        assert r.status_code == 400
        assert "at most 3" in body(r)["detail"]
        assert await stream_messages(nc) == 0
        ok = await http.post(f"/jobs/{Q}/bulk", json={"jobs": [{"name": "n"}] * 3})
        assert ok.status_code == 202
        assert await stream_messages(nc) == 3


# ------------------------------------------------------------------- status


async def test_status_of_unknown_job_is_404(http: Http) -> None:
    r = await http.get("/jobs/never-enqueued")
    assert r.status_code == 404
    assert "never-enqueued" in body(r)["detail"]
    assert "not found" in body(r)["detail"]


@pytest.mark.parametrize("job_id", ["a.b", "a*b", "x" * 129])
async def test_status_with_invalid_job_id_is_400(http: Http, job_id: str) -> None:
    r = await http.get(f"/jobs/{job_id}")
    assert r.status_code == 400
    assert "job_id" in body(r)["detail"]


async def test_status_with_queue_hint(http: Http, client: JobClient) -> None:
    res = await client.enqueue(Q, "via-sdk", {"k": 1})  # the SDK and the API see the same jobs
    st = body(await http.get(f"/jobs/{res.job_id}", params={"queue": Q}))
    assert (st["state"], st["name"], st["data"]) == ("waiting", "via-sdk", {"k": 1})
    r = await http.get(f"/jobs/{res.job_id}", params={"queue": "notification-send"})
    assert r.status_code == 404


# ------------------------------------------------------------------- cancel


@pytest.mark.parametrize(
    ("payload", "before"), [({"name": "n"}, "waiting"), ({"name": "n", "delay_ms": 60_000}, "scheduled")]
)
async def test_cancel_removes_the_job(http: Http, nc: NatsClient, payload: dict[str, Any], before: str) -> None:
    out = await enqueue(http, payload)
    keep = await enqueue(http, {"name": "other"})
    assert body(await http.get(f"/jobs/{out['job_id']}"))["state"] == before
    assert await stream_messages(nc) == 2

    r = await http.delete(f"/jobs/{out['job_id']}")
    assert r.status_code == 200
    st = body(r)
    assert st["state"] == "cancelled"
    assert st["cancel"] == "done"
    assert await stream_messages(nc) == 1  # only the other job is left
    with pytest.raises(NotFoundError):
        await nc.jetstream().get_last_msg(STREAM, names.job_subject_any_level(Q, out["job_id"]))
    with pytest.raises(NotFoundError):
        await nc.jetstream().get_last_msg(STREAM, names.sched_subject(Q, out["job_id"]))

    assert body(await http.get(f"/jobs/{out['job_id']}"))["state"] == "cancelled"
    assert body(await http.get(f"/jobs/{keep['job_id']}"))["state"] == "waiting"

    again = await http.delete(f"/jobs/{out['job_id']}")
    assert again.status_code == 409
    assert "cancelled" in body(again)["detail"]


async def test_cancel_unknown_job_is_404(http: Http) -> None:
    r = await http.delete("/jobs/never-enqueued")
    assert r.status_code == 404
    assert "never-enqueued" in body(r)["detail"]


async def test_job_id_reused_after_cancel_and_duplicate_window_shows_the_new_job(
    common: CommonSettings, catalog: Catalog, nc: NatsClient
) -> None:
    cat = catalog.replace(Q, duplicate_window_s=1)
    async with api(make_app(common, cat)) as http:
        await enqueue(http, {"name": "n", "job_id": "reused"})
        assert (await http.delete("/jobs/reused")).status_code == 200

        async def accepted_as_new() -> dict[str, Any] | None:
            out = await enqueue(http, {"name": "n", "job_id": "reused"})
            return out if not out["duplicate"] else None

        out = await eventually(accepted_as_new, timeout=5, interval=0.3, what="enqueue after the duplicate window")
        assert out is not None
        assert out["state"] == "waiting"
        assert await stream_messages(nc) == 1
        assert body(await http.get("/jobs/reused"))["state"] == "waiting"
        # and the new job can be cancelled in turn
        assert (await http.delete("/jobs/reused")).status_code == 200
        assert await stream_messages(nc) == 0


# ---------------------------------------------------------------- schedules


async def schedules(http: Http, queue: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    r = await http.get("/schedules", params={"queue": queue} if queue else None)
    assert r.status_code == 200, r.text
    return {(s["queue"], s["name"]): s for s in body(r)}


async def test_startup_schedules_are_listed(http: Http) -> None:
    listed = await schedules(http)
    assert set(listed) == STARTUP_SCHEDULES
    assert listed[("analytics-aggregate", "daily-aggregate")]["cron"] == "0 0 * * *"
    assert listed[("cleanup-old-data", "cleanup-old-data")]["data"]["retention_days"]["api_logs"] == 90


async def test_put_schedule_creates_and_replaces(http: Http) -> None:
    r = await http.put(
        f"/schedules/{Q}/digest", json={"cron": "0 9 * * 1-5", "time_zone": "Asia/Seoul", "data": {"kind": "daily"}}
    )
    assert r.status_code == 200, r.text
    assert body(r)["cron"] == "0 9 * * 1-5"
    listed = await schedules(http)
    assert listed[(Q, "digest")]["cron"] == "0 9 * * 1-5"
    assert listed[(Q, "digest")]["time_zone"] == "Asia/Seoul"
    assert listed[(Q, "digest")]["data"] == {"kind": "daily"}

    r = await http.put(f"/schedules/{Q}/digest", json={"cron": "*/15 * * * *"})
    assert r.status_code == 200, r.text
    mine = await schedules(http, Q)
    assert list(mine) == [(Q, "digest")]
    assert (mine[(Q, "digest")]["cron"], mine[(Q, "digest")]["time_zone"]) == ("*/15 * * * *", "UTC")
    assert set(await schedules(http)) == STARTUP_SCHEDULES | {(Q, "digest")}


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"cron": "not a cron"}, "cron"),
        ({"cron": "a b c d e"}, "cron"),
        ({"cron": "*/5 * * * *", "time_zone": "Mars/Olympus"}, "time zone"),
    ],
)
async def test_bad_schedule_is_400(http: Http, payload: dict[str, Any], words: str) -> None:
    r = await http.put(f"/schedules/{Q}/bad", json=payload)
    assert r.status_code == 400
    assert words in body(r)["detail"]
    assert (Q, "bad") not in await schedules(http)


async def test_schedule_with_invalid_name_is_400(http: Http) -> None:
    r = await http.put(f"/schedules/{Q}/a.b", json={"cron": "*/5 * * * *"})
    assert r.status_code == 400
    assert "name" in body(r)["detail"]


async def test_delete_schedule(http: Http) -> None:
    assert (await http.put(f"/schedules/{Q}/digest", json={"cron": "0 9 * * *"})).status_code == 200
    r = await http.delete(f"/schedules/{Q}/digest")
    assert r.status_code == 200
    assert body(r)["deleted"] is True
    assert set(await schedules(http)) == STARTUP_SCHEDULES

    again = await http.delete(f"/schedules/{Q}/digest")
    assert again.status_code == 404
    assert "digest" in body(again)["detail"]


async def test_every_second_schedule_fires(http: Http, nc: NatsClient) -> None:
    r = await http.put(f"/schedules/{Q}/tick", json={"cron": "@every 1s", "data": {"n": 1}})
    assert r.status_code == 200, r.text
    subject = names.cronjob_subject(Q, 1, "tick")  # no priority: the middle level

    async def fired() -> int:
        return await stream_messages(nc, subjects=subject)

    await eventually(fired, timeout=3, what=f"a message on {subject}")
    msg = await nc.jetstream().get_last_msg(STREAM, subject)
    assert json.loads(msg.data or b"")["data"] == {"n": 1}


# ------------------------------------------------------------ /fleet/ei-update


async def test_ei_update_queues_an_urgent_job(http: Http, nc: NatsClient) -> None:
    r = await http.post("/fleet/ei-update", json={"fleet_id": "fleet-7", "new_ei": 42.5})
    assert r.status_code == 202, r.text
    out = body(r)
    assert out["job_id"].startswith("ei-")
    assert out["duplicate"] is False
    msg = await nc.jetstream().get_last_msg(
        names.job_stream("ei-update"), names.job_subject_any_level("ei-update", out["job_id"])
    )
    assert msg.subject == f"jq.ei-update.job.p0.{out['job_id']}"
    assert json.loads(msg.data or b"")["data"] == {"fleet_id": "fleet-7", "new_ei": 42.5}
    st = body(await http.get(f"/jobs/{out['job_id']}"))
    assert (st["queue"], st["state"]) == ("ei-update", "waiting")


async def test_ei_update_same_body_twice_is_one_job(http: Http, nc: NatsClient) -> None:
    first = body(await http.post("/fleet/ei-update", json={"fleet_id": "fleet-7", "new_ei": 80}))
    second = body(await http.post("/fleet/ei-update", json={"fleet_id": "fleet-7", "new_ei": 80}))
    assert first["job_id"] == second["job_id"]
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert await stream_messages(nc, "ei-update") == 1


@pytest.mark.parametrize("new_ei", [250, -1, 200.01])
async def test_ei_update_out_of_range_is_400(http: Http, nc: NatsClient, new_ei: float) -> None:
    r = await http.post("/fleet/ei-update", json={"fleet_id": "fleet-7", "new_ei": new_ei})
    assert r.status_code == 400
    assert "EI value out of range" in body(r)["detail"]
    assert await stream_messages(nc, "ei-update") == 0


async def test_ei_update_without_fleet_id_is_400(http: Http) -> None:
    r = await http.post("/fleet/ei-update", json={"new_ei": 50})
    assert r.status_code == 400
    assert "fleet_id" in r.text
    body(r)


# ------------------------------------------------------- /order/bid-evaluation


CANDIDATES = [
    {"proposal_id": "p-mid", "price": 100, "ei": 50, "eta_hours": 5},
    {"proposal_id": "p-best", "price": 80, "ei": 40, "eta_hours": 4, "rating": 5},
    {"proposal_id": "p-worst", "price": 120, "ei": 90, "eta_hours": 9, "rating": 1},
]


async def test_bid_evaluation_ranks_and_queues_a_ranking_job(http: Http, nc: NatsClient) -> None:
    r = await http.post("/order/bid-evaluation", json={"order_id": "ord-1", "bid_candidates": CANDIDATES})
    assert r.status_code == 200, r.text
    out = body(r)
    results = out["evaluated_results"]
    assert [x["rank"] for x in results] == [1, 2, 3]
    assert [x["proposal_id"] for x in results] == ["p-best", "p-mid", "p-worst"]
    scores = [x["composite_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert results[0]["composite_score"] == max(scores)
    assert out["summary"]["count"] == 3
    assert out["summary"]["top_proposal_id"] == "p-best"

    job = out["ranking_job"]
    assert job["state"] == "scheduled"
    assert job["duplicate"] is False
    stream = names.job_stream("proposal-ranking")
    sched = names.sched_subject("proposal-ranking", job["job_id"])
    fired = names.job_subject("proposal-ranking", 1, job["job_id"])  # priority 2 -> p1
    js = nc.jetstream()

    # The ranking job is a 100 ms broker schedule in proposal-ranking's stream (or, if the test was slower than
    # that, already the job it fired); once fired it waits on p1, since no worker runs.
    async def subjects() -> dict[str, int]:
        return (await js.stream_info(stream, subjects_filter=">")).state.subjects or {}

    assert set(await eventually(subjects, timeout=2, what="a ranking message")) <= {sched, fired}

    async def has_fired() -> bool:
        return set(await subjects()) == {fired}

    await eventually(has_fired, timeout=5, what="the ranking job to leave its 100 ms schedule")
    msg = await js.get_last_msg(stream, fired)
    assert json.loads(msg.data or b"")["data"] == {"bid_id": "ord-1"}
    assert body(await http.get(f"/jobs/{job['job_id']}"))["state"] == "waiting"


async def test_bid_evaluation_without_candidates_queues_nothing(http: Http, nc: NatsClient) -> None:
    r = await http.post("/order/bid-evaluation", json={"order_id": "ord-3", "bid_candidates": []})
    assert r.status_code == 200
    out = body(r)
    assert out["evaluated_results"] == []
    assert out["summary"]["count"] == 0
    assert out["ranking_job"] is None
    assert await stream_messages(nc, "proposal-ranking") == 0


@pytest.mark.parametrize(
    ("candidate", "field"),
    [
        ({"proposal_id": "p", "price": -1, "ei": 50, "eta_hours": 5}, "price"),
        ({"proposal_id": "p", "price": 1, "ei": 201, "eta_hours": 5}, "ei"),
        ({"proposal_id": "p", "price": 1, "ei": 50}, "eta_hours"),
    ],
)
async def test_bid_evaluation_invalid_candidate_is_400(
    http: Http, nc: NatsClient, candidate: dict[str, Any], field: str
) -> None:
    r = await http.post("/order/bid-evaluation", json={"order_id": "ord-4", "bid_candidates": [candidate]})
    assert r.status_code == 400
    assert f"bid_candidates.0.{field}" in r.text
    body(r)
    assert await stream_messages(nc, "proposal-ranking") == 0


# ------------------------------------------------------------------ bad input


BODY_ROUTES = [
    ("POST", f"/jobs/{Q}"),
    ("POST", f"/jobs/{Q}/bulk"),
    ("PUT", f"/schedules/{Q}/s1"),
    ("POST", "/fleet/ei-update"),
    ("POST", "/order/bid-evaluation"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_malformed_json_is_400(http: Http, nc: NatsClient, method: str, path: str) -> None:
    for raw in (b"{", b"{bad json", b"", b"\xff\xfe", b'{"name": "n",}'):
        r = await http.request(method, path, content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (raw, r.text)
        body(r)
    assert await stream_messages(nc) == 0


WRONG_TYPES: dict[tuple[str, str], list[tuple[Any, str]]] = {
    ("POST", f"/jobs/{Q}"): [
        ({"name": 5}, "name"),
        ({"name": "n", "priority": "high"}, "priority"),
        ({"name": "n", "delay_ms": "soon"}, "delay_ms"),
        ({"name": "n", "job_id": "a.b"}, "job_id"),
        ({"name": "n", "backoff": {"type": "linear", "delay_ms": 1}}, "backoff"),
        ({"name": "n", "nmae": "typo"}, "nmae"),
        ([1, 2], "JobIn"),
    ],
    ("POST", f"/jobs/{Q}/bulk"): [
        ({"jobs": "all"}, "jobs"),
        ({"jobs": [{"name": "ok"}, {"name": 5}]}, "jobs.1.name"),
    ],
    ("PUT", f"/schedules/{Q}/s1"): [
        ({"cron": 5}, "cron"),
        ({"cron": "* * * * *", "priority": "x"}, "priority"),
    ],
    ("POST", "/fleet/ei-update"): [
        ({"fleet_id": "f1", "new_ei": "abc"}, "new_ei"),
        ({"fleet_id": "f 1", "new_ei": 5}, "fleet_id"),
    ],
    ("POST", "/order/bid-evaluation"): [
        ({"order_id": "o1", "bid_candidates": "x"}, "bid_candidates"),
        (
            {"order_id": "o1", "bid_candidates": [{"proposal_id": "a", "price": "cheap", "ei": 5, "eta_hours": 1}]},
            "bid_candidates.0.price",
        ),
    ],
}


@pytest.mark.parametrize(("method", "path"), list(WRONG_TYPES))
async def test_wrong_types_are_400_naming_the_field(http: Http, nc: NatsClient, method: str, path: str) -> None:
    for payload, field in WRONG_TYPES[(method, path)]:
        r = await http.request(method, path, json=payload)
        assert r.status_code == 400, (payload, r.text)
        assert field in r.text, (payload, r.text)
        body(r)
    assert await stream_messages(nc) == 0
    assert (Q, "s1") not in await schedules(http)


async def test_missing_body_is_400(http: Http) -> None:
    r = await http.post(f"/jobs/{Q}")
    assert r.status_code == 400
    body(r)


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", f"/jobs/{Q}", {"name": "n", "data": "x" * 1_100_000}),
        ("POST", f"/jobs/{Q}/bulk", {"jobs": [{"name": "n"}, {"name": "n", "data": "x" * 1_100_000}]}),
        ("PUT", f"/schedules/{Q}/big", {"cron": "0 9 * * *", "data": "x" * 1_100_000}),
    ],
)
async def test_payload_over_nats_max_payload_is_rejected_not_500(
    http: Http, nc: NatsClient, method: str, path: str, payload: dict[str, Any]
) -> None:
    r = await http.request(method, path, json=payload)
    assert r.status_code == 413, r.text
    assert "too large" in body(r)["detail"]
    assert await stream_messages(nc) == 0


# Under the server's max payload (1 MiB here), but with no room left for what a worker derives from
# the job (a retry or dead letter carries its errors): accepted, it would break the worker later.
NEAR_LIMIT = "x" * 1_045_000


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        (f"/jobs/{Q}", {"name": "n", "data": NEAR_LIMIT}),
        (f"/jobs/{Q}/bulk", {"jobs": [{"name": "n"}, {"name": "n", "data": NEAR_LIMIT}, {"name": "n"}]}),
    ],
    ids=["one", "bulk"],
)
async def test_job_without_room_under_max_payload_is_413(
    http: Http, nc: NatsClient, path: str, payload: dict[str, Any]
) -> None:
    r = await http.post(path, json=payload)
    assert r.status_code == 413, r.text
    out = body(r)
    assert out["status_code"] == 413
    assert 0 < out["limit_bytes"] < 1_045_000
    assert "too large" in out["detail"] and str(out["limit_bytes"]) in out["detail"]
    assert await stream_messages(nc) == 0
    assert 'jetqueue_producer_rejected_total{reason="too_large"} 1.0' in (await http.get("/metrics")).text


ONE_JOB_LIMIT = 1024 * 1024  # JETQUEUE_PRODUCER_MAX_JOB_BYTES' default
BULK_LIMIT = 32 * 1024 * 1024  # JETQUEUE_PRODUCER_MAX_BODY_BYTES' default


@pytest.mark.parametrize(
    ("method", "path", "size", "limit"),
    [
        ("POST", f"/jobs/{Q}", 2_000_000, ONE_JOB_LIMIT),
        ("POST", f"/jobs/{Q}", 50_000_000, ONE_JOB_LIMIT),
        ("PUT", f"/schedules/{Q}/big", 2_000_000, ONE_JOB_LIMIT),
        ("POST", "/fleet/ei-update", 2_000_000, ONE_JOB_LIMIT),
        ("POST", "/order/bid-evaluation", 2_000_000, ONE_JOB_LIMIT),
        ("POST", f"/jobs/{Q}/bulk", 50_000_000, BULK_LIMIT),
    ],
)
async def test_body_over_the_route_limit_is_413_before_it_is_read(
    http: Http, nc: NatsClient, method: str, path: str, size: int, limit: int
) -> None:
    raw = b"{" + b"x" * size  # not even JSON: had it been parsed, the answer would be a 400
    r = await http.request(method, path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert body(r)["limit_bytes"] == limit
    assert f"at most {limit} bytes" in body(r)["detail"]
    assert await stream_messages(nc) == 0
    assert (Q, "big") not in await schedules(http)


async def test_bulk_body_is_bounded_by_max_bulk_times_max_job_bytes(
    common: CommonSettings, catalog: Catalog, nc: NatsClient
) -> None:
    async with api(make_app(common, catalog, max_bulk=3, max_job_bytes=2048)) as http:
        r = await http.post(f"/jobs/{Q}/bulk", json={"jobs": [{"name": "n", "data": "x" * 3500}] * 2})
        assert r.status_code == 413, r.text
        assert body(r)["limit_bytes"] == 3 * 2048
        ok = await http.post(f"/jobs/{Q}/bulk", json={"jobs": [{"name": "n", "data": "x" * 1500}] * 3})
        assert ok.status_code == 202, ok.text
        assert await stream_messages(nc) == 3


async def test_bulk_body_is_bounded_by_max_body_bytes(common: CommonSettings, catalog: Catalog, nc: NatsClient) -> None:
    async with api(make_app(common, catalog, max_body_bytes=8192)) as http:
        r = await http.post(f"/jobs/{Q}/bulk", json={"jobs": [{"name": "n", "data": "x" * 1000}] * 10})
        assert r.status_code == 413, r.text
        assert "at most 8192 bytes" in body(r)["detail"]
        assert await stream_messages(nc) == 0


async def test_oversized_idempotency_key_is_400(http: Http) -> None:
    r = await http.post(f"/jobs/{Q}", json={"name": "n"}, headers={"Idempotency-Key": "k" * 300})
    assert r.status_code == 400
    assert "idempotency" in r.text.lower()
    body(r)


async def test_unknown_queue_is_404_on_every_queue_route(http: Http) -> None:
    for method, path, payload in [
        ("POST", "/jobs/no-such-queue", {"name": "n"}),
        ("POST", "/jobs/no-such-queue/bulk", {"jobs": [{"name": "n"}]}),
        ("PUT", "/schedules/no-such-queue/s1", {"cron": "*/5 * * * *"}),
        ("DELETE", "/schedules/no-such-queue/s1", None),
        ("GET", "/schedules?queue=no-such-queue", None),
        ("GET", "/jobs/some-id?queue=no-such-queue", None),
        ("DELETE", "/jobs/some-id?queue=no-such-queue", None),
    ]:
        r = await http.request(method, path, json=payload)
        assert r.status_code == 404, (method, path, r.text)
        assert "no-such-queue" in body(r)["detail"], (method, path, r.text)


# ------------------------------------------------------------ NATS unavailable


async def wait_healthy(http: Http) -> None:
    async def healthy() -> bool:
        return (await http.get("/health")).status_code == 200

    await eventually(healthy, timeout=10, what="/health back to 200")


@pytest.mark.slow
async def test_nats_unavailable_is_503_with_retry_hint(
    common: CommonSettings, catalog: Catalog, nats_server: EmbeddedNats
) -> None:
    async with api(make_app(common, catalog)) as http:
        assert (await http.get("/health")).status_code == 200
        nats_server.stop()

        r = await http.post(f"/jobs/{Q}", json={"name": "n"})
        assert r.status_code == 503
        assert r.headers.get("Retry-After")
        assert "retry" in body(r)["detail"].lower()

        st = await http.get("/jobs/some-id")
        assert st.status_code == 503
        assert st.headers.get("Retry-After")
        body(st)

        h = await http.get("/health")
        assert h.status_code == 503
        assert body(h)["nats"] == "disconnected"

        # NATS comes back: the producer reconnects on its own
        nats_server.start()
        await wait_healthy(http)
        assert (await http.post(f"/jobs/{Q}", json={"name": "n"})).status_code == 202


@pytest.mark.slow
async def test_schedule_routes_are_503_while_nats_is_down(
    common: CommonSettings, catalog: Catalog, nats_server: EmbeddedNats
) -> None:
    async with api(make_app(common, catalog)) as http:
        nats_server.stop()
        try:
            for method, path in [("GET", "/schedules"), ("DELETE", "/schedules/analytics-aggregate/daily-aggregate")]:
                r = await http.request(method, path)
                assert r.status_code == 503, (method, path, r.text)
                assert r.headers.get("Retry-After"), (method, path)
                body(r)
        finally:
            nats_server.start()
            await wait_healthy(http)  # shut down connected (see test_shutdown_while_nats_is_down_is_clean)


@pytest.mark.slow
async def test_bulk_is_503_while_nats_is_down(
    common: CommonSettings, catalog: Catalog, nats_server: EmbeddedNats
) -> None:
    async with api(make_app(common, catalog)) as http:
        nats_server.stop()
        # The test client blocks this event loop for the whole request, so a thread brings NATS back after 10 s
        # to end a hung request; a correct producer has answered 503 by then (its NATS timeout is 5 s).
        revive = threading.Timer(10, nats_server.start)
        revive.start()
        try:
            r = await http.post(f"/jobs/{Q}/bulk", json={"jobs": [{"name": "n"}, {"name": "n"}]})
        finally:
            revive.join()
            await wait_healthy(http)
        assert r.status_code == 503, r.text
        assert r.headers.get("Retry-After")
        assert "retry" in body(r)["detail"].lower()


@pytest.mark.parametrize(
    "after_timed_out_request",
    [
        False,
        pytest.param(True, marks=[pytest.mark.slow]),
    ],
)
async def test_shutdown_while_nats_is_down_is_clean(
    common: CommonSettings, catalog: Catalog, nats_server: EmbeddedNats, after_timed_out_request: bool
) -> None:
    async with api(make_app(common, catalog)) as http:
        assert (await http.get("/health")).status_code == 200
        nats_server.stop()

        async def down() -> bool:
            return (await http.get("/health")).status_code == 503

        await eventually(down, timeout=5, what="/health to notice NATS is gone")
        if after_timed_out_request:
            assert (await http.get("/jobs/some-id")).status_code == 503
    # leaving the block ran the app's shutdown, which must not raise


# ---------------------------------------------------------------- ops, schema


async def test_openapi_schema_lists_the_routes(http: Http) -> None:
    r = await http.get("/schema/openapi.json")
    assert r.status_code == 200
    paths = body(r)["paths"]
    for path in (
        # POST /jobs/{queue} and GET, DELETE /jobs/{job_id}: one path, so one name for the segment
        "/jobs/{queue_or_job_id}",
        "/jobs/{queue}/bulk",
        "/schedules/{queue}/{name}",
        "/fleet/ei-update",
        "/order/bid-evaluation",
    ):
        assert path in paths
    assert set(paths["/jobs/{queue_or_job_id}"]) == {"post", "get", "delete"}


async def test_metrics_count_enqueues(http: Http) -> None:
    await enqueue(http, {"name": "welcome", "job_id": "m1"})
    await enqueue(http, {"name": "welcome", "job_id": "m1"})
    r = await http.get("/metrics")
    assert r.status_code == 200
    # "welcome" is no job name the catalog declares for email-send: counted under "other" (bounded labels)
    assert 'jetqueue_jobs_enqueued_total{job_name="other",queue="email-send"} 1.0' in r.text
    assert 'jetqueue_jobs_duplicate_total{queue="email-send"} 1.0' in r.text


async def test_health_when_connected(http: Http) -> None:
    r = await http.get("/health")
    assert r.status_code == 200
    assert body(r) == {"status": "ok", "nats": "connected"}


async def test_concurrent_enqueues_with_one_key_give_one_job(http: Http, nc: NatsClient) -> None:
    rs = await asyncio.gather(
        *(http.post(f"/jobs/{Q}", json={"name": "n"}, headers={"Idempotency-Key": "burst"}) for _ in range(10))
    )
    assert {r.status_code for r in rs} == {202}
    outs = [body(r) for r in rs]
    assert len({o["job_id"] for o in outs}) == 1
    assert sum(not o["duplicate"] for o in outs) == 1
    assert await stream_messages(nc) == 1
