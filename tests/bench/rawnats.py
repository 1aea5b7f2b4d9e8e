"""Raw nats-py baselines: a producer process with ``publish_async`` and consumer processes that ack.

The messages are as large as a jetqueue job body and carry their send time (``{"t": ms, ...}``), which
the consumers decode, so the latency run can tell enqueue->receive. The stream has work-queue retention
like a jetqueue queue: an acked message is gone, so an empty stream means every message was acked.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from tests.bench import procs
from tests.bench.procs import Child, CpuMeter, RunCtx

STREAM = "BENCH_RAW"
SUBJECT = "bench.raw.job"
DURABLE = {"push": "bench-push", "pull": "bench-pull"}
WARMUP = 1000


def payload(t_ms: float, size: int) -> bytes:
    head = b'{"t":%.3f,"pad":"' % t_ms
    return head + b"x" * max(size - len(head) - 2, 0) + b'"}'


# ------------------------------------------------------------------ child processes
class Producer:
    """``rawnats:producer``: ``js.publish_async`` in chunks, every PubAck awaited."""

    def __init__(self, nc: NatsClient, size: int) -> None:
        self.nc, self.js, self.size = nc, nc.jetstream(), size
        self.info: dict[str, Any] = {}

    async def op_publish(self, n: int, chunk: int) -> dict[str, Any]:
        t0, c0 = time.time(), time.perf_counter()
        for start in range(0, n, chunk):
            t = time.time() * 1000
            futs = [await self.js.publish_async(SUBJECT, payload(t, self.size)) for _ in range(min(chunk, n - start))]
            await asyncio.gather(*futs)
        return {"t0": t0, "seconds": time.perf_counter() - c0}

    async def op_paced(self, rate: int, n: int) -> dict[str, Any]:
        async def send(k: int) -> None:
            t = time.time() * 1000
            await asyncio.gather(*[await self.js.publish_async(SUBJECT, payload(t, self.size)) for _ in range(k)])

        return await procs.paced(rate, n, send)

    async def close(self) -> None:
        await self.nc.close()


async def producer(cfg: dict[str, Any]) -> Producer:
    return Producer(await nats.connect(cfg["url"], name="bench-raw-producer"), cfg["size"])


class Consumer:
    """``rawnats:consumer``: a push (queue group) or pull (``fetch(batch)``) consumer; acks every message."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.count = 0
        self.last = 0.0
        self.lat: list[float] | None = None  # receive - send times (ms), only while a latency run asks
        self.task: asyncio.Task[None] | None = None
        self.info: dict[str, Any] = {}

    async def handle(self, msg: Msg) -> None:
        now = time.time()
        t = json.loads(msg.data)["t"]
        if self.lat is not None:
            self.lat.append(now * 1000 - t)
        await msg.ack()
        self.count += 1
        self.last = time.time()

    async def pull_loop(self, psub: Any, batch: int) -> None:
        while True:
            try:
                msgs = await psub.fetch(batch, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                await self.handle(m)

    async def op_track(self) -> dict[str, Any]:
        """Keep the latency of every message from now on."""
        self.lat = []
        return {"count": self.count}

    async def op_report(self, latencies: bool = False) -> dict[str, Any]:
        return {"count": self.count, "last": self.last, **({"lat": self.lat or []} if latencies else {})}

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.nc.close()


async def consumer(cfg: dict[str, Any]) -> Consumer:
    c = Consumer(await nats.connect(cfg["url"], name="bench-raw-consumer"))
    js = c.nc.jetstream()
    if cfg["kind"] == "push":
        await js.subscribe(
            SUBJECT,
            queue=DURABLE["push"],  # nats-py: the queue group names the durable too
            durable=DURABLE["push"],
            stream=STREAM,
            manual_ack=True,
            cb=c.handle,
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )
    else:
        psub = await js.pull_subscribe_bind(durable=DURABLE["pull"], stream=STREAM)
        c.task = asyncio.create_task(c.pull_loop(psub, cfg["batch"]))
    return c


# ------------------------------------------------------------------ runs
class RawSetup:
    """A fresh nats-server, the stream and its consumer, the consumer processes and the producer process."""

    def __init__(self, ctx: RunCtx, label: str) -> None:
        self.ctx, self.dir = ctx, ctx.dir(label)
        self.server = procs.start_nats(self.dir)
        self.consumers: list[Child] = []
        self.producer: Child | None = None

    async def start(self, kind: str, consumers: int, size: int, batch: int) -> RawSetup:
        self.kind = kind
        self.nc = await nats.connect(self.server.url, name="bench-check")
        self.js = self.nc.jetstream()
        await self.js.add_stream(
            StreamConfig(
                name=STREAM, subjects=[SUBJECT], storage=StorageType.FILE, retention=RetentionPolicy.WORK_QUEUE
            )
        )
        cc = ConsumerConfig(durable_name=DURABLE[kind], ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000)
        if kind == "push":
            cc.deliver_subject, cc.deliver_group = "bench.deliver", DURABLE["push"]
        await self.js.add_consumer(STREAM, cc)
        cfg = {"url": self.server.url, "kind": kind, "batch": batch, "size": size}
        for i in range(consumers):
            log = self.dir / f"consumer{i + 1}.log"
            self.consumers.append(await Child.spawn(f"consumer{i + 1}", "rawnats:consumer", cfg, log, self.ctx.env()))
        self.producer = await Child.spawn(
            "producer", "rawnats:producer", cfg, self.dir / "producer.log", self.ctx.env()
        )
        return self

    def meter(self) -> CpuMeter:
        assert self.producer is not None
        groups = {"producer": procs.fixed(self.producer.pid), "nats-server": procs.fixed(procs.nats_pid(self.server))}
        groups.update({c.name: procs.fixed(c.pid) for c in self.consumers})
        return CpuMeter(groups)

    async def state(self) -> dict[str, int]:
        si = await self.js.stream_info(STREAM)
        ci = await self.js.consumer_info(STREAM, DURABLE[self.kind])
        return {
            "stream_msgs": si.state.messages,
            "published": si.state.last_seq,
            "pending": ci.num_pending or 0,
            "ack_pending": ci.num_ack_pending or 0,
            "redelivered": ci.num_redelivered or 0,
        }

    async def drained(self, total: int, timeout: float) -> tuple[dict[str, int], list[str]]:
        """Poll (every 20 ms) until all ``total`` messages were published and acked."""
        st: dict[str, int] = {}

        async def done() -> bool:
            nonlocal st
            for c in self.consumers:
                c.check()
            st = await self.state()
            return st["published"] >= total and st["stream_msgs"] == st["pending"] == st["ack_pending"] == 0

        try:
            await procs.wait_until(done, timeout, "raw consumers drained", every=0.02)
        except TimeoutError as exc:
            return st, [str(exc)]
        return st, [f"{st['redelivered']} redelivered"] if st["redelivered"] else []

    async def close(self) -> None:
        for c in [*self.consumers, self.producer]:
            if c is not None:
                await c.stop()
        await self.nc.close()
        self.server.stop()


async def run_e2e(
    ctx: RunCtx, n: int, kind: str, *, consumers: int, size: int, chunk: int, batch: int = 256
) -> dict[str, Any]:
    """The producer process publishes n messages while the consumer processes receive and ack them."""
    s = RawSetup(ctx, f"raw-{kind}-{n}")
    try:
        await s.start(kind, consumers, size, batch)
        assert s.producer is not None
        warm = min(WARMUP, n)
        await s.producer.call("publish", n=warm, chunk=chunk)
        _st, problems = await s.drained(warm, 60)
        if problems:
            return {
                "system": f"raw nats-py {kind}",
                "n": n,
                "valid": False,
                "problems": ["warm-up: " + p for p in problems],
            }
        meter = await s.meter().begin()
        await s.producer.send("publish", n=n, chunk=chunk)
        st, problems = await s.drained(warm + n, max(120, n / 200))
        res = await s.producer.result()
        cpu = await meter.end()
        reps = [await c.call("report") for c in s.consumers]
        got = sum(r["count"] for r in reps) - warm
        if got != n:
            problems.append(f"consumers acked {got} of {n}")
        seconds = max(r["last"] for r in reps) - res["t0"]
        return {
            "system": f"raw nats-py {kind}" + (f" (fetch {batch})" if kind == "pull" else ""),
            "n": n,
            "workers": consumers,
            "completed": got,
            "seconds": round(seconds, 3),
            "per_s": round(n / seconds),
            "enqueue_seconds": round(res["seconds"], 3),
            "cpu": cpu,
            "cpu_us_per_job": procs.per_item_us(cpu, n),
            "counts": st,
            "per_consumer": [r["count"] for r in reps],
            "rss_mb": {c.name: round(procs.rss_mb(c.pid), 1) for c in s.consumers},
            "valid": not problems,
            "problems": problems,
        }
    finally:
        await s.close()


async def run_latency(ctx: RunCtx, rate: int, seconds: float, *, consumers: int, size: int) -> dict[str, Any]:
    """Publish time (in the payload) to receive time in the push consumers, at a steady rate."""
    from tests.bench.jq import latency_summary

    s = RawSetup(ctx, f"raw-latency-{rate}")
    try:
        await s.start("push", consumers, size, 0)
        assert s.producer is not None
        warm = min(WARMUP, rate)
        await s.producer.call("paced", rate=rate, n=warm)
        _st, problems = await s.drained(warm, 60)
        for c in s.consumers:
            await c.call("track")
        n = int(rate * seconds)
        sent = await s.producer.call("paced", rate=rate, n=n, timeout=seconds * 3 + 60)
        _st, p2 = await s.drained(warm + n, 60)
        lat = [x for c in s.consumers for x in (await c.call("report", latencies=True))["lat"]]
        if len(lat) != n:
            p2.append(f"{len(lat)} of {n} received")
        return latency_summary("raw nats-py push", rate, n, lat, sent, problems + p2)
    finally:
        await s.close()
