"""The chart's alert rules, rendered by Helm and evaluated by promtool against recorded series.

Every alert has series on which it must fire (with the labels it must carry)
and series of a healthy system, or of a look-alike it must leave alone (a
paused queue, a slow but progressing one, a cleanly stopped worker), on which it
must stay quiet. promtool comes from Debian's ``prometheus`` package (``make
promtool``); without it these tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI
from tests.e2e.test_chart import render_prometheus_rule

ROOT = Path(__file__).resolve().parents[2]
RULE_VALUES = {"lagSecondsThresholdByQueue": {"report-generate": 1800}}
# Where render_prometheus_rule installs the chart: the rules select these labels, which the chart's
# ServiceMonitors and PodMonitors give every target (Prometheus adds namespace, the relabeling release).
SCOPE = {"namespace": "jetqueue", "release": "rules"}
# The monitor's last JetStream sample following the clock (one value a minute = time()): fresh counts.
FRESH = {"jetqueue_monitor_last_sample_timestamp_seconds": "0+60x200"}


def scoped(series: str) -> str:
    """``series`` as this release's target exports it: with the scope labels, unless it names a release."""
    name, _, rest = series.partition("{")
    labels = rest.removesuffix("}")
    if "release=" in labels:
        return series
    scope = ",".join(f'{k}="{v}"' for k, v in SCOPE.items())
    return f"{name}{{{scope}{',' + labels if labels else ''}}}"


@dataclass
class Case:
    """Series over time (promtool's expanding notation, one value a minute) and what fires at ``at``.

    Every series gets the release's scope labels (see :func:`scoped`); each expected alert carries
    them too, with its own labels.
    """

    alert: str
    title: str
    series: dict[str, str]
    at: str
    fires: list[dict[str, str]] = field(default_factory=list)  # labels of each expected alert, besides severity


def _queue(q: str, severity: str) -> dict[str, str]:
    return {"queue": q, "severity": severity, **SCOPE}


def _release(severity: str, **labels: str) -> dict[str, str]:
    return {"severity": severity, **SCOPE, **labels}


WORKER_A = {'jetqueue_worker_info{queue="a",worker_id="w1",version="1"}': "1x40"}

