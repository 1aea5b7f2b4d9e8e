"""Control operations on queues and jobs, shared by the monitor API and the operator.

Every operation goes through :class:`Controller`, which writes an audit record
(who, what, why, outcome) onto ``jq.audit.<entity>`` in the events stream
whether the operation succeeded or not; the monitor stores those records. Each
call also runs in an OpenTelemetry span ``control <action>`` (queue or job,
actor, source, result, affected jobs), so an action shows in the caller's trace.
Pause state lives in the consumers themselves, so every caller sees the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RawStreamMsg
from nats.js.errors import NotFoundError
from opentelemetry import trace

from jetqueue import names, telemetry
from jetqueue.catalog import Catalog, QueueSpec
from jetqueue.client import H_MSG_ID, H_SCHEDULE_TARGET, CronSchedule, JobClient
from jetqueue.errors import ConflictError, JetqueueError, JobNotFound
from jetqueue.job import Envelope, JobState, now_ms, validate_job_id

log = logging.getLogger(__name__)

T = TypeVar("T")

# Dead-letter message headers.
H_REASON = "Jq-Reason"  # failed | stalled | malformed
H_ERROR = "Jq-Error"
H_FAILED_AT = "Jq-Failed-At"
H_ORIGINAL_SUBJECT = "Jq-Original-Subject"

FOREVER = timedelta(days=365 * 100)


class AuditAction(StrEnum):
    QUEUE_PAUSE = "QUEUE_PAUSE"
    QUEUE_RESUME = "QUEUE_RESUME"
    QUEUE_DRAIN = "QUEUE_DRAIN"
    QUEUE_CLEAN = "QUEUE_CLEAN"
    QUEUE_RETRY_FAILED = "QUEUE_RETRY_FAILED"
    JOB_RETRY = "JOB_RETRY"
    JOB_CANCEL = "JOB_CANCEL"
    JOB_PROMOTE = "JOB_PROMOTE"
    JOB_DELETE = "JOB_DELETE"
    # one record for a whole bulk action: its filter (or ids), the count it matched, the outcome
    BULK_RETRY = "BULK_RETRY"
    BULK_CANCEL = "BULK_CANCEL"
    BULK_DELETE = "BULK_DELETE"
    BULK_PROMOTE = "BULK_PROMOTE"
    SCHEDULE_CREATE = "SCHEDULE_CREATE"
    SCHEDULE_UPDATE = "SCHEDULE_UPDATE"
    SCHEDULE_DELETE = "SCHEDULE_DELETE"
    SCHEDULE_PAUSE = "SCHEDULE_PAUSE"
    SCHEDULE_RESUME = "SCHEDULE_RESUME"
    SCHEDULE_TRIGGER = "SCHEDULE_TRIGGER"
    INCIDENT_ACK = "INCIDENT_ACK"
    INCIDENT_SNOOZE = "INCIDENT_SNOOZE"


class EntityType(StrEnum):
    QUEUE = "QUEUE"
    WORKER = "WORKER"
    JOB = "JOB"
    JOBS = "JOBS"  # a bulk action; the entity id is the filter's queue, or "*"
    SCHEDULE = "SCHEDULE"  # entity id "<queue>/<name>"
    INCIDENT = "INCIDENT"  # entity id "<type>/<queue>"


@dataclass(slots=True)
class AuditRecord:
    actor: str
    action: AuditAction
    entity_type: EntityType
    entity_id: str
    ok: bool
    reason: str | None = None
    role: str | None = None
    source: str = "api"
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    ts: int = field(default_factory=now_ms)

    def to_bytes(self) -> bytes:
        d = asdict(self)
        d["v"] = 1
        return json.dumps(d, separators=(",", ":"), default=str).encode()


@dataclass(slots=True)
class ConsumerCounts:
    """What the server says about one priority-level consumer of a queue."""

    name: str
    pending: int
    ack_pending: int
    redelivered: int
    waiting_pulls: int


@dataclass(slots=True)
class QueueInfo:
    """Counts of one queue, read from JetStream."""

    queue: str
    waiting: int
    waiting_by_level: list[int]
    active: int
    scheduled: int
    recurring: int
    dead_lettered: int
    redelivered: int
    paused: bool
    pause_until: str | None
    idle_pullers: int
    # JetStream health, from the same stream/consumer info replies as the counts above.
    stream_messages: int = 0
    stream_bytes: int = 0
    dlq_stream_messages: int = 0
    dlq_stream_bytes: int = 0
    consumers: list[ConsumerCounts] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _until_str(until: datetime) -> str:
    return until.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _indefinite(stamp: str) -> bool:
    """A pause without an end is a pause until now + FOREVER: report it as "no end" (None)."""
    try:
        year = int(stamp[:4])
    except ValueError:
        return False
    return year >= datetime.now(UTC).year + 90  # FOREVER is 100 years: stays recognised for a decade


def pause_end(stamp: str | None) -> str | None:
    """When a consumer's ``pause_until`` ends, as RFC 3339 UTC; None for no pause or a pause without an end."""
    if not stamp or _indefinite(stamp):
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return _until_str(when)


