"""Dashboards and alerts against the metrics the running services really export; spans of control actions.

The producer, a worker process, the monitor and the operator (kopf against
kmock's emulator) run for real on one nats-server; a few jobs, a rejected
request, a QueueAction and a misconfigured JobQueue make their labelled series
appear. Every PromQL expression of every dashboard panel, template variable
and alert rule (the chart's PrometheusRule, rendered by Helm) is parsed with a
real PromQL parser, and each metric name, label matcher and grouping label must
be one a scrape returned. ``docs/metrics.md`` must list exactly what is exported.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kmock
import promql_parser as pp
import pytest
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.embedded import EmbeddedNats, free_port
from jetqueue.processors import ProcessorRegistry
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app as create_monitor
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_operator.kube import KubeApi
from jetqueue_operator.settings import OperatorSettings
from jetqueue_producer.app import create_app as create_producer
from jetqueue_producer.settings import ProducerSettings
from jetqueue_worker.processors import register_all
from tests.conftest import WorkerProcess, eventually
from tests.e2e.conftest import serve
from tests.e2e.test_chart import AUTH, CHART, merged, render, render_prometheus_rule
from tests.e2e.test_operator import (
    NS,
    Cluster,
    Emulator,
    catalog_of,
    jobqueue,
    queueaction,
    register_resources,
    running_operator,
    settings_for,
    wait_phase,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = CHART / "dashboards"
Q = "email-send"
PROBE = "obs-probe"  # the operator's JobQueue (a queue of its own: the catalog's are provisioned by the tests)
ADMIN_TOKEN = "obs-admin-token"
# Labels Prometheus adds to every series when it scrapes (pod and namespace from the Pod/ServiceMonitors,
# release from their relabeling).
TARGET_LABELS = {"job", "instance", "pod", "namespace", "container", "service", "endpoint", "release"}
# Series Prometheus writes itself for every target it scrapes (with the target labels only).
PROMETHEUS_SERIES = {"up"}
# Grafana's built-in interval variables; every other $variable becomes VAR (its values come from Prometheus).
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
VAR = "grafana_variable"

pytestmark = [pytest.mark.timeout(120)]


# ------------------------------------------------------------- what is exported


@dataclass
class Exported:
    """Sample names from the scrapes, with the label names and values seen on each."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    documented_names: set[str] = field(default_factory=set)  # as docs/metrics.md names them

    def add(self, text: str) -> None:
        families = [f for f in text_string_to_metric_families(text) if f.name.startswith("jetqueue_")]
        with_created = {f.name for f in families if f.type in ("counter", "histogram")}
        for family in families:
            # prometheus_client's <counter>_created / <histogram>_created: a by-product, not a metric of ours.
            if not (family.name.endswith("_created") and family.name.removesuffix("_created") in with_created):
                self.documented_names.add(family.name + "_total" if family.type == "counter" else family.name)
            for s in family.samples:
                self.labels.setdefault(s.name, set()).update(s.labels)
                for k, v in s.labels.items():
                    self.values.setdefault((s.name, k), set()).add(v)


def selectors(node: Any) -> list[Any]:
    """The vector selectors in a PromQL subtree."""
    found: list[Any] = []

    def visit(n: Any) -> bool:
        if isinstance(n, pp.VectorSelector):
            found.append(n)
        return True

    pp.walk(node, visit)
    return found


def selector_names(sel: Any) -> list[str]:
    """The metric names a selector reads: its name, or the names a ``{__name__=~"a|b"}`` lists."""
    if sel.name:
        return [sel.name]
    return [
        name
        for m in sel.matchers.matchers
        if m.name == "__name__" and m.op == pp.MatchOp.Re
        for name in m.value.split("|")
        if re.fullmatch(r"\w+", name)
    ]


