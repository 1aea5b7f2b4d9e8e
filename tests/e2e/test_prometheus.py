"""A real Prometheus scraping a running jetqueue, with the chart's alert rules and dashboards.

``jetqueue run`` starts nats-server, the producer, the monitor and one worker for
each of four queues; a feeder sends the demo's mix of jobs (quick, slow, flaky,
delayed; one troubled queue that dead-letters some) through the producer API.
Prometheus (Debian's ``prometheus`` package, ``make promtool``; skipped without it
locally, a failure under CI=true) scrapes every process as the chart's
ServiceMonitors and PodMonitors would (``namespace`` and ``release`` on every
target) and a second time as another release ("twin"), and evaluates the
PrometheusRule Helm renders. Then:

* a healthy run of 35 compressed minutes fires no alert (none even pending once
  the longest window has filled) and every rule evaluates without error;
* every dashboard query returns data, except the ones listed in NO_DATA with why;
* the twin release adds nothing: scoped queries count the workers once, and
  per-worker panels draw one line per process (by instance: no pod label here);
* the job-level failure ratio of the dashboard is the alert's;
* injected faults move the right alerts to firing within their ``for:``:
  a killed worker (JetqueueWorkerOffline), a burst of failing jobs
  (JetqueueFailureRateHigh), a stopped monitor (JetqueueMonitorDown, while the
  dead-letter alert on its now stale counts resolves) and every target stopped
  (JetqueueScrapeFailing; the failure alert on stale worker rates resolves).

Time runs SPEEDUP times faster than in production, everywhere at once, so the
rules keep their meaning: every ``for:`` and every range ``[..]`` of the rendered
rules is divided by SPEEDUP (the test checks none is left out), and so are the
chart values that are durations (sampleStaleSeconds, lag and ingest-lag seconds);
the services' clocks follow (heartbeats, the monitor's offline detection and
sampling, retry backoffs in the catalog, the feeder's sleeps and delays), and the
feeder sends SPEEDUP times the demo's jobs per queue. Thresholds that are counts
per window (failureMinimum, deadLetterGrowthThreshold) and ratios stay as shipped:
a window SPEEDUP times shorter at SPEEDUP times the rate holds the same counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from jetqueue.catalog import load_catalog
from jetqueue.embedded import free_port
from jetqueue.localrun import DEMO_PAYLOADS
from tests.conftest import IN_CI
from tests.e2e.test_chart import AUTH, CHART, merged, render
from tests.e2e.test_observability import dashboards, grafana_to_promql, panels

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SPEEDUP = 20
NS, RELEASE, TWIN = "jetqueue", "e2e", "twin"
TROUBLED = "data-dtg-sync"  # the demo's troubled queue: 20 % of jobs fail once, 8 % every time
BURST = "ei-update"  # gets the failing burst
KILLED = "email-send"  # loses its worker
ALERTS = "notification-send"  # where every dead-lettered job sends its admin alert: it needs its worker too
QUEUES = [BURST, KILLED, TROUBLED, ALERTS]
DEMO_JOBS_PER_QUEUE_S = 5 / 11  # `jetqueue run --demo`: 5 jobs a second over the 11 queues
WARMUP_S = 45  # the longest window (15 compressed minutes) fills
HEALTHY_S = 60  # then 20 compressed minutes more: past the longest window plus its for: (15 m + 10 m) in all
RATE_INTERVAL = "30s"  # $__rate_interval of the dashboards here (scrapes every second)
# Chart values that are durations: divided by SPEEDUP like the rules' windows.
DURATION_VALUES = ("sampleStaleSeconds", "lagSecondsThreshold", "ingestLagSecondsThreshold", "operatorStaleSeconds")
# Dashboard queries that return nothing on this stack, and why (asserted both ways: a query listed here
# that returns data must leave the list).
OPERATOR_ONLY = "the operator runs only on Kubernetes (jetqueue run has none)"
NO_DATA = {
    "nats.json panel 'Operator → NATS' A": OPERATOR_ONLY,
    "nats.json panel 'Reconciles / s by kind and result' A": OPERATOR_ONLY,
    "nats.json panel 'Reconcile errors / s by reason' A": OPERATOR_ONLY,
    "nats.json panel 'Since the last good reconcile by JobQueue' A": OPERATOR_ONLY,
    "nats.json panel 'Reconcile duration p95 by kind' A": OPERATOR_ONLY,
    "nats.json panel 'QueueActions by action and result' A": OPERATOR_ONLY,
    "queue-detail.json panel 'Replicas: set, desired by the lag, ready' A": OPERATOR_ONLY,
    "queue-detail.json panel 'Replicas: set, desired by the lag, ready' B": OPERATOR_ONLY,
    "queue-detail.json panel 'Replicas: set, desired by the lag, ready' C": OPERATOR_ONLY,
}


def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    message = "prometheus is missing: run `make promtool` (Debian's prometheus package); not run"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


# ------------------------------------------------------------------ rules, time compressed


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return float(sum(int(n) * units[u] for n, u in parts))


def compressed(duration: str) -> str:
    return f"{seconds(duration) / SPEEDUP:g}s"


def compress_rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules with every ``for:`` and every range selector SPEEDUP times shorter."""
    out = []
    for g in groups:
        rules = []
        for r in g["rules"]:
            r = dict(r)
            if "for" in r:
                r["for"] = compressed(r["for"])
            r["expr"] = re.sub(r"\[(\d+[smhd])\]", lambda m: f"[{compressed(m.group(1))}]", r["expr"])
            assert not re.search(r"\d+[mhd]\b", r["expr"]), f"an uncompressed duration in {r['alert']}: {r['expr']}"
            rules.append(r)
        out.append({**g, "rules": rules})
    return out