async def queue_info(js: JetStreamContext, spec: QueueSpec) -> QueueInfo:
    levels = []
    consumers = []
    active = redelivered = idle = 0
    paused = False
    pause_until: str | None = None
    for lvl in range(spec.priority_levels):
        consumer = names.level_consumer(spec.name, lvl)
        ci = await js.consumer_info(spec.stream, consumer)
        consumers.append(
            ConsumerCounts(
                name=consumer,
                pending=ci.num_pending or 0,
                ack_pending=ci.num_ack_pending or 0,
                redelivered=ci.num_redelivered or 0,
                waiting_pulls=ci.num_waiting or 0,
            )
        )
        levels.append(ci.num_pending or 0)
        active += ci.num_ack_pending or 0
        redelivered += ci.num_redelivered or 0
        idle += ci.num_waiting or 0
        if ci.paused:
            paused = True
            until = ci.config.pause_until
            if until and not _indefinite(until):
                pause_until = until
    si = await js.stream_info(spec.stream, subjects_filter=names.delays_and_schedules_filter(spec.name))
    subjects = si.state.subjects or {}
    prefix_s = names.sched_subject(spec.name, "")
    prefix_c = names.cron_subject(spec.name, "")
    scheduled = sum(n for s, n in subjects.items() if s.startswith(prefix_s))
    recurring = sum(n for s, n in subjects.items() if s.startswith(prefix_c))
    dlq = await js.stream_info(names.DLQ_STREAM, subjects_filter=names.dlq_filter(spec.name))
    dead = sum((dlq.state.subjects or {}).values())
    return QueueInfo(
        queue=spec.name,
        waiting=sum(levels),
        waiting_by_level=levels,
        active=active,
        scheduled=scheduled,
        recurring=recurring,
        dead_lettered=dead,
        redelivered=redelivered,
        paused=paused,
        pause_until=pause_until if paused else None,
        idle_pullers=idle,
        stream_messages=si.state.messages or 0,
        stream_bytes=si.state.bytes or 0,
        dlq_stream_messages=dlq.state.messages or 0,
        dlq_stream_bytes=dlq.state.bytes or 0,
        consumers=consumers,
    )


async def pause(js: JetStreamContext, spec: QueueSpec, until: datetime | None = None) -> dict[str, Any]:
    """Pause every level consumer (until ``until``, or until resumed)."""
    if until is not None and until.tzinfo is None:
        raise JetqueueError("pause 'until' needs a time zone")
    if until is not None and until <= datetime.now(UTC):
        raise JetqueueError("pause 'until' is in the past")
    stamp = _until_str(until or datetime.now(UTC) + FOREVER)
    for lvl in range(spec.priority_levels):
        await js.pause_consumer(spec.stream, names.level_consumer(spec.name, lvl), stamp)
    return {"paused": True, "pause_until": stamp if until else None}


async def resume(js: JetStreamContext, spec: QueueSpec) -> dict[str, Any]:
    for lvl in range(spec.priority_levels):
        await js.resume_consumer(spec.stream, names.level_consumer(spec.name, lvl))
    return {"paused": False}


