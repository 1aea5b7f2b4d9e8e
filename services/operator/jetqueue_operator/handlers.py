"""kopf handlers: thin wrappers that call the reconcile and action functions with the operator's state.

Everything is registered on a registry made by :func:`build_registry`, so
importing this module registers nothing (tests build as many as they like).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from nats.js.errors import APIError
from opentelemetry import trace

from jetqueue import telemetry
from jetqueue.catalog import Catalog, QueueSpec
from jetqueue.connection import ERR_INSUFFICIENT_RESOURCES, ERR_REPLICAS_NOT_SUPPORTED, delete_queue
from jetqueue.control import Controller, QueueInfo, pause_end, queue_info
from jetqueue.errors import JetqueueError
from jetqueue_operator import GROUP, JOBQUEUES, QUEUEACTIONS, VERSION, workload
from jetqueue_operator.conditions import (
    ACCEPTED,
    COMPLETE,
    DEGRADED,
    FAILED,
    PAUSED,
    READY,
    SCALING,
    Conditions,
    now_iso,
)
from jetqueue_operator.kube import KubeApi
from jetqueue_operator.metrics import OperatorMetrics
from jetqueue_operator.natslink import NatsLink
from jetqueue_operator.resources import (
    TERMINAL_PHASES,
    ActionType,
    DeletionPolicy,
    InvalidSpec,
    JobQueueSpec,
    Phase,
    QueueActionSpec,
    parse_action,
    parse_jobqueue,
)
from jetqueue_operator.scaling import Load, Recommendation, Stabilizer, recommend
from jetqueue_operator.settings import OperatorSettings
from jetqueue_operator.streams import ensure_queue, stream_owner

log = logging.getLogger(__name__)

FINALIZER = "jetqueue.io/cleanup"
# An open-ended pause is stored as a pause until a century from now.


@dataclass(slots=True)
class Runtime:
    """What every handler of one operator process shares."""

    settings: OperatorSettings
    kube: KubeApi
    nats: NatsLink
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    # One lock per JobQueue ("namespace/name"): a reconcile and a QueueAction's status
    # refresh never write the same status at once.
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, owner: str) -> asyncio.Lock:
        return self.locks.setdefault(owner, asyncio.Lock())


def _normal(obj: Any, *, reason: str, message: str) -> None:
    # kopf.event, not kopf.info: the posting level (WARNING, see configure)
    # would drop these; they are few (one per change, not per tick).
    kopf.event(obj, type="Normal", reason=reason, message=message)


def _warning(obj: Any, *, reason: str, message: str) -> None:
    kopf.event(obj, type="Warning", reason=reason, message=message)


def _owner(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _counts(info: QueueInfo, conds: Conditions) -> dict[str, Any]:
    """The status fields read from NATS (and the Paused condition), shared by reconciles and actions."""
    until = pause_end(info.pause_until) if info.paused else None
    conds.set(
        PAUSED,
        info.paused,
        "ConsumersPaused" if info.paused else "Delivering",
        (f"paused until {until}" if until else "paused until resumed") if info.paused else "",
    )
    return {
        "waiting": info.waiting,
        "active": info.active,
        "delayed": info.scheduled,
        "deadLettered": info.dead_lettered,
        "paused": info.paused,
        "pausedUntil": until,
    }


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
    async with rt.lock(_owner(namespace, name)):
        started = time.monotonic()
        try:
            await _reconcile(rt, body=body, name=name, namespace=namespace, spec=spec, status=status,
                             generation=generation, patch=patch, memo=memo)  # fmt: skip
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


@dataclass(slots=True)
class _Pass:
    """One reconcile's working state: the JobQueue, its conditions and the status being built."""

    body: kopf.Body
    name: str
    namespace: str
    status: kopf.Status
    memo: Any
    conds: Conditions
    out: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def fail(self, reason: str, message: str, degraded: str | None = None) -> None:
        """Not Ready (and Degraded) for ``reason``."""
        self.conds.set(READY, False, reason, message)
        self.conds.set(DEGRADED, True, reason, degraded or message)


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
    p = _Pass(body, name, namespace, status, memo, Conditions(status.get("conditions"), generation))
    try:
        jq, queue = parse_jobqueue(name, dict(spec))
    except InvalidSpec as exc:
        p.fail("InvalidSpec", str(exc))
        if memo.get("invalid") != str(exc):
            _warning(body, reason="InvalidSpec", message=str(exc))
            memo["invalid"] = str(exc)
    else:
        memo.pop("invalid", None)
        p.out.update(queue=queue.name, stream=queue.stream)
        info = await _ensure_stream(rt, p, jq, queue)
        if info is not None:
            await _ensure_workers(rt, p, jq, queue, info, generation)
    p.out["conditions"] = p.conds.render()
    patch.status.update(p.out)