def check_promql(where: str, expr: str, exported: Exported) -> list[str]:
    """What in ``expr`` no service exports: metric names, matched labels and values, grouping labels."""
    try:
        ast = pp.parse(expr)
    except ValueError as exc:
        return [f"{where}: not PromQL ({exc}): {expr}"]
    problems: list[str] = []

    def has_label(name: str, label: str) -> bool:
        return label in TARGET_LABELS or label in exported.labels.get(name, set())

    def visit(n: Any) -> bool:
        if isinstance(n, pp.VectorSelector):
            if not selector_names(n):
                problems.append(f"{where}: a selector without a metric name: {expr}")
            for name in selector_names(n):
                if name not in exported.labels and name not in PROMETHEUS_SERIES:
                    problems.append(f"{where}: {name} is not exported by any service")
                    continue
                for m in n.matchers.matchers:
                    if m.name == "__name__":
                        continue
                    if not has_label(name, m.name):
                        problems.append(f"{where}: {name} has no label {m.name!r}")
                    elif (
                        m.op == pp.MatchOp.Equal
                        and m.name not in TARGET_LABELS
                        and VAR not in m.value
                        and m.value not in exported.values.get((name, m.name), set())
                    ):
                        problems.append(f"{where}: {name} never has {m.name}={m.value!r}")
        elif isinstance(n, pp.AggregateExpr) and n.modifier is not None and n.modifier.type == pp.AggModifierType.By:
            for sel in selectors(n.expr):
                problems.extend(
                    f"{where}: 'by ({label})' but {name} has no label {label!r}"
                    for name in selector_names(sel)
                    for label in n.modifier.labels
                    if name in exported.labels and not has_label(name, label)
                )
        elif isinstance(n, pp.BinaryExpr) and n.modifier is not None and n.modifier.matching is not None:
            for side in (n.lhs, n.rhs):
                for sel in selectors(side):
                    problems.extend(
                        f"{where}: 'on/ignoring ({label})' but {name} has no label {label!r}"
                        for name in selector_names(sel)
                        for label in n.modifier.matching.labels
                        if name in exported.labels and not has_label(name, label)
                    )
        return True

    pp.walk(ast, visit)
    return problems


# ------------------------------------------------------------- what is referenced