async def _purge_count(nc: NatsClient, stream: str, subject: str, timeout: float = 10.0) -> int:
    """Purge a subject of a stream and say how many messages went (nats-py's purge_stream drops the count).

    Raises:
        JetqueueError: the server refused the purge.
    """
    reply = await nc.request(names.purge_subject(stream), json.dumps({"filter": subject}).encode(), timeout=timeout)
    resp = json.loads(reply.data)
    if resp.get("error"):
        raise JetqueueError(f"purge of {subject} refused: {resp['error'].get('description', resp['error'])}")
    return int(resp.get("purged", 0))


async def drain(
    nc: NatsClient, spec: QueueSpec, *, include_delayed: bool = False, settle_timeout: float = 30.0
) -> dict[str, Any]:
    """Remove waiting jobs only: pause, let in-flight jobs settle, purge, restore.

    A stream purge would also delete jobs a worker is running (JetStream
    purges by subject, not by delivery state), hence the pause and the wait.

    Raises:
        ConflictError: in-flight jobs did not settle in time (nothing removed).
    """
    js = nc.jetstream()
    before = await queue_info(js, spec)
    was_paused = before.paused
    if not was_paused:
        await pause(js, spec)
    try:
        deadline = time.monotonic() + settle_timeout
        while (info := await queue_info(js, spec)).active:
            if time.monotonic() > deadline:
                raise ConflictError(
                    f"{info.active} in-flight job(s) of {spec.name} did not settle within {settle_timeout:.0f}s; "
                    "nothing was removed"
                )
            await asyncio.sleep(0.2)
        removed = 0
        for waiting in (names.job_filter(spec.name), names.cronjob_filter(spec.name)):
            removed += await _purge_count(nc, spec.stream, waiting)
        removed_delayed = await _purge_count(nc, spec.stream, names.sched_filter(spec.name)) if include_delayed else 0
    finally:
        if not was_paused:
            await resume(js, spec)
    return {"removed": removed, "removed_delayed": removed_delayed, "was_paused": was_paused}


async def dead_letters(js: JetStreamContext, queue: str | None = None, limit: int = 1000) -> list[tuple[int, Any]]:
    """Raw DLQ messages (seq, msg) of a queue, oldest first."""
    sub = await js.pull_subscribe(
        names.dlq_filter(queue),
        stream=names.DLQ_STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30),
    )
    out: list[tuple[int, Any]] = []
    try:
        while len(out) < limit:
            try:
                msgs = await sub.fetch(min(256, limit - len(out)), timeout=0.5)
            except TimeoutError:
                break
            except Exception as exc:  # nats TimeoutError subclasses asyncio's in some versions
                if "Timeout" in type(exc).__name__:
                    break
                raise
            for m in msgs:
                out.append((m.metadata.sequence.stream, m))
            pending = msgs[-1].metadata.num_pending if msgs else 0
            if not pending:
                break
    finally:
        await sub.unsubscribe()
    return out


async def _requeue(js: JetStreamContext, catalog: Catalog, subject: str, data: bytes, seq: int) -> str:
    """Put a dead letter back on its queue as a fresh job (attempts start again), then delete the dead letter."""
    queue, job_id = names.parse_dlq_subject(subject)
    spec = catalog.get(queue)
    env = Envelope.from_bytes(data, spec, job_id=job_id)
    env.attempt = 1
    env.errors = []
    await js.publish(
        names.job_subject(spec.name, spec.level_for(env.priority), env.id),
        env.to_bytes(),
        headers={H_MSG_ID: f"{env.id}:requeue:{seq}"},
    )
    await js.delete_msg(names.DLQ_STREAM, seq)
    return env.id


async def retry_failed(js: JetStreamContext, catalog: Catalog, spec: QueueSpec, limit: int = 10_000) -> dict[str, Any]:
    """Move a queue's dead-lettered jobs back to waiting (attempts start again)."""
    retried = []
    skipped = 0
    for _seq, msg in await dead_letters(js, spec.name, limit):
        if (msg.headers or {}).get(H_REASON) == "malformed":
            skipped += 1
            continue
        retried.append(await _requeue(js, catalog, msg.subject, msg.data, msg.metadata.sequence.stream))
    return {"retried": len(retried), "skipped_malformed": skipped, "job_ids": retried[:100]}


