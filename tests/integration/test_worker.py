"""The worker runtime against a real nats-server: run, retry, dead-letter, priority, delay, cron, cancel, pause."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from jetqueue import names
from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.control import H_REASON, Controller
from jetqueue.events import decode_batch
from jetqueue.job import JobStatus
from jetqueue.processors import JobContext, PermanentError, ProcessorRegistry
from jetqueue_worker.runtime import Worker
from tests.conftest import eventually

Q = "email-send"


@pytest.fixture
async def make_worker(nc: NatsClient, catalog: Catalog) -> AsyncIterator[Callable[..., Any]]:
    workers: list[Worker] = []

    async def make(registry: ProcessorRegistry, queue: str = Q, cat: Catalog | None = None, **kw: Any) -> Worker:
        kw.setdefault("heartbeat_s", 0.5)
        kw.setdefault("idle_wait_s", 0.5)
        w = Worker(nc, cat or catalog, queue, registry, **kw)
        await w.start()
        workers.append(w)
        return w

    yield make
    for w in workers:
        await w.stop(grace_s=1)


async def records(nc: NatsClient, queue: str = Q) -> list[dict[str, Any]]:
    """Every lifecycle record of a queue so far, in order."""
    js = nc.jetstream()
    sub = await js.subscribe(names.events_subject(queue), ordered_consumer=True)
    out: list[dict[str, Any]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.3)
            except Exception:
                break
            out.extend(decode_batch(msg.data))
    finally:
        await sub.unsubscribe()
    return out


async def state_is(client: JobClient, job_id: str, state: JobStatus) -> bool:
    return (await client.status(job_id)).state is state


async def running_at(client: JobClient, job_id: str, progress: float) -> bool:
    st = await client.status(job_id)
    return st.state is JobStatus.ACTIVE and st.progress == progress


async def test_job_runs_reports_progress_and_completes(client: JobClient, make_worker: Any, nc: NatsClient) -> None:
    reg = ProcessorRegistry()
    release = asyncio.Event()

    async def proc(ctx: JobContext) -> dict[str, Any]:
        await ctx.progress(40)  # not due yet (the job just started): written by the throttle's timer
        await release.wait()
        return {"echo": ctx.data, "attempt": ctx.attempt}

    reg.register(Q, proc)
    await make_worker(reg)
    r = await client.enqueue(Q, "welcome", {"to": "a"}, user_id="u1")

    await eventually(lambda: running_at(client, r.job_id, 40), what="the running job's progress in its state")
    release.set()
    await eventually(lambda: state_is(client, r.job_id, JobStatus.COMPLETED), what="completed")
    st = await client.status(r.job_id)
    assert st.result == {"echo": {"to": "a"}, "attempt": 1}
    assert st.progress == 100 and st.attempt == 1 and st.user_id == "u1"
    assert st.started_at is not None and st.finished_at is not None and st.finished_at >= st.started_at
    recs = await eventually(lambda: _types(nc, r.job_id, {"started", "progress", "completed"}), what="records")
    started = next(x for x in recs if x["type"] == "started")
    assert started["data"] == {"to": "a"} and started["user_id"] == "u1"


async def test_a_job_shorter_than_the_progress_interval_writes_no_progress(
    client: JobClient, make_worker: Any, nc: NatsClient
) -> None:
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> str:
        for p in (10, 50, 90):
            await ctx.progress(p)
        return "done"

    reg.register(Q, proc)
    await make_worker(reg)
    r = await client.enqueue(Q, "quick", {"k": 1}, user_id="u2")
    recs = await eventually(lambda: _types(nc, r.job_id, {"completed"}), what="records")
    # one record: the completed one stands for the start too (they went out in the same batch)
    assert [x["type"] for x in recs] == ["completed"]
    assert recs[0]["started_ts"] <= recs[0]["ts"] and recs[0]["data"] == {"k": 1} and recs[0]["user_id"] == "u2"
    assert recs[0]["enqueued_at"] == (await client.status(r.job_id)).enqueued_at
    st = await client.status(r.job_id)
    assert st.state is JobStatus.COMPLETED and st.progress == 100


async def test_progress_is_throttled_and_the_newest_value_is_written(
    client: JobClient, make_worker: Any, nc: NatsClient
) -> None:
    reg = ProcessorRegistry()
    release = asyncio.Event()
    took: list[float] = []

    async def proc(ctx: JobContext) -> None:
        t0 = time.monotonic()
        for p in range(1, 101):  # 100 reports in about 0.1 s: one write per interval, of the newest value
            await ctx.progress(p)
            await asyncio.sleep(0.001)
        took.append(time.monotonic() - t0)
        await release.wait()

    reg.register(Q, proc)
    await make_worker(reg)
    r = await client.enqueue(Q, "chatty", {})

    await eventually(lambda: running_at(client, r.job_id, 100), what="the newest progress value")
    release.set()
    await eventually(lambda: state_is(client, r.job_id, JobStatus.COMPLETED), what="completed")
    recs = await eventually(lambda: _types(nc, r.job_id, {"started", "completed"}), what="records")
    progress = [x["progress"] for x in recs if x["type"] == "progress"]
    interval = 0.25  # Worker's default progress_interval_s
    assert progress and progress[-1] == 100 and len(progress) <= 1 + took[0] / interval, (progress, took)


async def _types(nc: NatsClient, job_id: str, want: set[str]) -> list[dict[str, Any]] | None:
    recs = [x for x in await records(nc) if x["job_id"] == job_id]
    return recs if want <= {x["type"] for x in recs} else None


async def test_priority_levels_run_most_urgent_first(client: JobClient, make_worker: Any) -> None:
    order: list[str] = []
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        order.append(ctx.data["tag"])

    reg.register(Q, proc)
    # Enqueued before any worker exists: low first, then normal, then urgent.
    for i in range(4):
        await client.enqueue(Q, "x", {"tag": f"low{i}"}, priority=3)
    for i in range(4):
        await client.enqueue(Q, "x", {"tag": f"normal{i}"})
    for i in range(4):
        await client.enqueue(Q, "x", {"tag": f"high{i}"}, priority=1)
    await make_worker(reg, concurrency=1)
    await eventually(lambda: _ready(len(order) == 12), what="12 jobs run")
    assert order == [f"high{i}" for i in range(4)] + [f"normal{i}" for i in range(4)] + [f"low{i}" for i in range(4)]


async def _ready(value: bool) -> bool:
    return value


async def test_duplicate_job_id_runs_once(client: JobClient, make_worker: Any) -> None:
    runs: list[str] = []
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        runs.append(ctx.job_id)

    reg.register(Q, proc)
    first = await client.enqueue(Q, "x", {}, job_id="same-1")
    second = await client.enqueue(Q, "x", {}, job_id="same-1")
    assert not first.duplicate and second.duplicate and second.seq == first.seq
    await make_worker(reg)
    await eventually(lambda: state_is(client, "same-1", JobStatus.COMPLETED))
    await asyncio.sleep(0.3)
    assert runs == ["same-1"]


async def test_delayed_job_waits_for_its_time(client: JobClient, make_worker: Any) -> None:
    started: dict[str, float] = {}
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        started[ctx.job_id] = time.time()

    reg.register(Q, proc)
    await make_worker(reg)
    t0 = time.time()
    r = await client.enqueue(Q, "later", {}, delay_ms=800)
    assert r.state is JobStatus.SCHEDULED
    assert (await client.status(r.job_id)).state is JobStatus.SCHEDULED
    await eventually(lambda: state_is(client, r.job_id, JobStatus.COMPLETED), timeout=5)
    assert started[r.job_id] - t0 >= 0.75  # never before its time


async def test_cron_schedule_fires_repeatedly(client: JobClient, make_worker: Any) -> None:
    runs: list[str] = []
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        runs.append(ctx.job_id)

    reg.register(Q, proc)
    await make_worker(reg)
    await client.schedule(Q, "tick", "@every 1s", data={"k": 1})
    await eventually(lambda: _ready(len(runs) >= 2), timeout=6, what="two cron runs")
    assert len(set(runs)) == len(runs) and all(r.startswith("cron-tick-") for r in runs)
    await client.unschedule(Q, "tick")
    await asyncio.sleep(0.2)
    n = len(runs)
    await asyncio.sleep(2.2)
    assert len(runs) <= n + 1  # at most one fire was already in flight when it was removed


async def test_retries_follow_exponential_backoff(client: JobClient, make_worker: Any, catalog: Catalog) -> None:
    times: list[float] = []
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> str:
        times.append(time.monotonic())
        if ctx.attempt < 3:
            raise RuntimeError(f"transient {ctx.attempt}")
        return "ok"

    reg.register(Q, proc)
    cat = catalog.replace(Q, attempts=3, backoff={"type": "exponential", "delay_ms": 300})
    await make_worker(reg, cat=cat)
    r = await JobClient(client.nc, cat).enqueue(Q, "x", {})
    await eventually(lambda: state_is(client, r.job_id, JobStatus.COMPLETED), timeout=10)
    st = await client.status(r.job_id)
    assert st.attempt == 3 and st.errors == ["RuntimeError: transient 1", "RuntimeError: transient 2"]
    gap1, gap2 = times[1] - times[0], times[2] - times[1]
    assert 0.28 <= gap1 < 1.3, gap1  # 300 ms
    assert 0.58 <= gap2 < 1.6, gap2  # 600 ms


async def test_while_waiting_for_retry_the_job_is_scheduled_with_its_error(client: JobClient, make_worker: Any) -> None:
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        raise RuntimeError("db down")

    reg.register(Q, proc)
    r = await client.enqueue(Q, "x", {}, attempts=2, backoff=__import__("jetqueue").catalog.Backoff(delay_ms=3000))
    await make_worker(reg)
    st = await eventually(lambda: _scheduled(client, r.job_id), what="scheduled retry")
    assert st.error == "RuntimeError: db down" and st.run_at is not None and st.attempt == 1


async def _scheduled(client: JobClient, job_id: str) -> Any:
    st = await client.status(job_id)
    return st if st.state is JobStatus.SCHEDULED and st.error else None


async def test_timeout_cancels_the_processor_and_counts_as_failure(client: JobClient, make_worker: Any) -> None:
    reg = ProcessorRegistry()
    finished: list[bool] = []

    async def proc(ctx: JobContext) -> None:
        await asyncio.sleep(5)
        finished.append(True)

    reg.register(Q, proc)
    await make_worker(reg)
    r = await client.enqueue(Q, "slow", {}, timeout_ms=300, attempts=1)
    await eventually(lambda: state_is(client, r.job_id, JobStatus.FAILED), timeout=5)
    st = await client.status(r.job_id)
    assert st.error is not None and "timed out after 300 ms" in st.error
    assert not finished


async def test_last_failure_dead_letters_and_notifies_admins(
    client: JobClient, make_worker: Any, nc: NatsClient
) -> None:
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        raise ValueError(f"bad data on attempt {ctx.attempt}")

    reg.register(Q, proc)
    await make_worker(reg)
    r = await client.enqueue(Q, "x", {"k": "v"}, attempts=2)
    await eventually(lambda: state_is(client, r.job_id, JobStatus.FAILED), timeout=8)
    st = await client.status(r.job_id)
    assert st.attempt == 2 and len(st.errors) == 2 and "attempt 2" in (st.error or "")
    js = nc.jetstream()
    dl = await js.get_last_msg(names.DLQ_STREAM, names.dlq_subject(Q, r.job_id))
    assert dl.headers is not None and dl.headers[H_REASON] == "failed"
    assert json.loads(dl.data)["data"] == {"k": "v"}
    # The admins' notification is a job on notification-send (no worker runs it here).
    alert = await client.status(f"dlq-alert-{Q}-{r.job_id}")
    assert alert.queue == "notification-send" and alert.state is JobStatus.WAITING and alert.name == "admin-alert"
    assert r.job_id in json.dumps(alert.data)


async def test_a_one_queue_worker_alerts_on_a_queue_outside_its_catalog(
    client: JobClient, make_worker: Any, catalog: Catalog
) -> None:
    """On Kubernetes each worker loads a catalog of its own queue only; its alerts still reach the alert queue."""
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        raise PermanentError("no such customer")

    reg.register(Q, proc)
    own = catalog.only(Q)
    assert "notification-send" not in own and own.alerts is not None
    await make_worker(reg, cat=own)
    r = await client.enqueue(Q, "x", {"k": "v"})
    await eventually(lambda: state_is(client, r.job_id, JobStatus.FAILED), timeout=8)
    alert = await client.status(f"dlq-alert-{Q}-{r.job_id}")  # read with the full catalog, as its workers would
    assert alert.queue == "notification-send" and alert.state is JobStatus.WAITING and alert.name == "admin-alert"
    assert alert.attempts == catalog.get("notification-send").attempts  # that queue's own defaults apply
    assert r.job_id in json.dumps(alert.data)


async def test_permanent_error_skips_remaining_attempts(client: JobClient, make_worker: Any) -> None:
    calls: list[int] = []
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        raise PermanentError("invalid address")

    reg.register(Q, proc)
    await make_worker(reg)
    r = await client.enqueue(Q, "x", {}, attempts=5)
    await eventually(lambda: state_is(client, r.job_id, JobStatus.FAILED))
    assert calls == [1]


async def test_malformed_message_is_dead_lettered_and_worker_keeps_going(
    client: JobClient, make_worker: Any, nc: NatsClient
) -> None:
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> str:
        return "fine"

    reg.register(Q, proc)
    w = await make_worker(reg)
    js = nc.jetstream()
    await js.publish(names.job_subject(Q, 1, "garbage-1"), b"\xff not json")
    await js.publish(names.job_subject(Q, 1, "garbage-2"), b'{"v": 1}')  # no name
    r = await client.enqueue(Q, "ok", {})
    await eventually(lambda: state_is(client, r.job_id, JobStatus.COMPLETED))
    info = await js.stream_info(names.DLQ_STREAM, subjects_filter=names.dlq_filter(Q))
    assert info.state.messages == 2
    reasons = set()
    for subject in info.state.subjects or {}:
        m = await js.get_last_msg(names.DLQ_STREAM, subject)
        assert m.headers is not None
        reasons.add(m.headers[H_REASON])
    assert reasons == {"malformed"}
    assert w._running


async def test_missing_processor_fails_the_job_clearly(client: JobClient, make_worker: Any) -> None:
    reg = ProcessorRegistry()
    reg.register(Q, _noop, name="known")
    await make_worker(reg)
    r = await client.enqueue(Q, "unknown-name", {}, attempts=3)
    await eventually(lambda: state_is(client, r.job_id, JobStatus.FAILED))
    assert "no processor registered for job 'unknown-name'" in ((await client.status(r.job_id)).error or "")


async def _noop(ctx: JobContext) -> None:
    return None


async def test_cancel_scheduled_and_waiting_jobs(client: JobClient, nc: NatsClient) -> None:
    delayed = await client.enqueue(Q, "x", {}, delay_ms=60_000)
    waiting = await client.enqueue(Q, "x", {})
    for job in (delayed, waiting):
        st = await client.cancel(job.job_id)
        assert st.state is JobStatus.CANCELLED
        assert (await client.status(job.job_id)).state is JobStatus.CANCELLED
    info = await nc.jetstream().stream_info(names.job_stream(Q))
    assert info.state.messages == 0


async def test_cancel_running_job_is_cooperative(client: JobClient, make_worker: Any) -> None:
    reg = ProcessorRegistry()
    entered = asyncio.Event()

    async def proc(ctx: JobContext) -> None:
        entered.set()
        for _ in range(200):
            await ctx.progress(1)
            await asyncio.sleep(0.05)

    reg.register(Q, proc)
    await make_worker(reg)
    r = await client.enqueue(Q, "x", {})
    await asyncio.wait_for(entered.wait(), 5)
    await eventually(lambda: state_is(client, r.job_id, JobStatus.ACTIVE))
    await client.cancel(r.job_id)
    await eventually(lambda: state_is(client, r.job_id, JobStatus.CANCELLED))


async def test_paused_queue_delivers_nothing_until_resumed(
    client: JobClient, make_worker: Any, nc: NatsClient, catalog: Catalog
) -> None:
    runs: list[str] = []
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        runs.append(ctx.job_id)

    reg.register(Q, proc)
    ctl = Controller(nc, catalog)
    await ctl.pause(Q, actor="test", reason="maintenance")
    await make_worker(reg)
    r = await client.enqueue(Q, "x", {})
    await asyncio.sleep(1.5)
    assert runs == []
    assert (await client.status(r.job_id)).state is JobStatus.WAITING
    await ctl.resume(Q, actor="test")
    await eventually(lambda: state_is(client, r.job_id, JobStatus.COMPLETED))


async def test_pause_until_resumes_by_itself(
    client: JobClient, make_worker: Any, nc: NatsClient, catalog: Catalog
) -> None:
    from datetime import UTC, datetime, timedelta

    reg = ProcessorRegistry()
    reg.register(Q, _noop)
    ctl = Controller(nc, catalog)
    await ctl.pause(Q, actor="test", until=datetime.now(UTC) + timedelta(seconds=2))
    await make_worker(reg)
    r = await client.enqueue(Q, "x", {})
    await asyncio.sleep(0.8)
    assert (await client.status(r.job_id)).state is JobStatus.WAITING
    await eventually(lambda: state_is(client, r.job_id, JobStatus.COMPLETED), timeout=6)


async def test_long_job_keeps_its_lease(client: JobClient, make_worker: Any, catalog: Catalog) -> None:
    runs: list[int] = []
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        runs.append(ctx.attempt)
        await asyncio.sleep(3.5)

    reg.register(Q, proc)
    cat = catalog.replace(Q, ack_wait_s=1.0)
    from jetqueue.connection import provision_queue

    await provision_queue(client.js, cat.get(Q))
    await make_worker(reg, cat=cat)
    await make_worker(reg, cat=cat)  # a second worker that would get a redelivery
    r = await client.enqueue(Q, "x", {})
    await eventually(lambda: state_is(client, r.job_id, JobStatus.COMPLETED), timeout=10)
    assert runs == [1]  # ack_wait 1 s, job 3.5 s: renewed, never redelivered


async def test_most_urgent_first_right_after_a_resume(
    client: JobClient, make_worker: Any, nc: NatsClient, catalog: Catalog
) -> None:
    """With work on several levels at the moment a paused queue resumes, the urgent job starts first.

    Each round pauses an idle worker's queue, enqueues a priority-10 job, five normal ones and then
    an urgent one, and resumes at a different point of the worker's idle long-poll cycle. Before
    the fix, whichever level's long-poll answered first won (the priority-10 job ran first in
    about half the rounds).
    """
    q = "cleanup-old-data"  # concurrency 1, three priority levels
    order: list[str] = []
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> None:
        order.append(ctx.data["tag"])

    reg.register(q, proc)
    ctl = Controller(nc, catalog)
    await make_worker(reg, queue=q, idle_wait_s=0.5)
    wrong = []
    for round_no in range(6):
        order.clear()
        await ctl.pause(q, actor="test")
        await client.enqueue(q, "x", {"tag": "low"}, priority=10)
        for i in range(5):
            await client.enqueue(q, "x", {"tag": f"normal{i}"})
        await client.enqueue(q, "x", {"tag": "urgent"}, priority=1)
        await asyncio.sleep(0.6 + round_no * 0.17)  # land the resume at another point of the idle cycle
        await ctl.resume(q, actor="test")
        await eventually(lambda: _ready(len(order) == 7), what="the round's 7 jobs")
        if order[0] != "urgent" or order[-1] != "low":
            wrong.append(list(order))
    assert not wrong, f"rounds where the urgent job did not start first or the low one did not run last: {wrong}"