def grafana_to_promql(text: str, values: dict[str, str] | None = None) -> str:
    """Grafana's variables replaced (by ``values``, else by VAR), so the query is plain PromQL.

    ``$1`` (a label_replace group) is no variable: Grafana's names start with a letter.
    """
    for var, value in GRAFANA_INTERVALS.items():
        text = text.replace(var, value)

    def value_of(m: re.Match[str]) -> str:
        return (values or {}).get(m.group(1) or m.group(2), VAR)

    return re.sub(r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)", value_of, text)


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text("utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in items:
        yield p
        yield from panels(p.get("panels") or [])


def dashboard_queries(
    name: str, board: dict[str, Any], values: dict[str, str] | None = None
) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable (variables replaced by ``values``)."""
    for p in panels(board["panels"]):
        for t in p.get("targets") or []:
            if t.get("expr"):
                yield f"{name} panel {p['title']!r} {t['refId']}", grafana_to_promql(t["expr"], values)
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", query)
        assert m, f"{name} variable {var['name']}: only label_values(<selector>, <label>) is expected, got {query!r}"
        # label_values(sel, label) reads the label off the selector's series: check it as a grouping.
        yield f"{name} variable {var['name']!r}", f"max by ({m.group(2)}) ({grafana_to_promql(m.group(1), values)})"


def alert_queries(rule: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            yield f"alert {r.get('alert') or r.get('record')}", r["expr"]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def prometheus_rule(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The chart's PrometheusRule with a per-queue lag threshold, so that branch is rendered too."""
    return render_prometheus_rule(
        tmp_path_factory.mktemp("helm"), {"lagSecondsThresholdByQueue": {"report-generate": 1800, "ei-update": 60}}
    )


@contextlib.asynccontextmanager
async def emulated_cluster() -> AsyncIterator[Cluster]:
    async with Emulator() as emu, kmock.Server(emu) as server:
        register_resources(emu)
        url = str(server.url).rstrip("/")
        kube = KubeApi.for_host(url, verify_ssl=False)
        try:
            yield Cluster(emu, url, kube)
        finally:
            kube.close()


def operator_settings(nats_server: EmbeddedNats, **kw: Any) -> OperatorSettings:
    return settings_for(nats_server, standalone=True, **kw)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    old = trace._TRACER_PROVIDER  # the global provider can be set once per process: swap it for the test
    trace._TRACER_PROVIDER = provider
    yield exporter
    trace._TRACER_PROVIDER = old


# --------------------------------------------------------------------- tests


def test_dashboards_are_importable_and_pick_their_datasource() -> None:
    boards = dashboards()
    assert set(boards) == {"overview.json", "queue-detail.json", "workers.json", "nats.json"}
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    for name, b in boards.items():
        variables = {v["name"]: v for v in b["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        assert "queue" in variables, name
        ids = [p["id"] for p in panels(b["panels"])]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for p in panels(b["panels"]):
            if p["type"] == "row":
                continue
            # A fixed datasource uid would break on every Grafana but the author's.
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, p["title"])
            assert p["targets"], (name, p["title"])
            assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, (name, p["title"])
    detail = {v["name"]: v for v in boards["queue-detail.json"]["templating"]["list"]}
    assert not detail["queue"].get("multi") and not detail["queue"].get("includeAll")  # one queue at a time
    titles = {p["title"] for p in panels(boards["queue-detail.json"]["panels"])}
    assert {"Errors by reason / s", "Replicas: set, desired by the lag, ready", "Lag: oldest undelivered job"} <= titles


SCOPED = {"namespace": "grafana_namespace", "release": "grafana_release", "queue": "grafana_queue"}


def _matchers(sel: Any) -> dict[str, tuple[Any, str]]:
    return {m.name: (m.op, m.value) for m in sel.matchers.matchers}


def test_every_query_selects_one_release(prometheus_rule: dict[str, Any], tmp_path: Path) -> None:
    """Two releases in one Prometheus never add up: every selector names the namespace and the release."""
    unscoped = []
    for name, board in dashboards().items():
        for where, expr in dashboard_queries(name, board, SCOPED):
            for sel in selectors(pp.parse(expr)):
                m = _matchers(sel)
                want = {
                    "namespace": (pp.MatchOp.Re, SCOPED["namespace"]),
                    "release": (pp.MatchOp.Re, SCOPED["release"]),
                }
                if where.endswith("variable 'namespace'"):
                    want = {}  # the first choice: every namespace jetqueue exports from
                elif where.endswith("variable 'release'"):
                    want = {"namespace": want["namespace"]}
                if any(m.get(k) != v for k, v in want.items()):
                    unscoped.append(f"{where}: {expr}")
    for where, expr in alert_queries(prometheus_rule):
        for sel in selectors(pp.parse(expr)):
            m = _matchers(sel)
            if m.get("namespace") != (pp.MatchOp.Equal, "jetqueue") or m.get("release") != (pp.MatchOp.Equal, "rules"):
                unscoped.append(f"{where}: {sel}")
    assert not unscoped, "\n".join(unscoped)
    # Workers the operator runs in other namespaces are the release's too.
    values = merged(AUTH, {"metrics": {"prometheusRule": {"enabled": True}}})
    values["operator"] = {"watchNamespaces": ["jobs-a", "jobs-b"]}
    release = render(tmp_path, {"rules": values})["releases"]["rules"]
    assert "error" not in release, release.get("error")
    (watched,) = [o for o in release["objects"] if o.get("kind") == "PrometheusRule"]
    for where, expr in alert_queries(watched):
        for sel in selectors(pp.parse(expr)):
            assert _matchers(sel).get("namespace") == (pp.MatchOp.Re, "jetqueue|jobs-a|jobs-b"), (where, expr)


def test_alive_means_not_offline_everywhere(prometheus_rule: dict[str, Any]) -> None:
    """A DEGRADED worker is alive (it runs jobs), as the monitor counts it: no query counts ONLINE alone."""
    statuses = ("ONLINE", "DEGRADED", "OFFLINE")

    def matches(m: Any, status: str) -> bool:
        if m.op == pp.MatchOp.Equal:
            return bool(status == m.value)
        if m.op == pp.MatchOp.NotEqual:
            return bool(status != m.value)
        found = re.fullmatch(m.value, status) is not None
        return found if m.op == pp.MatchOp.Re else not found

    queries = [q for name, board in dashboards().items() for q in dashboard_queries(name, board)]
    queries += list(alert_queries(prometheus_rule))
    counted_alive = 0
    for where, expr in queries:
        for sel in selectors(pp.parse(expr)):
            if sel.name != "jetqueue_workers":
                continue
            for m in sel.matchers.matchers:
                if m.name != "status":
                    continue
                matched = {s for s in statuses if matches(m, s)}
                assert matched != {"ONLINE"} and not ({"ONLINE"} <= matched and "DEGRADED" not in matched), (
                    f"{where} counts ONLINE without DEGRADED workers: {expr}"
                )
                counted_alive += matched == {"ONLINE", "DEGRADED"}
    assert counted_alive >= 4  # overview, workers, NoWorkerOnline, WorkersMissing


def test_job_level_and_attempt_level_rates_are_named_as_such() -> None:
    """A ratio of dead-lettered jobs is a job rate; a ratio of failed attempts an attempt rate: titles say which."""
    ratios = 0
    for name, board in dashboards().items():
        for p in panels(board["panels"]):
            for t in p.get("targets") or []:
                expr = t.get("expr", "")
                if " / " not in expr or "jetqueue_jobs_completed_total" not in expr:
                    continue
                ratios += 1
                named = f"{p['title']} {t.get('legendFormat', '')}".lower()
                kind = "attempt" if "jetqueue_job_errors_total" in expr else "job"
                assert f"{kind} " in named and ("attempt" not in named or kind == "attempt" or "job" in named), (
                    name,
                    p["title"],
                    t["refId"],
                )
    assert ratios >= 6


async def _scrape(http: httpx.AsyncClient, url: str) -> str:
    r = await http.get(url)
    assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:200]}"
    assert r.headers["content-type"].startswith("text/plain"), url
    return r.text


