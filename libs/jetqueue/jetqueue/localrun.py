"""``jetqueue run``: the whole stack on one machine, as child processes.

An embedded nats-server (state in ``.jetqueue/nats``), the producer API and one
worker process per queue; ``--demo`` also feeds jobs (quick, slow, flaky,
failing, delayed) so retries, the dead-letter stream and the monitor have
something to show. Services are started by module name: this package never
imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jetqueue.catalog import Catalog, load_catalog
from jetqueue.client import JobClient
from jetqueue.connection import connect_and_check
from jetqueue.embedded import EmbeddedNats, free_port
from jetqueue.errors import JetqueueError
from jetqueue.settings import CommonSettings

DEMO_PAYLOADS: dict[str, dict[str, Any]] = {
    "ei-update": {"fleet_id": "fleet-7", "new_ei": 87.5},
    "proposal-ranking": {"bid_id": "order-1001"},
    "order-status-update": {"order_id": "order-1001", "status": "IN_TRANSIT"},
    "notification-send": {"user_id": "u-1", "type": "INFO", "title": "Hello", "message": "Demo notification"},
    "audit-log": {"action": "LOGIN", "entity_type": "USER", "entity_id": "u-1"},
    "analytics-aggregate": {"aggregation_type": "daily"},
    "data-dtg-sync": {"vehicle_id": "truck-42"},
    "dispatch-optimize": {"batch_id": "batch-9", "orders": [{"order_id": "o1"}, {"order_id": "o2"}]},
    "report-generate": {"report_type": "monthly-emissions", "format": "pdf"},
    "email-send": {"to": "ops@example.com", "subject": "Demo", "body": "Hello from jetqueue"},
    "cleanup-old-data": {"retention_days": {"api_logs": 90}},
}


def _spawn(module: str, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env)


async def _demo_feeder(url: str, catalog: Catalog, stop: asyncio.Event) -> None:
    """Enqueue a mix of jobs every second until ``stop`` is set."""
    nc, _js = await connect_and_check(CommonSettings(nats_url=url, provision=False), name="jetqueue-demo")
    client = JobClient(nc, catalog)
    rng = random.Random(7)
    n = 0
    try:
        while not stop.is_set():
            for _ in range(5):
                q = rng.choice(catalog.names)
                base = DEMO_PAYLOADS.get(q, {})
                roll = rng.random()
                sim: dict[str, Any] = {}
                if roll < 0.15:
                    sim = {"sleep_ms": rng.randint(2000, 8000)}  # slow
                elif roll < 0.30:
                    sim = {"fail_attempts": 1}  # flaky: succeeds on retry
                elif roll < 0.38:
                    sim = {"fail": True}  # fails every attempt: dead-lettered
                data = {**base, **({"_simulate": sim} if sim else {})}
                delay = rng.choice([None, None, None, 3000])
                n += 1
                await client.enqueue(
                    q, "demo", data, delay_ms=delay, user_id=f"demo-user-{n % 4}", priority=rng.choice([1, 2, 3])
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        await nc.close()


def run(args: Any) -> int:
    catalog = load_catalog(os.environ.get("JETQUEUE_CATALOG"))
    queues = args.queues.split(",") if args.queues else catalog.names
    for q in queues:
        catalog.get(q)
    data_dir = Path(args.data_dir)
    (data_dir / "nats").mkdir(parents=True, exist_ok=True)
    server: EmbeddedNats | None = None
    url = args.nats_url
    if not url:
        server = EmbeddedNats(
            port=args.nats_port or None, store_dir=str(data_dir / "nats"), log_file=str(data_dir / "nats.log")
        )
        server.start()
        url = server.url
    env = dict(os.environ)
    env["JETQUEUE_NATS_URL"] = url
    env.setdefault("PYTHONUNBUFFERED", "1")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # Provision once up front so the services start without racing each other.
        async def _provision() -> None:
            nc, _ = await connect_and_check(CommonSettings(nats_url=url), name="jetqueue-run", catalog=catalog)
            await nc.close()

        asyncio.run(_provision())
        penv = {**env, "JETQUEUE_PRODUCER_PORT": str(args.port), "JETQUEUE_PRODUCER_HOST": args.host}
        procs.append(_spawn("jetqueue_producer", penv))
        password = os.environ.get("JETQUEUE_RUN_ADMIN_PASSWORD") or secrets.token_urlsafe(9)
        token = secrets.token_urlsafe(18)
        menv = {
            **env,
            "JETQUEUE_MONITOR_PORT": str(args.monitor_port),
            "JETQUEUE_MONITOR_HOST": args.host,
            "JETQUEUE_MONITOR_DATABASE_URL": env.get("JETQUEUE_MONITOR_DATABASE_URL")
            or f"sqlite+aiosqlite:///{(data_dir / 'monitor.db').resolve()}",
            "JETQUEUE_MONITOR_USERS": env.get("JETQUEUE_MONITOR_USERS") or f"admin:admin:{password}",
            "JETQUEUE_MONITOR_TOKENS": env.get("JETQUEUE_MONITOR_TOKENS") or f"local:admin:{token}",
            "JETQUEUE_PROVISION": "false",
        }
        procs.append(_spawn("jetqueue_monitor", menv))
        worker_ports = {}
        for q in queues:
            port = free_port()
            worker_ports[q] = port
            wenv = {
                **env,
                "JETQUEUE_WORKER_QUEUE": q,
                "JETQUEUE_WORKER_METRICS_PORT": str(port),
                "JETQUEUE_WORKER_LOG_LEVEL": "WARNING",
                "JETQUEUE_PROVISION": "false",
            }
            procs.append(_spawn("jetqueue_worker", wenv))
        print("jetqueue is running:")
        print(f"  NATS            {url}" + (f"   (monitoring {server.monitor_url})" if server else ""))
        print(f"  producer API    http://{args.host}:{args.port}   (OpenAPI: http://{args.host}:{args.port}/schema)")
        print(
            f"  workers         {len(queues)} processes; metrics on ports "
            f"{min(worker_ports.values())}..{max(worker_ports.values())}"
        )
        print(f"  monitor         http://{args.host}:{args.monitor_port}   (API: /admin/worker-monitor/overview)")
        if not env.get("JETQUEUE_MONITOR_USERS"):
            print(f"                  login admin / {password}   or   Authorization: Bearer {token}")
        print("  Ctrl-C stops everything." + ("  Feeding demo jobs." if args.demo else ""))
        sys.stdout.flush()
        stop = asyncio.Event()

        async def _wait() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            tasks = []
            if args.demo:
                await asyncio.sleep(2)
                tasks.append(asyncio.create_task(_demo_feeder(url, catalog, stop)))
            deadline = time.monotonic() + args.duration if args.duration else None
            while not stop.is_set():
                if any(p.poll() is not None for p in procs):
                    dead = [p.args for p in procs if p.poll() is not None]
                    print(f"jetqueue run: a service exited: {dead[0]!r}", file=sys.stderr)
                    stop.set()
                    break
                if deadline and time.monotonic() > deadline:
                    stop.set()
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
            for t in tasks:
                await t

        asyncio.run(_wait())
    except JetqueueError as exc:
        print(f"jetqueue run: {exc}", file=sys.stderr)
        return 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
        if server is not None:
            server.stop()
    return 0
