"""Monitor ingest against real nats-server and real SQLite and PostgreSQL stores.

Duplicate delivery (stored copies, a nak redelivery, a publish retried after a
lost ack), a database outage while jobs run, worker heartbeats and status
rules, and how the ingestor and sampler stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from jetqueue import names
from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.connection import connect_and_check
from jetqueue.events import EventBatcher, Heartbeat, LifecycleRecord, decode_batch
from jetqueue.job import SCHEMA_VERSION, EventType, now_ms
from jetqueue.processors import JobContext, ProcessorRegistry
from jetqueue.settings import CommonSettings
from jetqueue_monitor import queries
from jetqueue_monitor.clock import utcnow
from jetqueue_monitor.db.engine import make_engine, migrate
from jetqueue_monitor.db.models import Job, JobAttempt, JobStat, WorkerHeartbeat
from jetqueue_monitor.ingest import Ingestor
from jetqueue_monitor.sampler import Sampler
from jetqueue_monitor.store import Store
from jetqueue_worker.runtime import Worker
from tests.conftest import eventually

Q = "email-send"
EVENTS_DURABLE = "jq-monitor-events"  # Ingestor's default prefix + "-events"


# ---------------------------------------------------------------- fixtures and helpers
@contextlib.asynccontextmanager
async def ingesting(nc: NatsClient, store: Store, **kw: Any) -> AsyncIterator[Ingestor]:
    ingestor = Ingestor(nc, store, **kw)
    await ingestor.start()
    try:
        yield ingestor
    finally:
        await ingestor.stop()


async def all_acked(nc: NatsClient, durable: str = EVENTS_DURABLE) -> bool:
    ci = await nc.jetstream().consumer_info(names.EVENTS_STREAM, durable)
    return bool(ci.num_pending == 0 and ci.num_ack_pending == 0)


def lifecycle(job_id: str, t0: int) -> list[dict[str, Any]]:
    """One job's records: attempt 1 fails and is retried, attempt 2 completes."""
    base = {"job_id": job_id, "queue": Q, "name": "welcome", "attempts": 3, "worker": "w1"}
    return [
        {
            **base,
            "type": "started",
            "attempt": 1,
            "ts": t0,
            "data": {"to": "x"},
            "user_id": "u1",
            "enqueued_at": t0 - 50,
        },
        {
            **base,
            "type": "retrying",
            "attempt": 1,
            "ts": t0 + 100,
            "duration_ms": 100,
            "error": "RuntimeError: boom",
            "error_type": "RuntimeError",
        },
        {**base, "type": "started", "attempt": 2, "ts": t0 + 300},
        {**base, "type": "progress", "attempt": 2, "ts": t0 + 350, "progress": 50.0},
        {**base, "type": "completed", "attempt": 2, "ts": t0 + 400, "duration_ms": 100, "result": {"sent": True}},
    ]


def batch(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"v": SCHEMA_VERSION, "records": records}, separators=(",", ":")).encode()


async def count(store_or_engine: Store | AsyncEngine, model: Any, *where: Any) -> int:
    engine = store_or_engine.engine if isinstance(store_or_engine, Store) else store_or_engine
    async with engine.connect() as c:
        return int((await c.execute(select(func.count()).select_from(model).where(*where))).scalar_one())


async def rollup(store: Store, queue: str = Q) -> tuple[int, int, int, int]:
    """(completed, failed, retried, duration_count) summed over the queue's minute rows."""
    async with store.sessions() as s:
        rows = (await s.execute(select(JobStat).where(JobStat.queue == queue))).scalars().all()
    return (
        sum(r.completed for r in rows),
        sum(r.failed for r in rows),
        sum(r.retried for r in rows),
        sum(r.duration_count for r in rows),
    )


