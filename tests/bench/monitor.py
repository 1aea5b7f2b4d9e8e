"""Monitor read-path benchmark: ``python -m tests.bench.monitor [--rows N] [--quick] [--keep]``.

What it does, in order:

1. creates a fresh PostgreSQL database ``jq_bench_<random>`` and runs the monitor's own
   migrations (``jetqueue_monitor.db.engine.make_engine`` + ``migrate``);
2. loads N job records (default 1,000,000) spread over the seed catalog's queues and the
   last 7 days, in time order (as ingest writes them) — about 1.5 % waiting (a backlog of the
   last 6 hours, on three priority levels) and 2 % delayed (due within the coming week) —,
   their job_attempts, job_stats minute and job_stats_hourly rollups computed from those
   attempts the way ingest would, 7 days of queue_samples (one row per queue every 5 s: what
   the sampler writes and ``Store.expire`` keeps) and 30 worker heartbeats, with asyncpg COPY;
   then VACUUM ANALYZE;
3. ``direct``: times the real read paths (``jetqueue_monitor.queries`` on a ``Store`` over the
   bench database, a ``Snapshot`` built from ``QueueInfo`` objects, no NATS): overview, queues,
   queue_detail, list_jobs with a set of filters, job_detail; and the housekeeping passes
   (``Store.refresh_worker_statuses``, ``Store.expire``) that share the database with the API;
4. ``explain``: EXPLAIN (ANALYZE, BUFFERS) of the SQL behind each case, for list_jobs without
   a search text also the generic plan (the one PostgreSQL may switch a prepared statement to
   after 5 runs; searches are planned for their text);
5. ``http``: end to end, the real monitor (``python -m jetqueue_monitor``: ``create_app`` with
   its lifespan, ingest, sampler and housekeeping) against an embedded nats-server and the
   bench database, timed with httpx, while 27 live workers heartbeat (its job tracker off: the
   loaded waiting jobs are in no stream there);
5b. ``enqueue``: the job tracker on its own fresh database: the producer's bulk enqueue rate
   without and with the monitor following, the reconcile at start, the monitor's ingest rate
   and CPU (``--enqueue-jobs``, 20,000 twice);
6. prints a table, writes ``tests/bench/monitor-results.json`` and drops the database
   (``--keep`` keeps it; ``--db NAME --phases direct`` measures a kept one again, after
   running the newest migrations on it: the way to compare two versions of the code on
   the same data in one session).

Benchmarks are not tests: pytest's testpaths do not include tests/bench.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, select, text

from jetqueue.catalog import Catalog, QueueSpec, load_catalog
from jetqueue.control import QueueInfo
from jetqueue_monitor import incidents, queries
from jetqueue_monitor.db.engine import make_engine, migrate
from jetqueue_monitor.db.models import DURATION_BUCKETS_MS, Job, JobAttempt
from jetqueue_monitor.queries import JobFilter, job_query
from jetqueue_monitor.sampler import QueueLive, Snapshot
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_monitor.store import Store

RESULTS = Path(__file__).with_name("monitor-results.json")
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGETS_MS = {"overview": 50.0, "search": 100.0}

# ------------------------------------------------------------------ data model of the load
# share of all jobs, job names, median duration (ms), dead-letter rate, has a user id
QUEUE_MIX: dict[str, tuple[float, tuple[str, ...], float, float, bool]] = {
    "audit-log": (0.25, ("audit.api-call", "audit.login", "audit.admin-action"), 15, 0.002, True),
    "notification-send": (0.18, ("notify.push", "notify.sms", "notify.kakao"), 120, 0.02, True),
    "email-send": (0.14, ("email.transactional", "email.digest", "email.marketing"), 400, 0.03, True),
    "order-status-update": (0.12, ("order.status", "order.delivered"), 60, 0.01, True),
    "ei-update": (0.08, ("ei.refresh", "ei.bulk-import"), 800, 0.04, True),
    "analytics-aggregate": (0.06, ("analytics.hourly", "analytics.daily-rollup"), 20_000, 0.01, False),
    "data-dtg-sync": (0.06, ("dtg.sync-vehicle", "dtg.sync-trips"), 3_000, 0.05, False),
    "proposal-ranking": (0.05, ("proposal.rerank", "proposal.rerank-all"), 1_500, 0.02, True),
    "dispatch-optimize": (0.03, ("dispatch.optimize", "dispatch.reoptimize"), 45_000, 0.06, False),
    "report-generate": (0.025, ("report.monthly", "report.custom", "report.invoice"), 30_000, 0.03, True),
    "cleanup-old-data": (
        0.005,
        ("cleanup.api-logs", "cleanup.notifications", "cleanup.completed-jobs"),
        120_000,
        0.02,
        False,
    ),
}

# (weight, error_type, message template; {n} gets a number, {h} a short hex)
ERRORS: dict[str, list[tuple[float, str, str]]] = {
    "*": [
        (3, "TimeoutError", "read timeout after 30s calling {svc}"),
        (2, "ConnectionResetError", "[Errno 104] Connection reset by peer"),
        (1, "OperationalError", "(psycopg.OperationalError) server closed the connection unexpectedly"),
        (1, "HTTPStatusError", "Server error '503 Service Unavailable' for url 'https://{svc}/v1/items/{n}'"),
    ],
    "audit-log": [(2, "ValidationError", "1 validation error for AuditEvent actor_id field required")],
    "notification-send": [
        (3, "FCMError", "Requested entity was not found (device d-{h})"),
        (1, "FCMError", "registration token revoked for device d-{h}"),
        (2, "SMSGatewayError", "rate limited by gateway, retry after 60s"),
    ],
    "email-send": [
        (4, "SMTPRecipientsRefused", "550 5.1.1 <user{n}@example.com>: mailbox unavailable"),
        (3, "SMTPServerDisconnected", "Connection unexpectedly closed by smtp.relay.example:587"),
    ],
    "order-status-update": [(3, "ConflictError", "invalid transition SHIPPED -> CREATED for order {n}")],
    "ei-update": [(3, "KeyError", "'ei_score' missing in upstream payload for site {n}")],
    "analytics-aggregate": [(2, "MemoryError", "worker RSS limit exceeded while aggregating partition {n}")],
    "data-dtg-sync": [(4, "DTGProtocolError", "checksum mismatch in DTG frame {n} from vehicle V{h}")],
    "proposal-ranking": [(2, "ValueError", "no candidate carriers for proposal {n}")],
    "dispatch-optimize": [(3, "SolverTimeout", "OR-tools solver timeout after 60s (120 stops, 14 vehicles)")],
    "report-generate": [(2, "RenderError", "template report/monthly.html: undefined variable 'totals'")],
    "cleanup-old-data": [(1, "LockNotAvailable", "canceling statement due to lock timeout on table api_logs")],
}
SERVICES = ("ei-api.internal", "order-service.internal", "dtg-gw.internal", "push.googleapis.com", "smtp.relay.example")
USERS = 3000
DAYS = 7
WAITING_SHARE = 0.4  # of the last 6 hours' jobs: a backlog no worker took yet (about 1.5 % of all)
DELAYED_SHARE = 0.02  # of all jobs: delayed, due within the coming week
WORKERS_PER_QUEUE = {
    "audit-log": 4,
    "notification-send": 4,
    "email-send": 4,
    "order-status-update": 3,
    "ei-update": 3,
    "analytics-aggregate": 2,
    "data-dtg-sync": 2,
    "proposal-ranking": 2,
    "dispatch-optimize": 2,
    "report-generate": 2,
    "cleanup-old-data": 2,
}
OFFLINE_WORKERS = {"cleanup-old-data"}  # its workers are down: a no_worker incident

JOB_COLS = (
    "job_id", "queue", "name", "status", "user_id", "data", "result", "error", "error_type", "attempts_made",
    "max_attempts", "progress", "worker_id", "duration_ms", "stalls", "enqueued_at", "created_at", "started_at",
    "finished_at", "last_event_ms", "expires_at", "run_at", "level",
)  # fmt: skip
ATTEMPT_COLS = (
    "job_id", "attempt", "queue", "status", "worker_id", "started_at", "finished_at", "duration_ms", "error",
    "error_type",
)  # fmt: skip
SAMPLE_COLS = (
    "queue", "ts", "waiting", "active", "delayed", "dlq", "paused", "redelivered", "completed_total", "failed_total",
    "oldest_waiting_s",
)  # fmt: skip
HB_COLS = (
    "worker_id", "queue_name", "status", "reported_status", "hostname", "version", "pid", "concurrency",
    "active_jobs", "processed_jobs", "failed_jobs", "last_heartbeat", "started_at", "created_at", "updated_at",
)  # fmt: skip


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sa_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


def db_dsn(admin_dsn: str, db: str) -> str:
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{db}"


def worker_ids(queue: str) -> list[str]:
    n = WORKERS_PER_QUEUE.get(queue, 2)
    return [f"jetqueue-worker-{queue}-7d9f8c{i:x}b5-x{i}k4q-{1000 + i}-{queue}" for i in range(n)]


def old_worker_ids(queue: str) -> list[str]:
    """Workers of earlier deployments: they ran most of the week's jobs and are gone now."""
    return [f"jetqueue-worker-{queue}-5c{g}a1{i:x}e-old{g}{i}-{900 + i}-{queue}" for g in range(3) for i in range(2)]