async def _ensure_stream(rt: Runtime, p: _Pass, jq: JobQueueSpec, queue: QueueSpec) -> QueueInfo | None:
    """The stream and consumers in line; the queue's counts, or None (with the reason set) if unreadable."""
    try:
        nc = await rt.nats.client()
    except JetqueueError as exc:
        p.fail("NatsUnavailable", str(exc), "status counts are stale: " + str(exc))
        return None
    js = nc.jetstream()
    owner = _owner(p.namespace, p.name)
    try:
        holder = await stream_owner(js, queue.name)
        if holder and holder != owner:
            p.fail(
                "QueueOwnedElsewhere", f"stream {queue.stream} belongs to JobQueue {holder}; this one leaves it alone"
            )
            return None
        done = await ensure_queue(js, queue, jq.stream, owner, replicas=rt.settings.common.replicas)
        if done.changes():
            _normal(
                p.body,
                reason="Provisioned" if "stream" not in p.status else "DriftRepaired",
                message=f"{queue.stream}: " + "; ".join(done.changes()),
            )
    except APIError as exc:
        if exc.err_code in (ERR_INSUFFICIENT_RESOURCES, ERR_REPLICAS_NOT_SUPPORTED):
            want = jq.stream.replicas or rt.settings.common.replicas
            p.problems.append(
                f"JetStream cannot place {queue.stream} on {want} replica(s): {exc.description or exc}; "
                "spec.stream.replicas or JETQUEUE_REPLICAS (chart: jetstream.replicas) exceeds its JetStream servers"
            )
        else:
            p.problems.append(f"JetStream refused the stream/consumer settings: {exc.description or exc}")
    try:
        return await queue_info(js, queue)
    except Exception as exc:  # the stream or a consumer is missing (and could not be made)
        msg = "; ".join([*p.problems, f"cannot read the queue: {exc}"])
        p.fail("StreamUnavailable", msg)
        _warning(p.body, reason="StreamUnavailable", message=msg)
        return None


async def _apply_budget(rt: Runtime, p: _Pass, jq: JobQueueSpec, queue: QueueSpec) -> None:
    """The workers' PodDisruptionBudget: created, updated, or removed when the spec turns it off."""
    budget = workload.pod_disruption_budget(p.name, p.namespace, jq, queue.name)
    if budget is None:
        if await rt.kube.delete_pdb(p.namespace, workload.pdb_name(p.name)):
            _normal(p.body, reason="Updated", message=f"removed PodDisruptionBudget {workload.pdb_name(p.name)}")
        return
    kopf.adopt(budget, owner=p.body)
    done = await rt.kube.apply_pdb(p.namespace, budget)
    if done == "updated":  # a new one comes with the queue's Created/Provisioned events
        _normal(p.body, reason="Updated", message=f"updated PodDisruptionBudget {workload.pdb_name(p.name)}")