async def assert_job_as_after_one_delivery(store: Store, job_id: str, t0: int) -> None:
    async with store.sessions() as s:
        job = await s.get(Job, job_id)
        attempts = (
            (await s.execute(select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.attempt)))
            .scalars()
            .all()
        )
    assert job is not None
    assert (job.status, job.attempts_made, job.max_attempts, job.stalls, job.last_event_ms) == (
        "completed",
        2,
        3,
        0,
        t0 + 400,
    )
    assert (job.result, job.progress, job.error, job.data, job.user_id) == (
        {"sent": True},
        100.0,
        None,
        {"to": "x"},
        "u1",
    )
    assert [(a.attempt, a.status, a.error, a.duration_ms) for a in attempts] == [
        (1, "failed", "RuntimeError: boom", 100),
        (2, "completed", None, 100),
    ]
    assert await count(store, Job) == 1 and await count(store, JobAttempt) == 2


# ---------------------------------------------------------------- duplicate delivery
async def test_stored_copies_and_a_nak_redelivery(nc: NatsClient, store: Store) -> None:
    js = nc.jetstream()
    t0 = now_ms() - 2000
    records = lifecycle("dup-1", t0)
    body = batch(records)
    # the same batch twice without a message id: JetStream keeps two copies
    first = await js.publish(names.events_subject(Q), body)
    second = await js.publish(names.events_subject(Q), body)
    assert first.seq != second.seq and not second.duplicate
    # an earlier monitor applied copy 1 and went away before acking it (nak = redeliver now)
    cfg = ConsumerConfig(
        durable_name=EVENTS_DURABLE,
        filter_subject=f"{names.PREFIX}.events.>",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=120,
        max_ack_pending=1000,
    )
    sub = await js.pull_subscribe(
        f"{names.PREFIX}.events.>", durable=EVENTS_DURABLE, stream=names.EVENTS_STREAM, config=cfg
    )
    [msg] = await sub.fetch(1, timeout=5)
    assert msg.metadata.sequence.stream == first.seq
    assert await store.apply_events([(first.seq, decode_batch(msg.data))]) == len(records)
    await msg.nak()
    await sub.unsubscribe()

    seen: list[tuple[int, int]] = []
    ingestor = Ingestor(nc, store)
    real = ingestor._on_events

    async def spy(msgs: list[Any]) -> None:
        seen.extend((m.metadata.sequence.stream, m.metadata.num_delivered) for m in msgs)
        await real(msgs)

    ingestor._on_events = spy  # type: ignore[method-assign]
    await ingestor.start()
    try:
        await eventually(lambda: all_acked(nc), timeout=15, what="events acked")
    finally:
        await ingestor.stop()
    assert (first.seq, 2) in seen, f"copy 1 was not redelivered: {seen}"
    assert (second.seq, 1) in seen, seen
    # the redelivered copy 1 was skipped (its sequence is at or below the stored offset); copy 2 was applied
    assert ingestor.stats.records == len(records)
    await assert_job_as_after_one_delivery(store, "dup-1", t0)
    # Documented behaviour: the rollup counts each stored *message* once (offset by stream sequence), so two
    # copies of a batch with different sequences count twice there, while job and attempt rows (idempotent
    # upserts ordered by record time) stay as after one delivery. The nak redelivery adds nothing (else 3).
    # Publishers avoid copies with Nats-Msg-Id: see the next two tests.
    assert await rollup(store) == (2, 0, 2, 2)


async def test_same_message_id_is_stored_and_counted_once(nc: NatsClient, store: Store) -> None:
    js = nc.jetstream()
    t0 = now_ms() - 2000
    body = batch(lifecycle("dup-2", t0))
    first = await js.publish(names.events_subject(Q), body, headers={"Nats-Msg-Id": "worker-a:7"})
    again = await js.publish(names.events_subject(Q), body, headers={"Nats-Msg-Id": "worker-a:7"})
    assert again.duplicate and again.seq == first.seq
    si = await js.stream_info(names.EVENTS_STREAM, subjects_filter=names.events_subject(Q))
    assert (si.state.subjects or {}).get(names.events_subject(Q)) == 1
    async with ingesting(nc, store) as ingestor:
        await eventually(lambda: all_acked(nc), timeout=15, what="events acked")
    assert ingestor.stats.batches == 1
    await assert_job_as_after_one_delivery(store, "dup-2", t0)
    assert await rollup(store) == (1, 0, 1, 1)


