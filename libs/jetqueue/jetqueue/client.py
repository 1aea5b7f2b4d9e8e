"""The jetqueue SDK: enqueue, schedule, cancel and read status over NATS.

The producer HTTP API is a thin layer over this class, and any Python service
can use it directly::

    nc, js = await connect_and_check(settings, name="my-service")
    client = JobClient(nc, load_catalog())
    result = await client.enqueue("email-send", "welcome", {"to": "a@b.c"})
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from jetqueue import names, telemetry
from jetqueue.catalog import Backoff, Catalog, QueueSpec
from jetqueue.errors import ConflictError, InvalidJob, JobNotFound, NatsUnavailable, PayloadTooLarge, ScheduleNotFound
from jetqueue.job import (
    TERMINAL_STATUSES,
    EnqueueResult,
    Envelope,
    JobOptions,
    JobState,
    JobStatus,
    new_job_id,
    now_ms,
    rfc3339,
    state_message,
    validate_job_id,
)
from jetqueue.publisher import Message, Publisher, PubResult

# Headers carried by job messages besides the JSON body.
H_MSG_ID = "Nats-Msg-Id"
H_SCHEDULE = "Nats-Schedule"
H_SCHEDULE_TARGET = "Nats-Schedule-Target"
H_SCHEDULE_TZ = "Nats-Schedule-Time-Zone"
H_RUN_AT = "Jq-Run-At"  # ms epoch of a delayed job, for status without parsing the schedule
H_SCHEDULER = "Nats-Scheduler"  # set by the server on a message a schedule fired
H_ROLLUP = "Nats-Rollup"  # "sub": the message replaces every other one on its subject

MAX_DELAY_DAYS = 365

# Room a job leaves under the server's max payload for what a worker derives from
# it: a retry or dead letter carries the errors of its attempts (10 x 1000
# characters at most) and headers; lifecycle records truncate themselves.
DERIVED_RESERVE = 16 * 1024


@dataclass(slots=True)
class JobRequest:
    """One job to enqueue (the arguments of :meth:`JobClient.enqueue`)."""

    queue: str
    name: str
    data: Any = None
    job_id: str | None = None
    priority: int | None = None
    delay_ms: int | None = None
    run_at: datetime | None = None
    options: JobOptions = field(default_factory=JobOptions)
    user_id: str | None = None


@dataclass(slots=True, frozen=True)
class CronSchedule:
    """A recurring job kept by the broker.

    ``paused``: its definition is kept without a schedule, so it fires nothing
    until resumed. ``updated_at``: when it was last written (ms), which is where
    an ``@every`` interval counts from.
    """

    queue: str
    name: str
    cron: str
    time_zone: str
    job_name: str
    data: Any
    priority: int | None = None
    paused: bool = False
    updated_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "name": self.name,
            "cron": self.cron,
            "time_zone": self.time_zone,
            "job_name": self.job_name,
            "data": self.data,
            "priority": self.priority,
            "paused": self.paused,
        }


def to_broker_cron(expr: str) -> str:
    """Accept 5-field (minute-first) or 6-field (second-first) cron and macros.

    The broker wants 6 fields; a classic 5-field expression fires at second 0.
    """
    expr = " ".join(expr.split())
    if not expr:
        raise InvalidJob("cron expression is empty")
    if expr.startswith("@"):
        return expr
    fields = expr.split(" ")
    if len(fields) == 5:
        return "0 " + expr
    if len(fields) == 6:
        return expr
    raise InvalidJob(f"cron expression needs 5 or 6 fields, got {len(fields)}: {expr!r}")


NATS_DOWN = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    asyncio.TimeoutError,
)


@contextlib.contextmanager
def nats_errors(what: str) -> Iterator[None]:
    """Turn NATS outages into :class:`NatsUnavailable` with a message saying what failed."""
    try:
        yield
    except NATS_DOWN as exc:
        raise NatsUnavailable(f"NATS did not answer ({what}): {str(exc) or type(exc).__name__}") from exc


class JobClient:
    """Enqueue, schedule, cancel and inspect jobs of the queues in ``catalog``."""

    def __init__(self, nc: NatsClient, catalog: Catalog, *, timeout: float = 5.0) -> None:
        self.nc = nc
        self.catalog = catalog
        self.timeout = timeout
        self.js: JetStreamContext = nc.jetstream(timeout=timeout)
        self.publisher = Publisher(nc)
        self._kv: KeyValue | None = None

    # ----------------------------------------------------------------- enqueue
    def _prepare(self, req: JobRequest) -> tuple[QueueSpec, Envelope, str, dict[str, str], int | None]:
        spec = self.catalog.get(req.queue)
        if not req.name or not isinstance(req.name, str) or len(req.name) > 200:
            raise InvalidJob("name must be a non-empty string of at most 200 characters")
        job_id = validate_job_id(req.job_id) if req.job_id else new_job_id()
        if req.delay_ms is not None and req.run_at is not None:
            raise InvalidJob("give delay_ms or run_at, not both")
        opts = req.options
        if opts.priority is not None and not 1 <= opts.priority <= 1000:
            raise InvalidJob("priority must be between 1 (most urgent) and 1000")
        if req.priority is not None:
            if not 1 <= req.priority <= 1000:
                raise InvalidJob("priority must be between 1 (most urgent) and 1000")
            opts = JobOptions(opts.attempts, opts.backoff, opts.timeout_ms, req.priority)
        resolved = opts.resolved(spec)
        run_at: int | None = None
        now = now_ms()
        if req.delay_ms is not None:
            if req.delay_ms < 0 or req.delay_ms > MAX_DELAY_DAYS * 86_400_000:
                raise InvalidJob(f"delay_ms must be between 0 and {MAX_DELAY_DAYS} days")
            if req.delay_ms > 0:
                run_at = now + req.delay_ms
        elif req.run_at is not None:
            if req.run_at.tzinfo is None:
                raise InvalidJob("run_at needs a time zone (e.g. 2026-01-01T00:00:00Z)")
            run_at = int(req.run_at.timestamp() * 1000)
            if run_at - now > MAX_DELAY_DAYS * 86_400_000:
                raise InvalidJob(f"run_at is more than {MAX_DELAY_DAYS} days ahead")
            if run_at <= now:
                run_at = None  # in the past: run now
        env = Envelope(
            id=job_id,
            queue=spec.name,
            name=req.name,
            data=req.data,
            attempts=resolved.attempts,
            backoff=resolved.backoff,
            timeout_ms=resolved.timeout_ms,
            priority=resolved.priority,
            user_id=req.user_id,
            enqueued_at=now,
        )
        level = spec.level_for(resolved.priority)
        headers: dict[str, str] = {H_MSG_ID: job_id}
        if telemetry.enabled():  # propagation costs microseconds per job even with nothing to carry
            telemetry.inject(headers)
        target = names.job_subject(spec.name, level, job_id)
        if run_at is not None:
            headers[H_SCHEDULE] = "@at " + rfc3339(run_at)
            headers[H_SCHEDULE_TARGET] = target
            headers[H_RUN_AT] = str(run_at)
            subject = names.sched_subject(spec.name, job_id)
        else:
            subject = target
        return spec, env, subject, headers, run_at

    @staticmethod
    def _result(spec: QueueSpec, env: Envelope, ack: PubResult, run_at: int | None) -> EnqueueResult:
        return EnqueueResult(
            job_id=env.id,
            queue=spec.name,
            state=JobStatus.SCHEDULED if run_at is not None else JobStatus.WAITING,
            duplicate=ack.duplicate,
            seq=ack.seq,
            run_at=run_at,
        )

    def prepare(self, req: JobRequest) -> Message:
        """The message that enqueues ``req`` (validated and size-checked), for callers that publish it
        together with other writes (a worker's alert settles with the failed job).

        Raises:
            UnknownQueue, InvalidJob, PayloadTooLarge.
        """
        _spec, env, subject, headers, _run_at = self._prepare(req)
        body = env.to_bytes()
        self._check_size(body)
        return Message(subject, body, headers)

    async def enqueue(
        self,
        queue: str,
        name: str,
        data: Any = None,
        *,
        job_id: str | None = None,
        priority: int | None = None,
        delay_ms: int | None = None,
        run_at: datetime | None = None,
        attempts: int | None = None,
        backoff: Backoff | None = None,
        timeout_ms: int | None = None,
        user_id: str | None = None,
    ) -> EnqueueResult:
        """Publish one job; the same ``job_id`` within the duplicate window gives one job.

        Raises:
            UnknownQueue, InvalidJob, PayloadTooLarge, NatsUnavailable.
        """
        req = JobRequest(
            queue=queue,
            name=name,
            data=data,
            job_id=job_id,
            priority=priority,
            delay_ms=delay_ms,
            run_at=run_at,
            options=JobOptions(attempts=attempts, backoff=backoff, timeout_ms=timeout_ms),
            user_id=user_id,
        )
        return await self.enqueue_request(req)

    async def enqueue_request(self, req: JobRequest) -> EnqueueResult:
        spec, env, subject, headers, run_at = self._prepare(req)
        with telemetry.tracer().start_as_current_span(
            f"{spec.name} publish", attributes={"messaging.system": "nats", "jetqueue.job_id": env.id}
        ):
            if telemetry.enabled():
                telemetry.inject(headers)
            body = env.to_bytes()
            self._check_size(body)
            (ack,) = await self._publish_all([Message(subject, body, headers)], "publish")
        return self._result(spec, env, ack, run_at)

    async def enqueue_many(self, requests: Sequence[JobRequest]) -> list[EnqueueResult]:
        """Publish many jobs at once, each confirmed by the server (PubAcks counted on one inbox).

        Every request is validated before anything is published, so a bad
        item rejects the whole batch and nothing is half-enqueued.

        Raises:
            UnknownQueue, InvalidJob, PayloadTooLarge: a request is invalid (nothing was published).
            NatsUnavailable: some jobs were not confirmed in time (jobs confirmed later are still jobs;
                their ids make a retry of the same request idempotent).
        """
        prepared = [self._prepare(r) for r in requests]
        messages = []
        for _spec, env, subject, headers, _run_at in prepared:
            body = env.to_bytes()
            self._check_size(body)
            messages.append(Message(subject, body, headers))
        acks = await self._publish_all(messages, "bulk publish")
        return [self._result(p[0], p[1], ack, p[4]) for p, ack in zip(prepared, acks, strict=True)]

    async def _publish_all(self, messages: list[Message], what: str) -> list[PubResult]:
        with nats_errors(what):
            acks = await self.publisher.publish(
                messages, ack_timeout=self.timeout, deadline=self.timeout + len(messages) / 2000
            )
        for ack in acks:
            if ack.error:
                if ack.code == 503:
                    raise NatsUnavailable(f"NATS did not accept the job ({what}): {ack.error}")
                raise InvalidJob(f"JetStream refused the job: {ack.error}")
        return acks

    def max_job_bytes(self) -> int:
        """The largest job body this server takes: its max payload, less room for what the worker
        derives from a job (the errors of its attempts in a retry or a dead letter, headers)."""
        return max(self.nc.max_payload - DERIVED_RESERVE, 0)

    def _check_size(self, body: bytes) -> None:
        limit = self.max_job_bytes()
        if limit and len(body) > limit:
            raise PayloadTooLarge(len(body), limit)

    # --------------------------------------------------------------- schedules
    async def schedule(
        self,
        queue: str,
        name: str,
        cron: str,
        *,
        data: Any = None,
        time_zone: str = "UTC",
        job_name: str | None = None,
        priority: int | None = None,
        paused: bool = False,
    ) -> CronSchedule:
        """Create or replace a recurring job (one schedule per queue and name).

        With ``paused`` the definition is stored without a schedule: it fires
        nothing until :meth:`resume_schedule`.

        Raises:
            InvalidJob: a bad name or cron expression, or a time zone the broker refuses.
        """
        spec = self.catalog.get(queue)
        if not names.is_valid_token(name):
            raise InvalidJob("schedule name must be 1-128 letters, digits or _-:=@+")
        expr = to_broker_cron(cron)
        sched = CronSchedule(queue, name, cron, time_zone, job_name or name, data, priority, paused)
        env = Envelope(
            id=names.cron_template_id(name),
            queue=queue,
            name=sched.job_name,
            data=data,
            attempts=spec.attempts,
            backoff=spec.backoff,
            timeout_ms=spec.timeout_ms,
            priority=priority,
            cron=name,
        )
        body = json.loads(env.to_bytes())
        # data is the body's own; paused is where the message is
        body["schedule"] = {k: v for k, v in sched.to_dict().items() if k not in ("data", "paused")}
        headers = {
            H_SCHEDULE: expr,
            H_SCHEDULE_TARGET: names.cronjob_subject(queue, spec.level_for(priority), name),
        }
        if not expr.startswith("@every"):  # an interval has no wall-clock time to place in a zone
            headers[H_SCHEDULE_TZ] = time_zone
        raw = json.dumps(body).encode()
        self._check_size(raw)
        # The broker checks the expression and the zone: a paused definition is published as a schedule
        # first too, so a bad one is refused either way.
        await self._publish_schedule(names.cron_subject(queue, name), raw, headers, cron, time_zone)
        if paused:
            await self._park(spec, name, raw)
        else:
            with nats_errors("resume schedule"):
                await self.js.purge_stream(spec.stream, subject=names.cron_paused_subject(queue, name))
        return sched

    async def _publish_schedule(self, subject: str, raw: bytes, headers: dict[str, str], cron: str, tz: str) -> None:
        try:
            with nats_errors("publish schedule"):
                await self.js.publish(subject, raw, headers=headers)
        except BadRequestError as exc:
            raise InvalidJob(
                f"the broker refused the schedule ({exc.description}): check cron {cron!r} and time zone {tz!r}"
            ) from exc

    async def _park(self, spec: QueueSpec, name: str, raw: bytes) -> None:
        """Keep a definition on the paused subject (one message: a rollup) and remove its schedule."""
        with nats_errors("pause schedule"):
            await self.js.publish(names.cron_paused_subject(spec.name, name), raw, headers={H_ROLLUP: "sub"})
            await self.js.purge_stream(spec.stream, subject=names.cron_subject(spec.name, name))

    async def _definitions(self, spec: QueueSpec, subject_filter: str) -> list[tuple[dict[str, Any], int | None]]:
        """The bodies (and write times, ms) of the last message on each subject matching ``subject_filter``."""
        try:
            info = await self.js.stream_info(spec.stream, subjects_filter=subject_filter)
        except NotFoundError:
            return []
        out = []
        for subject in sorted((info.state.subjects or {}).keys()):
            try:
                msg = await self.js.get_last_msg(spec.stream, subject)
            except NotFoundError:
                continue
            when = int(msg.time.timestamp() * 1000) if msg.time is not None else None
            out.append((json.loads(msg.data or b"{}"), when))
        return out

    async def list_schedules(self, queue: str | None = None) -> list[CronSchedule]:
        """Every recurring job (of ``queue``, or of all queues), paused ones included."""
        out: list[CronSchedule] = []
        with nats_errors("list schedules"):
            for spec in [self.catalog.get(queue)] if queue else self.catalog.queues:
                filters = ((False, names.cron_filter(spec.name)), (True, names.cron_paused_filter(spec.name)))
                for paused, subjects in filters:
                    for body, when in await self._definitions(spec, subjects):
                        s = body.get("schedule")
                        if s:
                            extra = {"data": body.get("data"), "paused": paused, "updated_at": when}
                            out.append(CronSchedule(**{**s, **extra}))
        return sorted(out, key=lambda c: (c.queue, c.name))

    async def get_schedule(self, queue: str, name: str) -> CronSchedule:
        """One recurring job, active or paused.

        Raises:
            ScheduleNotFound: there is no such schedule.
        """
        if not names.is_valid_token(name):
            raise ScheduleNotFound(queue, name)
        found = [s for s in await self.list_schedules(queue) if s.name == name]
        if not found:
            raise ScheduleNotFound(queue, name)
        return found[0]

    async def pause_schedule(self, queue: str, name: str) -> CronSchedule:
        """Stop a recurring job from firing, keeping its definition (a no-op when it is paused already).

        Raises:
            ScheduleNotFound: there is no such schedule.
        """
        current = await self.get_schedule(queue, name)
        if current.paused:
            return current
        spec = self.catalog.get(queue)
        with nats_errors("pause schedule"):
            msg = await self.js.get_last_msg(spec.stream, names.cron_subject(queue, name))
        await self._park(spec, name, msg.data or b"{}")
        return replace(current, paused=True)

    async def resume_schedule(self, queue: str, name: str) -> CronSchedule:
        """Let a paused recurring job fire again (a no-op when it is not paused).

        Raises:
            ScheduleNotFound: there is no such schedule.
        """
        s = await self.get_schedule(queue, name)
        if not s.paused:
            return s
        return await self.schedule(
            queue, name, s.cron, data=s.data, time_zone=s.time_zone, job_name=s.job_name, priority=s.priority
        )

    async def trigger_schedule(self, queue: str, name: str) -> EnqueueResult:
        """Run a recurring job once now (paused or not): a job with its job name, data and priority.

        Its id is ``cron-<name>-t<ms>``, next to the jobs the schedule fires.

        Raises:
            ScheduleNotFound: there is no such schedule.
        """
        s = await self.get_schedule(queue, name)
        return await self.enqueue(
            queue, s.job_name, s.data, job_id=names.triggered_cron_job_id(name, now_ms()), priority=s.priority
        )

    async def unschedule(self, queue: str, name: str) -> None:
        """Remove a recurring job, active or paused.

        Raises:
            ScheduleNotFound: there is no such schedule.
        """
        spec = self.catalog.get(queue)
        if not names.is_valid_token(name):
            raise ScheduleNotFound(queue, name)
        subjects = (names.cron_subject(queue, name), names.cron_paused_subject(queue, name))
        with nats_errors("remove schedule"):
            present = [s for s in subjects if await self._has_subject(spec.stream, s)]
            if not present:
                raise ScheduleNotFound(queue, name)
            for subject in present:
                await self.js.purge_stream(spec.stream, subject=subject)

    async def _has_subject(self, stream: str, subject: str) -> bool:
        try:
            await self.js.get_last_msg(stream, subject)
            return True
        except NotFoundError:
            return False

    # ------------------------------------------------------------------ status
    async def kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.js.key_value(names.JOBS_BUCKET)
        return self._kv

    async def _recorded(self, job_id: str) -> JobState | None:
        kv = await self.kv()
        try:
            # Job ids may hold ':', '@' and '+' (valid subject tokens) that nats-py's stricter key check refuses.
            entry = await kv.get(names.kv_key(job_id), validate_keys=False)
        except (KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if entry.value is None:  # a TTL marker: the record expired
            return None
        return JobState.from_bytes(entry.value)

    async def _find_in_queue(self, spec: QueueSpec, job_id: str) -> JobState | None:
        """Look for a job that is still in its queue's stream (scheduled, waiting or active)."""
        try:
            msg = await self.js.get_last_msg(spec.stream, names.sched_subject(spec.name, job_id))
            env = Envelope.from_bytes(msg.data or b"", spec, job_id=job_id)
            run_at = int((msg.headers or {}).get(H_RUN_AT, 0)) or None
            return JobState(
                id=job_id,
                queue=spec.name,
                state=JobStatus.SCHEDULED,
                name=env.name,
                attempt=env.attempt - 1,
                attempts=env.attempts,
                user_id=env.user_id,
                enqueued_at=env.enqueued_at,
                run_at=run_at,
                errors=env.errors,
                error=env.errors[-1] if env.errors else None,
                data=env.data,
            )
        except NotFoundError:
            pass
        except InvalidJob:
            return None
        try:
            msg = await self.js.get_last_msg(spec.stream, names.job_subject_any_level(spec.name, job_id))
        except NotFoundError:
            return None
        _q, _kind, level, _id = names.parse_job_subject(msg.subject or "")
        try:
            env = Envelope.from_bytes(msg.data or b"", spec, job_id=job_id)
        except InvalidJob:
            return None
        info = await self.js.consumer_info(spec.stream, names.level_consumer(spec.name, level))
        delivered = info.delivered.stream_seq if info.delivered else 0
        state = JobStatus.ACTIVE if msg.seq is not None and msg.seq <= (delivered or 0) else JobStatus.WAITING
        return JobState(
            id=job_id,
            queue=spec.name,
            state=state,
            name=env.name,
            attempt=env.attempt if state is JobStatus.ACTIVE else env.attempt - 1,
            attempts=env.attempts,
            user_id=env.user_id,
            enqueued_at=env.enqueued_at,
            errors=env.errors,
            error=env.errors[-1] if env.errors else None,
            data=env.data,
        )

    async def status(self, job_id: str, queue: str | None = None) -> JobState:
        """Current state of a job, from enqueue to its final state.

        Terminal and in-run states come from the ``jq-jobs`` bucket (written by
        workers); scheduled / waiting / active are read from the queue's
        stream and consumer, so an enqueue costs one publish only.

        Raises:
            JobNotFound: never enqueued, or its record expired.
        """
        validate_job_id(job_id)
        with nats_errors("status lookup"):
            recorded = await self._recorded(job_id)
            home = recorded.queue if recorded else queue
            specs = [self.catalog.get(home)] if home else list(self.catalog.queues)
            found = await asyncio.gather(*(self._find_in_queue(s, job_id) for s in specs))
        live = next((f for f in found if f is not None), None)
        if live is None:
            # A worker writes the final state before it acks, so a job that
            # left its stream between our two reads has a record by now.
            recorded = await self._recorded(job_id) or recorded
            if recorded is not None:
                return recorded
            raise JobNotFound(job_id)
        if recorded is None:
            return live
        if recorded.state in TERMINAL_STATUSES:
            if live.enqueued_at and recorded.enqueued_at and live.enqueued_at > recorded.enqueued_at:
                return live  # the id was used again after the old job ended
            return recorded
        if live.state is JobStatus.ACTIVE:
            # the worker's record has progress, start time and worker id
            recorded.state = JobStatus.ACTIVE
            recorded.data = live.data
            return recorded
        live.errors = recorded.errors or live.errors
        live.progress = recorded.progress
        return live

    # ------------------------------------------------------------------ cancel
    async def cancel(self, job_id: str, queue: str | None = None, *, reason: str = "cancelled") -> JobState:
        """Cancel a scheduled or waiting job; ask the worker to stop a running one.

        Raises:
            JobNotFound: unknown job. ConflictError: it already finished.
        """
        current = await self.status(job_id, queue)
        spec = self.catalog.get(current.queue)
        if current.state in TERMINAL_STATUSES:
            raise ConflictError(f"job {job_id} is already {current.state.value}")
        if current.state is JobStatus.ACTIVE:
            with nats_errors("cancel request"):
                await self.nc.publish(
                    names.cancel_subject(spec.name), json.dumps({"job_id": job_id, "reason": reason}).encode()
                )
                await self.nc.flush()
            current.error = f"cancel requested: {reason}"
            return current
        # scheduled (delayed or between retries) or waiting: remove its message
        with nats_errors("cancel"):
            await self.js.purge_stream(spec.stream, subject=names.sched_subject(spec.name, job_id))
            await self.js.purge_stream(spec.stream, subject=names.job_subject_any_level(spec.name, job_id))
        state = JobState(
            id=job_id,
            queue=spec.name,
            state=JobStatus.CANCELLED,
            name=current.name,
            attempt=current.attempt,
            attempts=current.attempts,
            user_id=current.user_id,
            enqueued_at=current.enqueued_at,
            finished_at=now_ms(),
            error=reason,
            errors=current.errors,
        )
        with nats_errors("cancel"):
            await record_state(self.js, state, spec.failed_retention_s)
        return state


async def record_state(js: JetStreamContext, state: JobState, ttl_s: int) -> None:
    """Write a job's state into the ``jq-jobs`` bucket with a per-key TTL (and wait for the server)."""
    m = state_message(state, ttl_s)
    await js.publish(m.subject, m.payload, headers=m.headers)
