"""kopf handlers: thin wrappers that call the reconcile and action functions with the operator's state.

Everything is registered on a registry made by :func:`build_registry`, so
importing this module registers nothing (tests build as many as they like).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from nats.js.errors import APIError
from opentelemetry import trace

from jetqueue import telemetry
from jetqueue.catalog import Catalog, QueueSpec
from jetqueue.connection import delete_queue
from jetqueue.control import Controller, queue_info
from jetqueue.errors import JetqueueError
from jetqueue_operator import GROUP, JOBQUEUES, QUEUEACTIONS, VERSION, workload
from jetqueue_operator.conditions import DEGRADED, PAUSED, READY, SCALING, Conditions, now_iso
from jetqueue_operator.kube import KubeApi
from jetqueue_operator.metrics import MetricsServer, OperatorMetrics
from jetqueue_operator.natslink import NatsLink
from jetqueue_operator.resources import (
    TERMINAL_PHASES,
    ActionType,
    DeletionPolicy,
    InvalidSpec,
    Phase,
    QueueActionSpec,
    parse_action,
    parse_jobqueue,
)
from jetqueue_operator.scaling import Load, Stabilizer, recommend
from jetqueue_operator.settings import OperatorSettings
from jetqueue_operator.streams import ensure_queue, stream_owner

log = logging.getLogger(__name__)

FINALIZER = "jetqueue.io/cleanup"
# An open-ended pause is stored as a pause until a century from now.
_OPEN_ENDED = timedelta(days=365 * 50)


@dataclass(slots=True)
class Runtime:
    """What every handler of one operator process shares."""

    settings: OperatorSettings
    kube: KubeApi
    nats: NatsLink
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)


def _normal(obj: Any, *, reason: str, message: str) -> None:
    # kopf.event, not kopf.info: the posting level (WARNING, see configure)
    # would drop these; they are few (one per change, not per tick).
    kopf.event(obj, type="Normal", reason=reason, message=message)


def _warning(obj: Any, *, reason: str, message: str) -> None:
    kopf.event(obj, type="Warning", reason=reason, message=message)


def _owner(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _paused_until(stamp: str | None) -> str | None:
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if when - datetime.now(UTC) > _OPEN_ENDED:
        return None
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ------------------------------------------------------------------ JobQueue


async def reconcile(
    rt: Runtime,
    *,
    body: kopf.Body,
    name: str,
    namespace: str,
    spec: kopf.Spec,
    status: kopf.Status,
    generation: int | None,
    patch: kopf.Patch,
    memo: Any,
) -> None:
    """Bring one JobQueue's stream, consumers and worker Deployment in line, and refresh its status."""
    lock: asyncio.Lock = memo.setdefault("lock", asyncio.Lock())
    async with lock:
        started = time.monotonic()
        try:
            await _reconcile(
                rt,
                body=body,
                name=name,
                namespace=namespace,
                spec=spec,
                status=status,
                generation=generation,
                patch=patch,
                memo=memo,
            )
        except Exception:
            rt.metrics.jobqueue_reconciled(
                _owner(namespace, name), None, seconds=time.monotonic() - started, error_reason="Exception"
            )
            raise
        _count_reconcile(rt, _owner(namespace, name), patch, time.monotonic() - started)


def _count_reconcile(rt: Runtime, jobqueue: str, patch: kopf.Patch, seconds: float) -> None:
    """Metrics of one finished reconcile, read from the status it is about to write."""
    st = patch.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    ready, degraded = conds.get(READY) or {}, conds.get(DEGRADED) or {}
    error_reason: str | None = None
    if ready.get("status") != "True":
        error_reason = str(ready.get("reason") or "NotReady")
    elif degraded.get("status") == "True":
        error_reason = str(degraded.get("reason") or "Degraded")

    def count(key: str) -> int | None:
        return int(st[key]) if st.get(key) is not None else None

    rt.metrics.jobqueue_reconciled(
        jobqueue,
        st.get("queue"),
        seconds=seconds,
        error_reason=error_reason,
        replicas=count("replicas"),
        desired=count("desiredReplicas"),
        ready=count("readyReplicas"),
    )