CASES = [
    # ---------------------------------------------------------------- failure rate (job level)
    Case(
        "JetqueueFailureRateHigh",
        "a third of the jobs are dead-lettered (two worker pods)",
        {
            'jetqueue_jobs_failed_total{queue="a",job_name="x",pod="w1"}': "0+3x30",
            'jetqueue_jobs_failed_total{queue="a",job_name="x",pod="w2"}': "0+2x30",
            'jetqueue_jobs_completed_total{queue="a",job_name="x",pod="w1"}': "0+10x30",
            **WORKER_A,
        },
        "20m",
        [_queue("a", "warning")],
    ),
    Case(
        "JetqueueFailureRateHigh",
        "every job fails (no completions series at all)",
        {'jetqueue_jobs_failed_total{queue="a",job_name="x"}': "0+5x30", **WORKER_A},
        "20m",
        [_queue("a", "warning")],
    ),
    Case(
        "JetqueueFailureRateHigh",
        "the demo's troubled queue: a third of the attempts fail, 8 % of the jobs are dead-lettered",
        {
            # 27 jobs a minute: 20 % fail once and succeed on retry, 8 % fail all 3 attempts.
            'jetqueue_jobs_completed_total{queue="a",job_name="x"}': "0+25x30",
            'jetqueue_jobs_failed_total{queue="a",job_name="x"}': "0+2x30",
            'jetqueue_jobs_retried_total{queue="a",job_name="x"}': "0+10x30",
            'jetqueue_job_errors_total{queue="a",reason="exception"}': "0+12x30",
            **WORKER_A,
        },
        "20m",
    ),
    Case(
        "JetqueueFailureRateHigh",
        "all of a handful fail (below failureMinimum)",
        {'jetqueue_jobs_failed_total{queue="a",job_name="x"}': "0+0.3x30", **WORKER_A},
        "20m",
    ),
    Case(
        "JetqueueFailureRateHigh",
        "the workers went away: their last rates are stale",
        {
            'jetqueue_jobs_failed_total{queue="a",job_name="x"}': "0+5x12 stale",
            'jetqueue_job_errors_total{queue="a",reason="exception"}': "0+5x12 stale",
            'jetqueue_worker_info{queue="a",worker_id="w1",version="1"}': "1x12 stale",
        },
        "16m",
    ),
    Case(
        "JetqueueFailureRateHigh",
        "another release's queue fails every job",
        {
            'jetqueue_jobs_failed_total{namespace="jetqueue",release="other",queue="a",job_name="x"}': "0+5x30",
            'jetqueue_job_errors_total{namespace="jetqueue",release="other",queue="a",reason="exception"}': "0+5x30",
            'jetqueue_worker_info{namespace="jetqueue",release="other",queue="a",worker_id="w1",version="1"}': "1x30",
            'jetqueue_jobs_completed_total{queue="a",job_name="x"}': "0+10x30",
            **WORKER_A,
        },
        "20m",
    ),
    # ---------------------------------------------------------------- backlog
    Case(
        "JetqueueBacklogHigh",
        "1500 waiting",
        {'jetqueue_queue_waiting{queue="a"}': "1500x30", **FRESH},
        "15m",
        [_queue("a", "warning")],
    ),
    Case("JetqueueBacklogHigh", "900 waiting", {'jetqueue_queue_waiting{queue="a"}': "900x30", **FRESH}, "15m"),
    Case(
        "JetqueueBacklogHigh",
        "1500 waiting, but the monitor has not sampled JetStream for 10 minutes",
        {
            'jetqueue_queue_waiting{queue="a"}': "1500x30",
            "jetqueue_monitor_last_sample_timestamp_seconds": "0+60x5 300x25",
        },
        "15m",
    ),
    Case(
        "JetqueueBacklogNotDraining",
        "the backlog grows and nothing completes",
        {
            'jetqueue_queue_waiting{queue="a"}': "0+10x60",
            'jetqueue_queue_paused{queue="a"}': "0x60",
            'jetqueue_jobs_completed_total{queue="other",job_name="x"}': "0+10x60",
            **FRESH,
        },
        "30m",
        [_queue("a", "critical")],
    ),
    Case(
        "JetqueueBacklogNotDraining",
        "the backlog grows but workers complete jobs",
        {
            'jetqueue_queue_waiting{queue="a"}': "0+10x60",
            'jetqueue_queue_paused{queue="a"}': "0x60",
            'jetqueue_jobs_completed_total{queue="a",job_name="x"}': "0+5x60",
            **FRESH,
        },
        "30m",
    ),
    Case(
        "JetqueueBacklogNotDraining",
        "the backlog grows on a paused queue",
        {'jetqueue_queue_waiting{queue="a"}': "0+10x60", 'jetqueue_queue_paused{queue="a"}': "1x60", **FRESH},
        "30m",
    ),
    Case(
        "JetqueueBacklogNotDraining",
        "the backlog shrinks",
        {'jetqueue_queue_waiting{queue="a"}': "600-10x60", 'jetqueue_queue_paused{queue="a"}': "0x60", **FRESH},
        "30m",
    ),
    # ---------------------------------------------------------------- workers
    Case(
        "JetqueueNoWorkerOnline",
        "jobs wait, every worker is OFFLINE; another queue has no worker series at all",
        {
            'jetqueue_queue_waiting{queue="a"}': "5x20",
            'jetqueue_queue_paused{queue="a"}': "0x20",
            'jetqueue_workers{queue="a",status="ONLINE"}': "0x20",
            'jetqueue_workers{queue="a",status="DEGRADED"}': "0x20",
            'jetqueue_workers{queue="a",status="OFFLINE"}': "2x20",
            'jetqueue_queue_waiting{queue="b"}': "1x20",
            'jetqueue_queue_paused{queue="b"}': "0x20",
            **FRESH,
        },
        "10m",
        [_queue("a", "critical"), _queue("b", "critical")],
    ),
    Case(
        "JetqueueNoWorkerOnline",
        "a DEGRADED worker is alive: it still runs jobs",
        {
            'jetqueue_queue_waiting{queue="a"}': "5x20",
            'jetqueue_queue_paused{queue="a"}': "0x20",
            'jetqueue_workers{queue="a",status="ONLINE"}': "0x20",
            'jetqueue_workers{queue="a",status="DEGRADED"}': "1x20",
            **FRESH,
        },
        "10m",
    ),
    Case(
        "JetqueueNoWorkerOnline",
        "paused, or nothing waiting",
        {
            'jetqueue_queue_waiting{queue="a"}': "5x20",
            'jetqueue_queue_paused{queue="a"}': "1x20",
            'jetqueue_queue_waiting{queue="b"}': "0x20",
            'jetqueue_queue_paused{queue="b"}': "0x20",
            **FRESH,
        },
        "10m",
    ),
    Case(
        "JetqueueWorkerOffline",
        "a worker went silent",
        {'jetqueue_workers_lost{queue="a"}': "0 0 1x10"},
        "6m",
        [_queue("a", "warning")],
    ),
    Case(
        "JetqueueWorkerOffline",
        "workers stopped cleanly (OFFLINE, not lost)",
        {'jetqueue_workers_lost{queue="a"}': "0x10", 'jetqueue_workers{queue="a",status="OFFLINE"}': "3x10"},
        "6m",
    ),
    Case(
        "JetqueueWorkersMissing",
        "the monitor hears two workers of a, Prometheus scrapes none of them (b's it scrapes)",
        {
            'jetqueue_workers{queue="a",status="ONLINE"}': "1x20",
            'jetqueue_workers{queue="a",status="DEGRADED"}': "1x20",
            'jetqueue_workers{queue="a",status="OFFLINE"}': "0x20",
            'jetqueue_workers{queue="b",status="ONLINE"}': "1x20",
            'jetqueue_worker_info{queue="b",worker_id="w1",version="1"}': "1x20",
        },
        "10m",
        [_queue("a", "warning")],
    ),
    Case(
        "JetqueueWorkersMissing",
        "every alive worker is scraped; a queue without alive workers is JetqueueNoWorkerOnline's",
        {
            'jetqueue_workers{queue="a",status="DEGRADED"}': "1x20",
            'jetqueue_worker_info{queue="a",worker_id="w1",version="1"}': "1x20",
            'jetqueue_workers{queue="b",status="ONLINE"}': "0x20",
            'jetqueue_workers{queue="b",status="OFFLINE"}': "2x20",
        },
        "10m",
    ),
    # ---------------------------------------------------------------- dead letters
    Case(
        "JetqueueDeadLettersGrowing",
        "four more dead letters a minute",
        {'jetqueue_queue_dead_letter{queue="a"}': "0x10 0+4x20", **FRESH},
        "30m",
        [_queue("a", "warning")],
    ),
    Case(
        "JetqueueDeadLettersGrowing",
        "the demo's troubled queue: two dead letters a minute",
        {'jetqueue_queue_dead_letter{queue="a"}': "0+2x40", **FRESH},
        "30m",
    ),
    Case(
        "JetqueueDeadLettersGrowing",
        "a steady DLQ, and one emptied by retryFailed",
        {
            'jetqueue_queue_dead_letter{queue="a"}': "3x30",
            'jetqueue_queue_dead_letter{queue="b"}': "100x10 0x20",
            **FRESH,
        },
        "30m",
    ),
    Case(
        "JetqueueDeadLettersGrowing",
        "the monitor went away: its last counts are stale",
        {
            'jetqueue_queue_dead_letter{queue="a"}': "0+6x15 stale",
            "jetqueue_monitor_last_sample_timestamp_seconds": "0+60x15 stale",
        },
        "20m",
    ),
    # ---------------------------------------------------------------- lag
    Case(
        "JetqueueLagHigh",
        "over the default threshold, and over a queue's own",
        {
            'jetqueue_queue_lag_seconds{queue="a"}': "400x20",
            'jetqueue_queue_paused{queue="a"}': "0x20",
            'jetqueue_queue_lag_seconds{queue="report-generate"}': "2000x20",
            'jetqueue_queue_paused{queue="report-generate"}': "0x20",
            **FRESH,
        },
        "10m",
        [_queue("a", "warning"), _queue("report-generate", "warning")],
    ),
    Case(
        "JetqueueLagHigh",
        "within thresholds (report-generate may lag 30 min); a paused queue",
        {
            'jetqueue_queue_lag_seconds{queue="a"}': "100x20",
            'jetqueue_queue_paused{queue="a"}': "0x20",
            'jetqueue_queue_lag_seconds{queue="report-generate"}': "1000x20",
            'jetqueue_queue_paused{queue="report-generate"}': "0x20",
            'jetqueue_queue_lag_seconds{queue="c"}': "4000x20",
            'jetqueue_queue_paused{queue="c"}': "1x20",
            **FRESH,
        },
        "10m",
    ),
    Case(
        "JetqueueQueuePausedLong",
        "paused for 2 h 10 min",
        {'jetqueue_queue_paused{queue="a"}': "1x150", **FRESH},
        "130m",
        [_queue("a", "info")],
    ),
    Case(
        "JetqueueQueuePausedLong",
        "resumed after an hour",
        {'jetqueue_queue_paused{queue="a"}': "1x60 0x90", **FRESH},
        "130m",
    ),
    # ---------------------------------------------------------------- platform
    Case(
        "JetqueueScrapeFailing",
        "a worker pod stopped answering scrapes",
        {
            'up{job="jetqueue/jetqueue-workers",instance="10.0.0.5:9090",pod="w1"}': "1x3 0x20",
            'up{job="jetqueue/jetqueue-workers",instance="10.0.0.6:9090",pod="w2"}': "1x23",
        },
        "10m",
        [
            {
                "job": "jetqueue/jetqueue-workers",
                "instance": "10.0.0.5:9090",
                "pod": "w1",
                "severity": "warning",
                **SCOPE,
            }
        ],
    ),
    Case(
        "JetqueueScrapeFailing",
        "every target answers; another release's target does not",
        {
            'up{job="jetqueue-monitor",instance="10.0.0.7:8090"}': "1x20",
            'up{namespace="jetqueue",release="other",job="jetqueue-monitor",instance="10.0.0.8:8090"}': "0x20",
        },
        "10m",
    ),
    Case(
        "JetqueueMonitorDown",
        "the monitor stopped answering (another release's answers)",
        {
            "jetqueue_monitor_nats_connected": "1x5 stale",
            'jetqueue_monitor_nats_connected{namespace="jetqueue",release="other"}': "1x20",
        },
        "10m",
        [_release("critical")],
    ),
    Case(
        "JetqueueMonitorDown",
        "nothing of the monitor was ever scraped",
        {'jetqueue_worker_info{queue="a",worker_id="w1",version="1"}': "1x20"},
        "10m",
        [_release("critical")],
    ),
    Case(
        "JetqueueMonitorDown",
        "the monitor answers (its NATS connection is another alert's business)",
        {"jetqueue_monitor_nats_connected": "0x20"},
        "10m",
    ),
    Case(
        "JetqueueJetStreamUnreachable",
        "the monitor's NATS connection is down",
        {
            "jetqueue_monitor_nats_connected": "0x20",
            "jetqueue_monitor_last_sample_timestamp_seconds": "0x20",
        },
        "5m",
        [_release("critical")],
    ),
    Case(
        "JetqueueJetStreamUnreachable",
        "connected and sampling (timestamps follow the clock)",
        {"jetqueue_monitor_nats_connected": "1x20", **FRESH},
        "12m",
    ),
    Case(
        "JetqueueSamplesStale",
        "connected, but no sample for 7 minutes",
        {
            "jetqueue_monitor_nats_connected": "1x20",
            "jetqueue_monitor_last_sample_timestamp_seconds": "0+60x5 300x15",
        },
        "12m",
        [_release("critical")],
    ),
    Case(
        "JetqueueSamplesStale",
        "sampling; or not sampling because NATS is lost (JetqueueJetStreamUnreachable's)",
        {
            "jetqueue_monitor_nats_connected": "1x20",
            **FRESH,
            'jetqueue_monitor_nats_connected{namespace="jetqueue",release="b"}': "0x20",
            'jetqueue_monitor_last_sample_timestamp_seconds{namespace="jetqueue",release="b"}': "0+60x5 300x15",
        },
        "12m",
    ),
    Case(
        "JetqueueMonitorIngestLagging",
        "history 400 s behind while records wait",
        {
            "jetqueue_monitor_ingest_lag_seconds": "400x30",
            'jetqueue_monitor_ingest_pending_messages{source="events"}': "50x30",
        },
        "15m",
        [_release("warning")],
    ),
    Case(
        "JetqueueMonitorIngestLagging",
        "history 400 s behind: the store refuses records",
        {
            "jetqueue_monitor_ingest_lag_seconds": "400x30",
            'jetqueue_monitor_ingest_pending_messages{source="events"}': "0x30",
            "jetqueue_monitor_ingest_db_errors": "0+1x30",
        },
        "15m",
        [_release("warning")],
    ),
    Case(
        "JetqueueMonitorIngestLagging",
        "history current",
        {
            "jetqueue_monitor_ingest_lag_seconds": "2x30",
            'jetqueue_monitor_ingest_pending_messages{source="events"}': "10x30",
        },
        "15m",
    ),
    Case(
        "JetqueueMonitorIngestLagging",
        "an idle system: no record for 30 minutes, none waiting",
        {
            "jetqueue_monitor_ingest_lag_seconds": "0+60x30",
            'jetqueue_monitor_ingest_pending_messages{source="events"}': "0x30",
            "jetqueue_monitor_ingest_db_errors": "0x30",
        },
        "25m",
    ),
    Case(
        "JetqueueOperatorNotReconciling",
        "one JobQueue stopped reconciling at 5 min; another never did",
        {
            'jetqueue_operator_last_reconcile_success_timestamp_seconds{jobqueue="jobs/a",queue="a"}': "0+60x5 300x20",
            'jetqueue_operator_last_reconcile_success_timestamp_seconds{jobqueue="jobs/b",queue="b"}': "0x25",
            'jetqueue_operator_last_reconcile_success_timestamp_seconds{jobqueue="jobs/c",queue="c"}': "0+60x25",
            'jetqueue_operator_reconciles_total{kind="JobQueue",result="success"}': "0+20x25",
        },
        "20m",
        [_release("warning", jobqueue="jobs/a", queue="a"), _release("warning", jobqueue="jobs/b", queue="b")],
    ),
    Case(
        "JetqueueOperatorNotReconciling",
        "no operator exports anything",
        {'jetqueue_queue_waiting{queue="a"}': "0x20"},
        "10m",
        [_release("warning", kind="JobQueue")],
    ),
    Case(
        "JetqueueOperatorNotReconciling",
        "every JobQueue reconciled within the last seconds",
        {
            'jetqueue_operator_last_reconcile_success_timestamp_seconds{jobqueue="jobs/a",queue="a"}': "0+60x25",
            'jetqueue_operator_reconciles_total{kind="JobQueue",result="success"}': "0+20x25",
        },
        "20m",
    ),
]


