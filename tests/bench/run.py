"""jetqueue benchmarks: ``python -m tests.bench.run`` (``make bench``).

One run, one fresh embedded nats-server (own store directory), and these figures:

raw-a   raw nats-py ``js.publish_async`` of N messages (same size as a job body) to a plain
        file stream, all acks awaited (msgs/s)
raw-a2  the same with a ``Nats-Msg-Id`` header into a work-queue stream with a duplicate
        window, i.e. what the broker does for a jetqueue job, minus the SDK (msgs/s)
raw-b   raw nats-py durable push consumer, manual ack, consuming the N stored messages (msgs/s)
raw-b2  raw nats-py pull consumer (``fetch`` batches of 100), ack each (msgs/s)
raw-b3  raw-b plus one ``publish_async`` per message of a job-state-sized record into a
        TTL stream: the NATS work a worker does per job, without the runtime (msgs/s)
a       ``JobClient.enqueue_many`` in chunks (jobs/s), ratio vs raw-a
b       end to end: jobs enqueued by the SDK in this process while 2 worker processes
        (``python -m jetqueue_worker``) run them; timed until the last ``completed``
        lifecycle record (jobs/s), ratio vs raw-b; at two sizes (cost per job flat?)
b-drain the workers draining a backlog of the N jobs enqueued by (a) (paused queue, resumed)
c       enqueue->start latency p50/p99 at a steady rate (started record ts - send time)
d       CPU seconds per 1000 jobs of the workers (and the server, and this process)
e       worker RSS idle and after the runs

Jobs are ``audit-log`` jobs run by the reference processor: the cheapest one the worker
registers. It is not free: it awaits the simulated audit service (asyncio.sleep of 2 ms)
and reports progress twice; the report prints the cost of that processor on its own.

Benchmarks are not tests: pytest's testpaths do not include tests/bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import nats
import yaml
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from jetqueue import names
from jetqueue.catalog import Catalog, load_catalog
from jetqueue.client import JobClient, JobRequest
from jetqueue.connection import connect_and_check
from jetqueue.control import pause, resume
from jetqueue.embedded import EmbeddedNats
from jetqueue.events import decode_batch
from jetqueue.job import JobState, JobStatus
from jetqueue.settings import CommonSettings

QUEUE = "audit-log"
JOB_DATA = {"action": "X", "entity_type": "Y"}
RESULTS = Path(__file__).with_name("results.json")
CLK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------- sizes
@dataclass
class Sizes:
    raw_n: int = 100_000
    enqueue_n: int = 100_000
    e2e_small: int = 10_000
    e2e_large: int = 100_000
    chunk: int = 1000
    latency_rate: int = 1000
    latency_s: float = 8.0
    workers: int = 2
    concurrency: int | None = None  # None: the catalog's (audit-log: 10)


def parse_args(argv: list[str] | None) -> tuple[Sizes, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run with small sizes (about a minute)")
    p.add_argument("--raw-n", type=int, help="messages of the raw baselines")
    p.add_argument("--enqueue-n", type=int, help="jobs of (a) and b-drain")
    p.add_argument("--e2e-small", type=int, help="jobs of the small end-to-end run")
    p.add_argument("--e2e-large", type=int, help="jobs of the large end-to-end run")
    p.add_argument("--chunk", type=int, help="enqueue_many chunk size")
    p.add_argument("--latency-rate", type=int, help="jobs/s of the latency run")
    p.add_argument("--latency-s", type=float, help="seconds of the latency run")
    p.add_argument("--workers", type=int, help="worker processes")
    p.add_argument("--concurrency", type=int, help="JETQUEUE_WORKER_CONCURRENCY (default: the catalog's)")
    p.add_argument("--skip-raw", action="store_true", help="skip the raw nats-py baselines")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server store, worker logs)")
    args = p.parse_args(argv)
    s = (
        Sizes(raw_n=10_000, enqueue_n=10_000, e2e_small=2_000, e2e_large=10_000, latency_s=3.0)
        if args.quick
        else Sizes()
    )
    for k in (
        "raw_n",
        "enqueue_n",
        "e2e_small",
        "e2e_large",
        "chunk",
        "latency_rate",
        "latency_s",
        "workers",
        "concurrency",
    ):
        v = getattr(args, k)
        if v is not None:
            setattr(s, k, v)
    return s, args


# ------------------------------------------------------------- /proc helpers
def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine used so far (/proc/stat, every CPU)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / CLK


@dataclass
class CpuSnap:
    """CPU of our processes, and of the whole machine, from now on."""

    pids: dict[str, int]
    t: float = field(default_factory=time.monotonic)
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0

    def __post_init__(self) -> None:
        self.cpu = {k: cpu_s(p) for k, p in self.pids.items()}
        self.busy = machine_busy_s()

    def delta(self) -> dict[str, float]:
        return {k: round(cpu_s(p) - self.cpu[k], 3) for k, p in self.pids.items()}

    def machine(self) -> dict[str, float]:
        """Machine utilisation over the interval, and the share other processes took."""
        wall = time.monotonic() - self.t
        ours = sum(self.delta().values())
        busy = machine_busy_s() - self.busy
        ncpu = os.cpu_count() or 1
        return {
            "busy_pct": round(100 * busy / (wall * ncpu), 1),
            "others_pct": round(100 * max(busy - ours, 0) / (wall * ncpu), 1),
        }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    i = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[i]


# ----------------------------------------------------------- worker processes
class Workers:
    def __init__(self, url: str, catalog_path: Path, tmp: Path, count: int, concurrency: int | None) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        for i in range(count):
            env = {
                **os.environ,
                "JETQUEUE_NATS_URL": url,
                "JETQUEUE_CATALOG": str(catalog_path),
                "JETQUEUE_PROVISION": "false",
                "JETQUEUE_WORKER_QUEUE": QUEUE,
                "JETQUEUE_WORKER_WORKER_ID": f"bench-w{i + 1}",
                "JETQUEUE_WORKER_METRICS_PORT": "0",
                "JETQUEUE_WORKER_LOG_LEVEL": "WARNING",
            }
            if concurrency:
                env["JETQUEUE_WORKER_CONCURRENCY"] = str(concurrency)
            log = tmp / f"worker-{i + 1}.log"
            with open(log, "wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "jetqueue_worker"], env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
            self.logs.append(log)

    @property
    def pids(self) -> dict[str, int]:
        return {f"worker{i + 1}": p.pid for i, p in enumerate(self.procs)}

    def check_alive(self) -> None:
        for p, log in zip(self.procs, self.logs, strict=True):
            if p.poll() is not None:
                raise RuntimeError(f"worker {p.pid} exited ({p.returncode}):\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def log_lines(self, needle: str) -> int:
        return sum(log.read_text(errors="replace").count(needle) for log in self.logs)


# ------------------------------------------------------------ events monitor
class Monitor:
    """Reads lifecycle record batches of the queue (core subscription on jq.events.<queue>)."""

    def __init__(self) -> None:
        self.target_name = ""
        self.target = 0
        self.completed: set[str] = set()
        self.failed = 0
        self.last_completed_ts = 0
        self.first_started_ts = 0
        self.started: dict[str, int] = {}  # job id -> ts of its first started record
        self.done = asyncio.Event()
        self.done_at = 0.0
        self.records = 0
        self.pulls = 0  # pull requests the workers sent (seen by a core subscription on the API subject)
        self.pull_batch = 0
        self.pull_no_wait = 0

    async def on_pull(self, msg: Msg) -> None:
        self.pulls += 1
        try:
            body = json.loads(msg.data or b"{}")
        except ValueError:
            return
        self.pull_batch += int(body.get("batch", 1))
        self.pull_no_wait += bool(body.get("no_wait"))

    def pull_counts(self) -> tuple[int, int, int]:
        return self.pulls, self.pull_batch, self.pull_no_wait

    def expect(self, name: str, n: int) -> None:
        self.target_name, self.target = name, n
        self.completed, self.failed, self.started = set(), 0, {}
        self.last_completed_ts = self.first_started_ts = 0
        self.done = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        for r in decode_batch(msg.data):
            self.records += 1
            if r.get("name") != self.target_name:
                continue
            t = r.get("type")
            if t == "started":
                self.started.setdefault(r["job_id"], r["ts"])
                if not self.first_started_ts or r["ts"] < self.first_started_ts:
                    self.first_started_ts = r["ts"]
            elif t == "completed":
                self.completed.add(r["job_id"])
                self.last_completed_ts = max(self.last_completed_ts, r["ts"])
                if len(self.completed) >= self.target and not self.done.is_set():
                    self.done_at = time.monotonic()
                    self.done.set()
            elif t == "failed":
                self.failed += 1

    async def wait(self, timeout: float, workers: Workers) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self.done.wait(), 1.0)
                return True
            except TimeoutError:
                workers.check_alive()
                if self.failed:
                    raise RuntimeError(f"{self.failed} job(s) failed; see the worker logs") from None
        return False


# -------------------------------------------------------------------- phases
def body_of_job_size(client: JobClient) -> bytes:
    _spec, env, _s, _h, _r = client._prepare(JobRequest(queue=QUEUE, name="bench-size", data=JOB_DATA))
    return b"x" * len(env.to_bytes())


async def raw_publish(
    nc: NatsClient,
    n: int,
    chunk: int,
    payload: bytes,
    *,
    stream: str,
    subject: str,
    work_queue: bool = False,
    msg_id: bool = False,
) -> dict[str, Any]:
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=stream,
            subjects=[subject + ".>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE if work_queue else RetentionPolicy.LIMITS,
            duplicate_window=120.0,  # the server default; jetqueue queues use 120 s too
        )
    )
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        futs = []
        for i in range(start, min(n, start + chunk)):
            hdr = {"Nats-Msg-Id": f"m{i}"} if msg_id else None
            futs.append(await js.publish_async(f"{subject}.{i % 16}", payload, headers=hdr))
        await asyncio.gather(*futs)
    dt = time.perf_counter() - t0
    return {"n": n, "seconds": round(dt, 3), "per_s": round(n / dt)}


async def raw_push_consume(
    nc: NatsClient, n: int, *, stream: str, subject: str, durable: str = "bench-push", state: bytes | None = None
) -> dict[str, Any]:
    """Consume n messages with a push consumer and ack each; with ``state``, also publish_async one
    message per consumed one into a TTL stream (what a worker's state write costs)."""
    js = nc.jetstream()
    done = asyncio.Event()
    count = 0
    acks: list[asyncio.Future[Any]] = []
    if state is not None:
        await js.add_stream(
            StreamConfig(
                name="BENCH_STATE",
                subjects=["bench.state.>"],
                storage=StorageType.FILE,
                max_msgs_per_subject=1,
                allow_msg_ttl=True,
            )
        )

    async def cb(msg: Msg) -> None:
        nonlocal count
        if state is not None:
            acks.append(await js.publish_async(f"bench.state.{count}", state, headers={"Nats-TTL": "60s"}))
        await msg.ack()
        count += 1
        if count >= n:
            done.set()

    t0 = time.perf_counter()
    sub = await js.subscribe(
        subject + ".>",
        stream=stream,
        durable=durable,
        manual_ack=True,
        cb=cb,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL),
        pending_msgs_limit=-1,
        pending_bytes_limit=-1,
    )
    await asyncio.wait_for(done.wait(), timeout=max(60, n / 500))
    await asyncio.gather(*acks)
    dt = time.perf_counter() - t0
    await nc.flush()
    await sub.unsubscribe()
    return {"n": n, "seconds": round(dt, 3), "per_s": round(n / dt)}