async def _reconcile(
    rt: Runtime,
    *,
    body: kopf.Body,
    name: str,
    namespace: str,
    spec: kopf.Spec,
    status: kopf.Status,
    generation: int | None,
    patch: kopf.Patch,
    memo: Any,
) -> None:
    conds = Conditions(status.get("conditions"), generation)
    out: dict[str, Any] = {}

    def publish() -> None:
        out["conditions"] = conds.render()
        patch.status.update(out)

    try:
        jq, queue = parse_jobqueue(name, dict(spec))
    except InvalidSpec as exc:
        conds.set(READY, False, "InvalidSpec", str(exc))
        conds.set(DEGRADED, True, "InvalidSpec", str(exc))
        if memo.get("invalid") != str(exc):
            _warning(body, reason="InvalidSpec", message=str(exc))
            memo["invalid"] = str(exc)
        publish()
        return
    memo.pop("invalid", None)
    out.update(queue=queue.name, stream=queue.stream)

    # --- NATS: stream and consumers
    try:
        nc = await rt.nats.client()
    except JetqueueError as exc:
        conds.set(READY, False, "NatsUnavailable", str(exc))
        conds.set(DEGRADED, True, "NatsUnavailable", "status counts are stale: " + str(exc))
        publish()
        return
    js = nc.jetstream()
    owner = _owner(namespace, name)
    problems: list[str] = []
    try:
        holder = await stream_owner(js, queue.name)
        if holder and holder != owner:
            msg = f"stream {queue.stream} belongs to JobQueue {holder}; this one leaves it alone"
            conds.set(READY, False, "QueueOwnedElsewhere", msg)
            conds.set(DEGRADED, True, "QueueOwnedElsewhere", msg)
            publish()
            return
        done = await ensure_queue(js, queue, jq.stream, owner, replicas=rt.settings.common.replicas)
        if done.changes():
            first = "stream" not in status
            _normal(
                body,
                reason="Provisioned" if first else "DriftRepaired",
                message=f"{queue.stream}: " + "; ".join(done.changes()),
            )
    except APIError as exc:
        problems.append(f"JetStream refused the stream/consumer settings: {exc.description or exc}")
    try:
        info = await queue_info(js, queue)
    except Exception as exc:  # the stream or a consumer is missing (and could not be made)
        msg = "; ".join([*problems, f"cannot read the queue: {exc}"])
        conds.set(READY, False, "StreamUnavailable", msg)
        conds.set(DEGRADED, True, "StreamUnavailable", msg)
        _warning(body, reason="StreamUnavailable", message=msg)
        publish()
        return

    # --- Kubernetes: catalog ConfigMap and worker Deployment
    dep_name = workload.deployment_name(name)
    now = now_iso()
    dep_failed = False
    try:
        cm = workload.configmap(name, namespace, queue)
        kopf.adopt(cm, owner=body)
        await rt.kube.apply_configmap(namespace, cm)
        dep = await rt.kube.read_deployment(namespace, dep_name)
        current = int((dep or {}).get("spec", {}).get("replicas") or 0)
        rec = recommend(jq.scaling, Load(waiting=info.waiting, active=info.active, paused=info.paused))
        stabilizer: Stabilizer = memo.setdefault("stabilizer", Stabilizer())
        replicas = stabilizer.decide(
            current=current if dep else rec.replicas,
            recommended=rec.replicas,
            window_s=jq.scaling.scale_down_stabilization_seconds,
            now=time.monotonic(),
        )
        want = workload.deployment(name, namespace, jq, queue, rt.settings, replicas)
        kopf.adopt(want, owner=body)
        if dep is None:
            await rt.kube.create_deployment(namespace, want)
            recreated = "replicas" in status
            _normal(
                body,
                reason="DriftRepaired" if recreated else "Created",
                message=f"{'re' if recreated else ''}created worker Deployment {dep_name} with {replicas} replica(s)",
            )
            out["lastScaleTime"] = now
        else:
            have_hash = (dep.get("metadata", {}).get("annotations") or {}).get(workload.HASH_ANNOTATION)
            want_hash = want["metadata"]["annotations"][workload.HASH_ANNOTATION]
            if have_hash != want_hash:
                annotations = {**(dep.get("metadata", {}).get("annotations") or {}), **want["metadata"]["annotations"]}
                await rt.kube.json_patch_deployment(
                    namespace,
                    dep_name,
                    [
                        {"op": "add", "path": "/metadata/annotations", "value": annotations},
                        {"op": "replace", "path": "/spec/template", "value": want["spec"]["template"]},
                        {"op": "replace", "path": "/spec/replicas", "value": replicas},
                    ],
                )
                _normal(body, reason="Updated", message=f"updated the pod template of {dep_name}")
            elif replicas != current:
                await rt.kube.patch_deployment(namespace, dep_name, {"spec": {"replicas": replicas}})
            if replicas != current:
                _normal(
                    body,
                    reason="ScaledUp" if replicas > current else "ScaledDown",
                    message=f"{dep_name}: {current} -> {replicas} replicas ({rec.reason})",
                )
                out["lastScaleTime"] = now
        ready = int(((dep or {}).get("status") or {}).get("readyReplicas") or 0)
    except Exception as exc:
        log.exception("worker Deployment of %s/%s", namespace, name)
        problems.append(f"worker Deployment: {exc}")
        dep_failed = True
        replicas, ready, rec = int(status.get("replicas") or 0), int(status.get("readyReplicas") or 0), None

    # --- status
    out.update(
        observedGeneration=generation,
        replicas=replicas,
        readyReplicas=ready,
        waiting=info.waiting,
        active=info.active,
        delayed=info.scheduled,
        deadLettered=info.dead_lettered,
        paused=info.paused,
        pausedUntil=_paused_until(info.pause_until) if info.paused else None,
    )
    if rec is not None:
        out["desiredReplicas"] = rec.replicas
    until = out["pausedUntil"]
    conds.set(
        PAUSED,
        info.paused,
        "ConsumersPaused" if info.paused else "Delivering",
        (f"paused until {until}" if until else "paused until resumed") if info.paused else "",
    )
    if rec is not None and rec.replicas != replicas:
        conds.set(SCALING, True, "ScaleDownStabilizing", f"{replicas} replicas held; the lag asks for {rec.replicas}")
    elif "lastScaleTime" in out:
        conds.set(SCALING, True, "Scaled", f"set {replicas} replicas ({rec.reason if rec else ''})")
    else:
        conds.set(SCALING, False, "AtTarget", f"{replicas} replicas")
    if problems:
        conds.set(DEGRADED, True, "ReconcileIncomplete", "; ".join(problems))
        if memo.get("problems") != problems:
            _warning(body, reason="ReconcileIncomplete", message="; ".join(problems))
    else:
        conds.set(DEGRADED, False, "Reconciled", "")
    memo["problems"] = problems
    if dep_failed:
        conds.set(READY, False, "WorkerDeploymentError", "; ".join(problems))
    else:
        conds.set(READY, True, "Reconciled", f"stream {queue.stream} and worker Deployment {dep_name} in place")
    publish()