class LosesFirstAck:
    """A JetStream context whose first publish is stored but its ack is lost (a timeout to the caller)."""

    def __init__(self, js: Any) -> None:
        self.js = js
        self.acks: list[tuple[str | None, Any]] = []

    async def publish(self, subject: str, payload: bytes, **kw: Any) -> Any:
        ack = await self.js.publish(subject, payload, **kw)
        self.acks.append(((kw.get("headers") or {}).get("Nats-Msg-Id"), ack))
        if len(self.acks) == 1:
            raise nats.errors.TimeoutError
        return ack


async def test_event_batcher_retry_after_a_lost_ack_is_counted_once(nc: NatsClient, store: Store) -> None:
    js = LosesFirstAck(nc.jetstream())
    batcher = EventBatcher(js, Q)  # type: ignore[arg-type]
    t0 = now_ms() - 2000
    for r in lifecycle("dup-3", t0):
        kw = {k: v for k, v in r.items() if k not in ("type", "job_id", "queue", "name", "attempt", "worker")}
        batcher.add(LifecycleRecord(EventType(r["type"]), r["job_id"], Q, r["name"], r["attempt"], r["worker"], **kw))
    await batcher.flush()  # stored, but the ack is lost: the batch is kept
    assert batcher.published == 0
    await batcher.flush()  # the retry carries the same message id
    assert batcher.published == 5
    (id1, ack1), (id2, ack2) = js.acks
    assert id1 == id2 and id1 is not None and ack2.duplicate and ack2.seq == ack1.seq
    async with ingesting(nc, store):
        await eventually(lambda: all_acked(nc), timeout=15, what="events acked")
    await assert_job_as_after_one_delivery(store, "dup-3", t0)
    assert await rollup(store) == (1, 0, 1, 1)


# ---------------------------------------------------------------- a worker killed mid-job
async def test_a_killed_delivery_arrives_as_its_own_stalled_attempt(nc: NatsClient, store: Store) -> None:
    js = nc.jetstream()
    t0 = now_ms() - 60_000
    base = {"job_id": "kill-1", "queue": Q, "name": "welcome", "attempt": 1, "attempts": 3}
    what = {"data": {"to": "x"}, "user_id": "u1", "enqueued_at": t0 - 50}
    # the killed worker's batch never went out; the next worker's did, after ack_wait
    rerun = [
        {**base, **what, "type": "stalled", "worker": "w2", "delivery": 2, "ts": t0 + 30_000,
         "error": "redelivered (delivery 2) after a worker lost its lease"},
        {**base, "type": "started", "worker": "w2", "delivery": 2, "ts": t0 + 30_001},
        {**base, "type": "completed", "worker": "w2", "delivery": 2, "ts": t0 + 30_400, "duration_ms": 399},
    ]  # fmt: skip
    await js.publish(names.events_subject(Q), batch(rerun), headers={"Nats-Msg-Id": "w2:1"})
    async with ingesting(nc, store):
        await eventually(lambda: all_acked(nc), timeout=15, what="events acked")
    detail = await queries.job_detail(store, "kill-1", payloads=True)
    assert detail is not None
    assert [(a["attempt"], a["delivery"], a["status"], a["worker_id"]) for a in detail["attempts"]] == [
        (1, 1, "stalled", None),
        (1, 2, "completed", "w2"),
    ]
    assert "lost its lease" in detail["attempts"][0]["error"]
    assert (detail["status"], detail["stalls"], detail["data"], detail["user_id"]) == (
        "completed",
        1,
        {"to": "x"},
        "u1",
    )
    assert detail["enqueued_at"] is not None


# ---------------------------------------------------------------- database outage
class TcpProxy:
    """A loopback TCP forwarder to PostgreSQL that can fail like the database going down.

    ``cut()`` stops listening (new connections are refused) and resets every open
    connection; ``restore()`` listens again on the same port. ``freeze()`` is the
    nastier outage, a network that drops packets: connections stay open and new
    ones are accepted, but nothing gets through until ``thaw()``.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        await self._flowing.wait()
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        pair = {client_w, up_w}
        self._open |= pair

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    await self._flowing.wait()
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pump(client_r, up_w), pump(up_r, client_w))
        self._open -= pair

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._open):
            w.transport.abort()
        self._open.clear()

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()


class EngineFailure:
    """SQLite has no server to stop: every statement on the store's engine raises while 'down'.

    The connection is not cut; the store sees the same thing (each transaction fails).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.down = False

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _fail(*_a: Any) -> None:
            if self.down:
                raise OSError("simulated database outage")

    async def cut(self) -> None:
        self.down = True

    async def restore(self) -> None:
        self.down = False


