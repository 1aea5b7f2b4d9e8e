"""Messages that do not fit the server's max payload, and a worker that can no longer work.

Every message jetqueue builds must fit the server's max payload (1 MiB here):
inputs are refused where they enter, derived records are truncated with a
marker. A worker whose connection is gone for good exits; its ``/health``
tells the truth.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jetqueue.catalog import Catalog
from jetqueue.client import JobClient, JobRequest
from jetqueue.embedded import EmbeddedNats, free_port
from jetqueue.errors import PayloadTooLarge
from tests.faults.cluster import NatsNode
from tests.faults.conftest import Connect, Q, Workers, exited, online
from tests.faults.measure import lifecycle_counts, records_for, report, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(90)]

HUGE = 1_200_000  # bytes of a processor's result or error message: over the 1 MiB max payload
EXIT_BOUND_S = 20.0


async def _state(client: JobClient, job_id: str) -> str | None:
    try:
        return str((await client.status(job_id)).state.value)
    except Exception:
        return None


async def _is(client: JobClient, job_id: str, state: str) -> bool:
    return await _state(client, job_id) == state


@pytest.mark.parametrize("api", ["enqueue", "enqueue_many"])
async def test_a_job_too_large_for_its_records_is_refused_at_enqueue(
    api: str, nats: EmbeddedNats, fault_catalog: Catalog, connect: Connect
) -> None:
    """A job of ~1,045,000 bytes fits the server's 1 MiB but not the records derived from it.

    Proves the SDK refuses it with ``PayloadTooLarge`` (an ``InvalidJob``)
    and publishes nothing: the queue's stream stays empty.
    """
    nc, client = await connect(nats.url, fault_catalog)
    data = {"blob": "x" * 1_045_000}
    outcome, message = "accepted", ""
    try:
        if api == "enqueue":
            await client.enqueue(Q, "big", data, job_id="big-1")
        else:
            await client.enqueue_many([JobRequest(queue=Q, name="big", data=data, job_id="big-1")])
    except PayloadTooLarge as exc:
        outcome, message = "PayloadTooLarge", str(exc)
    except Exception as exc:
        outcome, message = type(exc).__name__, str(exc)
    info = await nc.jetstream().stream_info(fault_catalog.get(Q).stream)
    text = report(
        f"oversized enqueue ({api})",
        max_payload=nc.max_payload,
        outcome=outcome,
        message=message[:160],
        messages_in_queue_stream=info.state.messages,
    )
    assert outcome == "PayloadTooLarge", text
    assert info.state.messages == 0, text


@pytest.mark.parametrize("kind", ["result", "error"])
async def test_a_huge_result_or_error_is_stored_truncated_and_the_worker_lives_on(
    kind: str, nats: EmbeddedNats, fault_catalog: Catalog, workers: Workers, connect: Connect
) -> None:
    """A processor returns a 1.2 MB result, or raises with a 1.2 MB message.

    Proves the job reaches its final state (``completed`` / ``failed``) with
    the stored result / error truncated and marked (the word "truncated" in
    it), its lifecycle record is written, and the worker lives on: it is
    still running and a later normal job of the same queue completes, with
    its ``completed`` record on JQ_EVENTS.
    """
    nc, client = await connect(nats.url, fault_catalog)
    js = nc.jetstream()
    since = time.time()
    worker = workers.spawn(nats.url, fault_catalog, "w1")
    assert await wait_for(lambda: online(nc, "w1", since), 30) is not None, "worker did not come online"

    data = {"result_bytes": HUGE} if kind == "result" else {"error_bytes": HUGE}
    final = "completed" if kind == "result" else "failed"
    huge = (await client.enqueue(Q, "huge", data, job_id=f"huge-{kind}", attempts=1)).job_id
    reached = await wait_for(lambda: _is(client, huge, final), 20)
    huge_state = await _state(client, huge)
    stored = ""
    if huge_state in ("completed", "failed"):
        st = await client.status(huge)
        stored = json.dumps(st.result if kind == "result" else st.error)
    later = (await client.enqueue(Q, "normal", {}, job_id=f"after-{kind}")).job_id
    later_done = await wait_for(lambda: _is(client, later, "completed"), 15)
    # records are published in batches: give the last batch a few seconds
    await wait_for(lambda: records_for(js, Q, {huge: final, later: "completed"}), 5)
    records = await lifecycle_counts(js, Q, final)
    later_records = await lifecycle_counts(js, Q, "completed")
    text = report(
        f"huge {kind}",
        huge_job_state=huge_state,
        reached_final_s=round(reached, 1) if reached is not None else ">20",
        stored_chars=len(stored),
        marked="truncat" in stored.lower(),
        huge_job_records=records[huge],
        worker_alive=worker.proc.poll() is None,
        later_job_state=await _state(client, later),
        later_job_completed_record=later_records[later],
    )
    assert reached is not None and huge_state == final, text
    assert 0 < len(stored) < HUGE and "truncat" in stored.lower(), text
    assert records[huge] == 1, text
    assert worker.proc.poll() is None, text
    assert later_done is not None and later_records[later] == 1, text


def _auth(worker_password: str) -> str:
    return (
        "authorization { users: ["
        ' {user: admin, password: "admin-pw"},'
        f' {{user: worker, password: "{worker_password}"}}'
        "] }"
    )


async def test_a_worker_whose_connection_is_closed_for_good_exits_non_zero(
    tmp_path: Path, nats_binary: str, nodes: list[NatsNode], fault_catalog: Catalog, workers: Workers, connect: Connect
) -> None:
    """The worker's credentials are revoked on the server: its connection is closed and can never come back.

    Realistic way chosen: the server's config is changed (the worker's
    password rotated without the worker's secret) and reloaded with SIGHUP,
    as an operator does; the server closes the worker's connection with an
    authorization violation, and every reconnect would be refused. Proves the
    worker exits non-zero within 20 s (so Kubernetes restarts it and shows
    it), instead of living on with no connection.
    """
    node = NatsNode(nats_binary, tmp_path, "auth", extra_config=_auth("pw-1"))
    nodes.append(node)
    await asyncio.to_thread(node.start)
    nc, client = await connect(node.url, fault_catalog, nats_user="admin", nats_password="admin-pw")
    since = time.time()
    worker = workers.spawn(node.url, fault_catalog, "w1", JETQUEUE_NATS_USER="worker", JETQUEUE_NATS_PASSWORD="pw-1")
    assert await wait_for(lambda: online(nc, "w1", since), 30) is not None, "worker did not come online"
    first = (await client.enqueue(Q, "normal", {}, job_id="before-revoke")).job_id
    assert await wait_for(lambda: _is(client, first, "completed"), 15) is not None, "worker did not work"

    node.extra_config = _auth("pw-2")
    await asyncio.to_thread(node.reload)
    revoked = time.monotonic()
    gone = await wait_for(lambda: exited(worker), EXIT_BOUND_S, interval=0.2)
    code = worker.proc.poll()
    text = report(
        "connection closed for good",
        exit_code=code,
        exited_after_s=round(time.monotonic() - revoked, 1) if gone is not None else f">{EXIT_BOUND_S}",
        server_closed_it="authentication error" in node.log_tail(200),
        traceback_in_log="Traceback" in worker.log(),
    )
    assert gone is not None and code == 70, text  # EX_SOFTWARE: the worker's own "cannot go on"
    assert "Traceback" not in worker.log(), text


def _http_status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


async def test_health_says_whether_the_worker_can_work(
    nats: EmbeddedNats, fault_catalog: Catalog, workers: Workers, connect: Connect
) -> None:
    """``/ready`` follows the NATS connection; ``/health`` (liveness) stays 200 through an outage; 404 elsewhere.

    Proves: 200 on both once the worker runs; ``/nonexistent`` is 404 (not a
    200 for any path); ``/ready`` 503 within 10 s of the server going away
    while ``/health`` stays 200 (a liveness failure restarts the pod, which
    would only add a restart storm to a NATS outage: the client reconnects by
    itself); both 200 again within 20 s of its return, and then that 200 is
    true: a new job completes. (A connection closed for good makes the process
    exit instead: test_a_worker_whose_connection_is_closed_for_good_exits.)
    """
    nc, client = await connect(nats.url, fault_catalog)
    port = free_port()
    since = time.time()
    workers.spawn(nats.url, fault_catalog, "w1", JETQUEUE_WORKER_METRICS_PORT=str(port))
    assert await wait_for(lambda: online(nc, "w1", since), 30) is not None, "worker did not come online"

    async def status_is(path: str, code: int) -> bool:
        return await asyncio.to_thread(_http_status, port, path) == code

    up = await wait_for(lambda: status_is("/ready", 200), 10, interval=0.2)
    health_up = await asyncio.to_thread(_http_status, port, "/health")
    nonexistent = await asyncio.to_thread(_http_status, port, "/nonexistent")
    metrics = await asyncio.to_thread(_http_status, port, "/metrics")
    await asyncio.to_thread(nats.stop)
    down = await wait_for(lambda: status_is("/ready", 503), 10, interval=0.2)
    health_while_down = await asyncio.to_thread(_http_status, port, "/health")
    await asyncio.to_thread(nats.start)
    back = await wait_for(lambda: status_is("/ready", 200), 20, interval=0.2)
    job = (await client.enqueue(Q, "normal", {}, job_id="after-return")).job_id
    worked = await wait_for(lambda: _is(client, job, "completed"), 15)
    text = report(
        "health",
        ready_when_up=200 if up is not None else "not 200 in 10 s",
        health_when_up=health_up,
        nonexistent=nonexistent,
        metrics=metrics,
        health_while_nats_down=health_while_down,
        ready_503_after_s=round(down, 1) if down is not None else ">10",
        ready_again_after_s=round(back, 1) if back is not None else ">20",
        job_after_return=await _state(client, job),
    )
    assert up is not None and health_up == 200 and metrics == 200, text
    assert nonexistent == 404, text
    assert down is not None and health_while_down == 200, text
    assert back is not None and worked is not None, text