def render_rules(folder: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The PrometheusRule of release RELEASE in namespace NS, time compressed; and the rules as shipped, by alert."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text("utf-8"))["metrics"]["prometheusRule"]
    rule_values = {"enabled": True, **{k: defaults[k] / SPEEDUP for k in DURATION_VALUES}}
    # No operator in a local run: its alert (and its absent() check) are not rendered.
    values = merged(AUTH, {"metrics": {"prometheusRule": rule_values}, "operator": {"enabled": False}})
    release = render(folder, {RELEASE: values})["releases"][RELEASE]
    assert "error" not in release, release.get("error")
    (rule,) = [o for o in release["objects"] if o.get("kind") == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == NS
    groups = rule["spec"]["groups"]
    return compress_rules(groups), {r["alert"]: r for g in groups for r in g["rules"]}


# ------------------------------------------------------------------ the stack


@dataclass
class Stack:
    """``jetqueue run`` (a child of this test) and what its banner and log say."""

    proc: subprocess.Popen[bytes]
    log: Path
    producer: str
    monitor: str
    token: str
    worker_ports: dict[str, int] = field(default_factory=dict)

    def pid(self, name: str) -> int:
        """The current pid of a child (``monitor``, ``worker email-send``): the last start the log reports."""
        pids = re.findall(rf"started {re.escape(name)} \(pid (\d+)\)", self.log.read_text("utf-8", errors="replace"))
        assert pids, f"no start of {name} in {self.log}"
        return int(pids[-1])

    def signal(self, name: str, sig: signal.Signals) -> None:
        os.kill(self.pid(name), sig)

    def children(self) -> list[str]:
        return ["producer", "monitor", *(f"worker {q}" for q in self.worker_ports)]


def scaled_catalog(path: Path) -> Path:
    """The seed catalog with retry backoffs SPEEDUP times shorter."""
    cat = load_catalog()
    for q in cat.names:
        b = cat.get(q).backoff
        cat = cat.replace(q, backoff={**b.model_dump(mode="json"), "delay_ms": b.delay_ms // SPEEDUP})
    path.write_text(yaml.safe_dump(cat.model_dump(mode="json"), allow_unicode=True), "utf-8")
    return path


def start(argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output in ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kw)


def stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.asynccontextmanager
async def local_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    token = secrets.token_urlsafe(16)
    port, monitor_port = free_port(), free_port()
    env = {
        **os.environ,
        "JETQUEUE_CATALOG": str(scaled_catalog(tmp_path / "catalog.yaml")),
        "JETQUEUE_PRODUCER_TOKENS": f"e2e:admin:{token}",
        "JETQUEUE_MONITOR_TOKENS": f"e2e:admin:{token}",
        "JETQUEUE_MONITOR_USERS": "admin:admin:e2e-password",
        # The services' clocks, SPEEDUP times faster (heartbeats 10 s, OFFLINE after 30 s, samples every 5 s),
        # rounded up where a loaded machine would otherwise see late heartbeats as lost workers.
        "JETQUEUE_WORKER_HEARTBEAT_S": str(10 / SPEEDUP),
        "JETQUEUE_MONITOR_OFFLINE_AFTER_S": "3",
        "JETQUEUE_MONITOR_SAMPLE_INTERVAL_S": "1",
    }
    log = tmp_path / "jetqueue-run.log"
    argv = [sys.executable, "-m", "jetqueue", "run", "--queues", ",".join(QUEUES), "--port", str(port)]
    argv += ["--monitor-port", str(monitor_port), "--data-dir", str(tmp_path / "data"), "--ready-timeout", "120"]
    proc = start(argv, log, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 150
        text = ""
        while "jetqueue is running:" not in text:
            assert proc.poll() is None, f"jetqueue run exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no banner:\n{log.read_text()[-3000:]}"
            await asyncio.sleep(0.5)
            text = log.read_text("utf-8", errors="replace")
        await asyncio.sleep(0.5)  # the rest of the banner
        ports = re.search(r"metrics and /health on ports ([\d, ]+)", log.read_text("utf-8"))
        assert ports, log.read_text()
        worker_ports = dict(zip(QUEUES, (int(p) for p in ports.group(1).split(",")), strict=True))
        yield Stack(proc, log, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{monitor_port}", token, worker_ports)
    finally:
        stop(proc, 30)


# ------------------------------------------------------------------ Prometheus


def scrape_configs(stack: Stack) -> list[dict[str, Any]]:
    """Every process, labelled as the chart's monitors label it; then all of them again as release TWIN."""
    targets = {
        "jetqueue-producer": [stack.producer.removeprefix("http://")],
        "jetqueue-monitor": [stack.monitor.removeprefix("http://")],
        "jetqueue-workers": [f"127.0.0.1:{p}" for p in stack.worker_ports.values()],
    }
    configs = []
    for release in (RELEASE, TWIN):
        for job, addresses in targets.items():
            configs.append(
                {
                    "job_name": job if release == RELEASE else f"{job}-{release}",
                    "static_configs": [{"targets": addresses, "labels": {"namespace": NS, "release": release}}],
                }
            )
    return configs


@contextlib.contextmanager
def prometheus(tmp_path: Path, rules: list[dict[str, Any]], stack: Stack) -> Iterator[str]:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}), "utf-8")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": scrape_configs(stack),
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), "utf-8")
    port = free_port()
    argv = [
        _prometheus(),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    proc = start(argv, tmp_path / "prometheus.log", cwd=tmp_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, 20)


class Prom:
    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http, self.url = http, url

    async def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at else {})}
        r = await self.http.get(f"{self.url}/api/v1/query", params=params)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {r.text[:500]}"
        return list(body["data"]["result"])

    async def value(self, expr: str, at: float | None = None) -> float:
        result = await self.query(expr, at)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    async def alerts(self) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.url}/api/v1/alerts")
        return list(r.json()["data"]["alerts"])

    async def rules(self) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.url}/api/v1/rules")
        return [rule for g in r.json()["data"]["groups"] for rule in g["rules"]]