async def cleanup(rt: Runtime, *, body: kopf.Body, name: str, namespace: str, spec: kopf.Spec) -> None:
    """JobQueue deleted: remove its Deployment and ConfigMap; delete the stream only if the policy says so."""
    rt.metrics.jobqueue_deleted(_owner(namespace, name))
    await rt.kube.delete_deployment(namespace, workload.deployment_name(name))
    await rt.kube.delete_configmap(namespace, workload.configmap_name(name))
    try:
        jq, queue = parse_jobqueue(name, dict(spec))
    except InvalidSpec:
        return
    if jq.deletion_policy is not DeletionPolicy.DELETE:
        log.info("JobQueue %s/%s deleted; stream %s retained (deletionPolicy Retain)", namespace, name, queue.stream)
        return
    try:
        js = await rt.nats.jetstream()
    except JetqueueError as exc:
        raise kopf.TemporaryError(f"cannot delete the stream yet: {exc}", delay=10) from exc
    holder = await stream_owner(js, queue.name)
    if holder not in (None, _owner(namespace, name)):
        log.warning("stream %s belongs to %s; not deleting it", queue.stream, holder)
        return
    await delete_queue(js, queue.name)
    log.info("JobQueue %s/%s deleted with its stream %s", namespace, name, queue.stream)


# --------------------------------------------------------------- QueueAction


def _jobqueue_ref(obj: dict[str, Any]) -> dict[str, Any]:
    """Enough of a JobQueue for kopf to post an Event on it."""
    meta = obj.get("metadata", {})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobQueue",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
    }


