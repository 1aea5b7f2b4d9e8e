"""Real worker processes: a SIGKILLed worker's job is redelivered, SIGTERM drains gracefully."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client as NatsClient

from jetqueue import names
from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.connection import provision_queue
from jetqueue.control import H_REASON
from jetqueue.job import JobStatus
from tests.conftest import eventually

Q = "email-send"
MAIL = {"to": "ops@example.com", "subject": "s", "body": "b"}


async def _state(client: JobClient, job_id: str) -> JobStatus:
    return (await client.status(job_id)).state


async def _is(client: JobClient, job_id: str, state: JobStatus) -> bool:
    return await _state(client, job_id) is state


async def _online(nc: NatsClient, queue: str, n: int) -> bool:
    """Whether ``n`` workers of ``queue`` have sent a heartbeat."""
    info = await nc.jetstream().stream_info(names.HEARTBEATS_STREAM, subjects_filter=f"jq.hb.{queue}.*")
    return len(info.state.subjects or {}) >= n


async def test_killed_workers_job_is_redelivered_and_completed(
    nc: NatsClient, catalog: Catalog, spawn_worker: Any
) -> None:
    cat = catalog.replace(Q, ack_wait_s=2.0)
    await provision_queue(nc.jetstream(), cat.get(Q))
    client = JobClient(nc, cat)
    a = spawn_worker(Q, cat, JETQUEUE_WORKER_WORKER_ID="worker-a")
    await eventually(lambda: _online(nc, Q, 1), timeout=20, what="worker a online")
    r = await client.enqueue(Q, "send", {**MAIL, "_simulate": {"sleep_ms": 2500}})
    await eventually(lambda: _is(client, r.job_id, JobStatus.ACTIVE), timeout=10, what="job active on a")
    a.kill()  # SIGKILL: no chance to release the job
    b = spawn_worker(Q, cat, JETQUEUE_WORKER_WORKER_ID="worker-b")
    await eventually(lambda: _is(client, r.job_id, JobStatus.COMPLETED), timeout=30, what="completed by b")
    st = await client.status(r.job_id)
    assert st.worker == "worker-b" and st.attempt == 1  # a stall is not a failed attempt
    assert b.proc.poll() is None


async def test_sigterm_finishes_running_job_then_exits(nc: NatsClient, catalog: Catalog, spawn_worker: Any) -> None:
    client = JobClient(nc, catalog)
    w = spawn_worker(Q, catalog)
    await eventually(lambda: _online(nc, Q, 1), timeout=20)
    r = await client.enqueue(Q, "send", {**MAIL, "_simulate": {"sleep_ms": 1500}})
    await eventually(lambda: _is(client, r.job_id, JobStatus.ACTIVE), timeout=10)
    code = await asyncio.to_thread(w.terminate, 30)
    assert code == 0, w.log()
    assert await _state(client, r.job_id) is JobStatus.COMPLETED


async def test_sigterm_past_grace_releases_job_to_another_worker(
    nc: NatsClient, catalog: Catalog, spawn_worker: Any
) -> None:
    client = JobClient(nc, catalog)
    a = spawn_worker(Q, catalog, JETQUEUE_WORKER_GRACE_S="0.5", JETQUEUE_WORKER_WORKER_ID="worker-a")
    await eventually(lambda: _online(nc, Q, 1), timeout=20)
    r = await client.enqueue(Q, "send", {**MAIL, "_simulate": {"sleep_ms": 3000}})
    await eventually(lambda: _is(client, r.job_id, JobStatus.ACTIVE), timeout=10)
    code = await asyncio.to_thread(a.terminate, 30)
    assert code == 0, a.log()
    spawn_worker(Q, catalog, JETQUEUE_WORKER_WORKER_ID="worker-b")
    await eventually(lambda: _is(client, r.job_id, JobStatus.COMPLETED), timeout=30)
    assert (await client.status(r.job_id)).worker == "worker-b"


async def test_job_whose_workers_keep_dying_is_dead_lettered(
    nc: NatsClient, catalog: Catalog, spawn_worker: Any
) -> None:
    # max_stalled 0: the first lost lease is final.
    cat = catalog.replace(Q, ack_wait_s=1.0, max_stalled=0)
    await provision_queue(nc.jetstream(), cat.get(Q))
    client = JobClient(nc, cat)
    a = spawn_worker(Q, cat, JETQUEUE_WORKER_WORKER_ID="worker-a")
    await eventually(lambda: _online(nc, Q, 1), timeout=20)
    r = await client.enqueue(Q, "send", {**MAIL, "_simulate": {"sleep_ms": 5000}})
    await eventually(lambda: _is(client, r.job_id, JobStatus.ACTIVE), timeout=10)
    a.kill()
    # No worker is alive when the lease runs out and the server gives up on the
    # job: its advisory must wait (in JQ_ADVISORIES) for the next worker.
    await asyncio.sleep(2.5)
    spawn_worker(Q, cat, JETQUEUE_WORKER_WORKER_ID="worker-b")
    await eventually(lambda: _is(client, r.job_id, JobStatus.FAILED), timeout=30, what="dead-lettered")
    st = await client.status(r.job_id)
    assert st.error is not None and "stalled" in st.error
    dl = await nc.jetstream().get_last_msg(names.DLQ_STREAM, names.dlq_subject(Q, r.job_id))
    assert dl.headers is not None and dl.headers[H_REASON] == "stalled"
    info = await nc.jetstream().stream_info(names.job_stream(Q))
    assert info.state.messages == 0  # removed from the work queue


async def test_worker_refuses_unknown_queue(catalog: Catalog, spawn_worker: Any) -> None:
    w = spawn_worker("no-such-queue", catalog)
    code = await asyncio.to_thread(w.proc.wait, 30)
    assert code != 0 and "unknown queue 'no-such-queue'" in w.log()
    assert "Traceback" not in w.log()


async def test_worker_exports_prometheus_metrics(nc: NatsClient, catalog: Catalog, spawn_worker: Any) -> None:
    import urllib.request

    from jetqueue.embedded import free_port

    port = free_port()
    catalog = catalog.replace(Q, job_names=["send"])  # a job type the catalog declares is labelled by name
    client = JobClient(nc, catalog)
    spawn_worker(Q, catalog, JETQUEUE_WORKER_METRICS_PORT=str(port))
    await eventually(lambda: _online(nc, Q, 1), timeout=20)
    r = await client.enqueue(Q, "send", MAIL)
    await eventually(lambda: _is(client, r.job_id, JobStatus.COMPLETED), timeout=10)
    r = await client.enqueue(Q, "made-up-by-a-client", MAIL)  # any other name: counted as "other"
    await eventually(lambda: _is(client, r.job_id, JobStatus.COMPLETED), timeout=10)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    text = await asyncio.to_thread(scrape)
    assert 'jetqueue_jobs_completed_total{job_name="send",queue="email-send"} 1.0' in text
    assert 'jetqueue_job_duration_seconds_count{job_name="send",queue="email-send"} 1.0' in text
    assert 'jetqueue_jobs_completed_total{job_name="other",queue="email-send"} 1.0' in text
    assert "made-up-by-a-client" not in text
    assert 'jetqueue_jobs_in_flight{queue="email-send"} 0.0' in text


async def test_worker_loads_user_processors(nc: NatsClient, catalog: Catalog, spawn_worker: Any) -> None:
    client = JobClient(nc, catalog)
    spawn_worker(Q, catalog, JETQUEUE_WORKER_PROCESSOR="tests.integration.fixtures_pkg:register")
    await eventually(lambda: _online(nc, Q, 1), timeout=20)
    r = await client.enqueue(Q, "anything", {"text": "hi"})
    await eventually(lambda: _is(client, r.job_id, JobStatus.COMPLETED), timeout=10)
    assert (await client.status(r.job_id)).result == {"shout": "HI"}


async def test_worker_refuses_a_processor_module_it_cannot_load(catalog: Catalog, spawn_worker: Any) -> None:
    w = spawn_worker(Q, catalog, JETQUEUE_WORKER_PROCESSOR="no_such_module_xyz")
    code = await asyncio.to_thread(w.proc.wait, 30)
    assert code != 0 and "cannot import processor module 'no_such_module_xyz'" in w.log()
    assert "Traceback" not in w.log()