class Generator:
    """Synthetic but lifecycle-consistent jobs and attempts (what ingest would have folded)."""

    def __init__(self, catalog: Catalog, now: float, seed: int = 42) -> None:
        self.rnd = random.Random(seed)
        self.now = now
        self.specs = {q.name: q for q in catalog.queues}
        names = [q for q in QUEUE_MIX if q in self.specs] + [q for q in self.specs if q not in QUEUE_MIX]
        self.queues = names
        weights = [QUEUE_MIX.get(q, (0.01,))[0] for q in names]
        self.q_cum = list(_cumsum(weights))
        # minute-of-the-week weights: a KST working-day curve, quieter nights and weekend
        self.minutes = DAYS * 1440
        w = []
        for m in range(self.minutes):
            t = datetime.fromtimestamp(now - m * 60, UTC) + timedelta(hours=9)
            h = t.hour + t.minute / 60
            day = max(0.0, math.sin(math.pi * (h - 7) / 16)) if 7 <= h <= 23 else 0.0
            w.append((0.2 + 0.8 * day) * (0.6 if t.weekday() >= 5 else 1.0))
        self.m_cum = list(_cumsum(w))
        self.errors = {q: [(wt, et, msg) for wt, et, msg in ERRORS["*"] + ERRORS.get(q, [])] for q in self.queues}
        self.err_cum = {q: list(_cumsum([e[0] for e in v])) for q, v in self.errors.items()}
        self.workers = {q: worker_ids(q) for q in self.queues}
        self.old_workers = {q: old_worker_ids(q) for q in self.queues}

    def error(self, queue: str) -> tuple[str, str]:
        r = self.rnd
        _, et, msg = r.choices(self.errors[queue], cum_weights=self.err_cum[queue])[0]
        if "{" in msg:
            msg = msg.format(n=r.randint(1000, 999_999), h=f"{r.getrandbits(24):06x}", svc=r.choice(SERVICES))
        return et, f"{et}: {msg}"

    def chunk(self, k: int, part: int, parts: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Jobs of the ``part``-th of ``parts`` consecutive stretches of the week (oldest first), each
        holding the same share of the week's traffic, in time order: the rows land in the heap in
        about the order ingest writes them (a job row at its first record)."""
        r = self.rnd
        rand = r.random
        now = self.now
        qs = r.choices(self.queues, cum_weights=self.q_cum, k=k)
        total = self.m_cum[-1]
        hi = total * (1 - part / parts)
        lo = total * (1 - (part + 1) / parts)
        top = self.minutes - 1
        ms = [min(bisect.bisect_left(self.m_cum, lo + rand() * (hi - lo)), top) for _ in range(k)]
        jobs: list[tuple[Any, ...]] = []
        attempts: list[tuple[Any, ...]] = []
        dt = _dt
        for queue, minute in zip(qs, ms, strict=True):
            spec: QueueSpec = self.specs[queue]
            _, names, median, dlq_rate, has_user = QUEUE_MIX.get(queue, (0, ("job",), 100.0, 0.02, False))
            age = minute * 60 + rand() * 60
            created = now - age
            job_id = f"{int(created * 1000):013x}{r.getrandbits(48):012x}"
            # status: a backlog waits (the last 6 h), some jobs are delayed (any age, due within a week),
            # non-terminal ones are recent, failures spike on email-send in the last 30 min
            x0 = rand()
            if age < 6 * 3600 and x0 < WAITING_SHARE:
                status = "waiting"
            elif x0 > 1 - DELAYED_SHARE:
                status = "delayed"
            elif age < 120 and rand() < 0.6:
                status = "active"
            elif age < 3600 and rand() < 0.03 and spec.attempts > 1:
                status = "scheduled"
            else:
                x = rand()
                rate = 0.35 if (queue == "email-send" and age < 1800) else dlq_rate
                status = "failed" if x < rate else ("cancelled" if x < rate + 0.003 else "completed")
            if status in ("waiting", "delayed"):
                n_att = 0  # no worker took it yet
            elif status == "failed":
                n_att = spec.attempts
            elif status == "scheduled":
                n_att = min(spec.attempts - 1, 1 + (rand() < 0.3))
            else:
                x = rand()
                n_att = min(spec.attempts, 1 if x < 0.9 else (2 if x < 0.98 else 3))
            recent_worker = age < 86400 or rand() < 0.15
            pool = self.workers[queue] if recent_worker else self.old_workers[queue]
            t = created + r.lognormvariate(math.log(0.08), 1.2)  # wait before the first start
            err = et = None
            dur = 0
            worker = None
            started = finished = None
            for a in range(1, n_att + 1):
                worker = r.choice(pool)
                started = t
                last = a == n_att
                dur = max(1, int(r.lognormvariate(math.log(median), 0.9)))
                if last and status == "active":
                    attempts.append((job_id, a, queue, "active", worker, dt(started), None, None, None, None))
                    break
                fin = min(started + dur / 1000, now - 0.001)
                if last and status == "completed":
                    attempts.append((job_id, a, queue, "completed", worker, dt(started), dt(fin), dur, None, None))
                elif last and status == "cancelled":
                    err, et = "cancelled by operator", None
                    attempts.append((job_id, a, queue, "cancelled", worker, dt(started), dt(fin), dur, err, None))
                else:
                    et, err = self.error(queue)
                    final = last and status == "failed"
                    attempts.append(
                        (job_id, a, queue, "failed", worker, dt(started), dt(fin), dur, err, et if final else None)
                    )
                    if not final:
                        et = None  # a retrying record carries no error_type
                finished = fin
                t = fin + spec.backoff.delay_for(a) * (1 + rand())
            terminal = status in ("completed", "failed", "cancelled")
            run_at = None
            if status == "delayed":
                status, run_at = "scheduled", now + rand() * DAYS * 86400
            elif status == "scheduled" and finished is not None:
                run_at = finished + spec.backoff.delay_for(n_att)
            level = r.choices((0, 1, 2), weights=(1, 8, 1))[0]
            user = f"u{int(USERS * rand() ** 2) + 1:05d}" if has_user else None
            name = names[int(rand() * len(names))]
            data = f'{{"ref": {r.randint(1, 10**7)}, "user": "{user}", "locale": "ko-KR"}}'
            result = f'{{"ok": true, "items": {int(rand() * 100)}}}' if status == "completed" else None
            keep = 8 * 86400  # a store that keeps the week (the seed catalog's retention_s is shorter)
            last_ms = int((finished if terminal else started or created) * 1000)
            jobs.append(
                (
                    job_id,
                    queue,
                    name,
                    status,
                    user,
                    data,
                    result,
                    err if status != "completed" else None,
                    et if status == "failed" else None,
                    n_att,
                    spec.attempts,
                    100.0 if status == "completed" else (round(rand() * 90, 1) if status == "active" else None),
                    worker,
                    dur if status != "active" else None,
                    1 if rand() < 0.002 else 0,
                    dt(created),
                    dt(created),
                    dt(started) if started is not None else None,
                    dt(finished) if terminal and finished is not None else None,
                    last_ms,
                    dt(finished + keep) if terminal and finished is not None else None,
                    dt(run_at) if run_at is not None else None,
                    level,
                )
            )
        jobs.sort(key=lambda j: j[16])  # created_at
        attempts.sort(key=lambda a: a[5])  # started_at
        return jobs, attempts


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _cumsum(xs: list[float]) -> Any:
    s = 0.0
    for x in xs:
        s += x
        yield s


# ------------------------------------------------------------------ load
STATS_SQL = """
INSERT INTO job_stats (queue, minute, completed, failed, retried, duration_sum_ms, duration_count, hist,
                       last_finished_at)
WITH a AS (
    SELECT a.queue,
           date_trunc('minute', a.finished_at) AS minute,
           a.finished_at,
           a.duration_ms,
           CASE WHEN a.status = 'completed' THEN 'completed'
                WHEN a.status = 'failed' AND j.status = 'failed' AND a.attempt = j.attempts_made THEN 'failed'
                WHEN a.status = 'failed' THEN 'retried'
           END AS kind
    FROM job_attempts a JOIN jobs j USING (job_id)
    WHERE a.finished_at IS NOT NULL AND a.status IN ('completed', 'failed')
),
buckets AS (   -- bucket i = first i with duration <= DURATION_BUCKETS_MS[i] (integers: width_bucket of d - 1)
    SELECT queue, minute, width_bucket(duration_ms - 1, $1::bigint[]) AS b, count(*) AS n
    FROM a WHERE kind = 'completed' AND duration_ms IS NOT NULL
    GROUP BY 1, 2, 3
),
hist AS (
    SELECT queue, minute, jsonb_object_agg(b::text, n) AS hist FROM buckets GROUP BY 1, 2
)
SELECT a.queue, a.minute,
       count(*) FILTER (WHERE kind = 'completed'),
       count(*) FILTER (WHERE kind = 'failed'),
       count(*) FILTER (WHERE kind = 'retried'),
       coalesce(sum(duration_ms) FILTER (WHERE kind = 'completed' AND duration_ms IS NOT NULL), 0),
       count(duration_ms) FILTER (WHERE kind = 'completed'),
       coalesce(h.hist, '{}'::jsonb),
       max(finished_at) FILTER (WHERE kind IN ('completed', 'failed'))
FROM a LEFT JOIN hist h USING (queue, minute)
GROUP BY a.queue, a.minute, h.hist
ORDER BY a.minute, a.queue   -- heap in time order, as ingest writes the rollups
"""


# the minute rollups summed per hour, as ingest keeps job_stats_hourly (migration 0004)
HOURLY_SQL = """
INSERT INTO job_stats_hourly (queue, hour, completed, failed, retried, duration_sum_ms, duration_count, hist,
                              last_finished_at)
WITH b AS (
    SELECT queue, date_trunc('hour', minute, 'UTC') AS hour, h.key AS k, sum(h.value::bigint) AS v
    FROM job_stats, jsonb_each_text(hist) h GROUP BY 1, 2, 3
), hj AS (SELECT queue, hour, jsonb_object_agg(k, v) AS hist FROM b GROUP BY 1, 2)
SELECT s.queue, date_trunc('hour', s.minute, 'UTC') AS hour, sum(completed), sum(failed), sum(retried),
       sum(duration_sum_ms), sum(duration_count), coalesce(hj.hist, '{}'::jsonb), max(last_finished_at)
FROM job_stats s LEFT JOIN hj ON hj.queue = s.queue AND hj.hour = date_trunc('hour', s.minute, 'UTC')
GROUP BY 1, 2, hj.hist
ORDER BY 2, 1
"""


async def load(
    dsn: str, catalog: Catalog, rows: int, now: float, *, sample_hours: float, chunk: int = 50_000
) -> dict[str, Any]:
    info: dict[str, Any] = {}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET synchronous_commit = off")
        # Secondary (non-constraint) indexes are dropped for the COPY and rebuilt from their exact definitions.
        idx = await conn.fetch(
            """SELECT i.indexname, i.indexdef FROM pg_indexes i
               WHERE i.schemaname = 'public' AND i.tablename IN ('jobs', 'job_attempts')
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"""
        )
        for r in idx:
            await conn.execute(f'DROP INDEX "{r["indexname"]}"')
        gen = Generator(catalog, now)
        t0 = time.perf_counter()
        done = n_att = 0
        t_gen = t_copy = 0.0
        parts = math.ceil(rows / chunk)
        for part in range(parts):
            k = min(chunk, rows - done)
            a = time.perf_counter()
            jobs, attempts = gen.chunk(k, part, parts)
            b = time.perf_counter()
            await conn.copy_records_to_table("jobs", records=jobs, columns=JOB_COLS)
            await conn.copy_records_to_table("job_attempts", records=attempts, columns=ATTEMPT_COLS)
            c = time.perf_counter()
            t_gen += b - a
            t_copy += c - b
            done += k
            n_att += len(attempts)
            if done % 200_000 == 0 or part == parts - 1:
                log(f"  {done:,} jobs, {n_att:,} attempts ({time.perf_counter() - t0:.0f} s)")
        info["jobs"] = done
        info["attempts"] = n_att
        info["generate_s"] = round(t_gen, 1)
        info["copy_s"] = round(t_copy, 1)
        a = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for r in idx:
            await conn.execute(r["indexdef"])
        info["index_s"] = round(time.perf_counter() - a, 1)
        a = time.perf_counter()
        await conn.execute(STATS_SQL, list(DURATION_BUCKETS_MS[:-1]))
        info["job_stats_rows"] = await conn.fetchval("SELECT count(*) FROM job_stats")
        await conn.execute(HOURLY_SQL)
        info["job_stats_hourly_rows"] = await conn.fetchval("SELECT count(*) FROM job_stats_hourly")
        info["job_stats_s"] = round(time.perf_counter() - a, 1)
        a = time.perf_counter()
        info["queue_samples_rows"] = await load_samples(conn, catalog, now, sample_hours)
        info["worker_heartbeats_rows"] = await load_heartbeats(conn, catalog, now)
        info["samples_s"] = round(time.perf_counter() - a, 1)
        a = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        info["vacuum_analyze_s"] = round(time.perf_counter() - a, 1)
        info["total_s"] = round(time.perf_counter() - t0, 1)
        info["sizes"] = {
            r["t"]: r["size"]
            for r in await conn.fetch(
                """SELECT c.relname AS t, pg_size_pretty(pg_total_relation_size(c.oid)) AS size
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY pg_total_relation_size(c.oid) DESC"""
            )
        }
        info["status_counts"] = {
            r["status"]: r["n"]
            for r in await conn.fetch("SELECT status, count(*) n FROM jobs GROUP BY 1 ORDER BY 2 DESC")
        }
        info["database_size"] = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
    finally:
        await conn.close()
    return info


async def load_samples(conn: asyncpg.Connection, catalog: Catalog, now: float, hours: float = DAYS * 24) -> int:
    """What the sampler writes: one row per queue every 5 s, kept 7 days by Store.expire."""
    rnd = random.Random(7)
    rows = []
    step = 5
    n = int(hours * 3600 / step)
    state = {spec.name: [0.0, rnd.randint(20, 400), 0, 0] for spec in catalog.queues}  # waiting, dlq, done, failed
    for i in range(n, -1, -1):  # time-major, as the sampler writes them
        ts = _dt(now - i * step)
        for spec in catalog.queues:
            st = state[spec.name]
            st[0] = max(0.0, st[0] + rnd.gauss(0, 3) - st[0] * 0.05)
            if spec.name == "dispatch-optimize" and i < 8 * 60 // step:
                st[0] += 4  # a backlog building in the last 8 minutes
            st[2] += rnd.randint(0, 6)
            if rnd.random() < 0.01:
                st[3] += 1
                st[1] += 1
            waiting = st[0]
            rows.append(
                (spec.name, ts, int(waiting), rnd.randint(0, spec.concurrency), rnd.randint(0, 5), st[1], False,
                 0, st[2], st[3], round(waiting * 0.4, 1) if waiting >= 1 else None)
            )  # fmt: skip
    await conn.copy_records_to_table("queue_samples", records=rows, columns=SAMPLE_COLS)
    return len(rows)


async def load_heartbeats(conn: asyncpg.Connection, catalog: Catalog, now: float) -> int:
    rows = []
    for spec in catalog.queues:
        for i, wid in enumerate(worker_ids(spec.name)):
            offline = spec.name in OFFLINE_WORKERS
            last = now - (600 if offline else 2)
            rows.append(
                (wid, spec.name, "OFFLINE" if offline else "ONLINE", "ONLINE", wid.rsplit("-", 2)[0], "0.4.0",
                 1000 + i, spec.concurrency, 0 if offline else i % 3, 10_000 + i, 30 + i, _dt(last),
                 _dt(now - 2 * 86400), _dt(now - 2 * 86400), _dt(last))
            )  # fmt: skip
    await conn.copy_records_to_table("worker_heartbeats", records=rows, columns=HB_COLS)
    return len(rows)


# ------------------------------------------------------------------ the snapshot (what the sampler would hold)
def make_snapshot(catalog: Catalog) -> Snapshot:
    snap = Snapshot(at=time.time())
    for i, spec in enumerate(catalog.queues):
        waiting = {"dispatch-optimize": 480, "cleanup-old-data": 3, "email-send": 35}.get(spec.name, i * 2)
        info = QueueInfo(
            queue=spec.name,
            waiting=waiting,
            waiting_by_level=[waiting, 0, 0][: spec.priority_levels] + [0] * max(0, spec.priority_levels - 3),
            active=min(spec.concurrency, 3 + i),
            scheduled=i,
            recurring=0,
            dead_lettered=200 + 10 * i,
            redelivered=2 if spec.name == "data-dtg-sync" else 0,
            paused=spec.name == "report-generate",
            pause_until=None,
            idle_pullers=1,
        )
        snap.queues[spec.name] = QueueLive(info=info, oldest_waiting_s=waiting * 0.4 or None, sampled_at=snap.at)
    return snap


# ------------------------------------------------------------------ timing
def pct(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    if len(s) == 1:
        s = s * 2
    q = statistics.quantiles(s, n=100, method="inclusive")
    return {
        "n": len(xs),
        "p50": round(q[49], 2),
        "p95": round(q[94], 2),
        "p99": round(q[98], 2),
        "max": round(s[-1], 2),
        "mean": round(statistics.fmean(s), 2),
    }


async def measure(
    fn: Callable[[int], Awaitable[Any]], iterations: int, warmup: int = 10, budget_s: float = 60.0, min_n: int = 20
) -> dict[str, Any]:
    """Warm up, then time ``iterations`` sequential calls (fewer when one call is slow: ~budget_s per case)."""
    t = time.perf_counter()
    await fn(0)
    first = time.perf_counter() - t
    for i in range(max(0, min(warmup, int(budget_s / 6 / max(first, 1e-6))) - 1)):
        await fn(i + 1)
    n = max(min_n, min(iterations, int(budget_s / max(first, 1e-6))))
    xs: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await fn(i)
        xs.append((time.perf_counter() - t) * 1000)
        if len(xs) >= min_n and time.perf_counter() - start > 2 * budget_s:
            break  # the plan got slower after the first call (a generic plan): keep the run bounded
    return {**pct(xs), "loadavg_1m": round(os.getloadavg()[0], 2)}


# ------------------------------------------------------------------ cases
class Bench:
    def __init__(self, store: Store, catalog: Catalog, settings: MonitorSettings, snap: Snapshot) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.snap = snap
        self.params: dict[str, Any] = {}

    async def prepare(self) -> None:
        """Pick realistic filter values from the loaded data."""
        async with self.store.engine.connect() as c:
            p = self.params
            p["busy_queue"] = (
                await c.exec_driver_sql("SELECT queue FROM jobs GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
            ).scalar_one()
            p["failing_queue"] = "email-send"
            p["small_queue"] = "cleanup-old-data"
            # a user of typical (median) activity, and a heavy one
            users = (
                await c.exec_driver_sql(
                    "SELECT user_id, count(*) FROM jobs WHERE user_id IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"
                )
            ).all()
            p["user_id"], p["user_jobs"] = users[len(users) // 2]
            p["name"], p["name_jobs"] = (
                await c.exec_driver_sql(
                    "SELECT name, count(*) FROM jobs WHERE queue = 'email-send' GROUP BY 1 ORDER BY 2 LIMIT 1"
                )
            ).one()
            old = (
                await c.exec_driver_sql(
                    "SELECT job_id FROM jobs WHERE created_at < now() - interval '3 days' "
                    "ORDER BY created_at DESC LIMIT 1"
                )
            ).scalar_one()
            p["job_id_full"] = old
            p["job_id_prefix"] = old[:16]
            waiting = (
                await c.exec_driver_sql("SELECT job_id FROM jobs WHERE status = 'waiting' ORDER BY created_at LIMIT 1")
            ).scalar_one()
            p["waiting_prefix"] = waiting[:16]
            ids = (await c.exec_driver_sql("SELECT job_id FROM jobs TABLESAMPLE SYSTEM (1) LIMIT 500")).scalars().all()
            p["detail_ids"] = list(ids)
            for word in ("timeout", "revoked", "mailbox"):
                p[f"matches_{word}"] = (
                    await c.exec_driver_sql(f"SELECT count(*) FROM jobs WHERE error ILIKE '%{word}%'")
                ).scalar_one()
            p["matches_prefix"] = (
                await c.exec_driver_sql(f"SELECT count(*) FROM jobs WHERE job_id LIKE '{p['job_id_prefix']}%'")
            ).scalar_one()
        p["cursor_p5"] = await self.cursor_after(JobFilter(), 4)
        p["cursor_p5_queue"] = await self.cursor_after(JobFilter(queue=p["busy_queue"]), 4)
        p["cursor_p100"] = await self.cursor_after(JobFilter(), 99)

    async def cursor_after(self, f: JobFilter, pages: int) -> str:
        cursor = None
        for _ in range(pages):
            cursor = (await queries.list_jobs(self.store, f, cursor, 50, payloads=True))["next_cursor"]
        assert cursor
        return cursor

    def job_filters(self) -> list[tuple[str, JobFilter, str | None]]:
        p = self.params
        now = datetime.now(UTC)
        return [
            ("jobs: no filter", JobFilter(), None),
            (f"jobs: queue={p['busy_queue']}", JobFilter(queue=p["busy_queue"]), None),
            (f"jobs: queue={p['small_queue']}", JobFilter(queue=p["small_queue"]), None),
            ("jobs: status=failed", JobFilter(status="failed"), None),
            ("jobs: status=waiting", JobFilter(status="waiting"), None),
            ("jobs: status=waiting&level=0", JobFilter(status="waiting", level=0), None),
            (f"jobs: queue={p['busy_queue']}&status=waiting", JobFilter(queue=p["busy_queue"], status="waiting"), None),
            ("jobs: status=scheduled", JobFilter(status="scheduled"), None),
            (
                f"jobs: queue={p['failing_queue']}&status=failed",
                JobFilter(queue=p["failing_queue"], status="failed"),
                None,
            ),
            (
                "jobs: queue=notification-send&status=active",
                JobFilter(queue="notification-send", status="active"),
                None,
            ),
            (f"jobs: user_id ({p['user_jobs']} jobs)", JobFilter(user_id=p["user_id"]), None),
            (f"jobs: name={p['name']}", JobFilter(name=p["name"]), None),
            ("jobs: since=1h ago", JobFilter(since=now - timedelta(hours=1)), None),
            ("jobs: status=failed&since=24h", JobFilter(status="failed", since=now - timedelta(hours=24)), None),
            (f"jobs: q=timeout ({p['matches_timeout']} match)", JobFilter(q="timeout"), None),
            (f"jobs: q=revoked ({p['matches_revoked']} match)", JobFilter(q="revoked"), None),
            (f"jobs: queue={p['failing_queue']}&q=mailbox", JobFilter(queue=p["failing_queue"], q="mailbox"), None),
            ("jobs: q=<job id prefix, 16 chars>", JobFilter(q=p["job_id_prefix"]), None),
            ("jobs: q=<waiting job id prefix>", JobFilter(q=p["waiting_prefix"]), None),
            ("jobs: q=<full job id>", JobFilter(q=p["job_id_full"]), None),
            ("jobs: page 5 (cursor)", JobFilter(), p["cursor_p5"]),
            (f"jobs: queue={p['busy_queue']} page 5", JobFilter(queue=p["busy_queue"]), p["cursor_p5_queue"]),
            ("jobs: page 100 (cursor)", JobFilter(), p["cursor_p100"]),
        ]

    def cases(self) -> list[tuple[str, str, Callable[[int], Awaitable[Any]]]]:
        st, sn, se, ca = self.store, self.snap, self.settings, self.catalog
        busy = self.params["busy_queue"]
        out: list[tuple[str, str, Callable[[int], Awaitable[Any]]]] = [
            ("overview", "overview", lambda i: queries.overview(st, sn, se, ca)),
            ("queues", "overview", lambda i: queries.queues(st, sn, se, ca)),
            (f"queue_detail {busy}", "overview", lambda i: queries.queue_detail(st, sn, se, ca, busy)),
        ]
        for label, f, cur in self.job_filters():
            out.append((label, "search", _list_jobs(st, f, cur)))
        ids = self.params["detail_ids"]
        out.append(
            ("job_detail (random ids)", "search", lambda i: queries.job_detail(st, ids[i % len(ids)], payloads=True))
        )
        return out


def _list_jobs(store: Store, f: JobFilter, cursor: str | None) -> Callable[[int], Awaitable[Any]]:
    def call(_i: int) -> Awaitable[Any]:
        return queries.list_jobs(store, f, cursor, 50, payloads=True)

    return call


# ------------------------------------------------------------------ EXPLAIN
async def explain(store: Store, stmt: Any, *, generic: bool = False) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a statement with its parameters.

    ``generic``: the plan PostgreSQL uses for a prepared statement once it switches to a generic
    plan (asyncpg, under SQLAlchemy, prepares and caches every statement per connection; from the
    6th execution the server may use one plan for all parameter values). Shown with PREPARE +
    ``plan_cache_mode = force_generic_plan`` + EXPLAIN EXECUTE.
    """
    compiled = stmt.compile(dialect=store.engine.dialect, compile_kwargs={"render_postcompile": True})
    sql = str(compiled)
    args = [compiled.params[k] for k in compiled.positiontup] if compiled.positiontup else []
    drv = await asyncpg.connect(store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        if not generic:
            rows = await drv.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
        else:
            await drv.execute("PREPARE jq_bench_stmt AS " + sql)
            await drv.execute("SET plan_cache_mode = force_generic_plan")
            lits = ", ".join(_literal(a) for a in args)
            rows = await drv.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE jq_bench_stmt({lits})")
    finally:
        await drv.close()
    return "\n".join(r[0] for r in rows)


def _literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, datetime):
        return f"'{v.isoformat()}'"
    return "'" + str(v).replace("'", "''") + "'"


async def explain_sql(dsn: str, sql: str) -> str:
    """EXPLAIN ANALYZE of a statement in a transaction that is rolled back."""
    conn = await asyncpg.connect(dsn)
    try:
        tr = conn.transaction()
        await tr.start()
        try:
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        finally:
            await tr.rollback()
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


def overview_statements(params: dict[str, Any]) -> dict[str, Any]:
    """The statements behind the overview cases, built by the monitor's own functions where it has them."""
    now = datetime.now(UTC)
    busy = params["busy_queue"]
    minutes, hours = queries.stats_statements(now - timedelta(hours=24))
    return {
        "stats_since(24h): minute rows [overview, queues]": minutes,
        "stats_since(24h): hourly rows [overview, queues]": hours,
        "_samples_at(now-10m) [incidents]": incidents.samples_at_statement(now - timedelta(minutes=10)),
        f"top_errors {busy} [queue_detail]": select(
            func.coalesce(Job.error_type, "Error"), func.substr(Job.error, 1, 120), func.count()
        )
        .where(Job.queue == busy, Job.status == "failed", Job.finished_at >= now - timedelta(hours=24))
        .group_by(text("1"), text("2"))
        .order_by(func.count().desc())
        .limit(5),
        "refresh_worker_statuses per-worker query [housekeeping]": select(JobAttempt.status)
        .where(JobAttempt.worker_id == worker_ids(busy)[0], JobAttempt.status.in_(("completed", "failed")))
        .order_by(JobAttempt.finished_at.desc())
        .limit(20),
    }


def plan_summary(plan: str) -> str:
    """The first plan line and the execution time, for the table."""
    lines = plan.splitlines()
    ex = next((ln for ln in lines if ln.startswith("Execution Time")), "")
    return f"{lines[0].strip()[:90]} | {ex}"


async def refresh(store: Store) -> None:
    await store.refresh_worker_statuses(offline_after_s=1e9, degraded_ratio=0.3, window=20)


# ------------------------------------------------------------------ HTTP end to end
async def run_http(db_url: str, dsn: str, b: Bench, iterations: int) -> dict[str, Any]:
    import httpx

    from jetqueue.embedded import EmbeddedNats, free_port

    out: dict[str, Any] = {}
    token = secrets.token_hex(16)
    port = free_port()
    nats = EmbeddedNats().start()
    env = dict(os.environ)
    env.update(
        {
            "JETQUEUE_NATS_URL": nats.url,
            "JETQUEUE_MONITOR_DATABASE_URL": db_url,
            "JETQUEUE_MONITOR_TOKENS": f"bench:operator:{token}",
            "JETQUEUE_MONITOR_PORT": str(port),
            "JETQUEUE_MONITOR_LOG_LEVEL": "WARNING",
            # the loaded waiting and delayed jobs are in no stream here: a tracker would reconcile them away
            "JETQUEUE_MONITOR_TRACK_JOBS": "false",
        }
    )
    proc = subprocess.Popen([sys.executable, "-m", "jetqueue_monitor"], env=env)  # noqa: ASYNC220
    stop = asyncio.Event()

    beat_ms: list[float] = []

    async def heartbeats() -> None:
        """Live workers beat every 5 s: one row update per worker in its own transaction, the row
        change Store.upsert_heartbeat makes (status back to ONLINE, new last_heartbeat)."""
        conn = await asyncpg.connect(dsn)
        try:
            live = [
                r["worker_id"]
                for r in await conn.fetch(
                    "SELECT worker_id FROM worker_heartbeats WHERE queue_name <> ALL($1::text[])", list(OFFLINE_WORKERS)
                )
            ]
            while not stop.is_set():
                for wid in live:
                    t = time.perf_counter()
                    await conn.execute(
                        "UPDATE worker_heartbeats SET last_heartbeat = now(), updated_at = now(), status = 'ONLINE' "
                        "WHERE worker_id = $1 AND last_heartbeat <= now()",
                        wid,
                    )
                    beat_ms.append((time.perf_counter() - t) * 1000)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5)
        finally:
            await conn.close()

    beat = asyncio.create_task(heartbeats())
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    r = await c.get("/health")
                    if r.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("monitor did not become healthy")
                await asyncio.sleep(0.3)
            p = b.params
            gets = [
                ("GET /overview", "overview", "/admin/worker-monitor/overview", {}),
                ("GET /queues", "overview", "/admin/worker-monitor/queues", {}),
                ("GET /jobs", "search", "/admin/worker-monitor/jobs", {}),
                ("GET /jobs?queue&status=failed", "search", "/admin/worker-monitor/jobs",
                 {"queue": p["failing_queue"], "status": "failed"}),
                ("GET /jobs?q=timeout", "search", "/admin/worker-monitor/jobs", {"q": "timeout"}),
                ("GET /jobs?status=waiting", "search", "/admin/worker-monitor/jobs", {"status": "waiting"}),
                ("GET /jobs?q=<job id prefix>", "search", "/admin/worker-monitor/jobs", {"q": p["job_id_prefix"]}),
                ("GET /jobs/{id}", "search", None, {}),
            ]  # fmt: skip
            ids = p["detail_ids"]
            for label, kind, path, params in gets:

                async def call(i: int, path: str | None = path, params: dict[str, str] = params) -> None:
                    url = path or f"/admin/worker-monitor/jobs/{ids[i % len(ids)]}"
                    r = await c.get(url, params=params)
                    r.raise_for_status()

                out[label] = {"kind": kind, **await measure(call, iterations)}
                log(f"  {label}: p50 {out[label]['p50']} ms, p95 {out[label]['p95']} ms")
    finally:
        stop.set()
        await asyncio.gather(beat, return_exceptions=True)
        if beat_ms:
            out["_heartbeat_update_ms"] = {"kind": "heartbeat", **pct(beat_ms)}
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        nats.cleanup()
    return out