async def retry_job(js: JetStreamContext, catalog: Catalog, job_id: str) -> dict[str, Any]:
    """Requeue one dead-lettered job.

    Raises:
        JobNotFound: the job is not in the dead-letter stream.
    """
    validate_job_id(job_id)  # a wildcard here would match another job
    try:
        msg = await js.get_last_msg(names.DLQ_STREAM, names.dlq_subject("*", job_id))
    except NotFoundError as exc:
        raise JobNotFound(job_id) from exc
    queue, _ = names.parse_dlq_subject(msg.subject or "")
    await _requeue(js, catalog, msg.subject or "", msg.data or b"", msg.seq or 0)
    return {"job_id": job_id, "queue": queue, "state": "waiting"}


async def clean_failed(
    js: JetStreamContext, spec: QueueSpec, older_than_s: float = 0, limit: int = 100_000
) -> dict[str, Any]:
    """Delete dead-lettered jobs of a queue older than ``older_than_s``."""
    cutoff = time.time() - older_than_s
    removed = 0
    for seq, msg in await dead_letters(js, spec.name, limit):
        ts = msg.metadata.timestamp.timestamp() if msg.metadata.timestamp else 0
        if ts <= cutoff:
            await js.delete_msg(names.DLQ_STREAM, seq)
            removed += 1
    return {"removed": removed}


async def _delayed(js: JetStreamContext, specs: list[QueueSpec], job_id: str) -> tuple[QueueSpec, RawStreamMsg] | None:
    """The schedule message of a delayed job (or of a retry waiting for its backoff), and its queue."""
    for spec in specs:
        try:
            return spec, await js.get_last_msg(spec.stream, names.sched_subject(spec.name, job_id))
        except NotFoundError:
            continue
    return None


async def _waiting(js: JetStreamContext, spec: QueueSpec, job_id: str) -> RawStreamMsg | None:
    try:
        return await js.get_last_msg(spec.stream, names.job_subject_any_level(spec.name, job_id))
    except NotFoundError:
        return None


async def _delivered(js: JetStreamContext, spec: QueueSpec, msg: RawStreamMsg) -> bool:
    """Whether a worker holds the job of ``msg`` (its level's consumer delivered it; it is not acked yet)."""
    _q, _kind, level, _id = names.parse_job_subject(msg.subject or "")
    ci = await js.consumer_info(spec.stream, names.level_consumer(spec.name, level))
    return (msg.seq or 0) <= (ci.delivered.stream_seq if ci.delivered else 0)


async def promote_job(js: JetStreamContext, catalog: Catalog, job_id: str, queue: str | None = None) -> dict[str, Any]:
    """Run a delayed job (or a retry waiting for its backoff) now: publish it to its job subject, drop its schedule.

    The copy carries its own ``Nats-Msg-Id``: the job id's would be dropped as a duplicate of the delayed
    publish within the duplicate window. The schedule is purged after the publish, so a failure leaves the
    job delayed rather than lost; were the schedule to fire in between, the job would run twice.

    Raises:
        JobNotFound: no such job. ConflictError: the job is not delayed (it waits, runs or ended).
    """
    validate_job_id(job_id)
    specs = [catalog.get(queue)] if queue else list(catalog.queues)
    found = await _delayed(js, specs, job_id)
    if found is None:
        for spec in specs:
            if await _waiting(js, spec, job_id) is not None:
                raise ConflictError(f"job {job_id} is not delayed: it is waiting or running already")
        raise JobNotFound(job_id)
    spec, msg = found
    env = Envelope.from_bytes(msg.data or b"", spec, job_id=job_id)
    target = (msg.headers or {}).get(H_SCHEDULE_TARGET) or names.job_subject(
        spec.name, spec.level_for(env.priority), job_id
    )
    await js.publish(target, msg.data or b"", headers={H_MSG_ID: f"{job_id}:promote:{msg.seq}"})
    await js.purge_stream(spec.stream, subject=names.sched_subject(spec.name, job_id))
    return {"job_id": job_id, "queue": spec.name, "state": "waiting", "attempt": env.attempt}