async def _apply_deployment(
    rt: Runtime, p: _Pass, jq: JobQueueSpec, queue: QueueSpec, info: QueueInfo
) -> tuple[int, int, Recommendation]:
    """Create, update or scale the worker Deployment; returns (replicas set, ready replicas, recommendation)."""
    dep_name = workload.deployment_name(p.name)
    dep = await rt.kube.read_deployment(p.namespace, dep_name)
    current = int((dep or {}).get("spec", {}).get("replicas") or 0)
    rec = recommend(jq.scaling, Load(waiting=info.waiting, active=info.active, paused=info.paused))
    stabilizer: Stabilizer = p.memo.setdefault("stabilizer", Stabilizer())
    replicas = stabilizer.decide(
        current=current if dep else rec.replicas,
        recommended=rec.replicas,
        window_s=jq.scaling.scale_down_stabilization_seconds,
        now=time.monotonic(),
    )
    want = workload.deployment(p.name, p.namespace, jq, queue, rt.settings, replicas)
    kopf.adopt(want, owner=p.body)
    if dep is None:
        await rt.kube.create_deployment(p.namespace, want)
        again = "replicas" in p.status
        _normal(
            p.body,
            reason="DriftRepaired" if again else "Created",
            message=f"{'re' if again else ''}created worker Deployment {dep_name} with {replicas} replica(s)",
        )
        p.out["lastScaleTime"] = now_iso()
        return replicas, 0, rec
    have_hash = (dep.get("metadata", {}).get("annotations") or {}).get(workload.HASH_ANNOTATION)
    if have_hash != want["metadata"]["annotations"][workload.HASH_ANNOTATION]:
        annotations = {**(dep.get("metadata", {}).get("annotations") or {}), **want["metadata"]["annotations"]}
        # A JSON patch replaces the whole template, so fields dropped from the spec go away too.
        await rt.kube.json_patch_deployment(
            p.namespace,
            dep_name,
            [
                {"op": "add", "path": "/metadata/annotations", "value": annotations},
                {"op": "replace", "path": "/spec/template", "value": want["spec"]["template"]},
                {"op": "replace", "path": "/spec/replicas", "value": replicas},
            ],
        )
        _normal(p.body, reason="Updated", message=f"updated the pod template of {dep_name}")
    elif replicas != current:
        await rt.kube.patch_deployment(p.namespace, dep_name, {"spec": {"replicas": replicas}})
    if replicas != current:
        _normal(
            p.body,
            reason="ScaledUp" if replicas > current else "ScaledDown",
            message=f"{dep_name}: {current} -> {replicas} replicas ({rec.reason})",
        )
        p.out["lastScaleTime"] = now_iso()
    return replicas, int((dep.get("status") or {}).get("readyReplicas") or 0), rec


async def _ensure_workers(
    rt: Runtime, p: _Pass, jq: JobQueueSpec, queue: QueueSpec, info: QueueInfo, generation: int | None
) -> None:
    """Catalog ConfigMap, PodDisruptionBudget and worker Deployment, then the whole status."""
    dep_name = workload.deployment_name(p.name)
    rec: Recommendation | None = None
    try:
        cm = workload.configmap(p.name, p.namespace, queue, rt.settings.alerts_queue)
        kopf.adopt(cm, owner=p.body)
        await rt.kube.apply_configmap(p.namespace, cm)
        await _apply_budget(rt, p, jq, queue)
        replicas, ready, rec = await _apply_deployment(rt, p, jq, queue, info)
    except Exception as exc:
        log.exception("worker Deployment of %s/%s", p.namespace, p.name)
        p.problems.append(f"worker Deployment: {exc}")
        replicas, ready = int(p.status.get("replicas") or 0), int(p.status.get("readyReplicas") or 0)
    p.out.update(observedGeneration=generation, replicas=replicas, readyReplicas=ready, **_counts(info, p.conds))
    if rec is not None:
        p.out["desiredReplicas"] = rec.replicas
    if rec is not None and rec.replicas != replicas:
        p.conds.set(SCALING, True, "ScaleDownStabilizing", f"{replicas} replicas held; the lag asks for {rec.replicas}")
    elif "lastScaleTime" in p.out:
        p.conds.set(SCALING, True, "Scaled", f"set {replicas} replicas ({rec.reason if rec else ''})")
    else:
        p.conds.set(SCALING, False, "AtTarget", f"{replicas} replicas")
    if p.problems:
        p.conds.set(DEGRADED, True, "ReconcileIncomplete", "; ".join(p.problems))
        if p.memo.get("problems") != p.problems:
            _warning(p.body, reason="ReconcileIncomplete", message="; ".join(p.problems))
    else:
        p.conds.set(DEGRADED, False, "Reconciled", "")
    p.memo["problems"] = p.problems
    if rec is None:
        p.conds.set(READY, False, "WorkerDeploymentError", "; ".join(p.problems))
    else:
        p.conds.set(READY, True, "Reconciled", f"stream {queue.stream} and worker Deployment {dep_name} in place")


async def cleanup(rt: Runtime, *, body: kopf.Body, name: str, namespace: str, spec: kopf.Spec) -> None:
    """JobQueue deleted: remove its Deployment, budget and ConfigMap; delete the stream only if the policy says so."""
    rt.metrics.jobqueue_deleted(_owner(namespace, name))
    rt.locks.pop(_owner(namespace, name), None)
    await rt.kube.delete_deployment(namespace, workload.deployment_name(name))
    await rt.kube.delete_pdb(namespace, workload.pdb_name(name))
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


