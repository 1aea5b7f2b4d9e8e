"""The worker runtime: pull jobs of one queue by priority, run them, settle them.

Settling a job (see docs/architecture.md "The job path"):

* success: state ``completed`` into the jobs bucket (TTL = retention), a
  ``completed`` record into the batch, ack;
* failure with attempts left: the job is re-published as a broker schedule
  ``@at now+backoff`` with ``attempt+1`` (it holds no consumer slot while it
  waits), state ``scheduled``, then ack;
* last failure: the job goes to the dead-letter stream with its errors, state
  ``failed``, a notification job for the admins, then ``term``;
* malformed message: dead-lettered with the reason, ``term``; never a crash.

A lease (``+WPI``) is renewed for every held job, so a long job is not
redelivered while its worker lives; a dead worker's job is redelivered after
``ack_wait`` and counted as a stall, not an attempt.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import trace

from jetqueue import artifacts, logs, names, telemetry
from jetqueue.catalog import Catalog, QueueSpec
from jetqueue.client import H_MSG_ID, H_RUN_AT, H_SCHEDULE, H_SCHEDULE_TARGET, JobClient
from jetqueue.control import H_ERROR, H_FAILED_AT, H_ORIGINAL_SUBJECT, H_REASON
from jetqueue.errors import InvalidJob, JetqueueError
from jetqueue.events import EventBatcher, Heartbeat, LifecycleRecord
from jetqueue.job import Envelope, EventType, JobState, JobStatus, now_ms
from jetqueue.processors import JobCancelled, JobContext, PermanentError, ProcessorRegistry
from jetqueue_worker.metrics import (
    ERROR_EXCEPTION,
    ERROR_MALFORMED,
    ERROR_NO_PROCESSOR,
    ERROR_PERMANENT,
    ERROR_REASONS,
    ERROR_STALLED,
    ERROR_TIMEOUT,
    WorkerMetrics,
)
from jetqueue_worker.puller import Puller

log = logging.getLogger("jetqueue.worker")

NOTIFY_QUEUE = "notification-send"
MAX_ERROR_LEN = 4000


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Held:
    """A delivered job this worker holds (running or about to run)."""

    msg: Msg
    level: int
    job_id: str = ""
    task: asyncio.Task[None] | None = None
    ctx: JobContext | None = None
    cancel_reason: str | None = None
    releasing: bool = False
    started_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # progress throttle (Worker._progress): the newest unreported value and when it may be written
    progress: float | None = None
    progress_due: float = 0.0
    progress_timer: asyncio.TimerHandle | None = None
    progress_task: asyncio.Future[None] | None = None
    progress_closed: bool = False


class Worker:
    """Runs the jobs of one queue with the queue's concurrency."""

    def __init__(
        self,
        nc: NatsClient,
        catalog: Catalog,
        queue: str,
        registry: ProcessorRegistry,
        *,
        worker_id: str | None = None,
        concurrency: int | None = None,
        heartbeat_s: float = 10.0,
        idle_wait_s: float = 2.0,
        progress_interval_s: float = 0.25,
        grace_s: float = 30.0,
        metrics: WorkerMetrics | None = None,
        version: str = "0.1.0",
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.catalog = catalog
        self.spec: QueueSpec = catalog.get(queue)
        self.registry = registry
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{queue}"
        self.concurrency = concurrency or self.spec.concurrency
        self.heartbeat_s = heartbeat_s
        self.idle_wait_s = idle_wait_s
        self.progress_interval_s = progress_interval_s
        self.grace_s = grace_s
        self.metrics = metrics or WorkerMetrics()
        self.version = version
        self.client = JobClient(nc, catalog)
        self.events = EventBatcher(self.js, queue)
        self.held: dict[int, Held] = {}  # by stream sequence
        self.backlog: deque[Held] = deque()  # delivered beyond concurrency (long-polls on several levels)
        self.processed = 0
        self.failed = 0
        self.started_at = now_ms()
        self._pullers: list[Puller] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._slot = asyncio.Event()
        self._running = False
        self._stopping = False
        self._idle = asyncio.Event()
        self._cancel_sub: Any = None
        self._advisory_sub: Any = None
        self._naks: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------- lifecycle
    async def start(self, *, own_subscriptions: bool = True) -> None:
        """Start pulling. ``own_subscriptions=False`` when the app wires the cancel subscription."""
        for lvl in range(self.spec.priority_levels):
            p = Puller(
                self.nc,
                self.spec.stream,
                names.level_consumer(self.spec.name, lvl),
                functools.partial(self._on_msg, level=lvl),
            )
            await p.start()
            self._pullers.append(p)
        if own_subscriptions:

            async def on_cancel(m: Msg) -> None:
                await self.on_cancel(m.data)

            self._cancel_sub = await self.nc.subscribe(names.cancel_subject(self.spec.name), cb=on_cancel)
        self._advisory_sub = await self.js.pull_subscribe_bind(
            names.stalled_consumer(self.spec.name), names.ADVISORIES_STREAM
        )
        self.events.start()
        q = self.spec.name
        self.metrics.concurrency.labels(q).set(self.concurrency)
        self.metrics.info.labels(q, self.worker_id, self.version).set(1)
        # Series that may stay at zero exist from the start: a dashboard shows 0, not "No data".
        for counter in (self.metrics.stalled, self.metrics.cancelled, self.metrics.malformed, self.metrics.in_flight):
            counter.labels(q)
        for reason in ERROR_REASONS:
            self.metrics.errors.labels(q, reason)
        self._running = True
        self._tasks = [
            asyncio.create_task(self._fetch_loop(), name="jq-fetch"),
            asyncio.create_task(self._lease_loop(), name="jq-lease"),
            asyncio.create_task(self._heartbeat_loop(), name="jq-heartbeat"),
            asyncio.create_task(self._advisory_loop(), name="jq-advisories"),
        ]
        log.info("worker %s started on queue %s (concurrency %d)", self.worker_id, self.spec.name, self.concurrency)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking jobs, let running ones finish within the grace period, release the rest."""
        if self._stopping:
            return
        self._stopping = True
        self._running = False
        grace = self.grace_s if grace_s is None else grace_s
        self._slot.set()
        for p in self._pullers:
            p.cancel_all()
        # Jobs delivered but not started go straight back.
        while self.backlog:
            h = self.backlog.popleft()
            self.held.pop(h.msg.metadata.sequence.stream, None)
            await h.msg.nak()
        await self._send_heartbeat(status="STOPPING")
        running = [h.task for h in self.held.values() if h.task is not None]
        if running:
            log.info("waiting up to %.0fs for %d running job(s)", grace, len(running))
            _done, pending = await asyncio.wait(running, timeout=grace)
            for h in list(self.held.values()):
                if h.task is not None and not h.task.done():
                    h.releasing = True
                    h.task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        # Cancel until every loop has ended: asyncio.wait_for inside nats-py can
        # swallow a cancel that lands just as a reply arrives (Python 3.11).
        pending_tasks = {t for t in self._tasks if not t.done()}
        while pending_tasks:
            for t in pending_tasks:
                t.cancel()
            _finished, pending_tasks = await asyncio.wait(pending_tasks, timeout=0.5)
        for p in self._pullers:
            await p.stop()
        if self._cancel_sub is not None:
            await self._cancel_sub.unsubscribe()
        # An open pull subscription holds the connection's drain for its whole timeout.
        try:
            await self._advisory_sub.unsubscribe()
        except Exception:
            pass
        await self.events.stop()
        await self._send_heartbeat(status="OFFLINE")
        try:
            await self.nc.flush(timeout=5)
        except Exception:  # the connection may already be gone
            pass
        log.info("worker %s stopped", self.worker_id)

    # -------------------------------------------------------------- fetching
    @property
    def free(self) -> int:
        return self.concurrency - len(self.held)

    def _on_msg(self, msg: Msg, level: int) -> None:
        seq = msg.metadata.sequence.stream
        if seq in self.held:  # a redelivery of something we already hold
            return
        h = Held(msg=msg, level=level)
        self.held[seq] = h
        if not self._running:
            nak = asyncio.ensure_future(msg.nak())  # arrived during shutdown: hand it back
            self._naks.add(nak)
            nak.add_done_callback(self._naks.discard)
            self.held.pop(seq, None)
            return
        running = sum(1 for x in self.held.values() if x.task is not None)
        if running < self.concurrency:
            self._start(h)
        else:
            self.backlog.append(h)

    def _start(self, h: Held) -> None:
        h.task = asyncio.create_task(self._run(h))

    def _done(self, h: Held) -> None:
        h.progress_closed = True  # also when the job was released or cancelled mid-run
        self._cancel_progress_timer(h)
        self.held.pop(h.msg.metadata.sequence.stream, None)
        if self.backlog and self._running:
            self._start(self.backlog.popleft())
        self._slot.set()

    async def _fetch_loop(self) -> None:
        try:
            while self._running:
                if self.free <= 0:
                    self._slot.clear()
                    await self._slot.wait()
                    continue
                got = 0
                # Most urgent level first; a level is only asked when the ones
                # above it had nothing, so priority holds whenever a backlog exists.
                for p in self._pullers:
                    if self.free <= 0:
                        break
                    if p.busy:  # an idle long-poll is open: it delivers whatever arrives there
                        continue
                    fut = p.pull(self.free, no_wait=True)
                    try:
                        got = await asyncio.wait_for(asyncio.shield(fut), timeout=2.0)
                    except TimeoutError:
                        p.cancel_all()
                        got = 0
                    if got:
                        break
                if got or not self._running:
                    continue
                # Idle: long-poll every level at once; whichever gets a job wakes us.
                futs = [p.pull(1, expires=self.idle_wait_s) for p in self._pullers]
                await asyncio.wait(futs, timeout=self.idle_wait_s + 1, return_when=asyncio.FIRST_COMPLETED)
                for p in self._pullers:
                    if p.busy and not any(f.done() for f in futs):
                        p.cancel_all()  # the server let it expire without telling us
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("fetch loop crashed; restarting in 1s")
            await asyncio.sleep(1)
            if self._running:
                self._tasks.append(asyncio.create_task(self._fetch_loop()))

    async def _lease_loop(self) -> None:
        interval = max(self.spec.ack_wait_s / 3, 0.3)
        while not self._stopping:
            await asyncio.sleep(interval)
            for h in list(self.held.values()):
                try:
                    await h.msg.in_progress()
                except Exception as exc:
                    log.warning("lease renewal failed: %s", exc)

    async def _advisory_loop(self) -> None:
        """Dead-letter jobs that hit max_deliver; the advisories wait in a stream until a worker takes them."""
        while not self._stopping:
            try:
                msgs = await self._advisory_sub.fetch(10, timeout=self.idle_wait_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # fetch timeout (nothing to do) or NATS reconnecting
                await asyncio.sleep(0.1)
                continue
            for m in msgs:
                try:
                    await self.on_max_deliveries(m.data)
                    await m.ack()
                except Exception as exc:
                    log.warning("handling a max-deliveries advisory failed (%s); it will come back", exc)
                    await _quiet(m.nak(delay=5))

    async def _heartbeat_loop(self) -> None:
        while not self._stopping:
            await self._send_heartbeat()
            await asyncio.sleep(self.heartbeat_s)

    async def _send_heartbeat(self, status: str = "ONLINE") -> None:
        hb = Heartbeat(
            worker_id=self.worker_id,
            queue=self.spec.name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=self.version,
            started_at=self.started_at,
            active_jobs=sum(1 for h in self.held.values() if h.task),
            processed_jobs=self.processed,
            failed_jobs=self.failed,
            concurrency=self.concurrency,
            status=status,
        )
        try:
            await self.js.publish(names.heartbeat_subject(self.spec.name, self.worker_id), hb.to_bytes(), timeout=2)
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)

    # --------------------------------------------------------------- running
    def _record(self, type_: EventType, env: Envelope, **kw: Any) -> None:
        self.events.add(
            LifecycleRecord(
                type=type_,
                job_id=env.id,
                queue=env.queue,
                name=env.name,
                attempt=env.attempt,
                attempts=env.attempts,
                worker=self.worker_id,
                **kw,
            )
        )

    def _state(self, env: Envelope, state: JobStatus, **kw: Any) -> JobState:
        return JobState(
            id=env.id,
            queue=env.queue,
            state=state,
            name=env.name,
            attempt=env.attempt,
            attempts=env.attempts,
            user_id=env.user_id,
            enqueued_at=env.enqueued_at,
            worker=self.worker_id,
            errors=list(env.errors),
            **kw,
        )

    async def _write_state(self, st: JobState, ttl: int) -> None:
        """Publish a job's state without waiting for the server's ack.

        The publish is written to the connection before the caller acks the
        job, so a status read never falls between the two.
        """
        subject = f"$KV.{names.JOBS_BUCKET}.{names.kv_key(st.id)}"
        ack = await self.js.publish_async(subject, st.to_bytes(), headers={"Nats-TTL": f"{int(ttl)}s"})
        ack.add_done_callback(_log_failure)

    async def _run(self, h: Held) -> None:
        msg = h.msg
        meta = msg.metadata
        try:
            try:
                _q, kind, _lvl, token = names.parse_job_subject(msg.subject)
                job_id = token if kind == "job" else f"cron-{token}-{meta.sequence.stream}"
                env = Envelope.from_bytes(msg.data, self.spec, job_id=job_id)
            except (InvalidJob, ValueError) as exc:
                await self._dead_letter_malformed(msg, str(exc))
                return
            h.job_id = env.id
            with logs.job_context(job_id=env.id, queue=env.queue, attempt=env.attempt, worker=self.worker_id):
                await self._begin(h, env, meta.num_delivered)
        except asyncio.CancelledError:
            if h.releasing:
                await _quiet(msg.nak())
            raise
        except Exception:
            log.exception("settling job %s failed; it will be redelivered after ack_wait", h.job_id)
        finally:
            self._done(h)

    async def _begin(self, h: Held, env: Envelope, num_delivered: int) -> None:
        if num_delivered > 1:
            self.metrics.stalled.labels(self.spec.name).inc()
            self._record(
                EventType.STALLED,
                env,
                error=f"redelivered (delivery {num_delivered}) after a worker lost its lease",
            )
            log.warning("job redelivered (delivery %d) after a worker lost its lease", num_delivered)
        await self._execute(h, env)

    async def _execute(self, h: Held, env: Envelope) -> None:
        msg = h.msg
        fn = self.registry.resolve(self.spec.name, env.name)
        ctx = JobContext(
            job_id=env.id,
            queue=env.queue,
            name=env.name,
            data=env.data,
            attempt=env.attempt,
            attempts=env.attempts,
            user_id=env.user_id,
            enqueued_at=env.enqueued_at,
            log=logging.LoggerAdapter(log, {"job_id": env.id, "queue": env.queue}),
        )
        ctx._progress_cb = lambda v: self._progress(h, env, v)

        async def attach(name: str, data: bytes, content_type: str) -> None:
            art = await artifacts.put(self.js, env.id, name, data, content_type)
            files = h.extra.setdefault("artifacts", [])
            files[:] = [f for f in files if f["name"] != name] + [art.to_dict()]

        ctx._attach_cb = attach
        h.ctx = ctx
        started = now_ms()
        h.started_ms = started
        h.progress_due = time.monotonic() + self.progress_interval_s
        scheduled_for = int((msg.headers or {}).get(H_RUN_AT, 0)) or env.enqueued_at
        self.metrics.wait.labels(self.spec.name).observe(max(started - scheduled_for, 0) / 1000)
        first = env.attempt == 1 and msg.metadata.num_delivered == 1
        self._record(
            EventType.STARTED,
            env,
            data=env.data if first else None,
            user_id=env.user_id,
            enqueued_at=env.enqueued_at if first else None,
        )
        gauge = self.metrics.in_flight.labels(self.spec.name)
        gauge.inc()
        timeout = env.timeout_ms / 1000 if env.timeout_ms else None
        error: BaseException | None = None
        reason = ERROR_EXCEPTION
        result: Any = None
        span_ctx = telemetry.extract(msg.headers)
        with telemetry.tracer().start_as_current_span(
            f"{self.spec.name} process",
            context=span_ctx,
            kind=trace.SpanKind.CONSUMER,
            attributes={"jetqueue.job_id": env.id, "jetqueue.attempt": env.attempt, "messaging.system": "nats"},
        ) as span:
            sc = span.get_span_context()
            if sc.is_valid:
                logs.bind(trace_id=format(sc.trace_id, "032x"))
            try:
                if fn is None:
                    raise PermanentError(f"no processor registered for job {env.name!r} on queue {self.spec.name}")
                result = await asyncio.wait_for(fn(ctx), timeout) if timeout else await fn(ctx)
                json.dumps(result, default=str)
            except asyncio.CancelledError:
                if h.releasing or h.cancel_reason is None:
                    gauge.dec()
                    raise
                error = JobCancelled(h.cancel_reason)
            except TimeoutError:
                error = TimeoutError(f"timed out after {env.timeout_ms} ms")
                reason = ERROR_TIMEOUT
            except Exception as exc:
                error = exc
                if fn is None:
                    reason = ERROR_NO_PROCESSOR
                elif isinstance(exc, PermanentError):
                    reason = ERROR_PERMANENT
                else:
                    reason = ERROR_EXCEPTION
            if error is not None:
                span.set_status(trace.StatusCode.ERROR, str(error))
                if not isinstance(error, JobCancelled):
                    self.metrics.errors.labels(self.spec.name, reason).inc()
        gauge.dec()
        await self._close_progress(h)
        duration = now_ms() - started
        labels = (self.spec.name, env.name)
        self.metrics.duration.labels(*labels).observe(duration / 1000)
        if error is None:
            self.processed += 1
            self.metrics.completed.labels(*labels).inc()
            await self._write_state(
                self._state(
                    env, JobStatus.COMPLETED, progress=100.0, result=result, started_at=started, finished_at=now_ms()
                ),
                self.spec.retention_s,
            )
            log.debug("job completed in %d ms", duration)
            self._record(
                EventType.COMPLETED, env, duration_ms=duration, result=result, artifacts=h.extra.get("artifacts")
            )
            await msg.ack()
            return
        if isinstance(error, JobCancelled):
            self.metrics.cancelled.labels(self.spec.name).inc()
            await self._write_state(
                self._state(env, JobStatus.CANCELLED, error=str(error), started_at=started, finished_at=now_ms()),
                self.spec.failed_retention_s,
            )
            self._record(EventType.CANCELLED, env, duration_ms=duration, error=str(error))
            await msg.term()
            return
        text = _error_text(error)
        # The envelope carries the errors to the next attempt and the DLQ: keep it bounded.
        env.errors = [*env.errors, text[:1000]][-10:]
        if env.attempt < env.attempts and not isinstance(error, PermanentError):
            await self._schedule_retry(h, env, text, duration, started)
        else:
            await self._dead_letter(
                msg,
                env,
                text,
                type(error).__name__,
                "failed",
                seq=msg.metadata.sequence.stream,
                duration=duration,
                started=started,
                files=h.extra.get("artifacts"),
            )
            await msg.term()

    async def _progress(self, h: Held, env: Envelope, value: float) -> None:
        """Report progress at most every ``progress_interval_s``, the newest value included.

        The first report waits until the job has run for the interval, so a job
        that ends sooner writes no progress at all (its final state says 100):
        that saved a record and a state write per job. A report that is not due
        yet is kept and written when it is, by a timer, if the job still runs.
        """
        h.progress = value
        now = time.monotonic()
        if now >= h.progress_due:
            self._cancel_progress_timer(h)
            await self._flush_progress(h, env)
        elif h.progress_timer is None:
            h.progress_timer = asyncio.get_running_loop().call_later(
                h.progress_due - now, self._progress_timer_fired, h, env
            )

    async def _flush_progress(self, h: Held, env: Envelope) -> None:
        value, h.progress = h.progress, None
        if value is None or h.progress_closed:
            return
        h.progress_due = time.monotonic() + self.progress_interval_s
        self._record(EventType.PROGRESS, env, progress=value)
        try:
            await self._write_state(
                self._state(env, JobStatus.ACTIVE, progress=value, started_at=h.started_ms),
                self.spec.failed_retention_s,
            )
        except Exception as exc:  # NATS reconnecting: the next report or the final state catches up
            log.warning("progress state write failed: %s", exc)

    def _progress_timer_fired(self, h: Held, env: Envelope) -> None:
        h.progress_timer = None
        if not h.progress_closed:
            h.progress_task = asyncio.ensure_future(self._flush_progress(h, env))

    @staticmethod
    def _cancel_progress_timer(h: Held) -> None:
        if h.progress_timer is not None:
            h.progress_timer.cancel()
            h.progress_timer = None

    async def _close_progress(self, h: Held) -> None:
        """The processor returned: no progress write may follow, or overtake, the job's final state."""
        h.progress_closed = True
        self._cancel_progress_timer(h)
        task, h.progress_task = h.progress_task, None
        if task is not None and not task.done():
            await asyncio.wait({task})

    async def _schedule_retry(self, h: Held, env: Envelope, text: str, duration: int, started: int) -> None:
        retry_no = env.attempt  # first retry after attempt 1
        delay_ms = int(env.backoff.delay_for(retry_no) * 1000)
        run_at = now_ms() + delay_ms
        failed_attempt = env.attempt
        env.attempt += 1
        target = names.job_subject(env.queue, h.level, env.id)
        headers = {
            H_MSG_ID: f"{env.id}:a{env.attempt}",
            H_SCHEDULE: "@at " + _rfc3339(run_at),
            H_SCHEDULE_TARGET: target,
            H_RUN_AT: str(run_at),
        }
        for k in ("traceparent", "tracestate"):
            if h.msg.headers and k in h.msg.headers:
                headers[k] = h.msg.headers[k]
        await self.js.publish(names.sched_subject(env.queue, env.id), env.to_bytes(), headers=headers)
        log.warning(
            "job attempt %d of %d failed (%s); retry in %.1fs", failed_attempt, env.attempts, text, delay_ms / 1000
        )
        self.metrics.retried.labels(env.queue, env.name).inc()
        st = self._state(env, JobStatus.SCHEDULED, error=text, started_at=started, run_at=run_at)
        st.attempt = failed_attempt
        await self._write_state(st, self.spec.failed_retention_s)
        self.events.add(
            LifecycleRecord(
                type=EventType.RETRYING,
                job_id=env.id,
                queue=env.queue,
                name=env.name,
                attempt=failed_attempt,
                attempts=env.attempts,
                worker=self.worker_id,
                duration_ms=duration,
                error=text,
                artifacts=h.extra.get("artifacts"),
            )
        )
        await h.msg.ack()

    async def _dead_letter(
        self,
        msg: Msg | None,
        env: Envelope,
        text: str,
        error_type: str,
        reason: str,
        *,
        seq: int,
        duration: int | None = None,
        started: int | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> None:
        headers = {
            H_REASON: reason,
            H_ERROR: text[:1000].replace("\r", " ").replace("\n", " "),
            H_FAILED_AT: str(now_ms()),
            # keyed by the job message's sequence: a redelivery of the same
            # message cannot dead-letter twice, a requeued job can again
            H_MSG_ID: f"{env.id}:dlq:{seq}",
        }
        if msg is not None:
            headers[H_ORIGINAL_SUBJECT] = msg.subject
        await self.js.publish(names.dlq_subject(env.queue, env.id), env.to_bytes(), headers=headers)
        log.error("job dead-lettered (%s) after attempt %d of %d: %s", reason, env.attempt, env.attempts, text)
        self.failed += 1
        self.metrics.failed.labels(env.queue, env.name).inc()
        await self._write_state(
            self._state(env, JobStatus.FAILED, error=text, started_at=started, finished_at=now_ms()),
            self.spec.failed_retention_s,
        )
        self._record(
            EventType.FAILED,
            env,
            duration_ms=duration,
            error=text,
            error_type=error_type,
            data=env.data,
            artifacts=files,
        )
        await self._notify_admins(env, text, reason)

    async def _notify_admins(self, env: Envelope, text: str, reason: str) -> None:
        if NOTIFY_QUEUE not in self.catalog or (env.queue == NOTIFY_QUEUE and env.name == "admin-alert"):
            return  # never alert about a failed alert (no loop)
        try:
            await self.client.enqueue(
                NOTIFY_QUEUE,
                "admin-alert",
                {
                    "type": "JOB_FAILED",
                    "severity": "HIGH",
                    "audience": "admins",
                    "title": f"Job Failed: {env.name}",
                    "message": f"Job {env.id} in queue {env.queue} failed after {env.attempt} attempts ({reason})",
                    "details": {"job_id": env.id, "queue": env.queue, "error": text[:500], "data": env.data},
                },
                job_id=f"dlq-alert-{env.queue}-{env.id}"[:128],
                priority=1,
            )
        except JetqueueError as exc:
            log.error("admin notification for job %s failed: %s", env.id, exc)

    async def _dead_letter_malformed(self, msg: Msg, reason: str) -> None:
        self.metrics.malformed.labels(self.spec.name).inc()
        self.metrics.errors.labels(self.spec.name, ERROR_MALFORMED).inc()
        seq = msg.metadata.sequence.stream
        headers = {
            H_REASON: "malformed",
            H_ERROR: reason[:1000].replace("\n", " "),
            H_FAILED_AT: str(now_ms()),
            H_ORIGINAL_SUBJECT: msg.subject,
        }
        token = f"malformed-{seq}"
        await self.js.publish(names.dlq_subject(self.spec.name, token), msg.data or b"", headers=headers)
        self.events.add(
            LifecycleRecord(
                type=EventType.FAILED,
                job_id=token,
                queue=self.spec.name,
                name="(malformed)",
                attempt=1,
                worker=self.worker_id,
                error=f"malformed message: {reason}",
                error_type="InvalidJob",
            )
        )
        log.warning("malformed message on %s dead-lettered: %s", msg.subject, reason)
        await msg.term()

    # ------------------------------------------------------- control inputs
    async def on_cancel(self, raw: bytes) -> None:
        try:
            body = json.loads(raw)
            job_id = str(body["job_id"])
        except (ValueError, KeyError, TypeError):
            return
        for h in list(self.held.values()):
            if h.job_id == job_id or (not h.job_id and h.msg.subject.endswith("." + job_id)):
                h.cancel_reason = str(body.get("reason") or "cancelled")
                if h.ctx is not None:
                    h.ctx.cancelled.set()
                if h.task is not None:
                    h.task.cancel()

    async def on_max_deliveries(self, raw: bytes) -> None:
        """A job whose workers kept dying hit max_deliver: dead-letter it (one worker handles each advisory)."""
        try:
            adv = json.loads(raw)
            seq = int(adv["stream_seq"])
        except (ValueError, KeyError, TypeError):
            return
        try:
            m = await self.js.get_msg(self.spec.stream, seq)
        except NotFoundError:
            return  # already gone (settled meanwhile, or handled by another worker)
        try:
            _q, kind, _lvl, token = names.parse_job_subject(m.subject or "")
            env = Envelope.from_bytes(
                m.data or b"", self.spec, job_id=token if kind == "job" else f"cron-{token}-{seq}"
            )
        except (InvalidJob, ValueError):
            return
        text = (
            f"stalled: delivered {adv.get('deliveries')} times without being settled (workers died or lost the lease)"
        )
        env.errors.append(text)
        self.metrics.errors.labels(self.spec.name, ERROR_STALLED).inc()
        await self._dead_letter(None, env, text, "Stalled", "stalled", seq=seq)
        await self.js.delete_msg(self.spec.stream, seq)


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:MAX_ERROR_LEN]


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        log.warning("state write failed: %s", exc)


async def _quiet(coro: Any) -> None:
    try:
        await coro
    except Exception:
        pass
