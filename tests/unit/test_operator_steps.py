"""The operator's reconcile steps as pure functions of a JobQueue: the worker pod, its spread and
budget, the queue's stream. Tested here without a Kubernetes API (the emulator tests in
tests/e2e/test_operator.py cover the handlers that apply them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.js.api import StorageType

from jetqueue_operator import streams, workload
from jetqueue_operator.resources import InvalidSpec, StreamSettings, parse_jobqueue
from jetqueue_operator.settings import OperatorSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "k8s" / "examples" / "jobqueues.yaml"


def examples() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLES.read_text("utf-8")) if d]


def test_every_example_gives_a_probed_hardened_worker_pod() -> None:
    docs = examples()
    assert len(docs) == 11  # the seed's queues
    for doc in docs:
        name = doc["metadata"]["name"]
        spec, queue = parse_jobqueue(name, doc["spec"])
        pod = workload.pod_template(name, spec, queue, OperatorSettings())
        (worker,) = [c for c in pod["spec"]["containers"] if c["name"] == "worker"]
        assert worker["livenessProbe"]["httpGet"]["path"] == "/health"
        assert worker["startupProbe"]["httpGet"]["path"] == "/health"
        assert worker["readinessProbe"]["httpGet"]["path"] == "/ready"
        sc = worker["securityContext"]
        assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert {"name": "JETQUEUE_WORKER_QUEUE", "value": queue.name} in worker["env"]


def test_workers_spread_over_zones_then_hosts_unless_the_spec_says_otherwise() -> None:
    spec, _q = parse_jobqueue("mail", {"worker": {"concurrency": 2}})
    keys = [c["topologyKey"] for c in workload.topology_spread("mail", spec)]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in workload.topology_spread("mail", spec))
    own = {"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"}
    spec, _q = parse_jobqueue("mail", {"worker": {"topologySpreadConstraints": [own]}})
    assert workload.topology_spread("mail", spec) == [own]


def test_the_disruption_budget_is_on_by_default_and_can_be_turned_off() -> None:
    spec, q = parse_jobqueue("mail", {})
    pdb = workload.pod_disruption_budget("mail", "jobs", spec, q.name)
    assert pdb is not None and pdb["kind"] == "PodDisruptionBudget" and "maxUnavailable" in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == workload.selector_labels("mail")
    spec, q = parse_jobqueue("mail", {"worker": {"podDisruptionBudget": {"enabled": False}}})
    assert workload.pod_disruption_budget("mail", "jobs", spec, q.name) is None


def test_the_stream_takes_the_deployment_replicas_storage_and_owner() -> None:
    _spec, q = parse_jobqueue("mail", {})
    cfg = streams.stream_config(q, StreamSettings(storage="memory"), owner="jobs/mail", replicas=3)
    assert cfg.num_replicas == 3 and cfg.storage == StorageType.MEMORY
    assert cfg.metadata is not None and "jobs/mail" in cfg.metadata.values()


def test_a_bad_spec_names_every_problem() -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_jobqueue("mail", {"worker": {"concurrency": 0}, "scaling": {"minReplicas": -1}})
    text = str(err.value)
    assert "concurrency" in text and "minReplicas" in text