async def raw_pull_consume(nc: NatsClient, n: int, *, stream: str, subject: str) -> dict[str, Any]:
    js = nc.jetstream()
    psub = await js.pull_subscribe(
        subject + ".>",
        durable="bench-pull",
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1000),
    )
    count = 0
    t0 = time.perf_counter()
    while count < n:
        for m in await psub.fetch(min(100, n - count), timeout=5):
            await m.ack()
            count += 1
    dt = time.perf_counter() - t0
    await nc.flush()
    await psub.unsubscribe()
    return {"n": n, "seconds": round(dt, 3), "per_s": round(n / dt)}


async def enqueue_chunks(client: JobClient, n: int, chunk: int, name: str, sample: list[str] | None = None) -> float:
    """Enqueue n jobs with enqueue_many in chunks; the seconds it took.

    ``sample`` gets 100 ids of the last jobs: a completed audit-log job's state expires after the queue's
    retention (60 s), so only recent ones can be checked after a long run.
    """
    t0 = time.perf_counter()
    res = []
    for start in range(0, n, chunk):
        reqs = [JobRequest(queue=QUEUE, name=name, data=JOB_DATA) for _ in range(min(chunk, n - start))]
        res = await client.enqueue_many(reqs)
    if sample is not None:
        sample.extend(r.job_id for r in res[-1000:][::10])
    return time.perf_counter() - t0