async def _has(http: httpx.AsyncClient, url: str, *needles: str) -> str | None:
    try:
        text = await _scrape(http, url)
    except httpx.HTTPError:
        return None
    return text if all(n in text for n in needles) else None


async def test_dashboards_and_alerts_use_only_exported_metrics(
    nats_server: EmbeddedNats,
    catalog: Catalog,
    nc: NatsClient,
    spawn_worker: Any,
    tmp_path: Path,
    prometheus_rule: dict[str, Any],
) -> None:
    common = CommonSettings(nats_url=nats_server.url)
    worker_port = free_port()
    worker: WorkerProcess = spawn_worker(Q, catalog, JETQUEUE_WORKER_METRICS_PORT=str(worker_port))
    producer = create_producer(
        ProducerSettings(common=common, register_schedules=False, tokens="obs:enqueue:obs-producer-token"),
        catalog=catalog,
    )
    enqueuer = {"Authorization": "Bearer obs-producer-token"}
    monitor = create_monitor(
        MonitorSettings(
            common=common,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}",
            tokens=f"obs:admin:{ADMIN_TOKEN}",
            sample_interval_s=0.5,
        ),
        catalog=catalog,
    )
    op_settings = operator_settings(nats_server, metrics_port=free_port(), metrics_host="127.0.0.1")
    async with (
        serve(producer) as producer_url,
        serve(monitor) as monitor_url,
        emulated_cluster() as cluster,
        running_operator(cluster, op_settings),
        httpx.AsyncClient(timeout=10) as http,
    ):
        # Jobs through the producer API: one completes, one fails twice (retried, then dead-lettered),
        # a duplicate and a refused request.
        job = {"name": "welcome", "data": {"to": "a@example.com", "subject": "Hi", "body": "..."}}
        bad = {"name": "receipt", "attempts": 2, "data": {**job["data"], "_simulate": {"fail": True}}}
        for body, headers in ((job, {"Idempotency-Key": "obs-1"}), (job, {"Idempotency-Key": "obs-1"}), (bad, {})):
            r = await http.post(f"{producer_url}/jobs/{Q}", json=body, headers={**headers, **enqueuer})
            assert r.status_code == 202, r.text
        assert (await http.post(f"{producer_url}/jobs/no-such-queue", json=job, headers=enqueuer)).status_code == 404
        # The operator: a JobQueue, a QueueAction on it, and a second JobQueue claiming the same queue.
        await cluster.create(jobqueue(PROBE, scaling={"minReplicas": 1, "maxReplicas": 2}))
        await wait_ready(cluster, PROBE)
        await cluster.create(queueaction("obs-pause", PROBE, "pause"))
        assert (await wait_phase(cluster, "obs-pause"))["phase"] == "Succeeded"
        await cluster.create(jobqueue("obs-probe-twin", queue=PROBE))

        worker_url = f"http://127.0.0.1:{worker_port}/metrics"
        operator_url = f"http://127.0.0.1:{op_settings.metrics_port}/metrics"
        texts = {
            "worker": await eventually(
                lambda: _has(
                    http,
                    worker_url,
                    f'jetqueue_job_errors_total{{queue="{Q}",reason="exception"}} 2.0',
                    # "receipt" is no job type of the catalog's email-send: counted as other
                    f'jetqueue_jobs_failed_total{{job_name="other",queue="{Q}"}} 1.0',
                    "jetqueue_jobs_completed_total",
                ),
                timeout=30,
                interval=0.2,
                what=f"worker metrics (log: {worker.log_path})",
            ),
            "monitor": await eventually(
                lambda: _has(
                    http,
                    f"{monitor_url}/metrics",
                    f'jetqueue_workers{{queue="{Q}",status="ONLINE"}} 1.0',
                    f'jetqueue_queue_dead_letter{{queue="{Q}"}} 1.0',
                ),
                timeout=30,
                interval=0.2,
                what="monitor metrics",
            ),
            "operator": await eventually(
                lambda: _has(
                    http,
                    operator_url,
                    'jetqueue_operator_actions_total{action="pause",result="Succeeded"} 1.0',
                    'reason="QueueOwnedElsewhere"',
                    f'jetqueue_operator_desired_replicas{{jobqueue="{NS}/{PROBE}",queue="{PROBE}"}}',
                ),
                timeout=30,
                interval=0.2,
                what="operator metrics",
            ),
            "producer": await _scrape(http, f"{producer_url}/metrics"),
        }
    assert 'jetqueue_producer_rejected_total{reason="not_found"} 1.0' in texts["producer"]
    assert f'jetqueue_jobs_duplicate_total{{queue="{Q}"}} 1.0' in texts["producer"]
    exported = Exported()
    for text in texts.values():
        exported.add(text)

    queries = [q for name, board in dashboards().items() for q in dashboard_queries(name, board)]
    assert len(queries) > 60  # every dashboard was read
    problems = [p for where, expr in queries for p in check_promql(where, expr, exported)]
    alerts = list(alert_queries(prometheus_rule))
    assert len(alerts) >= 11
    problems += [p for where, expr in alerts for p in check_promql(where, expr, exported)]
    assert not problems, "\n".join(problems)

    # docs/metrics.md lists exactly what the services export.
    documented = set(re.findall(r"^\| `(jetqueue_\w+)` \|", (ROOT / "docs" / "metrics.md").read_text("utf-8"), re.M))
    assert documented == exported.documented_names, (
        f"exported, not in docs/metrics.md: {sorted(exported.documented_names - documented)}; "
        f"documented, not exported: {sorted(documented - exported.documented_names)}"
    )


