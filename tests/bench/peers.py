"""Peer queues run side by side with jetqueue: pgqueuer (PostgreSQL) and taskiq-nats (JetStream).

Both run the same protocol as jetqueue: a producer process enqueues n no-op jobs in calls of
``chunk`` while their own worker CLIs (``pgqueuer run``, ``taskiq worker``) run them; timed from the
producer's first enqueue to the last job's final state, and verified afterwards.

pgqueuer: a fresh database per run (at ``DATABASE_URL`` or 127.0.0.1:5432), dropped afterwards; the end
is the last ``successful`` row of ``pgqueuer_log`` (the database's clock, same machine). Its CPU is the
backends serving the bench database plus PostgreSQL's checkpointer, background writer and WAL writer.
taskiq-nats: a fresh nats-server; the end is the last task a worker process finished (counted by a
middleware, ``tests/bench/taskiq_app.py``), the ack follows at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.bench import procs
from tests.bench.jq import JOB_DATA
from tests.bench.procs import Child, CpuMeter, Proc, RunCtx

WARMUP = 1000
PG_AUX = ("checkpointer", "background writer", "walwriter")


def pg_dsn(database: str | None = None) -> str:
    """``DATABASE_URL`` (a SQLAlchemy URL is fine) or the local server, pointed at ``database``."""
    url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    return urlunsplit(parts._replace(scheme=scheme, path=f"/{database}" if database else parts.path))


def pg_is_local() -> bool:
    return (urlsplit(pg_dsn()).hostname or "localhost") in ("127.0.0.1", "localhost", "::1")


# ------------------------------------------------------------------ pgqueuer: processes
@contextlib.asynccontextmanager
async def pgq_factory() -> AsyncIterator[Any]:
    """The worker factory (``pgq run tests.bench.peers:pgq_factory``): one no-op entrypoint."""
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.models import Job

    conn = await asyncpg.connect(os.environ["JQBENCH_PG_DSN"])
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    try:
        yield pgq
    finally:
        await conn.close()


class PgqProducer:
    def __init__(self, queries: Any, conn: Any) -> None:
        self.queries, self.conn = queries, conn
        self.info: dict[str, Any] = {}

    async def op_enqueue(self, n: int, chunk: int) -> dict[str, Any]:
        body = json.dumps(JOB_DATA).encode()
        t0, c0 = time.time(), time.perf_counter()
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            await self.queries.enqueue(["noop"] * k, [body] * k, [0] * k)
        return {"t0": t0, "seconds": time.perf_counter() - c0}

    async def close(self) -> None:
        await self.conn.close()


async def pgq_producer(cfg: dict[str, Any]) -> PgqProducer:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(cfg["dsn"])
    return PgqProducer(Queries(AsyncpgDriver(conn)), conn)


# ------------------------------------------------------------------ pgqueuer: the run
class PgDatabase:
    """A fresh database with pgqueuer's schema; the bench's own connection to it checks progress."""

    async def create(self, name: str) -> PgDatabase:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        self.name = name
        admin = await asyncpg.connect(pg_dsn())
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.dsn = pg_dsn(name)
        self.conn = await asyncpg.connect(self.dsn)
        await Queries(AsyncpgDriver(self.conn)).install()
        self.own_pid = await self.conn.fetchval("SELECT pg_backend_pid()")
        return self

    async def pids(self) -> list[int]:
        """Backends of this database, but not the bench's own connection."""
        rows = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> $2", self.name, self.own_pid
        )
        return [r["pid"] for r in rows]

    async def aux_pids(self) -> list[int]:
        """PostgreSQL's checkpointer, background writer and WAL writer (shared with other databases)."""
        rows = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = ANY($1::text[])", list(PG_AUX)
        )
        return [r["pid"] for r in rows]

    async def queued(self) -> int:
        return int(await self.conn.fetchval("SELECT count(*) FROM pgqueuer"))

    async def outcome(self) -> dict[str, Any]:
        rows = await self.conn.fetch(
            "SELECT status::text AS status, count(*) AS n, count(DISTINCT job_id) AS jobs, max(created) AS last "
            "FROM pgqueuer_log GROUP BY status"
        )
        return {r["status"]: {"n": r["n"], "jobs": r["jobs"], "last": r["last"]} for r in rows}

    async def drop(self) -> None:
        import asyncpg

        await self.conn.close()
        admin = await asyncpg.connect(pg_dsn())
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()