async def _execute(
    rt: Runtime, ctl: Controller, queue: QueueSpec, act: QueueActionSpec, actor: str
) -> tuple[int, str, dict[str, Any]]:
    """Run the control function; return (affected, message, result)."""
    q = queue.name
    match act.action:
        case ActionType.PAUSE:
            res = await ctl.pause(q, actor=actor, until=act.until, reason=act.reason)
            until = res.get("pause_until")
            return queue.priority_levels, f"paused {q} " + (f"until {until}" if until else "until resumed"), res
        case ActionType.RESUME:
            res = await ctl.resume(q, actor=actor, reason=act.reason)
            return queue.priority_levels, f"resumed {q}", res
        case ActionType.DRAIN:
            res = await ctl.drain(
                q,
                actor=actor,
                reason=act.reason,
                include_delayed=bool(act.include_delayed),
                settle_timeout=rt.settings.drain_settle_s,
            )
            n = int(res["removed"]) + int(res["removed_delayed"])
            return n, f"removed {res['removed']} waiting and {res['removed_delayed']} delayed job(s) of {q}", res
        case ActionType.RETRY_FAILED:
            res = await ctl.retry_failed(q, actor=actor, reason=act.reason)
            skipped = res.get("skipped_malformed", 0)
            extra = f" ({skipped} malformed left in the DLQ)" if skipped else ""
            return int(res["retried"]), f"moved {res['retried']} failed job(s) of {q} back to waiting{extra}", res
        case ActionType.CLEAN:
            older = act.older_than_seconds or 0
            res = await ctl.clean(q, actor=actor, older_than_s=older, reason=act.reason)
            return int(res["removed"]), f"deleted {res['removed']} failed job(s) of {q} older than {older}s", res
    raise InvalidSpec(f"unknown action {act.action!r}")  # pragma: no cover - the enum is exhaustive


async def run_action(
    rt: Runtime,
    *,
    body: kopf.Body,
    name: str,
    namespace: str,
    spec: kopf.Spec,
    status: kopf.Status,
    started: datetime,
    patch: kopf.Patch,
) -> None:
    """Run a QueueAction once: Pending while its JobQueue or NATS is missing, then Running, then the outcome."""
    phase = status.get("phase")
    if phase in TERMINAL_PHASES:
        return
    t0 = time.monotonic()

    def finish(phase: Phase, message: str, error_reason: str | None = None, **extra: Any) -> None:
        patch.status.update(phase=phase.value, message=message, completionTime=now_iso(), **extra)
        if phase is Phase.FAILED:
            _warning(body, reason="ActionFailed", message=message)
        else:
            _normal(body, reason="ActionSucceeded", message=message)
        rt.metrics.action_finished(
            str(spec.get("action") or "unknown"),
            phase.value,
            seconds=time.monotonic() - t0,
            error_reason=(error_reason or "ActionFailed") if phase is Phase.FAILED else None,
        )

    if phase == Phase.RUNNING.value:
        # The operator stopped while this ran. Never run an action twice.
        finish(
            Phase.FAILED,
            "interrupted: the operator restarted while it ran; check the audit log, then re-apply",
            "Interrupted",
        )
        return
    try:
        act = parse_action(dict(spec))
    except InvalidSpec as exc:
        finish(Phase.FAILED, str(exc), "InvalidSpec")
        return

    async def wait(message: str) -> None:
        waited = (datetime.now(UTC) - started.astimezone(UTC)).total_seconds()
        if waited > rt.settings.action_wait_s:
            finish(Phase.FAILED, f"gave up after {waited:.0f}s: {message}", "WaitTimedOut")
            raise _Done
        await rt.kube.patch_action_status(namespace, name, {"phase": Phase.PENDING.value, "message": message})
        raise kopf.TemporaryError(message, delay=2)

    try:
        jq_obj = await rt.kube.get_jobqueue(namespace, act.job_queue)
        if jq_obj is None:
            await wait(f"waiting for JobQueue {namespace}/{act.job_queue}")
            return
        try:
            _, queue = parse_jobqueue(act.job_queue, dict(jq_obj.get("spec") or {}))
        except InvalidSpec as exc:
            finish(Phase.FAILED, str(exc), "InvalidSpec")
            return
        try:
            nc = await rt.nats.client()
        except JetqueueError as exc:
            await wait(f"waiting for NATS: {exc}")
            return
    except _Done:
        return

    start = now_iso()
    await rt.kube.patch_action_status(
        namespace, name, {"phase": Phase.RUNNING.value, "startTime": start, "message": f"{act.action} running"}
    )
    ctl = Controller(nc, Catalog(queues=(queue,)), source="operator")
    actor = f"kubernetes:queueaction/{namespace}/{name}"
    # The QueueAction's span; the control function's own span ("control <action>") is its child.
    with telemetry.tracer().start_as_current_span(
        f"QueueAction {act.action}",
        attributes={
            "jetqueue.queue": queue.name,
            "jetqueue.action": str(act.action),
            "jetqueue.actor": actor,
            "jetqueue.source": "operator",
            "k8s.namespace.name": namespace,
            "jetqueue.queueaction": name,
        },
    ) as span:
        try:
            affected, message, result = await _execute(rt, ctl, queue, act, actor)
        except Exception as exc:  # one-shot: any failure is final, never retried
            message = f"{act.action} failed: {exc}"
            span.set_attribute("jetqueue.result", "error")
            span.set_status(trace.StatusCode.ERROR, message)
            finish(Phase.FAILED, message, "ActionFailed", startTime=start)
            _warning(_jobqueue_ref(jq_obj), reason="QueueActionFailed", message=f"{name}: {message}")
            return
        span.set_attribute("jetqueue.result", "ok")
        span.set_attribute("jetqueue.affected", affected)
    result = {k: v for k, v in result.items() if k != "job_ids"}
    finish(Phase.SUCCEEDED, message, startTime=start, affected=affected, result=result)
    _normal(_jobqueue_ref(jq_obj), reason=f"Queue{act.action[0].upper()}{act.action[1:]}", message=f"{name}: {message}")


