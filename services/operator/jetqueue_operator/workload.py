"""The worker Deployment, PodDisruptionBudget and catalog ConfigMap of a JobQueue (pure manifest builders)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from jetqueue.catalog import QueueSpec
from jetqueue_operator.resources import JobQueueSpec
from jetqueue_operator.settings import OperatorSettings

CATALOG_DIR = "/etc/jetqueue"
CATALOG_FILE = "catalog.yaml"
METRICS_PORT = 9090
TLS_DIR = "/etc/jetqueue-nats-tls"
HASH_ANNOTATION = "jetqueue.io/template-hash"
QUEUE_LABEL = "jetqueue.io/queue"
JOBQUEUE_LABEL = "jetqueue.io/jobqueue"


def deployment_name(jobqueue: str) -> str:
    return f"jetqueue-worker-{jobqueue}"


def pdb_name(jobqueue: str) -> str:
    return f"jetqueue-worker-{jobqueue}"


def configmap_name(jobqueue: str) -> str:
    return f"jetqueue-worker-{jobqueue}-catalog"


def selector_labels(jobqueue: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "jetqueue",
        "app.kubernetes.io/component": "worker",
        JOBQUEUE_LABEL: jobqueue,
    }


def labels(jobqueue: str, queue: str) -> dict[str, str]:
    return {**selector_labels(jobqueue), QUEUE_LABEL: queue, "app.kubernetes.io/managed-by": "jetqueue-operator"}


def catalog_yaml(queue: QueueSpec, alerts_queue: str = "") -> str:
    """A one-queue catalog file the worker loads (JETQUEUE_CATALOG), with where admin alerts go."""
    doc: dict[str, Any] = {"queues": [queue.model_dump(mode="json")]}
    if alerts_queue:
        doc["alerts"] = {"queue": alerts_queue}
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def configmap(jobqueue: str, namespace: str, queue: QueueSpec, alerts_queue: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": configmap_name(jobqueue), "namespace": namespace, "labels": labels(jobqueue, queue.name)},
        "data": {CATALOG_FILE: catalog_yaml(queue, alerts_queue)},
    }


def _env(spec: JobQueueSpec, queue: QueueSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "JETQUEUE_WORKER_QUEUE", "value": queue.name},
        {"name": "JETQUEUE_CATALOG", "value": f"{CATALOG_DIR}/{CATALOG_FILE}"},
        {"name": "JETQUEUE_WORKER_CONCURRENCY", "value": str(spec.worker.concurrency)},
        {"name": "JETQUEUE_WORKER_METRICS_PORT", "value": str(METRICS_PORT)},
        # The operator owns the stream and consumers (storage, size caps the
        # catalog cannot express); a worker must not re-provision them.
        {"name": "JETQUEUE_PROVISION", "value": "false"},
        # The deployment's one replica setting, as every other jetqueue process has it.
        {"name": "JETQUEUE_REPLICAS", "value": str(settings.common.replicas)},
    ]
    if spec.worker.processor:
        env.append({"name": "JETQUEUE_WORKER_PROCESSOR", "value": spec.worker.processor})
    if settings.nats_creds_secret:
        env.append({"name": "JETQUEUE_NATS_CREDS", "value": "/etc/jetqueue-nats/nats.creds"})
    if settings.nats_tls_secret:
        env += [
            {"name": "JETQUEUE_NATS_TLS_CA", "value": f"{TLS_DIR}/ca.crt"},
            {"name": "JETQUEUE_NATS_TLS_CERT", "value": f"{TLS_DIR}/tls.crt"},
            {"name": "JETQUEUE_NATS_TLS_KEY", "value": f"{TLS_DIR}/tls.key"},
        ]
    known = {e["name"] for e in spec.worker.env}
    return [e for e in env if e["name"] not in known] + [dict(e) for e in spec.worker.env]


def topology_spread(jobqueue: str, spec: JobQueueSpec) -> list[dict[str, Any]]:
    """The spec's constraints, or by default: workers spread over zones, then hosts.

    ScheduleAnyway: a best effort that never leaves a worker Pending on a
    one-zone (or one-node) cluster; a drain or a zone outage then takes out only
    part of a queue's workers.
    """
    if spec.worker.topology_spread_constraints is not None:
        return [dict(c) for c in spec.worker.topology_spread_constraints]
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(jobqueue)},
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


def _scheduling(jobqueue: str, spec: JobQueueSpec) -> dict[str, Any]:
    """Pod spec fields that decide where workers run."""
    out: dict[str, Any] = {}
    if spec.worker.node_selector:
        out["nodeSelector"] = dict(spec.worker.node_selector)
    if spec.worker.affinity:
        out["affinity"] = dict(spec.worker.affinity)
    if spec.worker.tolerations:
        out["tolerations"] = [dict(t) for t in spec.worker.tolerations]
    if spec.worker.priority_class_name:
        out["priorityClassName"] = spec.worker.priority_class_name
    spread = topology_spread(jobqueue, spec)
    if spread:
        out["topologySpreadConstraints"] = spread
    return out


def pod_disruption_budget(jobqueue: str, namespace: str, spec: JobQueueSpec, queue: str) -> dict[str, Any] | None:
    """The workers' PodDisruptionBudget, or None when the spec turns it off."""
    budget = spec.worker.pod_disruption_budget
    if not budget.enabled:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": pdb_name(jobqueue), "namespace": namespace, "labels": labels(jobqueue, queue)},
        "spec": {"maxUnavailable": budget.max_unavailable, "selector": {"matchLabels": selector_labels(jobqueue)}},
    }