async def refresh_jobqueue_status(rt: Runtime, namespace: str, name: str, queue: QueueSpec, js: Any) -> None:
    """Write a JobQueue's counts (and Paused condition) now, not at its next reconcile.

    Under the JobQueue's lock, so a reconcile in flight (holding counts read
    before the action) writes first and this fresh read lands last.
    """
    async with rt.lock(_owner(namespace, name)):
        obj = await rt.kube.get_jobqueue(namespace, name)
        if obj is None:
            return
        status = obj.get("status") or {}
        conds = Conditions(status.get("conditions"), (obj.get("metadata") or {}).get("generation"))
        counts = _counts(await queue_info(js, queue), conds)
        await rt.kube.patch_jobqueue_status(namespace, name, {**counts, "conditions": conds.render()})


# A QueueAction's condition reasons, as the bounded reasons of jetqueue_operator_reconcile_errors_total.
_METRIC_REASONS = {"JobQueueNotFound": "InvalidSpec", "JobQueueNotReady": "WaitTimedOut"}


@dataclass(slots=True)
class _Action:
    """One run of a QueueAction handler: writes phase, message and conditions together."""

    rt: Runtime
    body: kopf.Body
    name: str
    namespace: str
    spec: kopf.Spec
    patch: kopf.Patch
    conds: Conditions
    t0: float = field(default_factory=time.monotonic)

    async def progress(self, phase: Phase, message: str, **extra: Any) -> None:
        """Write a non-final phase at once (kopf writes its patch only when the handler returns)."""
        status = {"phase": phase.value, "message": message, "conditions": self.conds.render(), **extra}
        await self.rt.kube.patch_action_status(self.namespace, self.name, status)

    def finish(self, phase: Phase, message: str, reason: str, **extra: Any) -> None:
        """The final phase, with Complete/Failed conditions, an Event and the metrics."""
        failed = phase is Phase.FAILED
        self.conds.set(COMPLETE, not failed, reason, "" if failed else message)
        self.conds.set(FAILED, failed, reason, message if failed else "")
        self.patch.status.update(
            phase=phase.value, message=message, completionTime=now_iso(), conditions=self.conds.render(), **extra
        )
        if failed:
            _warning(self.body, reason="ActionFailed", message=message)
        else:
            _normal(self.body, reason="ActionSucceeded", message=message)
        self.rt.metrics.action_finished(
            str(self.spec.get("action") or "unknown"),
            phase.value,
            seconds=time.monotonic() - self.t0,
            error_reason=_METRIC_REASONS.get(reason, reason) if failed else None,
        )

    def refuse(self, reason: str, message: str) -> None:
        """Not accepted (bad spec, no such JobQueue): Failed at once, never run."""
        self.conds.set(ACCEPTED, False, reason, message)
        self.finish(Phase.FAILED, message, reason)


async def run_action(
    rt: Runtime,
    *,
    body: kopf.Body,
    name: str,
    namespace: str,
    spec: kopf.Spec,
    status: kopf.Status,
    generation: int | None,
    started: datetime,
    patch: kopf.Patch,
) -> None:
    """Run a QueueAction once: Pending while its JobQueue is not Ready or NATS is down, then Running, then done."""
    if status.get("phase") in TERMINAL_PHASES:
        return
    a = _Action(rt, body, name, namespace, spec, patch, Conditions(status.get("conditions"), generation))
    if status.get("phase") == Phase.RUNNING.value:
        # The operator stopped while this ran. Never run an action twice.
        a.finish(Phase.FAILED, "interrupted: the operator restarted while it ran; check the audit log, then re-apply",
                 "Interrupted")  # fmt: skip
        return
    try:
        act = parse_action(dict(spec))
    except InvalidSpec as exc:
        a.refuse("InvalidSpec", str(exc))
        return
    jq_obj = await rt.kube.get_jobqueue(namespace, act.job_queue)
    if jq_obj is None:
        # A typo, or a queue in another namespace: say so now instead of after the wait.
        a.refuse("JobQueueNotFound", f"JobQueue {namespace}/{act.job_queue} does not exist")
        return
    try:
        _, queue = parse_jobqueue(act.job_queue, dict(jq_obj.get("spec") or {}))
    except InvalidSpec as exc:
        a.refuse("InvalidSpec", str(exc))
        return
    a.conds.set(ACCEPTED, True, "Accepted", f"{act.action} on JobQueue {act.job_queue}")
    nc = await _wait_until_ready(a, jq_obj, act, started)
    if nc is None:
        return
    await _run(a, act, queue, jq_obj, nc)