def test_the_check_catches_wrong_names_labels_and_values() -> None:
    """The checker itself: each kind of mistake a dashboard could make is reported."""
    exported = Exported()
    exported.add(
        "# TYPE jetqueue_jobs_completed counter\n"
        'jetqueue_jobs_completed_total{queue="q",job_name="x"} 1\n'
        "# TYPE jetqueue_job_duration_seconds histogram\n"
        'jetqueue_job_duration_seconds_bucket{queue="q",le="+Inf"} 1\n'
        'jetqueue_job_duration_seconds_count{queue="q"} 1\n'
        'jetqueue_job_duration_seconds_sum{queue="q"} 1\n'
        "# TYPE jetqueue_workers gauge\n"
        'jetqueue_workers{queue="q",status="ONLINE"} 1\n'
    )
    good = [
        "sum by (queue) (rate(jetqueue_jobs_completed_total[5m]))",
        "histogram_quantile(0.9, sum by (le, pod) (rate(jetqueue_job_duration_seconds_bucket[5m])))",
        'sum(jetqueue_workers{status="ONLINE", queue=~"grafana_variable"}) and on (queue) jetqueue_workers',
    ]
    for expr in good:
        assert check_promql("t", expr, exported) == [], expr
    bad = {
        "rate(jetqueue_jobs_completed[5m])": "not exported",  # the counter without _total
        "rate(jetqueue_job_duration_seconds[5m])": "not exported",  # a histogram has no plain series
        'jetqueue_workers{state="ONLINE"}': "no label 'state'",
        'jetqueue_workers{status="ONLNE"}': "never has status='ONLNE'",
        "sum by (job_name) (jetqueue_workers)": "'by (job_name)'",
        "jetqueue_workers / on (le) jetqueue_jobs_completed_total": "'on/ignoring (le)'",
        "sum(rate(jetqueue_jobs_completed_total[5m])": "not PromQL",
    }
    for expr, message in bad.items():
        found = check_promql("t", expr, exported)
        assert any(message in p for p in found), (expr, found)


