"""jetqueue benchmarks: ``python -m tests.bench.run`` (``make bench``).

The hot-path goals of the performance issue, each as a ratio against baselines and peer queues
measured in the same run. Every measurement starts fresh processes: a nats-server with its own store
(or a fresh PostgreSQL database), the system's worker processes, and a producer process; the bench
process only starts, times, meters (utime + stime from /proc of every process involved) and checks.

groups (``--only``):
  enqueue  JobClient.enqueue_many vs raw js.publish_async of the same prepared messages (no workers)
  http     the producer's POST /jobs/{q}/bulk and POST /jobs/{q} (uvicorn, admin token) vs a bare
           Litestar endpoint answering 202 under the same uvicorn settings; one load-client process
  e2e      end to end, N no-op jobs: jetqueue (producer process, ``python -m jetqueue_worker`` x W
           with tests/bench/noop.py), raw nats-py push consumer + ack, raw nats-py pull fetch + ack
  peers    the same end to end with pgqueuer (fresh database, W worker processes) and taskiq-nats
           (pull broker, ``taskiq worker --workers W``)
  latency  enqueue->start at a steady rate: jetqueue (started record ts - send time) and raw push
           (send time in the payload - receive time)
  scale    jetqueue cost per job at a small and a large N; worker RSS after the large N against a
           bare nats-py consumer after the same N; jetqueue end to end with 1, 2 and 4 workers

Each system is verified after each run (exact completions, nothing pending or redelivered, every
state stored); a figure with a failed check is printed as INVALID with the reason. Repeats are
interleaved (all systems once, then again), and the table shows medians. Benchmarks are not tests:
pytest's testpaths leave tests/bench out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from jetqueue.embedded import find_binary
from tests.bench import httpbench, jq, peers, rawnats, report
from tests.bench.procs import REPO, RunCtx

RESULTS = Path(__file__).with_name("results.json")
GROUPS = ("enqueue", "http", "e2e", "peers", "latency", "scale")


@dataclass
class Sizes:
    n: int = 100_000  # end to end, side by side (e2e, peers)
    enqueue_n: int = 100_000
    chunk: int = 1000
    workers: int = 2
    concurrency: int = 100
    pull_batch: int = 256
    pgq_batch: int = 100
    taskiq_batch: int = 100
    http_requests: int = 20_000
    http_concurrency: int = 16
    bulk_n: int = 100_000
    bulk_size: int = 1000
    bulk_concurrency: int = 2
    latency_rate: int = 1000
    latency_s: float = 10.0
    scale_small: int = 10_000
    scale_large: int = 1_000_000
    scan_n: int = 50_000
    scan_workers: str = "1,2,4"


QUICK = Sizes(
    n=2000,
    enqueue_n=5000,
    http_requests=2000,
    bulk_n=10_000,
    latency_s=3.0,
    scale_small=2000,
    scale_large=10_000,
    scan_n=2000,
)


def parse_args(argv: list[str] | None) -> tuple[Sizes, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke-run sizes (a few thousand jobs)")
    p.add_argument("--only", default=",".join(GROUPS), help=f"groups to run, comma separated ({', '.join(GROUPS)})")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each figure (medians are reported)")
    p.add_argument(
        "--loop",
        choices=("asyncio", "native"),
        default="asyncio",
        help="asyncio: every process runs the stdlib loop (uvloop kept out of the peers' CLIs and uvicorn); "
        "native: each program picks its own (pgqueuer, taskiq and uvicorn take uvloop when installed)",
    )
    for f in Sizes.__dataclass_fields__.values():
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(getattr(Sizes(), f.name)),
            help=f"(default {getattr(Sizes(), f.name)})",
        )
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (stores, logs)")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    for name in Sizes.__dataclass_fields__:
        if (x := getattr(args, name)) is not None:
            setattr(sizes, name, x)
    args.groups = [g.strip() for g in args.only.split(",") if g.strip()]
    if unknown := set(args.groups) - set(GROUPS):
        p.error(f"unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    return sizes, args


Measure = Callable[[], Awaitable[dict[str, Any]]]


def plan(ctx: RunCtx, s: Sizes, groups: list[str]) -> list[tuple[str, Measure]]:
    """What one repeat measures, in order: key and measurement."""
    w, c, ch = s.workers, s.concurrency, s.chunk
    size = jq.job_bytes()  # the raw baselines' messages are as large as a job
    out: list[tuple[str, Measure]] = []
    if "enqueue" in groups:
        out += [
            ("enqueue.sdk", lambda: jq.run_enqueue(ctx, s.enqueue_n, ch, "sdk")),
            ("enqueue.raw", lambda: jq.run_enqueue(ctx, s.enqueue_n, ch, "raw")),
        ]
    if "http" in groups:
        out += [
            ("http.bulk", lambda: httpbench.run_bulk(ctx, s.bulk_n, s.bulk_size, s.bulk_concurrency)),
            (
                "http.single.producer",
                lambda: httpbench.run_single(ctx, "producer", s.http_requests, s.http_concurrency),
            ),
            ("http.single.bare", lambda: httpbench.run_single(ctx, "bare", s.http_requests, s.http_concurrency)),
        ]
    if "e2e" in groups:
        out += [
            ("e2e.jetqueue", lambda: jq.run_e2e(ctx, s.n, workers=w, concurrency=c, chunk=ch)),
            ("e2e.raw_push", lambda: rawnats.run_e2e(ctx, s.n, "push", consumers=w, size=size, chunk=ch)),
            (
                "e2e.raw_pull",
                lambda: rawnats.run_e2e(ctx, s.n, "pull", consumers=w, size=size, chunk=ch, batch=s.pull_batch),
            ),
        ]
    if "peers" in groups:
        out += [
            ("peers.pgqueuer", lambda: peers.run_pgqueuer(ctx, s.n, workers=w, chunk=ch, batch=s.pgq_batch)),
            ("peers.taskiq", lambda: peers.run_taskiq(ctx, s.n, workers=w, chunk=ch, batch=s.taskiq_batch)),
        ]
    if "latency" in groups:
        out += [
            ("latency.jetqueue", lambda: jq.run_latency(ctx, s.latency_rate, s.latency_s, workers=w, concurrency=c)),
            ("latency.raw_push", lambda: rawnats.run_latency(ctx, s.latency_rate, s.latency_s, consumers=w, size=size)),
        ]
    if "scale" in groups:
        out.append(("scale.jetqueue_small", lambda: jq.run_e2e(ctx, s.scale_small, workers=w, concurrency=c, chunk=ch)))
        for k in (int(x) for x in s.scan_workers.split(",")):
            out.append(
                (f"scale.workers_{k}", lambda k=k: jq.run_e2e(ctx, s.scan_n, workers=k, concurrency=c, chunk=ch))
            )
    return out


def plan_once(ctx: RunCtx, s: Sizes, groups: list[str]) -> list[tuple[str, Measure]]:
    """The large-N runs: once, not repeated (they take minutes each)."""
    if "scale" not in groups:
        return []
    w, c, ch = s.workers, s.concurrency, s.chunk
    return [
        ("scale.jetqueue_large", lambda: jq.run_e2e(ctx, s.scale_large, workers=w, concurrency=c, chunk=ch)),
        (
            "scale.raw_push_large",
            lambda: rawnats.run_e2e(ctx, s.scale_large, "push", consumers=w, size=jq.job_bytes(), chunk=ch),
        ),
    ]


async def measure(key: str, fn: Measure) -> dict[str, Any]:
    """One measurement; a crash becomes an invalid run with its traceback, and the bench goes on."""
    step(f"{key} ...")
    t0 = time.monotonic()
    try:
        r = await fn()
    except Exception as exc:
        r = {"valid": False, "problems": [f"crashed: {exc!r}"], "traceback": traceback.format_exc()}
    extra = r.get("per_s") or r.get("p50_ms")
    step(
        f"{key}: {'ok' if r.get('valid') else 'INVALID ' + str(r.get('problems'))} {extra or ''} "
        f"({time.monotonic() - t0:.0f} s)"
    )
    return r


def step(text: str) -> None:
    print(f"[{time.strftime('%T')}] {text}", flush=True)


# ------------------------------------------------------------------ machine and versions
def machine() -> dict[str, Any]:
    cpu_model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "",
    )

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_modified_files": len(git("status", "--short", "--", "libs", "services").splitlines()),
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    version = subprocess.run([find_binary(), "--version"], capture_output=True, text=True).stdout.strip()
    out = {"nats-server": version.removeprefix("nats-server:").strip()}
    for pkg in ("nats-py", "pgqueuer", "taskiq", "taskiq-nats", "litestar", "uvicorn", "asyncpg", "uvloop"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        pg = subprocess.run(
            ["psql", peers.pg_dsn(), "-Atc", "SHOW server_version"], capture_output=True, text=True, timeout=10
        )
        out["postgresql"] = pg.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        out["postgresql"] = "unknown"
    out["python"] = platform.python_version()
    return out


# ------------------------------------------------------------------ main
async def main_async(sizes: Sizes, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="jetqueue-bench-"))
    ctx = RunCtx(tmp, no_uvloop=args.loop == "asyncio")
    out: dict[str, Any] = {
        "command": "python -m tests.bench.run " + shlex.join(sys.argv[1:]),
        "started": time.strftime("%FT%T%z"),
        "machine": machine(),
        "versions": versions(),
        "event_loop": "stdlib asyncio in every process" if ctx.no_uvloop else "each program's own choice",
        "sizes": asdict(sizes),
        "groups": args.groups,
        "repeats": args.repeats,
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        for rep in range(args.repeats):
            step(f"repeat {rep + 1} of {args.repeats}")
            for key, fn in plan(ctx, sizes, args.groups):
                runs.setdefault(key, []).append(await measure(key, fn))
        for key, fn in plan_once(ctx, sizes, args.groups):
            runs.setdefault(key, []).append(await measure(key, fn))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    out["runs"] = runs
    out["figures"] = {k: report.summarize(v) for k, v in runs.items()}
    out["goals"] = report.goals(out["figures"])
    out["finished"] = time.strftime("%FT%T%z")
    return out


def main(argv: list[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    t0 = time.monotonic()
    r = asyncio.run(main_async(sizes, args))
    r["wall_seconds"] = round(time.monotonic() - t0, 1)
    args.output.write_text(json.dumps(r, indent=2, default=str) + "\n")
    print()
    print(report.table(r))
    print(f"\nresults: {args.output} (the run took {r['wall_seconds']} s)")
    return 0 if all(f["valid"] for f in r["figures"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
