"""jetqueue in the bench: the bench queue, its worker processes, the producer process and the runs.

Every run gets a fresh nats-server. The producer is a child process (``jq:producer``) using
``JobClient``; the workers are ``python -m jetqueue_worker`` with the no-op processor of
``tests/bench/noop.py``. The bench process only observes: it counts the lifecycle records on
``jq.events.bench`` (a core subscription) and checks the streams afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from jetqueue import names
from jetqueue.catalog import Catalog, QueueSpec, load_catalog
from jetqueue.client import JobClient, JobRequest
from jetqueue.connection import all_level_consumers, connect_and_check
from jetqueue.embedded import EmbeddedNats
from jetqueue.events import decode_batch
from jetqueue.job import JobState
from jetqueue.settings import CommonSettings
from tests.bench import procs
from tests.bench.noop import QUEUE
from tests.bench.procs import Child, CpuMeter, Proc, RunCtx

JOB_DATA = {"action": "X", "entity_type": "Y"}
WARMUP = 1000


def bench_catalog(concurrency: int) -> Catalog:
    """One queue with the catalog's defaults but the bench's concurrency."""
    return Catalog(queues=(QueueSpec(name=QUEUE, concurrency=concurrency),))


def write_catalog(path: Path, catalog: Catalog) -> Path:
    path.write_text(yaml.safe_dump(catalog.model_dump(mode="json")), "utf-8")
    return path


def requests(n: int, name: str) -> list[JobRequest]:
    return [JobRequest(queue=QUEUE, name=name, data=JOB_DATA) for _ in range(n)]


def job_bytes() -> int:
    """Size of the body of a bench job (what the raw baselines publish instead); no connection needed."""
    return len(JobClient(NatsClient(), bench_catalog(100)).prepare(requests(1, "run")[0]).payload)


# ------------------------------------------------------------------ the producer process
class Producer:
    """Runs in ``python -m tests.bench.child jq:producer``."""

    def __init__(self, nc: NatsClient, client: JobClient) -> None:
        self.nc, self.client = nc, client
        self.info = {"job_bytes": len(client.prepare(requests(1, "bench")[0]).payload)}

    async def op_enqueue(self, n: int, chunk: int, name: str) -> dict[str, Any]:
        """``enqueue_many`` in calls of ``chunk``; 100 ids of the last call as a sample."""
        t0, c0 = time.time(), time.perf_counter()
        res: list[Any] = []
        for start in range(0, n, chunk):
            res = await self.client.enqueue_many(requests(min(chunk, n - start), name))
        dt = time.perf_counter() - c0
        return {"t0": t0, "seconds": dt, "sample": [r.job_id for r in res[:: max(1, len(res) // 100)]]}

    async def op_publish_raw(self, n: int, chunk: int, name: str) -> dict[str, Any]:
        """The very messages ``enqueue_many`` would send (prepared beforehand), with ``js.publish_async``."""
        js = self.nc.jetstream()
        msgs = [self.client.prepare(r) for r in requests(n, name)]
        t0, c0 = time.time(), time.perf_counter()
        for start in range(0, n, chunk):
            futs = [
                await js.publish_async(m.subject, m.payload, headers=m.headers) for m in msgs[start : start + chunk]
            ]
            acks = await asyncio.gather(*futs)
            if any(a.duplicate for a in acks):
                raise RuntimeError("publish_async: a duplicate PubAck")
        return {"t0": t0, "seconds": time.perf_counter() - c0}

    async def op_paced(self, rate: int, n: int, name: str) -> dict[str, Any]:
        """``n`` jobs at ``rate`` per second (small ``enqueue_many`` calls); each job's send time (ms)."""
        sent: dict[str, float] = {}

        async def send(k: int) -> None:
            t = time.time() * 1000
            for r in await self.client.enqueue_many(requests(k, name)):
                sent[r.job_id] = t

        return {"sent": sent, **await procs.paced(rate, n, send)}

    async def close(self) -> None:
        await self.nc.close()


async def producer(cfg: dict[str, Any]) -> Producer:
    settings = CommonSettings(nats_url=cfg["url"], catalog=cfg["catalog"], provision=False)
    nc, _js = await connect_and_check(settings, name="bench-producer")
    return Producer(nc, JobClient(nc, load_catalog(cfg["catalog"])))


# ------------------------------------------------------------------ observing the workers
@dataclass
class Phase:
    """The jobs of one name: which completed, and when each started (worker clock, ms)."""

    n: int
    track_started: bool = False
    completed: set[str] = field(default_factory=set)
    started: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    last_ts: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    progress_at: float = field(default_factory=time.monotonic)