async def pgq_wait(
    db: PgDatabase, producer: Child, workers: list[Proc], timeout: float
) -> tuple[dict[str, Any], list[str]]:
    """The producer's answer, once it is done and the queue table is empty (polled every 50 ms)."""
    res = asyncio.create_task(producer.result(timeout))
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    while not (res.done() and await db.queued() == 0):
        dead = [f"{w.name} exited with {w.proc.returncode} (log {w.log})" for w in workers if not w.alive()]
        if dead or time.monotonic() > deadline:
            problems = dead or [f"not done within {timeout:.0f} s ({await db.queued()} jobs queued)"]
            break
        await asyncio.sleep(0.05)
    return (await res if not problems or res.done() else {}), problems


def pgq_check(outcome: dict[str, Any], total: int) -> list[str]:
    ok = outcome.get("successful", {"n": 0, "jobs": 0})
    problems = [] if ok["n"] == ok["jobs"] == total else [f"{ok['n']} successful log rows, expected {total}"]
    bad = {k: v["n"] for k, v in outcome.items() if k not in ("queued", "picked", "successful")}
    return [*problems, *([f"other outcomes: {bad}"] if bad else [])]


async def run_pgqueuer(ctx: RunCtx, n: int, *, workers: int, chunk: int, batch: int) -> dict[str, Any]:
    d = ctx.dir(f"pgqueuer-{n}")
    db = await PgDatabase().create(f"jqbench_pgq_{os.getpid()}_{ctx.runs}")
    procs_: list[Proc] = []
    producer: Child | None = None
    try:
        env = ctx.env({"JQBENCH_PG_DSN": db.dsn})
        argv = procs.exec_argv("tests.bench.pgq_worker", str(batch))
        for i in range(workers):
            procs_.append(await Proc.start(f"worker{i + 1}", argv, d / f"worker{i + 1}.log", env))
        producer = await Child.spawn("producer", "peers:pgq_producer", {"dsn": db.dsn}, d / "producer.log", env)
        warm = min(WARMUP, n)
        await producer.send("enqueue", n=warm, chunk=chunk)
        _res, problems = await pgq_wait(db, producer, procs_, 120)
        if problems:
            return {"system": "pgqueuer", "n": n, "valid": False, "problems": ["warm-up: " + p for p in problems]}
        groups = {"producer": procs.fixed(producer.pid), "postgres": db.pids, "postgres-aux": db.aux_pids}
        meter = await CpuMeter({**groups, **{w.name: procs.trees(w.pid) for w in procs_}}).begin()
        await producer.send("enqueue", n=n, chunk=chunk)
        res, problems = await pgq_wait(db, producer, procs_, max(120, n / 200))
        cpu = await meter.end()
        outcome = await db.outcome()
        problems += pgq_check(outcome, warm + n)
        last = outcome.get("successful", {}).get("last")
        seconds = last.timestamp() - res["t0"] if last and not problems else None
        if not pg_is_local():
            problems.append("PostgreSQL is not on this machine: its CPU is not measured")
        return peer_result("pgqueuer", n, workers, seconds, res, cpu, problems, batch=batch)
    finally:
        if producer is not None:
            await producer.stop()
        await asyncio.gather(*(w.stop() for w in procs_))
        await db.drop()


def peer_result(
    system: str,
    n: int,
    workers: int,
    seconds: float | None,
    res: dict[str, Any],
    cpu: dict[str, Any],
    problems: list[str],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "system": system,
        "n": n,
        "workers": workers,
        **extra,
        "seconds": round(seconds, 3) if seconds else None,
        "per_s": round(n / seconds) if seconds else None,
        "enqueue_seconds": round(res["seconds"], 3) if res else None,
        "cpu": cpu,
        "cpu_us_per_job": procs.per_item_us(cpu, n),
        "valid": not problems,
        "problems": problems,
    }