async def test_nothing_is_lost_across_a_database_outage(
    database_url: str, nc: NatsClient, catalog: Catalog, client: JobClient
) -> None:
    n = 30
    checker = make_engine(database_url)  # reads the database directly, never through the outage
    proxy: TcpProxy | None = None
    if database_url.startswith("postgresql"):
        url = make_url(database_url)
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        await proxy.start()
        engine = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
        outage: TcpProxy | EngineFailure = proxy
    else:
        engine = make_engine(database_url)
        outage = EngineFailure(engine)
    await migrate(engine)
    store = Store(engine, catalog)
    reg = ProcessorRegistry()

    async def proc(ctx: JobContext) -> dict[str, Any]:
        return {"n": ctx.data["n"]}

    reg.register(Q, proc)
    worker = Worker(nc, catalog, Q, reg, worker_id="w-outage", heartbeat_s=0.5, idle_wait_s=0.3)
    ingestor = Ingestor(nc, store, retry_max_s=0.5)
    await ingestor.start()
    await worker.start()
    try:
        warm = await client.enqueue(Q, "warm-up", {"n": -1})
        await eventually(
            lambda: count(checker, Job, Job.job_id == warm.job_id, Job.status == "completed"),
            timeout=20,
            what="warm-up job stored",
        )
        await outage.cut()
        with pytest.raises(Exception):  # noqa: B017 (whatever the driver raises: the store is really down)
            await store.insert_samples([_sample()])
        ids = [(await client.enqueue(Q, "during-outage", {"n": i})).job_id for i in range(n)]
        # every job ran and its records are in JetStream (a short job's completed record stands for its start)
        await eventually(lambda: _true(worker.processed >= n + 1), timeout=30, what="jobs processed")
        await eventually(lambda: _true(worker.settler.records_published >= n + 1), timeout=10, what="records sent")
        errors_at = ingestor.stats.db_errors
        await eventually(lambda: _true(ingestor.stats.db_errors >= errors_at + 2), timeout=10, what="ingest retried")
        assert await count(checker, Job, Job.job_id.in_(ids)) == 0, "rows were written during the outage"
        await outage.restore()
        await eventually(
            lambda: _eq(count(checker, Job, Job.job_id.in_(ids), Job.status == "completed"), n),
            timeout=30,
            what="every job stored after the outage",
        )
        await eventually(lambda: all_acked(nc), timeout=15, what="events acked")
    finally:
        await worker.stop(grace_s=1)
        await ingestor.stop()
        await outage.restore()
        await engine.dispose()
    try:
        assert await count(checker, Job) == n + 1
        assert await count(checker, JobAttempt) == n + 1
        assert await count(checker, JobAttempt, JobAttempt.status == "completed") == n + 1
        async with checker.connect() as c:
            done = (await c.execute(select(func.sum(JobStat.completed)).where(JobStat.queue == Q))).scalar_one()
        assert done == n + 1, "the rollup counted a retried batch twice (or lost one)"
        assert ingestor.stats.db_errors > 0
    finally:
        await checker.dispose()
        if proxy is not None:
            await proxy.cut()


def _sample() -> dict[str, Any]:
    return {
        "queue": Q,
        "ts": utcnow(),
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "dlq": 0,
        "paused": False,
        "redelivered": 0,
        "completed_total": 0,
        "failed_total": 0,
        "oldest_waiting_s": None,
    }


async def _true(value: bool) -> bool:
    return value


async def _eq(coro: Any, want: int) -> bool:
    return bool(await coro == want)


# ---------------------------------------------------------------- heartbeats and worker status
async def _worker_row(store: Store, worker_id: str) -> WorkerHeartbeat | None:
    async with store.sessions() as s:
        return (
            await s.execute(select(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id))
        ).scalar_one_or_none()