class _Done(Exception):
    """Internal: the action reached a final phase while waiting."""


# ------------------------------------------------------------------ registry


def build_registry(rt: Runtime, registry: kopf.OperatorRegistry) -> kopf.OperatorRegistry:
    """Register every handler on ``registry`` and return it.

    ``python -m jetqueue_operator`` passes kopf's default registry (which logs in
    like the kubernetes client: in-cluster or kubeconfig); tests pass a fresh
    one with their own login handler.
    """
    reg = registry
    interval = rt.settings.reconcile_interval_s

    servers: list[MetricsServer] = []

    @kopf.on.startup(registry=reg)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        # kopf turns handler log lines of this level and above into Events; a
        # timer's "succeeded" every few seconds would flood them. The operator
        # posts its own Events (scale, drift, actions) explicitly.
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        # On stop (or the JobQueue's deletion) let a reconcile in flight finish
        # (well under a second) rather than abandon it half-way.
        settings.background.instant_exit_timeout = 2.0
        # /metrics first: while NATS is down is when it is read most (jetqueue_operator_nats_connected 0).
        rt.metrics.watch_nats(lambda: rt.nats.connected)
        if rt.settings.metrics_port:
            server = MetricsServer(rt.metrics, rt.settings.metrics_host, rt.settings.metrics_port)
            await server.start()
            servers.append(server)
        # Connect (and create the shared streams) now, so the producer and
        # monitor, which leave provisioning to the operator, find them; if NATS
        # is down the JobQueues report it and the connection is retried.
        try:
            await rt.nats.client()
        except JetqueueError as exc:
            log.warning("NATS not reachable at start: %s", exc)
        settings.networking.request_timeout = 30

    @kopf.on.cleanup(registry=reg)
    async def close(**_: Any) -> None:
        while servers:
            await servers.pop().stop()
        await rt.nats.close()

    @kopf.on.probe(id="nats", registry=reg)
    async def nats_probe(**_: Any) -> dict[str, Any]:
        return {"connected": rt.nats.connected}

    # kopf passes every handler the same keyword arguments; each takes what it needs.
    async def jobqueue_changed(**kw: Any) -> None:
        await reconcile(
            rt,
            body=kw["body"],
            name=kw["name"],
            namespace=kw["namespace"] or "",
            spec=kw["spec"],
            status=kw["status"],
            generation=kw["meta"].get("generation"),
            patch=kw["patch"],
            memo=kw["memo"],
        )

    kopf.on.create(GROUP, VERSION, JOBQUEUES, id="reconcile", registry=reg)(jobqueue_changed)
    kopf.on.update(GROUP, VERSION, JOBQUEUES, id="reconcile", field="spec", registry=reg)(jobqueue_changed)
    # Continuous reconcile: drift repair, lag-based scaling and status, not only on change.
    kopf.timer(GROUP, VERSION, JOBQUEUES, id="tick", interval=interval, initial_delay=interval, registry=reg)(
        jobqueue_changed
    )

    async def jobqueue_deleted(**kw: Any) -> None:
        await cleanup(rt, body=kw["body"], name=kw["name"], namespace=kw["namespace"] or "", spec=kw["spec"])

    kopf.on.delete(GROUP, VERSION, JOBQUEUES, id="cleanup", registry=reg)(jobqueue_deleted)

    async def queueaction_created(**kw: Any) -> None:
        await run_action(
            rt,
            body=kw["body"],
            name=kw["name"],
            namespace=kw["namespace"] or "",
            spec=kw["spec"],
            status=kw["status"],
            started=kw["started"],
            patch=kw["patch"],
        )

    # retries=None: while its JobQueue or NATS is missing the action waits (Pending) up to
    # action_wait_s; the action itself never runs twice (see run_action).
    kopf.on.create(GROUP, VERSION, QUEUEACTIONS, id="run", retries=None, registry=reg)(queueaction_created)

    return reg