def pod_template(jobqueue: str, spec: JobQueueSpec, queue: QueueSpec, settings: OperatorSettings) -> dict[str, Any]:
    """The worker pod: non-root, read-only root FS, no capabilities, no API token."""
    volumes: list[dict[str, Any]] = [
        {"name": "catalog", "configMap": {"name": configmap_name(jobqueue)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "catalog", "mountPath": CATALOG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if settings.nats_creds_secret:
        volumes.append({"name": "nats-creds", "secret": {"secretName": settings.nats_creds_secret}})
        mounts.append({"name": "nats-creds", "mountPath": "/etc/jetqueue-nats", "readOnly": True})
    if settings.nats_tls_secret:  # a cert-manager style Secret: ca.crt, tls.crt, tls.key
        volumes.append({"name": "nats-tls", "secret": {"secretName": settings.nats_tls_secret}})
        mounts.append({"name": "nats-tls", "mountPath": TLS_DIR, "readOnly": True})
    # Quantities may be written as numbers (cpu: 1); the API wants strings.
    resources = {k: {n: str(q) for n, q in (v or {}).items()} for k, v in spec.worker.resources.items()} or {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    container: dict[str, Any] = {
        "name": "worker",
        "image": spec.worker.image or settings.worker_image,
        "imagePullPolicy": spec.worker.image_pull_policy or settings.worker_image_pull_policy,
        "env": _env(spec, queue, settings),
        "envFrom": [{"secretRef": {"name": settings.worker_env_secret}}],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        # /health fails when the worker can no longer work (its NATS connection closed for good,
        # its fetch loop stuck): restart it. /ready also needs NATS connected right now.
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "metrics"},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "metrics"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "metrics"}, "periodSeconds": 5},
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": spec.worker.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if spec.worker.service_account_name or settings.worker_service_account:
        pod_spec["serviceAccountName"] = spec.worker.service_account_name or settings.worker_service_account
    pod_spec.update(_scheduling(jobqueue, spec))
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        # A change of the catalog (job defaults) rolls the pods: they read it at start.
        "jetqueue.io/catalog-hash": hashlib.sha256(catalog_yaml(queue, settings.alerts_queue).encode()).hexdigest()[
            :16
        ],
        **spec.worker.pod_annotations,
    }
    return {"metadata": {"labels": labels(jobqueue, queue.name), "annotations": annotations}, "spec": pod_spec}


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def deployment(
    jobqueue: str, namespace: str, spec: JobQueueSpec, queue: QueueSpec, settings: OperatorSettings, replicas: int
) -> dict[str, Any]:
    template = pod_template(jobqueue, spec, queue, settings)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(jobqueue),
            "namespace": namespace,
            "labels": labels(jobqueue, queue.name),
            "annotations": {HASH_ANNOTATION: template_hash(template)},
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(jobqueue)},
            # Surge first: a running job's worker stops only once its successor is up.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": template,
        },
    }
