"""``jetqueue run``: the whole stack on one machine, as supervised child processes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jetqueue.catalog import Catalog, load_catalog
from jetqueue.client import JobClient
from jetqueue.connection import connect_and_check
from jetqueue.embedded import find_binary, free_port
from jetqueue.errors import JetqueueError
from jetqueue.logs import setup_logging
from jetqueue.settings import CommonSettings

log = logging.getLogger(__name__)

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

POLL_S = 0.2
PROBE_TIMEOUT_S = 1.0
# Ctrl-C must be over in < 5 s: services get SERVICES_STOP_S from SIGTERM to SIGKILL, NATS the rest.
STOP_BUDGET_S = 4.5
SERVICES_STOP_S = 3.0
# Long jobs of a local run are released and redelivered on the next run rather than waited for.
LOCAL_WORKER_GRACE_S = "1.5"
PRODUCER_TOKEN_SCOPES = "admin"  # implies enqueue, read and cancel


def exit_reason(returncode: int) -> str:
    """How a process ended, for the log: ``exited with code 3`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Backoff:
    """Exponential restart delays, starting over once the process had a stable run.

    Args:
        first_s: The delay after the first crash.
        max_s: The longest delay.
        stable_s: A process that was up this long before it crashed starts over at ``first_s``.
    """

    first_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 60.0
    _next_s: float = field(default=0.0, init=False)

    def next_delay(self, up_s: float) -> float:
        """The delay before the next start of a process that crashed after ``up_s`` seconds."""
        if not self._next_s or up_s >= self.stable_s:
            self._next_s = self.first_s
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return delay


def probe(url: str) -> str | None:
    """None when ``GET url`` answers 200, else why not (``HTTP 503``, ``connection refused``…)."""
    # Loopback only: an http_proxy in the environment must not be asked.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=PROBE_TIMEOUT_S) as resp:
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        return reason.strerror.lower() if isinstance(reason, OSError) and reason.strerror else str(reason)
    except OSError as exc:  # e.g. the connection reset while the service starts
        return exc.strerror.lower() if exc.strerror else str(exc) or type(exc).__name__


@dataclass
class Child:
    """One supervised process: how to start it, where it answers when ready, and its restarts.

    Args:
        name: What the log calls it: ``nats-server``, ``producer``, ``worker email-send``.
        argv: The command.
        env: Its whole environment.
        health_url: Answers 200 once the process is ready.
        quiet: Send its stdout and stderr to /dev/null (nats-server logs to a file).
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str
    quiet: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)

    def start(self) -> None:
        out = subprocess.DEVNULL if self.quiet else None
        # Own session: a terminal's Ctrl-C reaches only the supervisor, which stops the children in order.
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=out, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reap(self, now: float) -> None:
        """If the process has exited, log how and schedule its restart."""
        if self.proc is None or self.proc.poll() is None:
            return
        delay = self.backoff.next_delay(now - self.started_at)
        log.warning(
            "%s (pid %d) %s; restarting in %.1fs", self.name, self.proc.pid, exit_reason(self.proc.returncode), delay
        )
        self.proc = None
        self.restart_at = now + delay

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process group, if the process has not exited (so its pid is still its own)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)


class Supervisor:
    """Starts the children, restarts whatever exits (with backoff), and stops them all in order.

    Args:
        nats: The embedded nats-server, or None when the stack uses an external NATS.
        services: Producer, monitor and workers.
    """

    def __init__(self, nats: Child | None, services: list[Child]) -> None:
        self.nats = nats
        self.services = services
        self.stopping = asyncio.Event()

    def signalled(self, sig: signal.Signals) -> None:
        """Signal handler: Ctrl-C (SIGINT), SIGTERM or a closed terminal (SIGHUP) stops the stack."""
        log.info("%s received", sig.name)
        self.stopping.set()

    @property
    def children(self) -> list[Child]:
        return [self.nats, *self.services] if self.nats else list(self.services)

    async def watch(self) -> None:
        """Restart exited children when their backoff is over, until :attr:`stopping` is set."""
        while not self.stopping.is_set():
            now = time.monotonic()
            for child in self.children:
                child.reap(now)
                if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                    child.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), POLL_S)

    async def wait_ready(self, children: list[Child], timeout: float) -> dict[str, str]:
        """Poll each child's health URL until all answer 200, :attr:`stopping` is set or ``timeout`` passes.

        Returns:
            The children that never answered 200, with the last reason (empty when all are ready).
        """
        pending = {c.name: c.health_url for c in children}
        deadline = time.monotonic() + timeout
        while pending and not self.stopping.is_set():
            results = await asyncio.gather(*(asyncio.to_thread(probe, url) for url in pending.values()))
            pending_reasons = {name: why for name, why in zip(pending, results, strict=True) if why is not None}
            if not pending_reasons or time.monotonic() >= deadline:
                return pending_reasons
            pending = {name: pending[name] for name in pending_reasons}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), POLL_S)
        return {}

    async def stop(self) -> None:
        """SIGTERM every service, SIGKILL the ones left after :data:`SERVICES_STOP_S`, then stop NATS.

        NATS goes last, with the rest of :data:`STOP_BUDGET_S`: workers need it to hand their running jobs back.
        """
        self.stopping.set()
        started = time.monotonic()
        log.info("stopping %d services", len(self.services))
        await self._terminate(self.services, SERVICES_STOP_S)
        if self.nats is not None:
            await self._terminate([self.nats], STOP_BUDGET_S - (time.monotonic() - started))
        log.info("stopped in %.1fs", time.monotonic() - started)

    async def _terminate(self, children: list[Child], timeout: float) -> None:
        for child in children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(c.running for c in children) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for child in children:
            if child.proc is None:
                continue
            if child.proc.poll() is None:
                log.warning("%s (pid %d) still running after %.1fs: killing it", child.name, child.proc.pid, timeout)
                child.signal(signal.SIGKILL)
            child.proc.wait()


@dataclass
class LocalStack:
    """What ``jetqueue run`` starts: its addresses, credentials and child processes."""

    args: argparse.Namespace
    catalog: Catalog
    queues: list[str]
    nats_url: str
    nats: Child | None
    env: dict[str, str]
    producer_token: str | None
    admin_password: str
    monitor_token: str
    worker_ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LocalStack:
        """Check the queues and build every child's command and environment (nothing starts yet)."""
        catalog = load_catalog(CommonSettings().catalog)
        queues = args.queues.split(",") if args.queues else catalog.names
        for q in queues:
            catalog.get(q)
        data_dir = Path(args.data_dir).resolve()
        (data_dir / "nats").mkdir(parents=True, exist_ok=True)
        nats, url = None, args.nats_url
        if not url:
            port = args.nats_port or free_port()
            nats, url = _nats_child(data_dir, port), f"nats://127.0.0.1:{port}"
        env, token = child_env(os.environ, nats_url=url)
        env.setdefault("JETQUEUE_MONITOR_DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / 'monitor.db'}")
        return cls(
            args=args,
            catalog=catalog,
            queues=queues,
            nats_url=url,
            nats=nats,
            env=env,
            producer_token=token,
            admin_password=env.get("JETQUEUE_RUN_ADMIN_PASSWORD") or secrets.token_urlsafe(9),
            monitor_token=secrets.token_urlsafe(18),
            worker_ports={q: free_port() for q in queues},
        )

    def services(self) -> list[Child]:
        """Producer, monitor and one worker per queue."""
        host, check_host = self.args.host, _loopback(self.args.host)
        producer = {"JETQUEUE_PRODUCER_PORT": str(self.args.port), "JETQUEUE_PRODUCER_HOST": host}
        monitor = {
            "JETQUEUE_MONITOR_PORT": str(self.args.monitor_port),
            "JETQUEUE_MONITOR_HOST": host,
            "JETQUEUE_MONITOR_USERS": self.env.get("JETQUEUE_MONITOR_USERS") or f"admin:admin:{self.admin_password}",
            "JETQUEUE_MONITOR_TOKENS": self.env.get("JETQUEUE_MONITOR_TOKENS") or f"local:admin:{self.monitor_token}",
            "JETQUEUE_PROVISION": "false",
        }
        out = [
            _python_child("producer", "jetqueue_producer", {**self.env, **producer}, check_host, self.args.port),
            _python_child("monitor", "jetqueue_monitor", {**self.env, **monitor}, check_host, self.args.monitor_port),
        ]
        for q, port in self.worker_ports.items():
            worker = {
                "JETQUEUE_WORKER_QUEUE": q,
                "JETQUEUE_WORKER_METRICS_PORT": str(port),
                "JETQUEUE_WORKER_LOG_LEVEL": self.env.get("JETQUEUE_WORKER_LOG_LEVEL", "WARNING"),
                "JETQUEUE_WORKER_GRACE_S": self.env.get("JETQUEUE_WORKER_GRACE_S", LOCAL_WORKER_GRACE_S),
                "JETQUEUE_PROVISION": "false",
            }
            out.append(_python_child(f"worker {q}", "jetqueue_worker", {**self.env, **worker}, "127.0.0.1", port))
        return out

    def banner(self) -> str:
        """The addresses and credentials, printed once every service answers."""
        host = _loopback(self.args.host)
        api = f"http://{host}:{self.args.port}"
        token = self.producer_token or "<a token of JETQUEUE_PRODUCER_TOKENS>"
        example = json.dumps({"name": "hello", "data": DEMO_PAYLOADS.get(self.queues[0], {})})
        rows = [
            ("NATS", self.nats_url + (f"   (monitoring {self.nats_monitoring})" if self.nats else "")),
            ("producer API", f"{api}   (OpenAPI: {api}/schema)"),
            ("", f"token: {token}"),
            ("workers", f"{len(self.queues)} processes; metrics and /health on ports {self._worker_ports()}"),
            ("monitor", f"http://{host}:{self.args.monitor_port}   (API: /admin/worker-monitor/overview)"),
        ]
        if not self.env.get("JETQUEUE_MONITOR_USERS"):
            rows.append(("", f"login admin / {self.admin_password}   or   Authorization: Bearer {self.monitor_token}"))
        rows += [
            ("try", f"curl -s -XPOST {api}/jobs/{self.queues[0]} -H 'Authorization: Bearer {token}' \\"),
            ("", f"     -H 'content-type: application/json' -d '{example}'"),
        ]
        lines = ["jetqueue is running:", *(f"  {label:<15} {text}" for label, text in rows)]
        lines.append("  Ctrl-C stops everything." + ("  Feeding demo jobs." if self.args.demo else ""))
        return "\n".join(lines)

    @property
    def nats_monitoring(self) -> str:
        return self.nats.health_url.removesuffix("/healthz") if self.nats else ""

    def _worker_ports(self) -> str:
        return ", ".join(str(p) for p in self.worker_ports.values())


def child_env(base: Mapping[str, str], *, nats_url: str) -> tuple[dict[str, str], str | None]:
    """The environment every child gets, and the producer token generated for it.

    Args:
        base: The user's environment; what the user set there wins.
        nats_url: The NATS every service connects to.

    Returns:
        The environment, and the producer's admin token (None when the user set JETQUEUE_PRODUCER_TOKENS).
    """
    env = {**base, "JETQUEUE_NATS_URL": nats_url}
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The local run serves plain http on loopback: Secure cookies would never come back.
    env.setdefault("JETQUEUE_MONITOR_SECURE_COOKIES", "false")
    token = None
    if not env.get("JETQUEUE_PRODUCER_TOKENS"):
        token = secrets.token_urlsafe(24)
        env["JETQUEUE_PRODUCER_TOKENS"] = f"local:{PRODUCER_TOKEN_SCOPES}:{token}"
    return env, token


def _loopback(host: str) -> str:
    """Where to reach a service bound to ``host`` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _python_child(name: str, module: str, env: dict[str, str], host: str, port: int) -> Child:
    return Child(name, [sys.executable, "-m", module], env, f"http://{host}:{port}/health")


def _nats_child(data_dir: Path, port: int) -> Child:
    """The embedded nats-server on fixed ports, so a restart comes back where the services reconnect to.

    Not :class:`~jetqueue.embedded.EmbeddedNats`: that one starts nats-server in the caller's
    process group, where a terminal's Ctrl-C would stop it before the workers.
    """
    http_port = free_port()
    argv = [find_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(http_port), "-js"]
    argv += ["-sd", str(data_dir / "nats"), "-l", str(data_dir / "nats.log")]
    return Child("nats-server", argv, dict(os.environ), f"http://127.0.0.1:{http_port}/healthz", quiet=True)


DEMO_TROUBLED_QUEUE = "data-dtg-sync"  # the demo's one queue in trouble


async def _demo_feeder(url: str, catalog: Catalog, queues: list[str], stop: asyncio.Event) -> None:
    """Enqueue a mix of jobs to ``queues`` every second until ``stop`` is set."""
    try:
        nc, _js = await connect_and_check(CommonSettings(nats_url=url, provision=False), name="jetqueue-demo")
    except JetqueueError as exc:
        log.error("demo feeder not started: %s", exc)
        return
    client = JobClient(nc, catalog)
    rng = random.Random(7)
    n = 0
    try:
        while not stop.is_set():
            for _ in range(5):
                q = rng.choice(queues)
                roll = rng.random()
                sim: dict[str, Any] = {}
                # A healthy system with some trouble: one queue talks to a flaky upstream and dead-letters
                # some jobs (a failure spike there); elsewhere a rare retry that succeeds, nothing lost.
                flaky, failing = (0.20, 0.08) if q == DEMO_TROUBLED_QUEUE else (0.02, 0.0)
                if roll < 0.10:
                    sim = {"sleep_ms": rng.randint(2000, 8000)}  # slow
                elif roll < 0.10 + flaky:
                    sim = {"fail_attempts": 1}  # flaky: succeeds on retry
                elif roll < 0.10 + flaky + failing:
                    sim = {"fail": True}  # fails every attempt: dead-lettered
                data = {**DEMO_PAYLOADS.get(q, {}), **({"_simulate": sim} if sim else {})}
                n += 1
                try:
                    await client.enqueue(
                        q,
                        "demo",
                        data,
                        delay_ms=rng.choice([None, None, None, 3000]),
                        user_id=f"demo-user-{n % 4}",
                        priority=rng.choice([1, 2, 3]),
                    )
                except JetqueueError as exc:  # NATS restarting: skip this job, the supervisor brings NATS back
                    log.warning("demo job not enqueued: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        await nc.close()


async def _provision(url: str, catalog: Catalog) -> None:
    """Create streams and consumers once, so the services start without racing each other."""
    nc, _ = await connect_and_check(CommonSettings(nats_url=url), name="jetqueue-run", catalog=catalog)
    await nc.close()


async def _start(stack: LocalStack, sup: Supervisor) -> dict[str, str]:
    """Start NATS, provision, start the services, and wait for them to answer.

    Returns:
        The children that did not answer within ``--ready-timeout``, with why (empty when all did).
    """
    timeout = stack.args.ready_timeout
    if sup.nats is not None:
        sup.nats.start()
        if unready := await sup.wait_ready([sup.nats], timeout):
            return unready
    if sup.stopping.is_set():
        return {}
    await _provision(stack.nats_url, stack.catalog)
    for child in sup.services:
        child.start()
    return await sup.wait_ready(sup.children, timeout)


async def serve(stack: LocalStack, sup: Supervisor) -> int:
    """Start the stack, print the banner once it answers, and supervise it until Ctrl-C or ``--duration``.

    Returns:
        The exit code: 0, or 1 when a service never became ready.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, sup.signalled, sig)
    tasks = [asyncio.create_task(sup.watch())]
    try:
        if unready := await _start(stack, sup):
            detail = "; ".join(f"{name} ({why})" for name, why in unready.items())
            print(f"jetqueue run: not ready after {stack.args.ready_timeout:g}s: {detail}", file=sys.stderr)
            return 1
        if sup.stopping.is_set():
            return 0
        print(stack.banner(), flush=True)
        if stack.args.demo:
            tasks.append(asyncio.create_task(_demo_feeder(stack.nats_url, stack.catalog, stack.queues, sup.stopping)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sup.stopping.wait(), timeout=stack.args.duration or None)
        return 0
    finally:
        sup.stopping.set()
        try:
            await asyncio.gather(*tasks)
        finally:
            await sup.stop()


def run(args: argparse.Namespace) -> int:
    """``jetqueue run``: see :func:`serve`; returns the exit code (1 when the stack never became ready)."""
    setup_logging("INFO")
    try:
        stack = LocalStack.from_args(args)
        sup = Supervisor(stack.nats, stack.services())
        return asyncio.run(serve(stack, sup))
    except JetqueueError as exc:
        print(f"jetqueue run: {exc}", file=sys.stderr)
        return 1