async def _status_is(store: Store, worker_id: str, status: str) -> WorkerHeartbeat | None:
    row = await _worker_row(store, worker_id)
    return row if row is not None and row.status == status else None


def _idle_worker(nc: NatsClient, catalog: Catalog, worker_id: str) -> Worker:
    reg = ProcessorRegistry()

    async def proc(_ctx: JobContext) -> None:
        return None

    reg.register(Q, proc)
    return Worker(nc, catalog, Q, reg, worker_id=worker_id, heartbeat_s=0.3, idle_wait_s=0.3)


async def test_a_stopped_worker_says_offline(nc: NatsClient, catalog: Catalog, store: Store) -> None:
    w = _idle_worker(nc, catalog, "w-stops")
    async with ingesting(nc, store):
        await w.start()
        try:
            await eventually(lambda: _status_is(store, "w-stops", "ONLINE"), timeout=10, what="online")
        finally:
            await w.stop(grace_s=1)
        row = await eventually(lambda: _status_is(store, "w-stops", "OFFLINE"), timeout=10, what="offline")
    assert row is not None and row.reported_status == "OFFLINE"
    assert await queries.worker_counts(store) == {Q: {"OFFLINE": 1}}
    [listed] = await queries.list_workers(store)
    assert listed["worker_id"] == "w-stops" and listed["status"] == "OFFLINE"


async def test_a_silent_worker_goes_offline_after_offline_after_s(
    nc: NatsClient, catalog: Catalog, store: Store
) -> None:
    w = _idle_worker(nc, catalog, "w-silent")
    async with ingesting(nc, store):
        await w.start()
        try:
            await eventually(lambda: _status_is(store, "w-silent", "ONLINE"), timeout=10, what="online")
            beat = next(t for t in w._tasks if t.get_name() == "jq-heartbeat")
            beat.cancel()  # the process hangs: no more heartbeats, and no goodbye
            await asyncio.gather(beat, return_exceptions=True)
            await store.refresh_worker_statuses(offline_after_s=1.0, degraded_ratio=0.3)
            assert (await _worker_row(store, "w-silent")).status == "ONLINE"  # type: ignore[union-attr]

            async def offline() -> WorkerHeartbeat | None:
                await store.refresh_worker_statuses(offline_after_s=1.0, degraded_ratio=0.3)
                return await _status_is(store, "w-silent", "OFFLINE")

            row = await eventually(offline, timeout=10, interval=0.2, what="offline after silence")
            assert row is not None and row.reported_status == "ONLINE"  # it never said so
            # a heartbeat brings it back
            await w._send_heartbeat()
            await eventually(lambda: _status_is(store, "w-silent", "ONLINE"), timeout=10, what="online again")
        finally:
            await w.stop(grace_s=1)


def _hb(worker_id: str, ts: int, status: str = "ONLINE") -> Heartbeat:
    return Heartbeat(
        worker_id=worker_id,
        queue=Q,
        hostname="h",
        pid=1,
        version="t",
        started_at=ts - 60_000,
        active_jobs=0,
        processed_jobs=0,
        failed_jobs=0,
        concurrency=4,
        status=status,
        ts=ts,
    )


def _finished(worker_id: str, ok: int, failed: int, t0: int) -> list[dict[str, Any]]:
    out = []
    for i in range(ok + failed):
        kind = "completed" if i < ok else "failed"
        out.append(
            {
                "type": kind,
                "job_id": f"{worker_id}-{t0}-{i}",
                "queue": Q,
                "name": "n",
                "attempt": 1,
                "attempts": 1,
                "worker": worker_id,
                "ts": t0 + i,
                "duration_ms": 5,
                **({"error": "RuntimeError: boom"} if kind == "failed" else {}),
            }
        )
    return out


async def _statuses(store: Store) -> dict[str, str]:
    async with store.sessions() as s:
        return {w.worker_id: w.status for w in (await s.execute(select(WorkerHeartbeat))).scalars()}