# ------------------------------------------------------------------ taskiq-nats
class TaskiqProducer:
    def __init__(self, broker: Any, task: Any) -> None:
        self.broker, self.task = broker, task
        self.info: dict[str, Any] = {}

    async def op_enqueue(self, n: int, chunk: int) -> dict[str, Any]:
        """``task.kiq()`` of ``chunk`` jobs at once (taskiq-nats awaits one ``js.publish`` per job)."""
        t0, c0 = time.time(), time.perf_counter()
        for start in range(0, n, chunk):
            await asyncio.gather(*(self.task.kiq(**JOB_DATA) for _ in range(min(chunk, n - start))))
        return {"t0": t0, "seconds": time.perf_counter() - c0}

    async def close(self) -> None:
        await self.broker.shutdown()


async def taskiq_producer(cfg: dict[str, Any]) -> TaskiqProducer:
    from tests.bench import taskiq_app

    await taskiq_app.broker.startup()
    return TaskiqProducer(taskiq_app.broker, taskiq_app.noop)


async def taskiq_drained(js: Any, total: int) -> bool:
    from tests.bench.taskiq_app import DURABLE, STREAM

    try:
        ci = await js.consumer_info(STREAM, DURABLE)
    except Exception:
        return False
    acked = ci.ack_floor.stream_seq if ci.ack_floor else 0
    return acked >= total and not ci.num_ack_pending and not ci.num_pending


async def run_taskiq(ctx: RunCtx, n: int, *, workers: int, chunk: int, batch: int) -> dict[str, Any]:
    import nats

    from tests.bench.taskiq_app import DURABLE, STREAM

    d = ctx.dir(f"taskiq-{n}")
    server = procs.start_nats(d)
    out = d / "stats"
    out.mkdir()
    env = ctx.env({"JQBENCH_NATS_URL": server.url, "JQBENCH_TASKIQ_OUT": str(out), "JQBENCH_TASKIQ_BATCH": str(batch)})
    nc = await nats.connect(server.url, name="bench-check")
    js = nc.jetstream()
    producer: Child | None = None
    cli: Proc | None = None
    try:
        producer = await Child.spawn("producer", "peers:taskiq_producer", {}, d / "producer.log", env)
        argv = procs.exec_argv(
            "taskiq", "worker", "tests.bench.taskiq_app:broker", "--workers", str(workers), "--log-level", "WARNING"
        )
        cli = await Proc.start("taskiq worker", argv, d / "workers.log", env)
        warm = min(WARMUP, n)
        await producer.call("enqueue", n=warm, chunk=chunk)
        await procs.wait_until(lambda: taskiq_drained(js, warm), 120, "taskiq warm-up", every=0.05)
        meter = await CpuMeter(
            {
                "producer": procs.fixed(producer.pid),
                "nats-server": procs.fixed(procs.nats_pid(server)),
                "workers": procs.trees(cli.pid),
            }
        ).begin()
        await producer.send("enqueue", n=n, chunk=chunk)
        problems: list[str] = []
        try:
            await procs.wait_until(
                lambda: taskiq_drained(js, warm + n), max(120, n / 100), "taskiq drained", every=0.02
            )
        except TimeoutError as exc:
            problems.append(str(exc))
        res = await producer.result()
        cpu = await meter.end()
        ci = await js.consumer_info(STREAM, DURABLE)
        if ci.num_redelivered:
            problems.append(f"{ci.num_redelivered} redelivered")
        await cli.stop(30)
        stats = [json.loads(p.read_text()) for p in out.glob("*.json")]
        done = sum(s["done"] for s in stats)
        if len(stats) != workers or done != warm + n or any(s["errors"] for s in stats):
            problems.append(f"worker stats {stats}: expected {workers} processes finishing {warm + n} tasks, no errors")
        seconds = max(s["last"] for s in stats) - res["t0"] if stats and not problems else None
        return peer_result("taskiq-nats", n, workers, seconds, res, cpu, problems, batch=batch)
    finally:
        if producer is not None:
            await producer.stop()
        if cli is not None:
            await cli.stop()
        await nc.close()
        server.stop()