class Observer:
    """Counts lifecycle records per job name (a core subscription on ``jq.events.bench``)."""

    def __init__(self) -> None:
        self.phases: dict[str, Phase] = {}
        self.heartbeats: set[str] = set()

    async def subscribe(self, nc: NatsClient) -> None:
        await nc.subscribe(
            names.events_subject(QUEUE), cb=self.on_events, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        await nc.subscribe(names.heartbeat_subject(QUEUE, "*"), cb=self.on_heartbeat)
        await nc.flush()

    def expect(self, name: str, n: int, *, track_started: bool = False) -> Phase:
        self.phases[name] = ph = Phase(n, track_started)
        return ph

    async def on_heartbeat(self, msg: Msg) -> None:
        self.heartbeats.add(msg.subject.rsplit(".", 1)[-1])

    async def on_events(self, msg: Msg) -> None:
        for r in decode_batch(msg.data):
            ph = self.phases.get(r.get("name", ""))
            if ph is None:
                continue
            t = r.get("type")
            if t == "started":
                if ph.track_started:
                    ph.started.setdefault(r["job_id"], r["ts"])
            elif t == "completed":
                if ph.track_started and "started_ts" in r:  # the record also stands for the job's start
                    ph.started.setdefault(r["job_id"], r["started_ts"])
                ph.completed.add(r["job_id"])
                ph.last_ts = max(ph.last_ts, r["ts"])
                ph.progress_at = time.monotonic()
                if len(ph.completed) >= ph.n:
                    ph.done.set()
            elif t in ("failed", "retrying", "stalled"):
                ph.failed += 1

    async def wait(self, ph: Phase, workers: list[Proc], stall_s: float = 60) -> list[str]:
        """Until every job completed; the problems if not (a worker died, jobs failed, no progress)."""
        while not ph.done.is_set():
            try:
                await asyncio.wait_for(ph.done.wait(), 1.0)
            except TimeoutError:
                for w in workers:
                    if not w.alive():
                        return [f"{w.name} exited with {w.proc.returncode} (log {w.log})"]
                if time.monotonic() - ph.progress_at > stall_s:
                    return [f"no completion for {stall_s:.0f} s: {len(ph.completed)} of {ph.n} completed"]
        return [f"{ph.failed} failed/retried/stalled records"] if ph.failed else []


# ------------------------------------------------------------------ one system under test
class Setup:
    """A fresh nats-server, the bench queue provisioned, ``workers`` worker processes and the producer."""

    def __init__(self, ctx: RunCtx, label: str) -> None:
        self.ctx, self.dir = ctx, ctx.dir(label)
        self.server: EmbeddedNats | None = None
        self.workers: list[Proc] = []
        self.producer: Child | None = None
        self.obs = Observer()

    async def start(self, workers: int, concurrency: int) -> Setup:
        self.catalog = bench_catalog(concurrency)
        self.spec = self.catalog.get(QUEUE)
        cat = write_catalog(self.dir / "catalog.yaml", self.catalog)
        self.server = procs.start_nats(self.dir)
        self.nc, self.js = await connect_and_check(
            CommonSettings(nats_url=self.server.url), name="bench-observer", catalog=self.catalog
        )
        await self.obs.subscribe(self.nc)
        base = {
            "JETQUEUE_NATS_URL": self.server.url,
            "JETQUEUE_CATALOG": str(cat),
            "JETQUEUE_PROVISION": "false",
            "JETQUEUE_WORKER_QUEUE": QUEUE,
            "JETQUEUE_WORKER_CONCURRENCY": str(concurrency),
            "JETQUEUE_WORKER_PROCESSOR": "tests.bench.noop:register",
            "JETQUEUE_WORKER_METRICS_PORT": "0",
            "JETQUEUE_WORKER_LOG_LEVEL": "WARNING",
            "JETQUEUE_WORKER_GRACE_S": "2",
        }
        for i in range(workers):
            env = self.ctx.env({**base, "JETQUEUE_WORKER_WORKER_ID": f"bench-w{i + 1}"})
            argv = procs.exec_argv("jetqueue_worker")
            self.workers.append(await Proc.start(f"worker{i + 1}", argv, self.dir / f"worker{i + 1}.log", env))
        cfg = {"url": self.server.url, "catalog": str(cat)}
        self.producer = await Child.spawn("producer", "jq:producer", cfg, self.dir / "producer.log", self.ctx.env())
        await procs.wait_until(self._heartbeats, 60, "jetqueue workers' first heartbeats", every=0.1)
        return self

    async def _heartbeats(self) -> bool:
        for w in self.workers:
            w.check()
        return len(self.obs.heartbeats) >= len(self.workers)

    def meter(self) -> CpuMeter:
        assert self.producer is not None and self.server is not None
        groups = {"producer": procs.fixed(self.producer.pid), "nats-server": procs.fixed(procs.nats_pid(self.server))}
        groups.update({w.name: procs.trees(w.pid) for w in self.workers})
        return CpuMeter(groups)

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        await asyncio.gather(*(w.stop() for w in self.workers))
        if getattr(self, "nc", None) is not None:
            await self.nc.close()
        if self.server is not None:
            self.server.stop()

    async def run_jobs(self, n: int, chunk: int, name: str) -> tuple[dict[str, Any], Phase, list[str]]:
        """Enqueue n jobs (the producer process) and wait until all completed."""
        assert self.producer is not None
        ph = self.obs.expect(name, n)
        await self.producer.send("enqueue", n=n, chunk=chunk, name=name)
        problems = await self.obs.wait(ph, self.workers)
        return await self.producer.result(), ph, problems

    async def counts(self) -> dict[str, int]:
        si = await self.js.stream_info(self.spec.stream)
        kv = await self.js.stream_info(names.bucket_stream(names.JOBS_BUCKET))
        out = {"stream_msgs": si.state.messages, "kv_msgs": kv.state.messages, "pending": 0, "ack_pending": 0}
        out["redelivered"] = 0
        for c in all_level_consumers(self.spec):
            ci = await self.js.consumer_info(self.spec.stream, c)
            out["pending"] += ci.num_pending or 0
            out["ack_pending"] += ci.num_ack_pending or 0
            out["redelivered"] += ci.num_redelivered or 0
        return out

    async def settled(self, kv_expected: int, timeout: float = 15) -> tuple[dict[str, int], list[str]]:
        """Wait until the queue is empty and ``kv_expected`` states are stored; what is off if not."""
        c: dict[str, int] = {}

        async def done() -> bool:
            nonlocal c
            c = await self.counts()
            return c["stream_msgs"] == c["pending"] == c["ack_pending"] == 0 and c["kv_msgs"] >= kv_expected

        try:
            await procs.wait_until(done, timeout, "queue settled", every=0.2)
        except TimeoutError:
            pass
        problems = [f"{k} = {c[k]} left" for k in ("stream_msgs", "pending", "ack_pending") if c.get(k)]
        if c.get("redelivered"):
            problems.append(f"{c['redelivered']} redelivered")
        if c.get("kv_msgs", 0) != kv_expected:
            problems.append(f"jq-jobs holds {c.get('kv_msgs')} states, expected {kv_expected}")
        return c, problems

    async def sampled_states(self, ids: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for job_id in ids:
            try:
                raw = await self.js.get_last_msg(names.bucket_stream(names.JOBS_BUCKET), names.state_subject(job_id))
                st = JobState.from_bytes(raw.data or b"").state.value
            except Exception as exc:
                st = type(exc).__name__
            out[st] = out.get(st, 0) + 1
        return out

    def log_problems(self) -> list[str]:
        errors = sum(w.count_in_log('"ERROR"') + w.count_in_log("Traceback") for w in self.workers)
        return [f"{errors} error lines in the worker logs ({self.dir})"] if errors else []


# ------------------------------------------------------------------ runs
async def run_e2e(ctx: RunCtx, n: int, *, workers: int, concurrency: int, chunk: int) -> dict[str, Any]:
    """End to end: the producer process enqueues n jobs while the workers run them."""
    s = Setup(ctx, f"jetqueue-e2e-{workers}w-{n}")
    try:
        await s.start(workers, concurrency)
        warm = min(WARMUP, n)
        _r, _ph, problems = await s.run_jobs(warm, chunk, "warmup")
        _c, p2 = await s.settled(warm)
        if problems or p2:
            return {"system": "jetqueue", "n": n, "valid": False, "problems": ["warm-up: " + x for x in problems + p2]}
        meter, observer0 = await s.meter().begin(), procs.cpu_s(os.getpid())
        res, ph, problems = await s.run_jobs(n, chunk, "run")
        cpu = await meter.end()
        cpu["bench_observer_s_not_counted"] = round(procs.cpu_s(os.getpid()) - observer0, 3)
        counts, p2 = await s.settled(warm + n)
        problems += p2 + s.log_problems()
        if len(ph.completed) != n:
            problems.append(f"{len(ph.completed)} of {n} jobs completed")
        seconds = (ph.last_ts / 1000 - res["t0"]) if ph.done.is_set() else None
        return {
            "system": "jetqueue",
            "n": n,
            "workers": workers,
            "concurrency": concurrency,
            "completed": len(ph.completed),
            "seconds": round(seconds, 3) if seconds else None,
            "per_s": round(n / seconds) if seconds else None,
            "enqueue_seconds": round(res["seconds"], 3),
            "cpu": cpu,
            "cpu_us_per_job": procs.per_item_us(cpu, n),
            "counts": counts,
            "sampled_states": await s.sampled_states(res["sample"]),
            "rss_mb": {w.name: round(sum(procs.rss_mb(p) for p in procs.tree(w.pid)), 1) for w in s.workers},
            "valid": not problems,
            "problems": problems,
        }
    finally:
        await s.close()


async def run_latency(ctx: RunCtx, rate: int, seconds: float, *, workers: int, concurrency: int) -> dict[str, Any]:
    """enqueue->start at a steady rate: the start time (a started record's ts, or a completed record's
    started_ts when that record stands for the start too) minus the producer's send time."""
    s = Setup(ctx, f"jetqueue-latency-{rate}")
    try:
        await s.start(workers, concurrency)
        _r, _ph, problems = await s.run_jobs(min(WARMUP, rate), 100, "warmup")
        n = int(rate * seconds)
        assert s.producer is not None
        ph = s.obs.expect("latency", n, track_started=True)
        res = await s.producer.call("paced", rate=rate, n=n, name="latency", timeout=seconds * 3 + 60)
        problems += await s.obs.wait(ph, s.workers)
        lat = [ph.started[j] - t for j, t in res["sent"].items() if j in ph.started]
        if len(lat) != n:
            problems.append(f"{len(lat)} of {n} jobs started")
        return latency_summary("jetqueue", rate, n, lat, res, problems + s.log_problems())
    finally:
        await s.close()


def latency_summary(
    system: str, rate: int, n: int, lat: list[float], sent: dict[str, Any], problems: list[str]
) -> dict[str, Any]:
    return {
        "system": system,
        "rate": rate,
        "n": n,
        "achieved_rate": sent.get("achieved_rate"),
        "measured": len(lat),
        **{f"p{q}_ms": round(v, 2) if (v := procs.pct(lat, q)) is not None else None for q in (50, 90, 99)},
        "max_ms": round(max(lat), 1) if lat else None,
        "valid": not problems,
        "problems": problems,
    }


async def run_enqueue(ctx: RunCtx, n: int, chunk: int, mode: str) -> dict[str, Any]:
    """Enqueue only (no workers): ``enqueue_many`` (mode "sdk") or raw ``publish_async`` ("raw")."""
    d = ctx.dir(f"enqueue-{mode}-{n}")
    server = procs.start_nats(d)
    producer: Child | None = None
    try:
        catalog = bench_catalog(100)
        cat = write_catalog(d / "catalog.yaml", catalog)
        nc, js = await connect_and_check(CommonSettings(nats_url=server.url), name="bench-check", catalog=catalog)
        cfg = {"url": server.url, "catalog": str(cat)}
        producer = await Child.spawn("producer", "jq:producer", cfg, d / "producer.log", ctx.env())
        op = "enqueue" if mode == "sdk" else "publish_raw"
        warm = min(WARMUP, n)
        await producer.call(op, n=warm, chunk=chunk, name="warmup")
        meter = await CpuMeter(
            {"producer": procs.fixed(producer.pid), "nats-server": procs.fixed(procs.nats_pid(server))}
        ).begin()
        res = await producer.call(op, n=n, chunk=chunk, name="run", timeout=max(600, n / 100))
        cpu = await meter.end()
        stored = (await js.stream_info(catalog.get(QUEUE).stream)).state.messages
        await nc.close()
        problems = [] if stored == warm + n else [f"stream holds {stored} jobs, expected {warm + n}"]
        return {
            "system": "jetqueue enqueue_many" if mode == "sdk" else "raw publish_async",
            "n": n,
            "chunk": chunk,
            "job_bytes": producer.ready_info.get("job_bytes"),
            "seconds": round(res["seconds"], 3),
            "per_s": round(n / res["seconds"]),
            "cpu": cpu,
            "cpu_us_per_job": procs.per_item_us(cpu, n),
            "valid": not problems,
            "problems": problems,
        }
    finally:
        if producer is not None:
            await producer.stop()
        server.stop()