# ----------------------------------------------------- bounded labels, counted refusals


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called ``name`` in a scrape."""
    return [
        (dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    ]


def job_name_series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every jetqueue series (sample name and labels) that carries a job_name."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for f in text_string_to_metric_families(text)
        if f.name.startswith("jetqueue_")
        for s in f.samples
        if "job_name" in s.labels
    }


async def test_a_thousand_job_names_from_clients_add_no_series(
    nats_server: EmbeddedNats, catalog: Catalog, nc: NatsClient, spawn_worker: Any
) -> None:
    """A client names its jobs; the job_name label takes only names the system knows, else ``other``."""
    catalog = catalog.replace(Q, job_names=("welcome", "invoice"))  # the queue's job types
    worker_port = free_port()
    worker: WorkerProcess = spawn_worker(Q, catalog, JETQUEUE_WORKER_METRICS_PORT=str(worker_port))
    producer = create_producer(
        ProducerSettings(
            common=CommonSettings(nats_url=nats_server.url),
            register_schedules=False,
            tokens="obs:enqueue:obs-producer-token",
        ),
        catalog=catalog,
    )
    auth = {"Authorization": "Bearer obs-producer-token"}
    known = register_all(ProcessorRegistry()).names(Q) | catalog.job_names(Q)
    assert known == {"welcome", "invoice"}  # the reference pack registers email-send's processor for any name
    worker_url = f"http://127.0.0.1:{worker_port}/metrics"
    n = 1000
    names = [f"client-{i}-{secrets.token_hex(4)}" for i in range(n)]
    data = {"to": "a@example.com", "subject": "Hi", "body": "..."}

    async def all_completed() -> bool:
        text = await _has(http, worker_url, "jetqueue_jobs_completed_total") or ""
        done = sum(v for labels, v in samples(text, "jetqueue_jobs_completed_total") if labels["queue"] == Q)
        return done == n + len(known)

    async with serve(producer) as url, httpx.AsyncClient(timeout=30) as http:
        before = {
            "producer": await _scrape(http, f"{url}/metrics"),
            "worker": await eventually(
                lambda: _has(http, worker_url, "jetqueue_worker_info"),
                timeout=30,
                what=f"the worker's metrics (log: {worker.log_path})",
            ),
        }
        jobs = [{"name": name, "data": data} for name in names] + [{"name": name, "data": data} for name in known]
        r = await http.post(f"{url}/jobs/{Q}/bulk", json={"jobs": jobs}, headers=auth)
        assert r.status_code == 202, r.text
        await eventually(all_completed, timeout=60, interval=0.2, what="every job completed")
        after = {"producer": await _scrape(http, f"{url}/metrics"), "worker": await _scrape(http, worker_url)}

    for where in ("producer", "worker"):
        series = job_name_series(after[where])
        values = {dict(labels)["job_name"] for _, labels in series if dict(labels)["queue"] == Q}
        assert values == known | {"other"}, f"{where}: job_name values {sorted(values)[:8]}..."
        # Every series existed before the first job: 1,000 new names made none.
        assert series == job_name_series(before[where]), (
            f"{where}: {len(job_name_series(before[where]))} job_name series before, {len(series)} after"
        )
    # The made-up names are counted, as `other`; the known ones under their own names.
    enqueued = {
        labels["job_name"]: v
        for labels, v in samples(after["producer"], "jetqueue_jobs_enqueued_total")
        if labels["queue"] == Q
    }
    assert enqueued == {"other": n, **dict.fromkeys(known, 1)}
    done = {
        labels["job_name"]: v
        for labels, v in samples(after["worker"], "jetqueue_jobs_completed_total")
        if labels["queue"] == Q
    }
    assert done == {"other": n, **dict.fromkeys(known, 1)}


REJECT_REASONS = {
    "invalid",
    "not_found",
    "method_not_allowed",
    "conflict",
    "too_large",
    "unavailable",
    "unauthenticated",
    "forbidden",
}


async def test_every_refusal_is_counted_with_its_reason_and_every_series_exists_from_the_start(
    nats_server: EmbeddedNats, catalog: Catalog, nc: NatsClient
) -> None:
    producer = create_producer(
        ProducerSettings(
            common=CommonSettings(nats_url=nats_server.url),
            register_schedules=False,
            tokens="obs:enqueue+read:obs-producer-token,reader:read:obs-reader-token",
        ),
        catalog=catalog,
    )
    auth = {"Authorization": "Bearer obs-producer-token"}
    job = {"name": "welcome", "data": {"to": "a@example.com", "subject": "Hi", "body": "..."}}
    async with serve(producer) as url, httpx.AsyncClient(timeout=10) as http:
        start = await _scrape(http, f"{url}/metrics")
        # Before any request: every reason, every queue, every catalogued job name (and `other`) at 0.
        rejected = {labels["reason"]: v for labels, v in samples(start, "jetqueue_producer_rejected_total")}
        assert rejected == dict.fromkeys(REJECT_REASONS, 0.0)
        duplicates = {labels["queue"]: v for labels, v in samples(start, "jetqueue_jobs_duplicate_total")}
        assert duplicates == dict.fromkeys(catalog.names, 0.0)
        enqueued = {
            (labels["queue"], labels["job_name"]): v for labels, v in samples(start, "jetqueue_jobs_enqueued_total")
        }
        assert enqueued == {(q, name): 0.0 for q in catalog.names for name in catalog.job_names(q) | {"other"}}

        refusals: list[tuple[str, int, str, Callable[[], Awaitable[httpx.Response]]]] = [
            ("no name", 400, "invalid", lambda: http.post(f"{url}/jobs/{Q}", json={"data": {}}, headers=auth)),
            (
                "delay_ms and run_at",
                400,
                "invalid",
                lambda: http.post(
                    f"{url}/jobs/{Q}",
                    json={**job, "delay_ms": 5000, "run_at": "2030-01-01T00:00:00Z"},
                    headers=auth,
                ),
            ),
            (
                "malformed JSON",
                400,
                "invalid",
                lambda: http.post(
                    f"{url}/jobs/{Q}",
                    content=b'{"name": "welcome", ',
                    headers={**auth, "content-type": "application/json"},
                ),
            ),
            ("a bad job id", 400, "invalid", lambda: http.get(f"{url}/jobs/bad.id", headers=auth)),
            (
                "an unknown queue",
                404,
                "not_found",
                lambda: http.post(f"{url}/jobs/no-such-queue", json=job, headers=auth),
            ),
            ("an unknown path", 404, "not_found", lambda: http.get(f"{url}/no/such/path", headers=auth)),
            ("a method the path lacks", 405, "method_not_allowed", lambda: http.patch(f"{url}/jobs/{Q}", headers=auth)),
            (
                "too large",
                413,
                "too_large",
                lambda: http.post(f"{url}/jobs/{Q}", json={**job, "data": {"x": "y" * 2_000_000}}, headers=auth),
            ),
            ("no token", 401, "unauthenticated", lambda: http.post(f"{url}/jobs/{Q}", json=job)),
            (
                "a read-only token enqueues",
                403,
                "forbidden",
                lambda: http.post(f"{url}/jobs/{Q}", json=job, headers={"Authorization": "Bearer obs-reader-token"}),
            ),
        ]
        for what, status, _reason, request in refusals:
            r = await request()
            assert r.status_code == status, (what, r.status_code, r.text[:300])
        end = await _scrape(http, f"{url}/metrics")
    counted = {labels["reason"]: v for labels, v in samples(end, "jetqueue_producer_rejected_total")}
    expected = dict.fromkeys(REJECT_REASONS, 0.0)
    for _what, _status, reason, _request in refusals:
        expected[reason] += 1
    assert counted == expected


# ---------------------------------------------------------------------- spans


def _control_spans(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


async def test_monitor_api_actions_leave_control_spans(
    spans: InMemorySpanExporter, common: CommonSettings, catalog: Catalog, tmp_path: Path
) -> None:
    settings = MonitorSettings(
        common=common,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}",
        tokens=f"ada:operator:{ADMIN_TOKEN}",
    )
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with AsyncTestClient(app=create_monitor(settings, catalog=catalog)) as http:
        r = await http.post(f"/admin/worker-monitor/queues/{Q}/pause", json={"reason": "smtp down"}, headers=auth)
        assert r.status_code == 200, r.text
        r = await http.post("/admin/worker-monitor/jobs/no-such-job/retry", json={}, headers=auth)
        assert r.status_code == 404, r.text

    (pause,) = _control_spans(spans, "control queue_pause")
    attrs = dict(pause.attributes or {})
    assert attrs == {
        "jetqueue.action": "QUEUE_PAUSE",
        "jetqueue.actor": "ada",
        "jetqueue.role": "operator",
        "jetqueue.source": "monitor",
        "jetqueue.entity_type": "QUEUE",
        "jetqueue.queue": Q,
        "jetqueue.result": "ok",
    }
    assert pause.status.is_ok
    (retry,) = _control_spans(spans, "control job_retry")
    assert retry.attributes is not None
    assert retry.attributes["jetqueue.job_id"] == "no-such-job" and retry.attributes["jetqueue.result"] == "error"
    assert retry.status.status_code is trace.StatusCode.ERROR
    assert any(e.name == "exception" for e in retry.events)


async def test_operator_queueaction_leaves_a_control_span(
    spans: InMemorySpanExporter, nats_server: EmbeddedNats, nc: NatsClient
) -> None:
    async with emulated_cluster() as cluster, running_operator(cluster, operator_settings(nats_server)):
        probe_queue = jobqueue(PROBE)
        await cluster.create(probe_queue)
        await wait_ready(cluster, PROBE)
        probe = JobClient(nc, catalog_of(probe_queue))
        for _ in range(3):
            await probe.enqueue(PROBE, "x", {})
        await cluster.create(queueaction("obs-drain", PROBE, "drain", reason="bad batch"))
        assert (await wait_phase(cluster, "obs-drain"))["phase"] == "Succeeded"

    (drain,) = _control_spans(spans, "control queue_drain")
    attrs = dict(drain.attributes or {})
    assert attrs["jetqueue.queue"] == PROBE and attrs["jetqueue.action"] == "QUEUE_DRAIN"
    assert attrs["jetqueue.actor"] == f"kubernetes:queueaction/{NS}/obs-drain"
    assert attrs["jetqueue.source"] == "operator"
    assert attrs["jetqueue.result"] == "ok" and attrs["jetqueue.affected"] == 3
    (parent,) = [s for s in spans.get_finished_spans() if s.name == "QueueAction drain"]
    assert drain.parent is not None and drain.parent.span_id == parent.context.span_id
    assert drain.context.trace_id == parent.context.trace_id
    assert dict(parent.attributes or {})["k8s.namespace.name"] == NS