async def check_states(client: JobClient, ids: list[str]) -> dict[str, int]:
    """States recorded in the jobs bucket for a sample of job ids."""
    out: dict[str, int] = {}
    for job_id in ids:
        try:
            st = (await client.status(job_id, QUEUE)).state.value
        except Exception as exc:
            st = type(exc).__name__
        out[st] = out.get(st, 0) + 1
    return out


async def server_counts(js: Any) -> dict[str, int]:
    """Messages stored so far in the jobs bucket and the events stream (last sequence numbers)."""
    out = {}
    for key, stream in (
        ("kv_writes", f"KV_{names.JOBS_BUCKET}"),
        ("event_msgs", names.EVENTS_STREAM),
        ("job_msgs", names.job_stream(QUEUE)),
    ):
        out[key] = (await js.stream_info(stream)).state.last_seq
    return out


def per_job(after: dict[str, int], before: dict[str, int], n: int) -> dict[str, float]:
    return {f"{k}_per_job": round((after[k] - before[k]) / n, 3) for k in after} if n else {}


async def e2e(
    client: JobClient, js: Any, mon: Monitor, workers: Workers, pids: dict[str, int], n: int, chunk: int, name: str
) -> dict[str, Any]:
    """Enqueue n jobs while the workers run them; time to the last completed record."""
    mon.expect(name, n)
    counts = await server_counts(js)
    sample: list[str] = []
    snap = CpuSnap(pids)
    pulls0 = mon.pull_counts()
    t0_wall = time.time() * 1000
    t0 = time.monotonic()
    enq_s = await enqueue_chunks(client, n, chunk, name, sample)
    ok = await mon.wait(max(120, n / 100), workers)
    seen_s = (mon.done_at if ok else time.monotonic()) - t0
    done_n = len(mon.completed)
    run_s = (mon.last_completed_ts - t0_wall) / 1000 if ok else seen_s
    return {
        "n": n,
        "completed": done_n,
        "ok": ok,
        "enqueue_seconds": round(enq_s, 3),
        "seconds": round(run_s, 3),
        "per_s": round(done_n / run_s),
        "monitor_seconds": round(seen_s, 3),
        **costs(snap, done_n),
        **per_job(await server_counts(js), counts, done_n),
        **pulls(mon, pulls0, done_n),
        "sampled_states": await check_states(client, sample),
    }


