"""The worker runtime: pull jobs of one queue by priority, run them, settle them.

A delivery becomes a running job, the job an :class:`~jetqueue_worker.settle.Outcome`,
and the outcome is settled (see docs/architecture.md "The job path"):

* success: state ``completed`` (TTL = retention) and a ``completed`` record, then ack;
* failure with attempts left: the job is re-published as a broker schedule
  ``@at now+backoff`` with ``attempt+1`` (it holds no consumer slot while it
  waits), state ``scheduled``, a ``retrying`` record, then ack;
* last failure: the job goes to the dead-letter stream with its errors, state
  ``failed``, a ``failed`` record and an admin alert job (the catalog's
  ``alerts``), then ``term``;
* malformed message: dead-lettered with the reason, ``term``; never a crash.

Every write of an outcome is confirmed by the server before the job is acked
(settle.py), so a job's history is durable no later than its ack. A job
redelivered after its worker died (or its ack was lost) is first looked up in
the state bucket: if that delivery's attempt was already settled, it is acked
again instead of run again.

A lease (``+WPI``) is renewed for every held job, so a long job is not
redelivered while its worker lives; a dead worker's job is redelivered after
``ack_wait`` and counted as a stall, not an attempt. Pull requests end by
deadline and are re-sent after any reconnect (puller.py), and a connection
closed for good is fatal: the process exits so it is restarted.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import trace

from jetqueue import artifacts, logs, names, telemetry
from jetqueue.catalog import Catalog, QueueSpec
from jetqueue.client import H_RUN_AT, JobClient
from jetqueue.errors import InvalidJob
from jetqueue.events import Heartbeat
from jetqueue.job import TERMINAL_STATUSES, Envelope, EventType, JobState, JobStatus, now_ms
from jetqueue.processors import JobCancelled, JobContext, PermanentError, ProcessorRegistry
from jetqueue.publisher import Publisher
from jetqueue_worker import eager
from jetqueue_worker.metrics import (
    ERROR_EXCEPTION,
    ERROR_MALFORMED,
    ERROR_NO_PROCESSOR,
    ERROR_PERMANENT,
    ERROR_STALLED,
    ERROR_TIMEOUT,
    QueueMetrics,
    WorkerMetrics,
)
from jetqueue_worker.outcomes import Outcomes, error_text
from jetqueue_worker.puller import Puller, PullRequest
from jetqueue_worker.settle import ACK, NAK, TERM, Outcome, Settler

log = logging.getLogger("jetqueue.worker")


def ack_meta(reply: str) -> tuple[int, int, int]:
    """(stream sequence, delivery count, pending) from a JetStream message's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``, or the
    newer form with a domain and account hash before the stream and a token after.
    """
    t = reply.split(".")
    o = 4 if len(t) == 9 else 6
    return int(t[o + 1]), int(t[o]), int(t[o + 4])


@dataclass(slots=True)
class Held:
    """A delivered job this worker holds (waiting to start, running, or settling)."""

    msg: Msg
    level: int
    seq: int
    delivered: int
    job_id: str = ""
    env: Envelope | None = None
    task: asyncio.Task[None] | None = None
    ctx: JobContext | None = None
    cancel_reason: str | None = None
    releasing: bool = False
    timed_out: bool = False
    settling: bool = False
    started_ms: int = 0
    started_record: int = -1  # the settler's handle of this run's started record
    started_pending: bool = False  # started in the eager first step: the record waits to see how it ends
    first: bool = False  # the job's first run: its started record carries the job's data
    files: list[dict[str, Any]] | None = None
    # progress throttle (Worker._progress): the newest unreported value and when it may be written
    progress: float | None = None
    progress_due: float = 0.0
    progress_timer: asyncio.TimerHandle | None = None
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
        prefetch: int = 0,
        heartbeat_s: float = 10.0,
        idle_wait_s: float = 2.0,
        progress_interval_s: float = 0.25,
        grace_s: float = 30.0,
        metrics: WorkerMetrics | None = None,
        version: str = "0.1.0",
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.catalog = catalog
        self.spec: QueueSpec = catalog.get(queue)
        self.registry = registry
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{queue}"
        self.concurrency = concurrency or self.spec.concurrency
        self.prefetch = prefetch
        self.heartbeat_s = heartbeat_s
        self.idle_wait_s = idle_wait_s
        self.progress_interval_s = progress_interval_s
        self.grace_s = grace_s
        self.metrics = metrics or WorkerMetrics()
        self.series = QueueMetrics(self.metrics, queue, registry.names(queue) | catalog.job_names(queue))
        self.version = version
        self.on_fatal = on_fatal
        self.client = JobClient(nc, catalog)
        self.publisher = Publisher(nc, fast_prefix=names.states_prefix())
        self.settler = Settler(
            nc,
            self.publisher,
            names.events_subject(queue),
            source=f"{self.worker_id}-{os.urandom(4).hex()}",
            on_settled=self._settled,
        )
        self.held: dict[int, Held] = {}  # by stream sequence, until settled
        self.ready: list[deque[Held]] = [deque() for _ in range(self.spec.priority_levels)]
        self.running = 0
        self.processed = 0
        self.failed = 0
        self.started_at = now_ms()
        self.fatal: str | None = None
        self._pullers: list[Puller] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._gated = False  # deliveries of an idle long-poll wait until the levels above were asked
        self._asking: int | None = None  # the level a pull request is out to
        self._dispatching = False
        self._running = False
        self._stopping = False
        self._tick = time.monotonic()
        self._reconnects = 0
        self._cancel_sub: Any = None
        self._advisory_sub: Any = None
        self._tracing = False
        self.outcomes = Outcomes(
            catalog,
            self.spec,
            self.worker_id,
            self.client,
            max_payload=nc.max_payload,
            max_record=self.settler.max_events_bytes - 1024,
        )

    # ------------------------------------------------------------- lifecycle
    async def start(self, *, own_subscriptions: bool = True) -> None:
        """Start pulling. ``own_subscriptions=False`` when the app wires the cancel subscription."""
        self._tracing = telemetry.enabled()
        for lvl in range(self.spec.priority_levels):
            p = Puller(
                self.nc,
                self.spec.stream,
                names.level_consumer(self.spec.name, lvl),
                functools.partial(self._on_msg, level=lvl),
                level=lvl,
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
        self.series.start(self.concurrency, self.worker_id, self.version)
        self.series.in_flight.set_function(lambda: self.running)  # read at scrape time, not written per job
        self._running = True
        self._reconnects = self.nc.stats["reconnects"]
        self._tasks = [
            asyncio.create_task(self._fetch_loop(), name="jq-fetch"),
            asyncio.create_task(self._lease_loop(), name="jq-lease"),
            asyncio.create_task(self._heartbeat_loop(), name="jq-heartbeat"),
            asyncio.create_task(self._advisory_loop(), name="jq-advisories"),
            asyncio.create_task(self._watchdog_loop(), name="jq-watchdog"),
        ]
        log.info("worker %s started on queue %s (concurrency %d)", self.worker_id, self.spec.name, self.concurrency)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking jobs, let running ones finish within the grace period, release the rest."""
        if self._stopping:
            return
        self._stopping = True
        self._running = False
        grace = self.grace_s if grace_s is None else grace_s
        self._wake.set()
        for p in self._pullers:
            p.cancel_all()
        # Jobs delivered but not started go straight back.
        for level in self.ready:
            while level:
                self._release(level.popleft())
        await self._send_heartbeat(status="STOPPING")
        running = [h.task for h in self.held.values() if h.task is not None and not h.task.done()]
        if running:
            log.info("waiting up to %.0fs for %d running job(s)", grace, len(running))
            _done, pending = await asyncio.wait(running, timeout=grace)
            for h in list(self.held.values()):
                if h.task is not None and not h.task.done():
                    h.releasing = True
                    h.task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if not await self.settler.drain(timeout=10):
            log.warning("some outcomes were not confirmed before shutdown; those jobs will be redelivered")
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
        await self._send_heartbeat(status="OFFLINE")
        await self.publisher.stop()
        try:
            await self.nc.flush(timeout=5)
        except Exception:  # the connection may already be gone
            pass
        log.info("worker %s stopped", self.worker_id)

    def health(self) -> tuple[bool, bool, dict[str, Any]]:
        """(alive, ready, details): alive = able to work (restart it if not); ready = connected now."""
        now = time.monotonic()
        fetch_alive = bool(self._tasks) and not self._tasks[0].done()
        stale = now - self._tick > max(30.0, 5 * (self.idle_wait_s + 1))
        alive = self.fatal is None and not self.nc.is_closed and (self._stopping or (fetch_alive and not stale))
        detail = {
            "nats": "connected" if self.nc.is_connected else ("closed" if self.nc.is_closed else "reconnecting"),
            "fetch_loop": "running" if fetch_alive and not stale else "stalled",
            "running_jobs": self.running,
            "settling": self.settler.backlog,
            "fatal": self.fatal,
        }
        return alive, alive and self.nc.is_connected and not self._stopping, detail

    def _die(self, reason: str) -> None:
        if self.fatal is None:
            self.fatal = reason
            log.critical("worker cannot go on: %s; exiting so it is restarted", reason)
            if self.on_fatal is not None:
                self.on_fatal(reason)

    # -------------------------------------------------------------- fetching
    def _room(self) -> int:
        """How many more jobs to ask for: free slots (plus prefetch), none while outcomes pile up unconfirmed."""
        if self.settler.backlog > 4 * self.concurrency + 1000:
            return 0  # the server is not confirming writes (an election, a full disk): stop taking work
        waiting = sum(len(r) for r in self.ready)
        return self.concurrency + self.prefetch - self.running - waiting

    def _on_msg(self, msg: Msg, level: int) -> None:
        if not msg.reply:
            return
        try:
            seq, delivered, pending = ack_meta(msg.reply)
        except (ValueError, IndexError):
            log.warning("message without JetStream metadata on %s ignored", msg.subject)
            return
        self._pullers[level].pending = pending
        h = self.held.get(seq)
        if h is not None:
            # Redelivered while we still hold it (a lease renewal was lost): answer the newest delivery.
            h.msg, h.delivered = msg, delivered
            return
        h = Held(msg=msg, level=level, seq=seq, delivered=delivered)
        self.held[seq] = h
        if not self._running:
            self._release(h)  # arrived during shutdown: hand it back
            return
        self.ready[level].append(h)
        self._dispatch()

    def _dispatch(self) -> None:
        """Start held jobs, most urgent level first, while slots are free.

        A job starts at once (``eager.start``); one that finishes without waiting
        calls back in here from its end, which only notes that a slot freed:
        the loop below goes on, so a burst does not nest a call per job.
        """
        if self._gated or not self._running or self.running >= self.concurrency:
            return
        if self._dispatching:
            return
        self._dispatching = True
        try:
            # Jobs below a level that has work left (as its last delivery or answer said), or that is
            # being asked right now, wait: what that level brings runs first.
            limit = len(self.ready) if self._asking is None else self._asking + 1
            for p in self._pullers[:limit]:
                if p.pending:
                    limit = p.level + 1
                    break
            for level in self.ready[:limit]:
                while level and self.running < self.concurrency and self._running:
                    h = level.popleft()
                    self.running += 1
                    h.task = eager.start(self._run(h))
                    if h.task is not None and h.started_pending:
                        self._emit_started(h)  # it waits on something: the monitor must see it running
                if self.running >= self.concurrency:
                    return
        finally:
            self._dispatching = False

    def _release(self, h: Held) -> None:
        """Hand a job back to the server (shutdown): nothing to write, a NAK redelivers it now."""
        h.settling = True
        self.settler.settle(Outcome(h.msg, NAK, seq=h.seq))

    def _settled(self, outcome: Outcome) -> None:
        self.held.pop(outcome.seq, None)  # acked (or handed back): the job leaves this worker

    async def _fetch_loop(self) -> None:
        while self._running:
            self._tick = time.monotonic()
            try:
                await self._fetch_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fetch loop error; going on in 1s")
                await asyncio.sleep(1)

    async def _fetch_once(self) -> None:
        for p in self._pullers:
            p.expire()
        if not self.nc.is_connected:
            # A pull request written now would reach a server that no longer knows it.
            await self._wait(None, 0.2)
            return
        want = self._room()
        if self._gated:
            await self._probe_above_ready(want)
            return
        if want <= 0:
            displaced = self._displaced()
            if displaced is None:
                await self._wait(None, self.idle_wait_s)
            else:
                await self._ask(displaced[0], displaced[1])
            return
        # Most urgent level first; a lower level is asked only for what the ones above
        # did not fill. A level with an open long-poll is asked too: the server serves
        # the long-poll first, so whatever waits there arrives before this request ends.
        got = 0
        for p in self._pullers:
            if want <= 0 or not self._running:
                break
            if p.open_requests or p.pending == 0:
                # A level with a long-poll open delivers what arrives there by itself, and one the
                # server just called empty gets a long-poll below: no request that would only say 404.
                continue
            n = await self._ask(p, min(want, 512))
            got += n
            want -= n
        self._gated = False
        self._dispatch()
        if got or not self._running:
            return
        # Idle: long-poll every level at once; whichever gets a job wakes us, and the next
        # pass asks the levels above it before anything starts (most urgent first).
        opened = [p.pull(1, expires=self.idle_wait_s) for p in self._pullers if p.open_requests == 0]
        self._gated = True
        await self._wait(opened, self.idle_wait_s + 1)

    def _displaced(self) -> tuple[Puller, int] | None:
        """A level with work left (as its last delivery said) above jobs held waiting at lower levels,
        and how many to ask it for: those jobs were pulled when it looked empty (idle long-polls on
        every level), and must not run ahead of it."""
        below = 0
        plan = None
        for p, ready in zip(reversed(self._pullers), reversed(self.ready), strict=True):
            if below and p.pending:
                plan = (p, min(below, p.pending, 512))
            below += len(ready)
        return plan

    async def _probe_above_ready(self, want: int) -> None:
        """After an idle long-poll delivered: ask every level above the most urgent job held, then start.

        Without this, whichever level's long-poll answered first would win (a
        low-priority job started before an urgent one right after a resume).
        """
        top = next((i for i, r in enumerate(self.ready) if r), len(self.ready))
        for p in self._pullers[:top]:
            if not self._running:
                break
            want -= await self._ask(p, max(want, 1))
        self._gated = False
        self._dispatch()

    async def _ask(self, p: Puller, batch: int) -> int:
        """Pull what one level has now (no wait); jobs of lower levels are not started meanwhile."""
        self._asking = p.level
        try:
            return await self._finished(p.pull(batch, no_wait=True))
        finally:
            self._asking = None
            self._dispatch()

    async def _finished(self, req: PullRequest) -> int:
        timeout = max(req.deadline - time.monotonic(), 0.0)
        try:
            return await asyncio.wait_for(asyncio.shield(req.done), timeout)
        except TimeoutError:
            req.finish()  # the server never answered: the request counts as ended
            return req.received

    async def _wait(self, requests: list[PullRequest] | None, timeout: float) -> None:
        """Sleep until a request ends, a slot frees (``_wake``), or ``timeout``."""
        self._wake.clear()
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._wake.wait())}
        for p in self._pullers:  # any open request ending (a long-poll delivering) wakes us
            waiters.update(p.open_futures())
        if requests:
            waiters.update(r.done for r in requests)
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                if isinstance(w, asyncio.Task):
                    w.cancel()

    async def _lease_loop(self) -> None:
        interval = max(self.spec.ack_wait_s / 3, 0.3)
        while not self._stopping:
            await asyncio.sleep(interval)
            if not self.nc.is_connected:
                continue
            for h in list(self.held.values()):
                try:
                    await self.nc.publish(h.msg.reply, b"+WPI")
                except Exception as exc:
                    log.warning("lease renewal failed: %s", exc)
                    break

    async def _watchdog_loop(self) -> None:
        """Exit when the connection is closed for good; wake the fetch loop after a reconnect."""
        while not self._stopping:
            await asyncio.sleep(1)
            if self.nc.is_closed and not self._stopping:
                self._die("the NATS connection was closed and will not reconnect")
                return
            reconnects = self.nc.stats["reconnects"]
            if reconnects != self._reconnects:
                self._reconnects = reconnects
                log.warning("reconnected to NATS; pull requests are sent again")
                self._wake.set()

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
            active_jobs=self.running,
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
    async def _run(self, h: Held) -> None:
        outcome: Outcome | None = None
        try:
            outcome = await self._attempt(h)
        except asyncio.CancelledError:
            if not h.releasing:
                raise
        except Exception:
            log.exception("running job %s failed; it will be redelivered after ack_wait", h.job_id or h.seq)
        finally:
            self.running -= 1
            self._close_progress(h)
            if outcome is None and h.releasing:
                outcome = Outcome(h.msg, NAK, seq=h.seq)
            if outcome is not None:
                h.settling = True
                self.settler.settle(outcome)
            else:
                self.held.pop(h.seq, None)  # not acked: redelivered after ack_wait
            self._dispatch()
            self._wake.set()

    async def _attempt(self, h: Held) -> Outcome:
        msg = h.msg
        try:
            _q, kind, _lvl, token = names.parse_job_subject(msg.subject)
            job_id = token if kind == "job" else names.cron_job_id(token, h.seq)
            env = Envelope.from_bytes(msg.data, self.spec, job_id=job_id)
        except (InvalidJob, ValueError) as exc:
            self.series.malformed.inc()
            self.series.errors[ERROR_MALFORMED].inc()
            return self.outcomes.malformed(msg, h.seq, str(exc))
        h.job_id = env.id
        h.env = env
        log_ctx = logs.enter_job(
            {"job_id": env.id, "queue": env.queue, "attempt": env.attempt, "worker": self.worker_id}
        )
        try:
            if h.delivered > 1:
                settled = await self._already_settled(env)
                if settled is not None:
                    log.info("redelivered job was already settled (%s); acking it again", settled.state.value)
                    ends = settled.state in (JobStatus.FAILED, JobStatus.CANCELLED)
                    return Outcome(msg, TERM if ends else ACK, seq=h.seq)
                self.series.stalled.inc()
                self.settler.record(
                    self.outcomes.record(
                        EventType.STALLED,
                        env,
                        delivery=h.delivered,
                        data=env.data,
                        user_id=env.user_id,
                        enqueued_at=env.enqueued_at,
                        error=f"redelivered (delivery {h.delivered}) after a worker lost its lease",
                    )
                )
                log.warning("job redelivered (delivery %d) after a worker lost its lease", h.delivered)
            return await self._execute(h, env)
        finally:
            logs.leave_job(log_ctx)

    async def _already_settled(self, env: Envelope) -> JobState | None:
        """The state of this very attempt if a worker already settled it (its ack was lost, or it died
        right after its writes were confirmed); None when it must run."""
        try:
            raw = await self.js.get_last_msg(names.bucket_stream(names.JOBS_BUCKET), names.state_subject(env.id))
            st = JobState.from_bytes(raw.data or b"")
        except NotFoundError:
            return None
        except Exception as exc:  # NATS busy or the record unreadable: run it (at least once)
            log.warning("could not read the state of a redelivered job (%s); running it", exc)
            return None
        done = st.state in TERMINAL_STATUSES or st.state is JobStatus.SCHEDULED
        if done and st.attempt == env.attempt and st.enqueued_at == env.enqueued_at:
            return st
        return None

    def _context(self, h: Held, env: Envelope) -> JobContext:
        ctx = JobContext(
            job_id=env.id,
            queue=env.queue,
            name=env.name,
            data=env.data,
            attempt=env.attempt,
            attempts=env.attempts,
            user_id=env.user_id,
            enqueued_at=env.enqueued_at,
        )
        ctx._progress_cb = lambda v: self._progress(h, env, v)

        async def attach(name: str, data: bytes, content_type: str) -> None:
            art = await artifacts.put(self.js, env.id, name, data, content_type)
            files = h.files if h.files is not None else []
            h.files = [f for f in files if f["name"] != name] + [art.to_dict()]

        ctx._attach_cb = attach
        return ctx

    async def _execute(self, h: Held, env: Envelope) -> Outcome:
        fn = self.registry.resolve(self.spec.name, env.name)
        h.ctx = ctx = self._context(h, env)
        started = now_ms()
        h.started_ms = started
        h.progress_due = time.monotonic() + self.progress_interval_s
        headers = h.msg.headers
        scheduled_for = int((headers or {}).get(H_RUN_AT, 0)) or env.enqueued_at
        self.series.wait.observe(max(started - scheduled_for, 0) / 1000)
        h.first = env.attempt == 1 and h.delivered == 1
        if h.task is None:
            h.started_pending = True  # the eager first step: a job that ends in it needs no started record
        else:
            self._emit_started(h)
        timer = None
        if env.timeout_ms:
            timer = asyncio.get_running_loop().call_later(env.timeout_ms / 1000, self._time_out, h)
        try:
            if self._tracing:
                with telemetry.tracer().start_as_current_span(
                    f"{self.spec.name} process",
                    context=telemetry.extract(headers),
                    kind=trace.SpanKind.CONSUMER,
                    attributes={"jetqueue.job_id": env.id, "jetqueue.attempt": env.attempt, "messaging.system": "nats"},
                ) as span:
                    sc = span.get_span_context()
                    if sc.is_valid:
                        logs.bind(trace_id=format(sc.trace_id, "032x"))
                    result, error, reason = await self._call(h, fn, ctx)
                    if error is not None:
                        span.set_status(trace.StatusCode.ERROR, str(error))
            else:
                result, error, reason = await self._call(h, fn, ctx)
        finally:
            if timer is not None:
                timer.cancel()
        self._close_progress(h)
        duration = now_ms() - started
        return self._settle_attempt(h, env, result, error, reason, started, duration)

    def _settle_attempt(
        self, h: Held, env: Envelope, result: Any, error: BaseException | None, reason: str, started: int, duration: int
    ) -> Outcome:
        """The outcome of a run, with the metrics of how it ended."""
        series = self.series.job(env.name)
        series.duration.observe(duration / 1000)
        if error is None:
            self.processed += 1
            series.completed.inc()
            return self.outcomes.completed(
                h.msg, h.seq, env, result, started, duration, h.files, h.delivered, self._fold_start(h, env)
            )
        if isinstance(error, JobCancelled):
            self.series.cancelled.inc()
            return self.outcomes.cancelled(
                h.msg, h.seq, env, str(error), started, duration, h.delivered, self._fold_start(h, env)
            )
        self.series.errors[reason].inc()
        text = error_text(error)
        # The envelope carries the errors to the next attempt and the DLQ: keep it bounded.
        env.errors = [*env.errors, text[:1000]][-10:]
        if env.attempt < env.attempts and not isinstance(error, PermanentError):
            series.retried.inc()
            return self.outcomes.retry(
                h.msg, h.seq, h.level, env, text, duration, started, h.files, h.delivered, self._fold_start(h, env)
            )
        self.failed += 1
        series.failed.inc()
        return self.outcomes.dead_letter(
            h.msg,
            h.seq,
            env,
            text,
            type(error).__name__,
            "failed",
            duration=duration,
            started=started,
            files=h.files,
            delivery=h.delivered,
            start=self._fold_start(h, env),
        )

    def _emit_started(self, h: Held) -> None:
        h.started_pending = False
        env = h.env
        if env is None:
            return
        h.started_record = self.settler.record(
            self.outcomes.record(
                EventType.STARTED,
                env,
                ts=h.started_ms,
                delivery=h.delivered,
                data=env.data if h.first else None,
                user_id=env.user_id,
                enqueued_at=env.enqueued_at if h.first else None,
            )
        )

    def _fold_start(self, h: Held, env: Envelope) -> dict[str, Any]:
        """If the run's started record has not gone out yet, the outcome's record stands for it too:
        one record a job instead of two (the common case for jobs shorter than a batch interval)."""
        if h.started_pending:
            h.started_pending = False
        elif not self.settler.take(h.started_record):
            return {}
        start: dict[str, Any] = {"started_ts": h.started_ms, "user_id": env.user_id}
        if h.first:
            start["data"] = env.data
            start["enqueued_at"] = env.enqueued_at
        return start

    async def _call(self, h: Held, fn: Any, ctx: JobContext) -> tuple[Any, BaseException | None, str]:
        """Run the processor: (result, error, error reason)."""
        try:
            if h.cancel_reason is not None:  # cancelled before it started
                raise JobCancelled(h.cancel_reason)
            if fn is None:
                raise PermanentError(f"no processor registered for job {ctx.name!r} on queue {self.spec.name}")
            return await fn(ctx), None, ""
        except asyncio.CancelledError:
            if h.releasing or (not h.timed_out and h.cancel_reason is None):
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # this cancel was ours (timeout or cancel request): the job goes on to settle
            if h.timed_out:
                timeout_ms = h.env.timeout_ms if h.env else None
                return None, TimeoutError(f"timed out after {timeout_ms} ms"), ERROR_TIMEOUT
            return None, JobCancelled(h.cancel_reason or "cancelled"), ""
        except Exception as exc:
            if fn is None:
                return None, exc, ERROR_NO_PROCESSOR
            return None, exc, ERROR_PERMANENT if isinstance(exc, PermanentError) else ERROR_EXCEPTION

    def _time_out(self, h: Held) -> None:
        if h.task is not None and not h.task.done():
            h.timed_out = True
            h.task.cancel()

    # ----------------------------------------------------------------- progress
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
        self.settler.record(self.outcomes.record(EventType.PROGRESS, env, progress=value, delivery=h.delivered))
        st = self.outcomes.state_message(
            self.outcomes.state(env, JobStatus.ACTIVE, progress=value, started_at=h.started_ms),
            self.spec.failed_retention_s,
        )
        try:
            # Fire and forget: a lost progress write is caught up by the next one or the final
            # state, and a retried one must never land after the final state.
            await self.nc.publish(st.subject, st.payload, headers=st.headers)
        except Exception as exc:  # NATS reconnecting
            log.warning("progress state write failed: %s", exc)

    def _progress_timer_fired(self, h: Held, env: Envelope) -> None:
        h.progress_timer = None
        if not h.progress_closed:
            fut = asyncio.ensure_future(self._flush_progress(h, env))
            fut.add_done_callback(_log_failure)

    @staticmethod
    def _cancel_progress_timer(h: Held) -> None:
        if h.progress_timer is not None:
            h.progress_timer.cancel()
            h.progress_timer = None

    def _close_progress(self, h: Held) -> None:
        """The processor returned: no progress write may follow the job's final state."""
        h.progress_closed = True
        self._cancel_progress_timer(h)

    # ------------------------------------------------------- control inputs
    async def on_cancel(self, raw: bytes) -> None:
        try:
            body = json.loads(raw)
            job_id = str(body["job_id"])
        except (ValueError, KeyError, TypeError):
            return
        for h in list(self.held.values()):
            if h.settling:
                continue
            if h.job_id == job_id or (not h.job_id and h.msg.subject.endswith("." + job_id)):
                h.cancel_reason = str(body.get("reason") or "cancelled")
                if h.ctx is not None:  # running: stop the processor (a job not started yet ends at its start)
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
                m.data or b"", self.spec, job_id=token if kind == "job" else names.cron_job_id(token, seq)
            )
        except (InvalidJob, ValueError):
            return
        text = (
            f"stalled: delivered {adv.get('deliveries')} times without being settled (workers died or lost the lease)"
        )
        env.errors.append(text)
        self.series.errors[ERROR_STALLED].inc()
        self.failed += 1
        self.series.job(env.name).failed.inc()
        outcome = self.outcomes.dead_letter(None, seq, env, text, "Stalled", "stalled")
        for rec in outcome.records:
            self.settler.record(rec)
        await self.publisher.publish(outcome.messages, deadline=30)
        await self.js.delete_msg(self.spec.stream, seq)


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        log.warning("progress write failed: %s", exc)


async def _quiet(coro: Any) -> None:
    try:
        await coro
    except Exception:
        pass