async def _wait_until_ready(a: _Action, jq_obj: dict[str, Any], act: QueueActionSpec, started: datetime) -> Any:
    """NATS, once the JobQueue is Ready; None if the wait gave up (Failed). Raises TemporaryError to retry."""
    conditions: list[dict[str, Any]] = (jq_obj.get("status") or {}).get("conditions") or []
    ready: dict[str, Any] = next((c for c in conditions if c.get("type") == READY), {})
    reason, message = "", ""
    if ready.get("status") != "True":
        reason = "JobQueueNotReady"
        message = f"waiting for JobQueue {a.namespace}/{act.job_queue} to be Ready ({ready.get('reason') or 'new'})"
    else:
        try:
            return await a.rt.nats.client()
        except JetqueueError as exc:
            reason, message = "WaitTimedOut", f"waiting for NATS: {exc}"
    waited = (datetime.now(UTC) - started.astimezone(UTC)).total_seconds()
    if waited > a.rt.settings.action_wait_s:
        a.finish(Phase.FAILED, f"gave up after {waited:.0f}s: {message}", reason)
        return None
    await a.progress(Phase.PENDING, message)
    raise kopf.TemporaryError(message, delay=2)


async def _run(a: _Action, act: QueueActionSpec, queue: QueueSpec, jq_obj: dict[str, Any], nc: Any) -> None:
    """Running, the control function, the JobQueue's fresh counts, then Succeeded or Failed."""
    start = now_iso()
    await a.progress(Phase.RUNNING, f"{act.action} running", startTime=start)
    ctl = Controller(nc, Catalog(queues=(queue,)), source="operator")
    actor = f"kubernetes:queueaction/{a.namespace}/{a.name}"
    # The QueueAction's span; the control function's own span ("control <action>") is its child.
    with telemetry.tracer().start_as_current_span(
        f"QueueAction {act.action}",
        attributes={
            "jetqueue.queue": queue.name,
            "jetqueue.action": str(act.action),
            "jetqueue.actor": actor,
            "jetqueue.source": "operator",
            "k8s.namespace.name": a.namespace,
            "jetqueue.queueaction": a.name,
        },
    ) as span:
        try:
            affected, message, result = await _execute(a.rt, ctl, queue, act, actor)
        except Exception as exc:  # one-shot: any failure is final, never retried
            message = f"{act.action} failed: {exc}"
            span.set_attribute("jetqueue.result", "error")
            span.set_status(trace.StatusCode.ERROR, message)
            a.finish(Phase.FAILED, message, "ActionFailed", startTime=start)
            _warning(_jobqueue_ref(jq_obj), reason="QueueActionFailed", message=f"{a.name}: {message}")
            return
        span.set_attribute("jetqueue.result", "ok")
        span.set_attribute("jetqueue.affected", affected)
    try:
        # Before the phase turns Succeeded: whoever waits for it then reads the new counts.
        await refresh_jobqueue_status(a.rt, a.namespace, act.job_queue, queue, nc.jetstream())
    except Exception as exc:  # the next reconcile writes them anyway
        log.warning("refreshing JobQueue %s/%s after %s: %s", a.namespace, act.job_queue, a.name, exc)
    result = {k: v for k, v in result.items() if k != "job_ids"}
    a.finish(Phase.SUCCEEDED, message, "Succeeded", startTime=start, affected=affected, result=result)
    _normal(
        _jobqueue_ref(jq_obj), reason=f"Queue{act.action[0].upper()}{act.action[1:]}", message=f"{a.name}: {message}"
    )


# ------------------------------------------------------------------ registry


def build_registry(rt: Runtime, registry: kopf.OperatorRegistry) -> kopf.OperatorRegistry:
    """Register every handler on ``registry`` and return it.

    ``python -m jetqueue_operator`` passes kopf's default registry (which logs in
    like the kubernetes client: in-cluster or kubeconfig); tests pass a fresh
    one with their own login handler.
    """
    reg = registry
    interval = rt.settings.reconcile_interval_s

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
        # /metrics is served by operate() (standby replicas answer too); from here on it reports NATS.
        rt.metrics.watch_nats(lambda: rt.nats.connected)
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
            generation=kw["meta"].get("generation"),
            started=kw["started"],
            patch=kw["patch"],
        )

    # retries=None: while its JobQueue or NATS is missing the action waits (Pending) up to
    # action_wait_s; the action itself never runs twice (see run_action).
    kopf.on.create(GROUP, VERSION, QUEUEACTIONS, id="run", retries=None, registry=reg)(queueaction_created)

    return reg