def pulls(mon: Monitor, before: tuple[int, int, int], n: int) -> dict[str, Any]:
    p, b, nw = (x - y for x, y in zip(mon.pull_counts(), before, strict=True))
    return {
        "pull_requests_per_job": round(p / n, 3) if n else None,
        "mean_pull_batch": round(b / p, 1) if p else None,
        "no_wait_share": round(nw / p, 2) if p else None,
    }


def costs(snap: CpuSnap, n: int) -> dict[str, Any]:
    cpu, mach = snap.delta(), snap.machine()
    workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
    return {
        "cpu_s": cpu,
        "machine": mach,
        "worker_cpu_ms_per_job": round(workers * 1000 / n, 4) if n else None,
        "server_cpu_ms_per_job": round(cpu.get("nats-server", 0) * 1000 / n, 4) if n else None,
        "bench_cpu_ms_per_job": round(cpu.get("bench", 0) * 1000 / n, 4) if n else None,
        "total_cpu_us_per_item": round(sum(cpu.values()) * 1e6 / n, 1) if n else None,
    }


async def measured(pids: dict[str, int], coro: Any) -> dict[str, Any]:
    """Run a raw baseline and add the CPU it cost (this process and the server) per message."""
    snap = CpuSnap(pids)
    r: dict[str, Any] = await coro
    cpu = snap.delta()
    return {
        **r,
        "cpu_s": cpu,
        "machine": snap.machine(),
        "total_cpu_us_per_item": round(sum(cpu.values()) * 1e6 / r["n"], 1),
    }