def _promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    message = "promtool is missing: run `make promtool` (Debian's prometheus package); alert rules not evaluated"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def rule(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return render_prometheus_rule(tmp_path_factory.mktemp("helm"), RULE_VALUES)


def _alerts(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_accepts_the_rules(rule: dict[str, Any], tmp_path: Path) -> None:
    """Syntax, PromQL and the annotation templates, as Prometheus would load them."""
    promtool = _promtool()
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), "utf-8")
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts(rule))} rules found" in proc.stdout


def test_every_alert_fires_on_trouble_and_not_on_health(rule: dict[str, Any], tmp_path: Path) -> None:
    promtool = _promtool()
    alerts = _alerts(rule)
    tested = {c.alert for c in CASES}
    assert tested == set(alerts), (
        f"alerts without cases: {set(alerts) - tested}; cases of no alert: {tested - set(alerts)}"
    )
    for name in alerts:
        kinds = {bool(c.fires) for c in CASES if c.alert == name}
        assert kinds == {True, False}, f"{name} needs a case where it fires and one where it must not"
    # The annotations' texts are checked by `promtool check rules` above; here only when and with which labels.
    groups = [
        {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
        for g in rule["spec"]["groups"]
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}), "utf-8")
    tests = [
        {
            "name": f"{c.alert}: {c.title}",
            "interval": "1m",
            "input_series": [{"series": scoped(s), "values": v} for s, v in c.series.items()],
            "alert_rule_test": [
                {"eval_time": c.at, "alertname": c.alert, "exp_alerts": [{"exp_labels": labels} for labels in c.fires]}
            ],
        }
        for c in CASES
    ]
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}))
    proc = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "SUCCESS" in proc.stdout


def test_every_alert_links_its_runbook(rule: dict[str, Any]) -> None:
    headings = re.findall(r"^#{2,4} (Jetqueue\w+)$", (ROOT / "docs" / "operations.md").read_text("utf-8"), re.M)
    for name, r in _alerts(rule).items():
        assert name in headings, f"docs/operations.md has no runbook section '### {name}'"
        assert r["annotations"]["runbook_url"] == f"docs/operations.md#{name.lower()}"
        assert r["annotations"]["summary"] and r["annotations"]["description"], name
        assert r["labels"]["severity"] in ("info", "warning", "critical"), name
    assert sorted(headings) == sorted(set(headings)), "a runbook section appears twice"