# ------------------------------------------------------------------ enqueue: the tracker's ingest
def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _rows_in(dsn: str, n: int, timeout: float = 300) -> float:
    """Wait until the jobs table holds ``n`` rows; the monotonic time it did."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while await _count(conn) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the monitor did not list {n} jobs within {timeout} s")
            await asyncio.sleep(0.05)
        return time.monotonic()
    finally:
        await conn.close()


async def _count(conn: asyncpg.Connection) -> int:
    try:
        return int(await conn.fetchval("SELECT count(*) FROM jobs"))
    except asyncpg.UndefinedTableError:  # the monitor has not migrated its database yet
        return 0


async def _enqueue(client: Any, queue: str, n: int, batch: int = 1000) -> float:
    """Enqueue ``n`` jobs to ``queue`` in bulk; the rate in jobs/s."""
    from jetqueue.client import JobRequest

    reqs = [JobRequest(queue, "bench", {"n": i, "to": f"user{i}@example.com"}, user_id=f"u{i % 97}") for i in range(n)]
    t = time.perf_counter()
    for i in range(0, n, batch):
        await client.enqueue_many(reqs[i : i + batch])
    return n / (time.perf_counter() - t)


async def run_enqueue(admin: str, n: int) -> dict[str, Any]:
    """The job tracker's cost and speed, against the real monitor process and a fresh database.

    1. ``n`` jobs are enqueued with no monitor running (the producer's rate alone);
    2. the monitor starts: its reconcile finds them in the stream (batched direct gets) and lists them;
    3. with the monitor subscribed, ``n`` more are enqueued: the producer's rate with the monitor
       following, the monitor's ingest rate (until every job is listed) and its CPU meanwhile.
    """
    from jetqueue.client import JobClient
    from jetqueue.connection import connect_and_check
    from jetqueue.embedded import EmbeddedNats, free_port
    from jetqueue.settings import CommonSettings

    db = f"jq_bench_enq_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{db}"')
    await conn.close()
    dsn = db_dsn(admin, db)
    nats = EmbeddedNats().start()
    catalog = load_catalog()
    nc, _ = await connect_and_check(CommonSettings(nats_url=nats.url), name="bench-producer", catalog=catalog)
    client = JobClient(nc, catalog)
    env = dict(os.environ)
    env.update({"JETQUEUE_NATS_URL": nats.url, "JETQUEUE_MONITOR_DATABASE_URL": sa_url(dsn),
                "JETQUEUE_MONITOR_TOKENS": f"bench:viewer:{secrets.token_hex(16)}",
                "JETQUEUE_MONITOR_PORT": str(free_port()), "JETQUEUE_MONITOR_LOG_LEVEL": "WARNING"})  # fmt: skip
    out: dict[str, Any] = {"jobs": n}
    proc = None
    try:
        out["enqueue_alone_jobs_per_s"] = round(await _enqueue(client, "email-send", n))
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "jetqueue_monitor"], env=env)  # noqa: ASYNC220
        listed = await _rows_in(dsn, n)
        out["reconcile_at_start_s"] = round(listed - started, 2)  # includes the monitor's start-up
        cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
        out["enqueue_with_monitor_jobs_per_s"] = round(await _enqueue(client, "notification-send", n))
        done = await _rows_in(dsn, 2 * n)
        wall, cpu = done - t0, _cpu_s(proc.pid) - cpu0
        out["ingest_jobs_per_s"] = round(n / wall)
        out["ingest_wall_s"] = round(wall, 2)
        out["monitor_cpu_s"] = round(cpu, 2)
        out["monitor_cpu_pct"] = round(100 * cpu / wall, 1)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        await nc.close()
        nats.cleanup()
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await conn.close()
    return out


# ------------------------------------------------------------------ report
def table(rows: list[tuple[str, str, dict[str, Any]]]) -> str:
    w = max(len(r[0]) for r in rows)
    head = f"{'case':<{w}}  {'n':>4} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}  target"
    lines = [head, "-" * len(head)]
    for label, kind, r in rows:
        tgt = TARGETS_MS.get(kind)
        verdict = (
            "" if tgt is None else (f"p95<{tgt:g} ok" if r["p95"] < tgt else f"p95<{tgt:g} MISS x{r['p95'] / tgt:.1f}")
        )
        lines.append(f"{label:<{w}}  {r['n']:>4} {r['p50']:>9.2f} {r['p95']:>9.2f} {r['p99']:>9.2f}  {verdict}")
    return "\n".join(lines)


def _host() -> tuple[str, str]:
    cpu = mem = ""
    with contextlib.suppress(OSError, StopIteration, IndexError):
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(ln.split(":", 1)[1].strip() for ln in info if "model name" in ln)
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return cpu, mem


async def machine(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        names = ("shared_buffers", "work_mem", "effective_cache_size", "max_parallel_workers_per_gather",
                 "random_page_cost", "jit", "plan_cache_mode")  # fmt: skip
        settings = {n: await conn.fetchval(f"SHOW {n}") for n in names}
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    cpu, mem = _host()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "postgresql": version,
        "pg_settings": settings,
        "asyncpg": asyncpg.__version__,
    }


def _report(results: dict[str, Any], direct: list[tuple[str, str, dict[str, Any]]], plans: dict[str, str]) -> None:
    """The tables on stdout."""
    print()
    print(f"jetqueue monitor read paths, {results['rows']:,} jobs ({results['machine']['nproc']} CPUs, "
          f"PostgreSQL {results['machine']['postgresql']})")  # fmt: skip
    if direct:
        print(table(direct))
    if results.get("http"):
        print()
        print("HTTP (python -m jetqueue_monitor, real app, housekeeping running):")
        print(table([(k, v["kind"], v) for k, v in results["http"].items()]))
    if results.get("enqueue"):
        print()
        print("Job tracker (python -m jetqueue_monitor listing enqueued jobs):")
        for k, v in results["enqueue"].items():
            print(f"  {k:34} {v}")
    print()
    print("EXPLAIN ANALYZE (first line | execution time):")
    for label, plan in plans.items():
        print(f"  {label}: {plan_summary(plan)}")


async def main_async(args: argparse.Namespace) -> int:
    admin = args.dsn
    catalog = load_catalog()
    phases = set(args.phases.split(","))
    if args.no_http:
        phases.discard("http")
    reuse = bool(args.db)
    db = args.db or f"jq_bench_{secrets.token_hex(4)}"
    dsn = db_dsn(admin, db)
    if not reuse:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'CREATE DATABASE "{db}"')
        await conn.close()
    log(f"database {db}" + (" (reused, not loaded, kept)" if reuse else ""))
    results: dict[str, Any] = {
        "database": db,
        "rows": args.rows,
        "iterations": args.iterations,
        "sample_hours": args.sample_hours,
        "started": datetime.now(UTC).isoformat(),
        "command": " ".join(["python -m tests.bench.monitor", *sys.argv[1:]]),
    }
    engine = make_engine(sa_url(dsn))
    try:
        results["machine"] = await machine(dsn)
        await migrate(engine)
        if reuse:
            conn = await asyncpg.connect(dsn)
            results["rows"] = await conn.fetchval("SELECT count(*) FROM jobs")
            results["load"] = {"reused": db, "newest_job": await conn.fetchval("SELECT max(created_at) FROM jobs")}
            await conn.close()
        else:
            log(f"loading {args.rows:,} jobs")
            now = time.time()
            results["load"] = await load(dsn, catalog, args.rows, now, sample_hours=args.sample_hours)
            log(f"loaded in {results['load']['total_s']} s: {json.dumps(results['load'])}")
        store = Store(engine, catalog)
        settings = MonitorSettings(database_url=sa_url(dsn))
        bench = Bench(store, catalog, settings, make_snapshot(catalog))
        await bench.prepare()
        results["params"] = {k: v for k, v in bench.params.items() if k != "detail_ids"}
        direct: list[tuple[str, str, dict[str, Any]]] = []
        for label, kind, fn in bench.cases() if "direct" in phases else []:
            r = await measure(fn, args.iterations)
            direct.append((label, kind, r))
            log(f"  {label}: p50 {r['p50']} ms, p95 {r['p95']} ms, p99 {r['p99']} ms (n={r['n']})")
        if "direct" in phases:
            hk = await measure(lambda i: refresh(store), 20, warmup=1, min_n=5)
            direct.append(("housekeeping: refresh_worker_statuses", "housekeeping", hk))
            log(f"  refresh_worker_statuses: p50 {hk['p50']} ms")
            ex = await measure(lambda i: store.expire(), 20, warmup=2)
            direct.append(("housekeeping: expire", "housekeeping", ex))
            log(f"  expire: p50 {ex['p50']} ms")
            results["direct"] = [{"case": lab, "kind": k, **r} for lab, k, r in direct]

        plans: dict[str, str] = {}
        if "explain" in phases:
            log("EXPLAIN ANALYZE")
        for label, stmt in overview_statements(bench.params).items() if "explain" in phases else []:
            plans[label] = await explain(store, stmt)
        for label, f, cur in bench.job_filters() if "explain" in phases else []:
            stmt = job_query(f, cur, 50, dialect="postgresql")
            plans[label] = await explain(store, stmt)
            if not f.q:  # list_jobs plans searches for their text (plan_cache_mode = force_custom_plan)
                plans[label + " [generic plan]"] = await explain(store, stmt, generic=True)
        if "explain" in phases:
            plans["Store.expire: DELETE old queue_samples [housekeeping]"] = await explain_sql(
                dsn, "DELETE FROM queue_samples WHERE ts < now() - interval '7 days'"
            )
            results["plans"] = plans

        if "http" in phases:
            log("HTTP end to end (python -m jetqueue_monitor + embedded nats-server)")
            try:
                results["http"] = await run_http(sa_url(dsn), dsn, bench, args.iterations)
            except Exception as exc:  # report, do not lose the rest
                log(f"HTTP phase failed: {exc!r}")
                results["http_error"] = repr(exc)

        if "enqueue" in phases:
            log(f"enqueue: the job tracker listing {args.enqueue_jobs:,} jobs as they are enqueued")
            results["enqueue"] = await run_enqueue(admin, args.enqueue_jobs)
            log(f"  {json.dumps(results['enqueue'])}")

        _report(results, direct, plans)
        return 0
    finally:
        RESULTS.write_text(json.dumps(results, indent=2, default=str))
        log(f"results in {RESULTS}")
        await engine.dispose()
        if args.keep or reuse:
            log(f"kept database {db} ({dsn})")
        else:
            conn = await asyncpg.connect(admin)
            await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await conn.close()
            log(f"dropped database {db}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.monitor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="job records to load (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="50,000 job records")
    ap.add_argument("--iterations", type=int, default=200, help="timed calls per case (after warm-up)")
    ap.add_argument("--keep", action="store_true", help="keep the bench database")
    ap.add_argument(
        "--db",
        help="measure a database kept by --keep instead of creating and loading one (it is kept; its data "
        "does not move with the clock, so re-use it soon after loading)",
    )
    ap.add_argument(
        "--sample-hours",
        type=float,
        default=DAYS * 24,
        help="hours of queue_samples to load (default 168: the 7 days Store.expire keeps)",
    )
    ap.add_argument("--no-http", action="store_true", help="skip the end-to-end HTTP measurements")
    ap.add_argument(
        "--phases",
        default="direct,explain,http,enqueue",
        help="comma list of direct,explain,http,enqueue (default all)",
    )
    ap.add_argument(
        "--enqueue-jobs", type=int, default=20_000, help="jobs the enqueue phase enqueues, twice (default 20,000)"
    )
    ap.add_argument(
        "--dsn",
        default=os.environ.get("JQ_BENCH_PG", DEFAULT_ADMIN_DSN),
        help="PostgreSQL DSN of a database to connect to for CREATE/DROP DATABASE (env JQ_BENCH_PG)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.rows = 50_000
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