async def delete_job(
    nc: NatsClient, catalog: Catalog, job_id: str, queue: str | None = None, *, missing_ok: bool = False
) -> dict[str, Any]:
    """Remove a job that is not running: its delayed, waiting or dead-lettered message. It never runs.

    Args:
        missing_ok: a job with no message left (it ended) is no error: nothing is removed.

    Raises:
        JobNotFound: nothing to remove (unless ``missing_ok``). ConflictError: a worker runs it (cancel it).
    """
    js = nc.jetstream()
    validate_job_id(job_id)
    specs = [catalog.get(queue)] if queue else list(catalog.queues)
    removed = {"delayed": 0, "waiting": 0, "dead_lettered": 0}
    home: str | None = queue
    for spec in specs:
        waiting = await _waiting(js, spec, job_id)
        if waiting is not None and await _delivered(js, spec, waiting):
            raise ConflictError(f"job {job_id} is running: cancel it instead")
        delayed = await _purge_count(nc, spec.stream, names.sched_subject(spec.name, job_id))
        queued = await _purge_count(nc, spec.stream, names.job_subject_any_level(spec.name, job_id))
        if delayed or queued:
            removed["delayed"] += delayed
            removed["waiting"] += queued
            home = spec.name
    for spec in specs:
        try:
            msg = await js.get_last_msg(names.DLQ_STREAM, names.dlq_subject(spec.name, job_id))
        except NotFoundError:
            continue
        await js.delete_msg(names.DLQ_STREAM, msg.seq or 0)
        removed["dead_lettered"] += 1
        home = spec.name
    if not any(removed.values()) and not missing_ok:
        raise JobNotFound(job_id)
    return {"job_id": job_id, "queue": home, "removed": removed}


def _affected(action: AuditAction, result: dict[str, Any]) -> int | None:
    """How many jobs an action touched (None for pause/resume, which touch consumers, not jobs)."""
    match action:
        case AuditAction.QUEUE_DRAIN:
            return int(result.get("removed", 0)) + int(result.get("removed_delayed", 0))
        case AuditAction.QUEUE_RETRY_FAILED:
            return int(result.get("retried", 0))
        case AuditAction.QUEUE_CLEAN:
            return int(result.get("removed", 0))
        case (
            AuditAction.JOB_RETRY
            | AuditAction.JOB_CANCEL
            | AuditAction.JOB_PROMOTE
            | AuditAction.JOB_DELETE
            | AuditAction.SCHEDULE_TRIGGER
        ):
            return 1
        case AuditAction.BULK_RETRY | AuditAction.BULK_CANCEL | AuditAction.BULK_DELETE | AuditAction.BULK_PROMOTE:
            return int(result.get("done", 0))
    return None