async def drain(
    client: JobClient, js: Any, spec: Any, mon: Monitor, workers: Workers, pids: dict[str, int], n: int, chunk: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(a) enqueue n jobs into the paused queue, then resume and time the workers draining them."""
    await pause(js, spec)
    await asyncio.sleep(2.5)  # let the workers' open long-polls end (idle_wait_s 2)
    mon.expect("bench-drain", n)
    sample: list[str] = []
    snap = CpuSnap(pids)
    enq_s = await enqueue_chunks(client, n, chunk, "bench-drain", sample)
    a = {
        "n": n,
        "seconds": round(enq_s, 3),
        "per_s": round(n / enq_s),
        "chunk": chunk,
        **{k: v for k, v in costs(snap, n).items() if not k.startswith("worker")},
    }
    counts = await server_counts(js)
    snap = CpuSnap(pids)
    pulls0 = mon.pull_counts()
    t0_wall = time.time() * 1000
    t0 = time.monotonic()
    await resume(js, spec)
    ok = await mon.wait(max(120, n / 100), workers)
    seen_s = (mon.done_at if ok else time.monotonic()) - t0
    done_n = len(mon.completed)
    # from the first start (workers notice the resume at their next poll) to the last completion
    run_s = (mon.last_completed_ts - mon.first_started_ts) / 1000 if ok else seen_s
    b = {
        "n": n,
        "completed": done_n,
        "ok": ok,
        "seconds": round(run_s, 3),
        "per_s": round(done_n / run_s),
        "resume_to_first_start_ms": mon.first_started_ts - round(t0_wall),
        "monitor_seconds": round(seen_s, 3),
        **costs(snap, done_n),
        **per_job(await server_counts(js), counts, done_n),
        **pulls(mon, pulls0, done_n),
        "sampled_states": await check_states(client, sample),
    }
    return a, b


async def latency(
    client: JobClient, mon: Monitor, workers: Workers, pids: dict[str, int], rate: int, seconds: float
) -> dict[str, Any]:
    """Steady ``rate`` jobs/s for ``seconds``; enqueue->start latency from the started records."""
    n = int(rate * seconds)
    mon.expect("bench-latency", n)
    sent: dict[str, float] = {}
    snap = CpuSnap(pids)
    pulls0 = mon.pull_counts()
    t0 = time.monotonic()
    count = 0
    lag_max = 0.0
    while count < n:
        due = min(n, int((time.monotonic() - t0) * rate) + 1) - count
        if due > 0:
            lag_max = max(lag_max, due / rate)
            reqs = [JobRequest(queue=QUEUE, name="bench-latency", data=JOB_DATA) for _ in range(due)]
            t_send = time.time() * 1000
            for r in await client.enqueue_many(reqs):
                sent[r.job_id] = t_send
            count += due
        await asyncio.sleep(0.002)
    send_s = time.monotonic() - t0
    mach = snap.machine()
    ok = await mon.wait(60, workers)
    series = sorted((t, mon.started[j] - t) for j, t in sent.items() if j in mon.started)
    lat = [x for _, x in series]
    # worst latency per second of the run: shows whether a backlog built up
    per_second: dict[int, float] = {}
    for t, x in series:
        k = int((t - series[0][0]) // 1000)
        per_second[k] = max(per_second.get(k, 0.0), x)
    return {
        "rate": rate,
        "n": n,
        "ok": ok,
        "achieved_rate": round(n / send_s),
        "started": len(lat),
        "p50_ms": round(pct(lat, 50), 1),
        "p90_ms": round(pct(lat, 90), 1),
        "p99_ms": round(pct(lat, 99), 1),
        "max_ms": round(max(lat), 1) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        "max_ms_per_second": [round(v) for _, v in sorted(per_second.items())],
        "machine": mach,
        **{k: v for k, v in costs(snap, len(lat)).items() if k != "machine"},
        **pulls(mon, pulls0, len(lat)),
    }


async def processor_cost(n: int = 2000) -> dict[str, Any]:
    """What the reference audit-log processor costs on its own (no NATS), per job."""
    from jetqueue.processors import JobContext
    from jetqueue_worker.app import default_registry

    fn = default_registry().resolve(QUEUE, "x")
    assert fn is not None

    async def noop_progress(_v: float) -> None:
        return None

    def ctx(i: int) -> JobContext:
        c = JobContext(job_id=f"j{i}", queue=QUEUE, name="x", data=dict(JOB_DATA), attempt=1, attempts=1)
        c._progress_cb = noop_progress
        return c

    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(200):
        await fn(ctx(i))
    serial = (time.perf_counter() - t0) / 200
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(fn(ctx(i)) for i in range(n)))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {
        "serial_ms_per_job": round(serial * 1000, 3),
        "cpu_ms_per_job": round(cpu * 1000 / n, 4),
        "concurrent_wall_ms_per_job": round(wall * 1000 / n, 4),
    }


# ---------------------------------------------------------------------- main
def machine(server: EmbeddedNats) -> dict[str, Any]:
    version = subprocess.run([server.binary, "--version"], capture_output=True, text=True).stdout.strip()
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    repo = Path(__file__).resolve().parents[2]
    git = {
        k: subprocess.run(["git", *cmd], cwd=repo, capture_output=True, text=True).stdout.strip()
        for k, cmd in (
            ("commit", ["rev-parse", "--short", "HEAD"]),
            ("dirty", ["status", "--short", "--", "libs", "services"]),
        )
    }
    return {
        "git_commit": git["commit"],
        "git_modified_files": len(git["dirty"].splitlines()),
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "python": platform.python_version(),
        "nats_server": version,
        "nats_py": metadata.version("nats-py"),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def write_catalog(path: Path, catalog: Catalog) -> Path:
    path.write_text(yaml.safe_dump(catalog.model_dump(mode="json"), allow_unicode=True), "utf-8")
    return path


async def main_async(sizes: Sizes, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="jetqueue-bench-"))
    server = EmbeddedNats(store_dir=str(tmp / "nats"), log_file=str(tmp / "nats.log"))
    server.start()
    out: dict[str, Any] = {"sizes": asdict(sizes), "machine": machine(server), "started": time.strftime("%FT%T%z")}
    step: Callable[[str], None] = lambda s: print(f"[{time.strftime('%T')}] {s}", flush=True)  # noqa: E731
    workers: Workers | None = None
    try:
        catalog = load_catalog()
        spec = catalog.get(QUEUE)
        out["queue"] = {
            "name": QUEUE,
            "catalog_concurrency": spec.concurrency,
            "concurrency": sizes.concurrency or spec.concurrency,
            "priority_levels": spec.priority_levels,
        }
        common = CommonSettings(nats_url=server.url)
        nc, js = await connect_and_check(common, name="bench-producer", catalog=catalog)
        client = JobClient(nc, catalog)
        payload = body_of_job_size(client)
        out["payload_bytes"] = len(payload)

        step("processor cost (reference audit-log processor, no NATS)")
        out["processor"] = await processor_cost()

        if not args.skip_raw:
            raw_nc = await nats.connect(server.url, name="bench-raw")
            assert server.proc is not None
            raw_pids = {"nats-server": server.proc.pid, "bench": os.getpid()}
            n, ch = sizes.raw_n, sizes.chunk
            step(f"raw-a: publish_async {n} x {len(payload)} B")
            out["raw_a"] = await measured(
                raw_pids, raw_publish(raw_nc, n, ch, payload, stream="BENCH_RAW", subject="bench.raw")
            )
            step(f"raw-a2: publish_async + Nats-Msg-Id into a work-queue stream, {n}")
            out["raw_a2"] = await measured(
                raw_pids,
                raw_publish(
                    raw_nc, n, ch, payload, stream="BENCH_RAW_WQ", subject="bench.wq", work_queue=True, msg_id=True
                ),
            )
            step(f"raw-b: push consumer + ack, {n}")
            out["raw_b"] = await measured(
                raw_pids, raw_push_consume(raw_nc, n, stream="BENCH_RAW", subject="bench.raw")
            )
            step(f"raw-b2: pull consumer (fetch 100) + ack, {n}")
            out["raw_b2"] = await measured(
                raw_pids, raw_pull_consume(raw_nc, n, stream="BENCH_RAW_WQ", subject="bench.wq")
            )
            step(f"raw-b3: push consumer + ack + one state publish_async per message, {n}")
            st = JobState(
                id="0" * 25,
                queue=QUEUE,
                state=JobStatus.COMPLETED,
                name="bench",
                attempt=1,
                attempts=1,
                progress=100.0,
                result={"audit_id": "audit-1"},
                started_at=1,
                finished_at=2,
                worker="bench-w1",
                enqueued_at=1,
            ).to_bytes()
            out["raw_b3"] = await measured(
                raw_pids,
                raw_push_consume(
                    raw_nc, n, stream="BENCH_RAW", subject="bench.raw", durable="bench-push-state", state=st
                ),
            )
            rjs = raw_nc.jetstream()
            for name in ("BENCH_RAW", "BENCH_RAW_WQ", "BENCH_STATE"):
                await rjs.delete_stream(name)
            await raw_nc.close()

        # events monitor on its own connection
        mon = Monitor()
        mon_nc = await nats.connect(server.url, name="bench-monitor")
        await mon_nc.subscribe(
            names.events_subject(QUEUE), cb=mon.on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        hb_seen: set[str] = set()

        async def on_hb(m: Msg) -> None:
            hb_seen.add(m.subject.rsplit(".", 1)[-1])

        await mon_nc.subscribe(names.heartbeat_subject(QUEUE, "*"), cb=on_hb)
        await mon_nc.subscribe(
            f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.*", cb=mon.on_pull, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        await mon_nc.flush()

        step(f"starting {sizes.workers} worker processes of {QUEUE}")
        cat_path = write_catalog(tmp / "catalog.yaml", catalog)
        workers = Workers(server.url, cat_path, tmp, sizes.workers, sizes.concurrency)
        deadline = time.monotonic() + 60
        while len(hb_seen) < sizes.workers:
            workers.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not send heartbeats within 60 s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # settle: imports done, idle long-polls open
        assert server.proc is not None
        pids = {**workers.pids, "nats-server": server.proc.pid, "bench": os.getpid()}
        out["rss_idle_mb"] = {k: round(rss_mb(p), 1) for k, p in workers.pids.items()}

        step("warm-up: 1000 jobs end to end")
        out["warmup"] = await e2e(client, js, mon, workers, pids, 1000, sizes.chunk, "bench-warmup")

        step(f"(a) enqueue_many {sizes.enqueue_n} into the paused queue, then b-drain")
        out["a"], out["b_drain"] = await drain(client, js, spec, mon, workers, pids, sizes.enqueue_n, sizes.chunk)
        out["rss_after_drain_mb"] = {k: round(rss_mb(p), 1) for k, p in workers.pids.items()}

        step(f"(c) latency at {sizes.latency_rate} jobs/s for {sizes.latency_s} s")
        out["c"] = await latency(client, mon, workers, pids, sizes.latency_rate, sizes.latency_s)

        step(f"(b) end to end {sizes.e2e_small}")
        out["b_small"] = await e2e(client, js, mon, workers, pids, sizes.e2e_small, sizes.chunk, "bench-e2e-small")
        step(f"(b) end to end {sizes.e2e_large}")
        out["b_large"] = await e2e(client, js, mon, workers, pids, sizes.e2e_large, sizes.chunk, "bench-e2e-large")
        await asyncio.sleep(1)
        out["rss_after_mb"] = {k: round(rss_mb(p), 1) for k, p in workers.pids.items()}
        out["worker_log_warnings"] = {
            "state write failed": workers.log_lines("state write failed"),
            "WARNING": workers.log_lines('"WARNING"'),
            "ERROR": workers.log_lines('"ERROR"'),
        }
        await mon_nc.close()
        await nc.close()
    finally:
        if workers is not None:
            workers.stop()
        server.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    out["finished"] = time.strftime("%FT%T%z")
    return out


def ratio(x: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    if not x or not base:
        return ""
    return f"{100 * x['per_s'] / base['per_s']:.0f} %"


def report(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"machine: {m['nproc']} cpu ({m['cpu']}), Python {m['python']}, {m['nats_server']}, nats-py {m['nats_py']}",
        f"queue {r['queue']['name']}: {r['sizes']['workers']} worker processes x concurrency "
        f"{r['queue']['concurrency']}; job body {r['payload_bytes']} B",
        "",
        f"{'figure':<44}{'n':>8}{'seconds':>9}{'per s':>9}{'ratio':>15}{'CPU us/item':>12}  machine busy",
    ]

    def row(label: str, key: str, base: str | None = None, base_label: str = "") -> None:
        x = r.get(key)
        if not x:
            return
        rat = ratio(x, r.get(base)) if base else ""
        mach = x.get("machine")
        busy = f"{mach['busy_pct']:.0f}% ({mach['others_pct']:.0f}% other)" if mach else ""
        lines.append(
            f"{label:<44}{x['n']:>8}{x['seconds']:>9.2f}{x['per_s']:>9}"
            f"{(rat + ' of ' + base_label) if rat else '':>15}"
            f"{x.get('total_cpu_us_per_item', ''):>12}  {busy}"
        )

    row("raw-a  publish_async, plain stream", "raw_a")
    row("raw-a2 publish_async + Msg-Id, work-queue", "raw_a2")
    row("raw-b  push consumer + ack", "raw_b")
    row("raw-b2 pull consumer (fetch 100) + ack", "raw_b2")
    row("raw-b3 push + ack + state publish_async", "raw_b3")
    row("(a)    SDK enqueue_many", "a", "raw_a", "raw-a")
    row("(b)    end to end, small", "b_small", "raw_b", "raw-b")
    row("(b)    end to end, large", "b_large", "raw_b", "raw-b")
    row("b-drain workers drain the (a) backlog", "b_drain", "raw_b", "raw-b")
    c = r["c"]
    lines += [
        "",
        f"(c) enqueue->start at {c['rate']}/s (achieved {c['achieved_rate']}/s), {c['started']} jobs: "
        f"p50 {c['p50_ms']} ms, p90 {c['p90_ms']} ms, p99 {c['p99_ms']} ms, max {c['max_ms']} ms",
        f"    worst latency per second of the run (ms): {c['max_ms_per_second']}",
        f"    machine busy {c['machine']['busy_pct']}% ({c['machine']['others_pct']}% other processes)",
        "",
        f"(d) per job {'':<14}{'worker CPU ms':>14}{'server CPU ms':>14}{'bench CPU ms':>13}"
        f"{'KV writes':>10}{'event msgs':>11}{'pull reqs':>10}{'mean batch':>11}",
    ]
    for key in ("b_small", "b_large", "b_drain", "c"):
        x = r.get(key)
        if x:
            lines.append(
                f"    {key:<20}{x['worker_cpu_ms_per_job']:>14.3f}{x['server_cpu_ms_per_job']:>14.3f}"
                f"{x['bench_cpu_ms_per_job']:>13.3f}"
                f"{x.get('kv_writes_per_job', float('nan')):>10.2f}"
                f"{x.get('event_msgs_per_job', float('nan')):>11.3f}"
                f"{x['pull_requests_per_job']:>10.3f}{x['mean_pull_batch']:>11}"
            )
    p = r["processor"]
    lines += [
        f"    reference audit-log processor alone: {p['cpu_ms_per_job']:.3f} ms CPU/job, "
        f"{p['serial_ms_per_job']:.2f} ms wall/job run one at a time",
        "",
        f"(e) worker RSS MB: idle {r['rss_idle_mb']}, after drain {r['rss_after_drain_mb']}, "
        f"after all runs {r['rss_after_mb']}",
        "",
        "sampled job states: "
        + ", ".join(f"{k} {r[k]['sampled_states']}" for k in ("b_small", "b_large", "b_drain") if k in r),
        f"worker log lines: {r['worker_log_warnings']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    t0 = time.monotonic()
    r = asyncio.run(main_async(sizes, args))
    r["wall_seconds"] = round(time.monotonic() - t0, 1)
    args.output.write_text(json.dumps(r, indent=2) + "\n")
    print()
    print(report(r))
    print(f"\nresults: {args.output} (run took {r['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