def key(alert: dict[str, Any]) -> tuple[str, str]:
    labels = alert["labels"]
    return labels["alertname"], labels.get("queue") or labels.get("job") or ""


# ------------------------------------------------------------------ load


class Feeder:
    """The demo's mix of jobs, SPEEDUP times its rate and speed, through the producer API.

    ``failing`` makes that share of BURST's jobs fail at once (one attempt, no retry).
    """

    def __init__(self, http: httpx.AsyncClient, stack: Stack) -> None:
        self.http, self.stack = http, stack
        self.rng = random.Random(7)
        self.failing = 0.0
        self.paused = asyncio.Event()
        self.sent = 0
        self.refused = 0

    def job(self, queue: str) -> dict[str, Any]:
        roll = self.rng.random()
        flaky, failing = (0.20, 0.08) if queue == TROUBLED else (0.02, 0.0)
        sim: dict[str, Any] = {}
        if roll < 0.10:
            sim = {"sleep_ms": self.rng.randint(2000, 8000) // SPEEDUP}
        elif roll < 0.10 + flaky:
            sim = {"fail_attempts": 1}
        elif roll < 0.10 + flaky + failing:
            sim = {"fail": True}
        data = {**DEMO_PAYLOADS.get(queue, {})}
        job: dict[str, Any] = {"name": "demo", "data": {**data, "_simulate": sim} if sim else data}
        if queue == BURST and self.rng.random() < self.failing:
            job.update(data={**data, "_simulate": {"fail": True}}, attempts=1)
        if self.rng.random() < 0.25:
            job["delay_ms"] = 3000 // SPEEDUP
        job["priority"] = self.rng.choice([1, 2, 3])
        return job

    async def run(self) -> None:
        per_tick, tick = DEMO_JOBS_PER_QUEUE_S * SPEEDUP * 0.25, 0.25
        owed = dict.fromkeys(QUEUES, 0.0)
        auth = {"Authorization": f"Bearer {self.stack.token}"}
        while True:
            if self.paused.is_set():
                await asyncio.sleep(tick)
                continue
            for q in QUEUES:
                owed[q] += per_tick
                n, owed[q] = int(owed[q]), owed[q] - int(owed[q])
                if not n:
                    continue
                r = await self.http.post(
                    f"{self.stack.producer}/jobs/{q}/bulk", json={"jobs": [self.job(q) for _ in range(n)]}, headers=auth
                )
                assert r.status_code == 202, r.text
                self.sent += n
            if self.rng.random() < 0.05:  # now and then a client sends garbage
                r = await self.http.post(f"{self.stack.producer}/jobs/{BURST}", content=b"{", headers=auth)
                assert r.status_code == 400
                self.refused += 1
            await asyncio.sleep(tick)


# ------------------------------------------------------------------ the test


@dataclass
class Watch:
    """The alerts' states, as often as polled: (alertname, queue or job) -> when it last turned pending
    (became active) and when it last turned firing, in seconds since the watch began."""

    prom: Prom
    since: float = field(default_factory=time.monotonic)
    pending: dict[tuple[str, str], float] = field(default_factory=dict)
    firing: dict[tuple[str, str], float] = field(default_factory=dict)
    states: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def active(self) -> set[tuple[str, str]]:
        return set(self.states)

    def now(self) -> float:
        return time.monotonic() - self.since

    async def poll(self) -> None:
        now = self.now()
        states: dict[tuple[str, str], str] = {}
        for a in await self.prom.alerts():  # several targets of one job: firing wins
            states[key(a)] = "firing" if "firing" in (a["state"], states.get(key(a))) else a["state"]
        for k, state in states.items():
            if k not in self.states:
                self.pending[k] = now
            if state == "firing" and self.states.get(k) != "firing":
                self.firing[k] = now
        self.states = states

    async def until(self, what: str, timeout: float, condition: Any) -> float:
        """Poll until ``condition(self)``; return when (seconds since the watch began)."""
        deadline = time.monotonic() + timeout
        while True:
            await self.poll()
            if condition(self):
                return self.now()
            assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s; active: {sorted(self.active)}"
            await asyncio.sleep(0.5)


async def test_prometheus_with_the_charts_rules_and_dashboards(tmp_path: Path) -> None:
    _prometheus()
    rules, shipped = render_rules(tmp_path / "helm")
    report: list[str] = [f"time runs {SPEEDUP}x faster: for: and windows / {SPEEDUP}"]
    async with local_stack(tmp_path) as stack, httpx.AsyncClient(timeout=10) as http:
        with prometheus(tmp_path, rules, stack) as url:
            prom = Prom(http, url)
            expected_targets = 2 * (2 + len(QUEUES))

            async def all_up() -> bool:
                try:
                    up = await prom.query("up")
                except (httpx.HTTPError, AssertionError, ValueError):
                    return False
                return len(up) == expected_targets and all(s["value"][1] == "1" for s in up)

            deadline = time.monotonic() + 60
            while not await all_up():
                assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
                await asyncio.sleep(0.5)

            feeder = Feeder(http, stack)
            feeding = asyncio.create_task(feeder.run())
            try:
                await _run(prom, stack, feeder, shipped, report)
            finally:
                feeding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeding
                for name in stack.children():  # nothing stays stopped for the shutdown
                    with contextlib.suppress(ProcessLookupError, AssertionError):
                        stack.signal(name, signal.SIGCONT)
    print("\n".join(report))


async def _run(prom: Prom, stack: Stack, feeder: Feeder, shipped: dict[str, dict[str, Any]], report: list[str]) -> None:
    # ------------------------------------------------------------ healthy: nothing fires, nothing even pending
    # From the first job on nothing may fire. While the windows fill, a ratio of a few jobs may cross a
    # threshold for a moment (pending, never for its for:); past the longest window nothing may be pending.
    await asyncio.sleep(2)  # one more evaluation: states from before the first scrapes are gone
    warmup = Watch(prom)
    while warmup.now() < WARMUP_S:
        await warmup.poll()
        await asyncio.sleep(1)
    watch = Watch(prom)
    while watch.now() < HEALTHY_S:
        await watch.poll()
        await asyncio.sleep(1)
    assert not warmup.firing and not watch.firing, f"a healthy run fired: {warmup.firing} {watch.firing}"
    assert not watch.pending, f"a healthy run raised alerts: {watch.pending}"
    broken = [(r["name"], r.get("lastError")) for r in await prom.rules() if r["health"] != "ok"]
    assert not broken, broken
    alerting = [r for r in await prom.rules() if r["type"] == "alerting"]
    report.append(
        f"healthy: {WARMUP_S + HEALTHY_S}s ({(WARMUP_S + HEALTHY_S) * SPEEDUP / 60:.0f} compressed minutes), "
        f"{feeder.sent} jobs, {feeder.refused} refused requests; {len(alerting)} alert rules evaluate without error; "
        f"none fired; pending while the windows filled: {sorted(warmup.pending) or 'none'}; none after"
    )

    # ------------------------------------------------------------ the dashboards
    values = {"namespace": NS, "release": RELEASE, "queue": ".*", "datasource": "prometheus"}
    empty: dict[str, str] = {}
    with_data = 0
    now = time.time()
    for name, board in dashboards().items():
        board_values = {**values, "queue": TROUBLED} if name == "queue-detail.json" else values
        for where, expr in _targets(name, board, board_values):
            result = await prom.query(expr, now)
            if any(math.isfinite(float(s["value"][1])) for s in result):
                with_data += 1
            else:
                empty[where] = expr
    assert set(empty) == set(NO_DATA), (
        f"no data (not in NO_DATA): {sorted(set(empty) - set(NO_DATA))}; "
        f"in NO_DATA but has data: {sorted(set(NO_DATA) - set(empty))}"
    )
    reasons = sorted(set(NO_DATA.values()))
    report.append(f"dashboards: {with_data} queries with data; {len(empty)} without, as listed: {reasons}")

    # One release at a time: the twin's copies of every series change nothing the dashboards show.
    alive = _panel_expr("overview.json", "Workers alive", "A", values)
    assert await prom.value(alive) == len(QUEUES)
    assert await prom.value('sum(jetqueue_workers{status!="OFFLINE"})') == 2 * len(QUEUES)  # both releases
    # Per worker panels: one line per process, named by its instance where there is no pod label.
    per_worker = _panel_expr("workers.json", "Completed / s per worker", "A", values)
    lines = {s["metric"]["target"] for s in await prom.query(per_worker)}
    assert lines == {f"127.0.0.1:{p}" for p in stack.worker_ports.values()}, lines
    # One definition of failure: the dashboard's job success rate is 1 - the alert's dead-lettered share.
    ratio = shipped["JetqueueFailureRateHigh"]["expr"].split("\n) > ")[0] + "\n)"
    ratio = compress_rules([{"name": "x", "rules": [{"alert": "x", "expr": ratio}]}])[0]["rules"][0]["expr"]
    success = _panel_expr("overview.json", "Job success rate by queue", "A", values)
    at = time.time()
    alert_side = {s["metric"]["queue"]: float(s["value"][1]) for s in await prom.query(ratio, at)}
    board_side = {s["metric"]["queue"]: 1 - float(s["value"][1]) for s in await prom.query(success, at)}
    assert alert_side.keys() == board_side.keys() == set(QUEUES)
    for q in QUEUES:
        assert alert_side[q] == pytest.approx(board_side[q], abs=1e-9), q
    report.append(f"one line per worker process (by instance, no pod label): {sorted(lines)}")
    report.append(f"job-level failure share (alert = 1 - dashboard): {alert_side}")

    # ------------------------------------------------------------ a worker killed
    offline = ("JetqueueWorkerOffline", KILLED)
    t0 = watch.now()
    stack.signal(f"worker {KILLED}", signal.SIGKILL)
    report.append(f"worker killed: {await fires(watch, shipped, offline, t0, 20)}")
    assert watch.active <= {offline}, watch.active

    # ------------------------------------------------------------ a burst of failing jobs
    burst, dlq = ("JetqueueFailureRateHigh", BURST), ("JetqueueDeadLettersGrowing", BURST)
    t0 = watch.now()
    feeder.failing = 0.6
    window = seconds("10m") / SPEEDUP  # the ratio needs part of its window to cross the threshold
    report.append(f"failing burst: {await fires(watch, shipped, burst, t0, window + 20)}")
    report.append(f"failing burst: {await fires(watch, shipped, dlq, t0, window + 30)}")
    assert watch.active <= {offline, burst, dlq}, watch.active
    # The failing worker is DEGRADED and still counted alive, as the monitor counts it.
    degraded = f'sum(jetqueue_workers{{namespace="{NS}", release="{RELEASE}", status="DEGRADED", queue="{BURST}"}})'
    deadline = time.monotonic() + 20
    while await prom.value(degraded) < 1:
        assert time.monotonic() < deadline, "the failing worker never turned DEGRADED"
        await asyncio.sleep(0.5)
    assert await prom.value(alive) == len(QUEUES)
    report.append(f"the failing worker is DEGRADED; 'Workers alive' still shows {len(QUEUES)}")

    # ------------------------------------------------------------ the monitor stopped
    down = ("JetqueueMonitorDown", "")
    t0 = watch.now()
    stopped = {"jetqueue-monitor": t0}  # when each job's targets stopped answering
    stack.signal("monitor", signal.SIGSTOP)
    report.append(f"monitor stopped: {await fires(watch, shipped, down, t0, 10)}")
    # Its counts are stale: the dead-letter alert on them went quiet; the workers' failure alert holds.
    assert dlq not in watch.active and burst in watch.active, watch.active
    report.append("monitor stopped: JetqueueDeadLettersGrowing on its stale counts resolved, FailureRateHigh held")

    # ------------------------------------------------------------ every target stopped
    feeder.paused.set()
    await asyncio.sleep(1)  # requests under way finish before the producer stops
    t0 = watch.now()
    for name in stack.children():
        if name != "monitor":
            stack.signal(name, signal.SIGSTOP)
    quiet = await watch.until("FailureRateHigh resolved", 10, lambda w: burst not in w.active) - t0
    report.append(f"every target stopped: JetqueueFailureRateHigh on stale rates resolved after {quiet:.1f}s")
    scrape = set()
    for job in ("jetqueue-producer", "jetqueue-monitor", "jetqueue-workers"):
        scrape.add(("JetqueueScrapeFailing", job))
        since = stopped.get(job, t0)
        report.append(f"every target stopped: {await fires(watch, shipped, ('JetqueueScrapeFailing', job), since, 10)}")
    assert watch.active == scrape | {down}, watch.active


async def fires(
    watch: Watch, shipped: dict[str, dict[str, Any]], alert: tuple[str, str], t0: float, slack: float
) -> str:
    """Wait until ``alert`` fires, at most its ``for:`` plus ``slack`` seconds after ``t0``; say when."""
    for_ = seconds(shipped[alert[0]]["for"]) / SPEEDUP
    await watch.until(
        f"{alert} firing",
        t0 + for_ + slack - watch.now(),
        lambda w: w.states.get(alert) == "firing" and w.firing[alert] >= t0,
    )
    pending, fired = watch.pending[alert] - t0, watch.firing[alert] - t0
    return f"{alert[0]} {alert[1]} pending at {pending:+.1f}s, firing at {fired:+.1f}s (for: {for_:g}s)"


def _targets(name: str, board: dict[str, Any], values: dict[str, str]) -> Iterator[tuple[str, str]]:
    for p in panels(board["panels"]):
        for t in p.get("targets") or []:
            expr = t["expr"].replace("$__rate_interval", RATE_INTERVAL)
            yield f"{name} panel {p['title']!r} {t['refId']}", grafana_to_promql(expr, values)


def _panel_expr(name: str, title: str, ref: str, values: dict[str, str]) -> str:
    (expr,) = [e for where, e in _targets(name, dashboards()[name], values) if where == f"{name} panel {title!r} {ref}"]
    return expr
