"""Control operations (the ones the monitor and the operator call) and their audit records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from jetqueue import names
from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.control import Controller, queue_info
from jetqueue.errors import ConflictError, JobNotFound
from jetqueue.job import JobStatus
from jetqueue.processors import JobContext, ProcessorRegistry
from jetqueue_worker.runtime import Worker
from tests.conftest import eventually

Q = "email-send"


async def audit_records(nc: NatsClient) -> list[dict[str, Any]]:
    sub = await nc.jetstream().subscribe(f"{names.PREFIX}.audit.>", ordered_consumer=True)
    out = []
    try:
        while True:
            try:
                m = await sub.next_msg(timeout=0.3)
            except Exception:
                break
            out.append(json.loads(m.data))
    finally:
        await sub.unsubscribe()
    return out


@pytest.fixture
async def gate_worker(nc: NatsClient, catalog: Catalog) -> AsyncIterator[tuple[Worker, asyncio.Event, list[str]]]:
    """A worker whose jobs block until the event is set; ``done`` lists finished job ids."""
    gate = asyncio.Event()
    done: list[str] = []
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        await gate.wait()
        done.append(ctx.job_id)

    reg.register(Q, proc)
    w = Worker(nc, catalog, Q, reg, concurrency=1, idle_wait_s=0.3, heartbeat_s=5)
    await w.start()
    yield w, gate, done
    gate.set()
    await w.stop(grace_s=2)


async def test_drain_removes_waiting_jobs_only(
    nc: NatsClient, catalog: Catalog, client: JobClient, gate_worker: Any
) -> None:
    _w, gate, done = gate_worker
    running = await client.enqueue(Q, "x", {})
    await eventually(lambda: _is(client, running.job_id, JobStatus.ACTIVE))
    waiting = [await client.enqueue(Q, "x", {}) for _ in range(5)]
    delayed = await client.enqueue(Q, "x", {}, delay_ms=60_000)
    ctl = Controller(nc, catalog)
    drain = asyncio.create_task(ctl.drain(Q, actor="alice", reason="bad batch", settle_timeout=10))
    await asyncio.sleep(0.5)
    assert not drain.done()  # waits for the running job to settle
    gate.set()
    result = await drain
    assert result["removed"] == 5 and result["removed_delayed"] == 0
    assert done == [running.job_id]
    assert (await client.status(running.job_id)).state is JobStatus.COMPLETED
    for w in waiting:
        with pytest.raises(JobNotFound):
            await client.status(w.job_id)
    assert (await client.status(delayed.job_id)).state is JobStatus.SCHEDULED
    info = await queue_info(nc.jetstream(), catalog.get(Q))
    assert not info.paused and info.waiting == 0  # previous (running) state restored
    rec = [r for r in await audit_records(nc) if r["action"] == "QUEUE_DRAIN"]
    assert rec and rec[-1]["ok"] and rec[-1]["actor"] == "alice" and rec[-1]["result"]["removed"] == 5


async def test_drain_keeps_a_paused_queue_paused(nc: NatsClient, catalog: Catalog, client: JobClient) -> None:
    ctl = Controller(nc, catalog)
    await ctl.pause(Q, actor="ops")
    await client.enqueue(Q, "x", {})
    result = await ctl.drain(Q, actor="ops")
    assert result == {"removed": 1, "removed_delayed": 0, "was_paused": True}
    assert (await queue_info(nc.jetstream(), catalog.get(Q))).paused


async def test_drain_refuses_when_in_flight_jobs_do_not_settle(
    nc: NatsClient, catalog: Catalog, client: JobClient, gate_worker: Any
) -> None:
    r = await client.enqueue(Q, "x", {})
    await eventually(lambda: _is(client, r.job_id, JobStatus.ACTIVE))
    await client.enqueue(Q, "x", {})
    ctl = Controller(nc, catalog)
    with pytest.raises(ConflictError, match="did not settle"):
        await ctl.drain(Q, actor="bob", settle_timeout=0.5)
    info = await queue_info(nc.jetstream(), catalog.get(Q))
    assert info.waiting == 1 and not info.paused  # nothing removed, state restored
    rec = [x for x in await audit_records(nc) if x["action"] == "QUEUE_DRAIN"][-1]
    assert rec["ok"] is False and "did not settle" in rec["error"]


async def test_retry_failed_and_retry_job_requeue_dead_letters(nc: NatsClient, catalog: Catalog) -> None:
    attempts: dict[str, int] = {}
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> str:
        attempts[ctx.job_id] = attempts.get(ctx.job_id, 0) + 1
        if ctx.data.get("fail"):
            raise RuntimeError("nope")
        return "ok"

    reg.register(Q, proc)
    client = JobClient(nc, catalog)
    w = Worker(nc, catalog, Q, reg, idle_wait_s=0.3, heartbeat_s=5)
    await w.start()
    try:
        ids = [(await client.enqueue(Q, "x", {"fail": True}, attempts=1)).job_id for _ in range(3)]
        for i in ids:
            await eventually(lambda i=i: _is(client, i, JobStatus.FAILED))
        ctl = Controller(nc, catalog)
        info = await queue_info(nc.jetstream(), catalog.get(Q))
        assert info.dead_lettered == 3
        # one job by id: it runs again (and fails again)
        res = await ctl.retry_job(ids[0], actor="carol")
        assert res["state"] == "waiting"
        await eventually(lambda: _ready(attempts.get(ids[0]) == 2))
        await eventually(lambda: _is(client, ids[0], JobStatus.FAILED))
        res = await ctl.retry_failed(Q, actor="carol")
        assert res["retried"] == 3
        for i in ids:
            await eventually(lambda i=i: _ready(attempts.get(i, 0) >= 2))
        with pytest.raises(JobNotFound):
            await ctl.retry_job("never-existed", actor="carol")
    finally:
        await w.stop(grace_s=1)
    actions = [(r["action"], r["ok"]) for r in await audit_records(nc)]
    assert (
        ("JOB_RETRY", True) in actions and ("QUEUE_RETRY_FAILED", True) in actions and ("JOB_RETRY", False) in actions
    )


async def test_clean_failed_by_age(nc: NatsClient, catalog: Catalog, client: JobClient) -> None:
    js = nc.jetstream()
    for i in range(3):
        await js.publish(names.dlq_subject(Q, f"old-{i}"), b'{"v":1,"name":"x","id":"old"}')
    ctl = Controller(nc, catalog)
    assert (await ctl.clean(Q, actor="admin", older_than_s=3600))["removed"] == 0
    assert (await ctl.clean(Q, actor="admin", older_than_s=0))["removed"] == 3
    assert (await queue_info(js, catalog.get(Q))).dead_lettered == 0


async def test_queue_info_counts(nc: NatsClient, catalog: Catalog, client: JobClient) -> None:
    await client.enqueue(Q, "x", {}, priority=1)
    await client.enqueue(Q, "x", {})
    await client.enqueue(Q, "x", {}, delay_ms=60_000)
    await client.schedule(Q, "nightly", "0 3 * * *")
    info = await queue_info(nc.jetstream(), catalog.get(Q))
    assert info.waiting == 2 and info.waiting_by_level == [1, 1, 0]
    assert info.scheduled == 1 and info.recurring == 1 and info.active == 0 and not info.paused


async def test_pause_in_the_past_is_refused_and_audited(nc: NatsClient, catalog: Catalog) -> None:
    from datetime import UTC, datetime, timedelta

    ctl = Controller(nc, catalog)
    with pytest.raises(Exception, match="in the past"):
        await ctl.pause(Q, actor="dave", until=datetime.now(UTC) - timedelta(minutes=1))
    rec = [r for r in await audit_records(nc) if r["action"] == "QUEUE_PAUSE"][-1]
    assert rec["ok"] is False and rec["actor"] == "dave"


async def _is(client: JobClient, job_id: str, state: JobStatus) -> bool:
    return (await client.status(job_id)).state is state


async def _ready(value: bool) -> bool:
    return value