class Controller:
    """The control functions with an audit record and a trace span for every call."""

    def __init__(
        self,
        nc: NatsClient,
        catalog: Catalog,
        *,
        source: str = "api",
        audit_sink: Callable[[AuditRecord], Awaitable[None]] | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.catalog = catalog
        self.source = source
        self.client = JobClient(nc, catalog)
        self._sink = audit_sink

    async def _audit(self, rec: AuditRecord) -> None:
        try:
            await self.js.publish(names.audit_subject(rec.entity_type.value), rec.to_bytes())
        except Exception as exc:
            log.error("audit record could not be published: %s", exc)
        if self._sink is not None:
            await self._sink(rec)

    async def _run(
        self,
        action: AuditAction,
        entity: EntityType,
        entity_id: str,
        actor: str,
        reason: str | None,
        role: str | None,
        params: dict[str, Any],
        op: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        rec = AuditRecord(
            actor=actor,
            action=action,
            entity_type=entity,
            entity_id=entity_id,
            ok=False,
            reason=reason,
            role=role,
            source=self.source,
            params=params,
        )
        attributes: dict[str, Any] = {
            "jetqueue.action": action.value,
            "jetqueue.actor": actor,
            "jetqueue.source": self.source,
            "jetqueue.entity_type": entity.value,
        }
        if role:
            attributes["jetqueue.role"] = role
        if entity is EntityType.QUEUE:
            attributes["jetqueue.queue"] = entity_id
        elif entity is EntityType.JOB:
            attributes["jetqueue.job_id"] = entity_id
        else:
            attributes["jetqueue.entity_id"] = entity_id
        # One span per control action, whoever calls it (monitor API, operator, CLI); the audit
        # record is published inside it, so a trace shows the action and its audit write.
        with telemetry.tracer().start_as_current_span(
            f"control {action.value.lower()}", kind=trace.SpanKind.INTERNAL, attributes=attributes
        ) as span:
            try:
                result = await op()
            except Exception as exc:
                rec.error = str(exc) or type(exc).__name__
                span.set_attribute("jetqueue.result", "error")
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR, rec.error)
                await self._audit(rec)
                raise
            rec.ok = True
            rec.result = {k: v for k, v in result.items() if k != "job_ids"}
            span.set_attribute("jetqueue.result", "ok")
            if entity is EntityType.JOB and result.get("queue"):
                span.set_attribute("jetqueue.queue", str(result["queue"]))
            affected = _affected(action, result)
            if affected is not None:
                span.set_attribute("jetqueue.affected", affected)
            await self._audit(rec)
            return result

    async def pause(
        self,
        queue: str,
        *,
        actor: str,
        until: datetime | None = None,
        reason: str | None = None,
        role: str | None = None,
    ) -> dict[str, Any]:
        spec = self.catalog.get(queue)
        return await self._run(
            AuditAction.QUEUE_PAUSE,
            EntityType.QUEUE,
            queue,
            actor,
            reason,
            role,
            {"until": until.isoformat() if until else None},
            lambda: pause(self.js, spec, until),
        )

    async def resume(
        self, queue: str, *, actor: str, reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        spec = self.catalog.get(queue)
        return await self._run(
            AuditAction.QUEUE_RESUME, EntityType.QUEUE, queue, actor, reason, role, {}, lambda: resume(self.js, spec)
        )

    async def drain(
        self,
        queue: str,
        *,
        actor: str,
        reason: str | None = None,
        role: str | None = None,
        include_delayed: bool = False,
        settle_timeout: float = 30.0,
    ) -> dict[str, Any]:
        spec = self.catalog.get(queue)
        return await self._run(
            AuditAction.QUEUE_DRAIN,
            EntityType.QUEUE,
            queue,
            actor,
            reason,
            role,
            {"include_delayed": include_delayed},
            lambda: drain(self.nc, spec, include_delayed=include_delayed, settle_timeout=settle_timeout),
        )

    async def retry_failed(
        self, queue: str, *, actor: str, reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        spec = self.catalog.get(queue)
        return await self._run(
            AuditAction.QUEUE_RETRY_FAILED,
            EntityType.QUEUE,
            queue,
            actor,
            reason,
            role,
            {},
            lambda: retry_failed(self.js, self.catalog, spec),
        )

    async def clean(
        self, queue: str, *, actor: str, older_than_s: float = 0, reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        spec = self.catalog.get(queue)
        return await self._run(
            AuditAction.QUEUE_CLEAN,
            EntityType.QUEUE,
            queue,
            actor,
            reason,
            role,
            {"state": "failed", "older_than_s": older_than_s},
            lambda: clean_failed(self.js, spec, older_than_s),
        )

    async def retry_job(
        self, job_id: str, *, actor: str, reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        return await self._run(
            AuditAction.JOB_RETRY,
            EntityType.JOB,
            job_id,
            actor,
            reason,
            role,
            {},
            lambda: retry_job(self.js, self.catalog, job_id),
        )

    async def cancel_job(
        self, job_id: str, *, actor: str, reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        async def op() -> dict[str, Any]:
            st: JobState = await self.client.cancel(job_id, reason=reason or f"cancelled by {actor}")
            return {"job_id": job_id, "state": st.state.value, "queue": st.queue}

        return await self._run(AuditAction.JOB_CANCEL, EntityType.JOB, job_id, actor, reason, role, {}, op)

    async def promote_job(
        self, job_id: str, *, actor: str, queue: str | None = None, reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        return await self._run(
            AuditAction.JOB_PROMOTE,
            EntityType.JOB,
            job_id,
            actor,
            reason,
            role,
            {},
            lambda: promote_job(self.js, self.catalog, job_id, queue),
        )

    async def delete_job(
        self,
        job_id: str,
        *,
        actor: str,
        queue: str | None = None,
        missing_ok: bool = False,
        reason: str | None = None,
        role: str | None = None,
    ) -> dict[str, Any]:
        return await self._run(
            AuditAction.JOB_DELETE,
            EntityType.JOB,
            job_id,
            actor,
            reason,
            role,
            {},
            lambda: delete_job(self.nc, self.catalog, job_id, queue, missing_ok=missing_ok),
        )

    async def audited(
        self,
        action: AuditAction,
        entity: EntityType,
        entity_id: str,
        op: Callable[[], Awaitable[dict[str, Any]]],
        *,
        actor: str,
        params: dict[str, Any] | None = None,
        reason: str | None = None,
        role: str | None = None,
    ) -> dict[str, Any]:
        """Run ``op`` as one audited action (a bulk action, an incident acknowledgement): one record, one span."""
        return await self._run(action, entity, entity_id, actor, reason, role, params or {}, op)

    # ------------------------------------------------------------ schedules
    async def save_schedule(
        self,
        queue: str,
        name: str,
        cron: str,
        *,
        actor: str,
        data: Any = None,
        time_zone: str = "UTC",
        job_name: str | None = None,
        priority: int | None = None,
        create: bool = True,
        reason: str | None = None,
        role: str | None = None,
    ) -> dict[str, Any]:
        """Create (``create``) or change a recurring job; a paused one stays paused when changed."""

        async def op() -> dict[str, Any]:
            paused = False
            if not create:
                paused = (await self.client.get_schedule(queue, name)).paused
            s: CronSchedule = await self.client.schedule(
                queue, name, cron, data=data, time_zone=time_zone, job_name=job_name, priority=priority, paused=paused
            )
            return s.to_dict()

        params = {"cron": cron, "time_zone": time_zone, "job_name": job_name, "priority": priority}
        action = AuditAction.SCHEDULE_CREATE if create else AuditAction.SCHEDULE_UPDATE
        return await self._run(action, EntityType.SCHEDULE, f"{queue}/{name}", actor, reason, role, params, op)

    async def delete_schedule(
        self, queue: str, name: str, *, actor: str, reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        async def op() -> dict[str, Any]:
            await self.client.unschedule(queue, name)
            return {"queue": queue, "name": name, "deleted": True}

        return await self._run(
            AuditAction.SCHEDULE_DELETE, EntityType.SCHEDULE, f"{queue}/{name}", actor, reason, role, {}, op
        )

    async def pause_schedule(
        self, queue: str, name: str, *, actor: str, reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        async def op() -> dict[str, Any]:
            return (await self.client.pause_schedule(queue, name)).to_dict()

        return await self._run(
            AuditAction.SCHEDULE_PAUSE, EntityType.SCHEDULE, f"{queue}/{name}", actor, reason, role, {}, op
        )

    async def resume_schedule(
        self, queue: str, name: str, *, actor: str, reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        async def op() -> dict[str, Any]:
            return (await self.client.resume_schedule(queue, name)).to_dict()

        return await self._run(
            AuditAction.SCHEDULE_RESUME, EntityType.SCHEDULE, f"{queue}/{name}", actor, reason, role, {}, op
        )

    async def trigger_schedule(
        self, queue: str, name: str, *, actor: str, reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        async def op() -> dict[str, Any]:
            r = await self.client.trigger_schedule(queue, name)
            return {"queue": queue, "name": name, "job_id": r.job_id, "state": r.state.value}

        return await self._run(
            AuditAction.SCHEDULE_TRIGGER, EntityType.SCHEDULE, f"{queue}/{name}", actor, reason, role, {}, op
        )