async def test_offline_and_degraded_rules(store: Store) -> None:
    now = now_ms()
    for wid in ("w-x", "w-y", "w-z", "w-fresh"):
        await store.upsert_heartbeat(_hb(wid, now))
    await store.upsert_heartbeat(_hb("w-old", now - 60_000))  # last beat a minute ago
    t0 = now - 30_000
    await store.apply_records(_finished("w-x", ok=7, failed=3, t0=t0))  # 30 %: degraded
    await store.apply_records(_finished("w-y", ok=8, failed=2, t0=t0))  # 20 %: fine
    await store.apply_records(_finished("w-z", ok=2, failed=2, t0=t0))  # 50 %, but too few to judge
    await store.apply_records(_finished("w-old", ok=0, failed=10, t0=t0))  # silent and failing: offline wins
    assert set((await _statuses(store)).values()) == {"ONLINE"}
    await store.refresh_worker_statuses(offline_after_s=30, degraded_ratio=0.3, window=20)
    assert await _statuses(store) == {
        "w-x": "DEGRADED",
        "w-y": "ONLINE",
        "w-z": "ONLINE",
        "w-fresh": "ONLINE",
        "w-old": "OFFLINE",
    }
    # a degraded worker still counts as live (no no_worker incident); an offline one does not
    assert await queries.worker_counts(store) == {Q: {"DEGRADED": 1, "ONLINE": 3, "OFFLINE": 1}}
    # the ratio looks at the newest `window` jobs: 20 newer successes clear w-x
    await store.apply_records(_finished("w-x", ok=20, failed=0, t0=t0 + 1000))
    await store.refresh_worker_statuses(offline_after_s=30, degraded_ratio=0.3, window=20)
    assert (await _statuses(store))["w-x"] == "ONLINE"


async def test_a_heartbeat_does_not_clear_degraded(store: Store) -> None:
    now = now_ms()
    await store.upsert_heartbeat(_hb("w-x", now - 1000))
    await store.apply_records(_finished("w-x", ok=7, failed=3, t0=now - 30_000))
    await store.refresh_worker_statuses(offline_after_s=30, degraded_ratio=0.3, window=20)
    assert (await _statuses(store))["w-x"] == "DEGRADED"
    await store.upsert_heartbeat(_hb("w-x", now))  # the next regular beat, nothing else changed
    assert (await _statuses(store))["w-x"] == "DEGRADED"


# ---------------------------------------------------------------- stopping
@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}"


async def test_nats_drains_promptly_after_the_ingestor_stops(
    common: CommonSettings, catalog: Catalog, sqlite_url: str
) -> None:
    conn, _js = await connect_and_check(common, name="drain-test", catalog=catalog)
    engine = make_engine(sqlite_url)
    await migrate(engine)
    try:
        async with ingesting(conn, Store(engine, catalog)):
            await asyncio.sleep(4)  # idle fetches time out a few times
        conn.options["drain_timeout"] = 5  # instead of 30, to fail sooner
        started = time.monotonic()
        try:
            await conn.drain()
        except BaseException:  # nats-py may leak its cancelled gather here: the time taken is what counts
            pass
        assert time.monotonic() - started < 2, f"drain took {time.monotonic() - started:.1f}s"
    finally:
        if not conn.is_closed:
            await conn.close()
        await engine.dispose()


class _NoWrites:
    """The sampler's store, minus the database: the hang is on the NATS side."""

    async def insert_samples(self, rows: list[dict[str, Any]]) -> None:
        return None


async def test_the_sampler_always_stops(nc: NatsClient, catalog: Catalog) -> None:
    tries = hung = 0
    while tries < 20 and not hung:
        tries += 1
        sampler = Sampler(nc.jetstream(), catalog, _NoWrites(), interval_s=0.001)  # type: ignore[arg-type]
        sampler.start()  # nearly always mid-sample from now on
        await asyncio.sleep(0.05)
        stop = asyncio.create_task(sampler.stop())
        done, _ = await asyncio.wait([stop], timeout=1)
        if not done:
            hung += 1
            task = sampler._task
            while task is not None and not task.done():  # clean up: cancel until it really ends
                task.cancel()
                await asyncio.wait([task], timeout=0.2)
            await stop
    assert hung == 0, f"Sampler.stop() did not return (try {tries})"
