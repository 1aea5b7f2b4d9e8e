"""How an attempt ends, as data: the :class:`~jetqueue_worker.settle.Outcome` of each ending.

* completed: state ``completed`` (TTL = retention) and a ``completed`` record, then ack;
* cancelled: state ``cancelled`` and a record, then ``term``;
* retry (a failure with attempts left): the job re-published as a broker
  schedule ``@at now+backoff`` with ``attempt+1`` (it holds no consumer slot
  while it waits), state ``scheduled``, a ``retrying`` record, then ack;
* dead letter (the last failure, a permanent error, a stall): the job on the
  dead-letter stream with its errors, state ``failed``, a ``failed`` record and
  the catalog's admin alert job, then ``term``;
* malformed (an unreadable message): dead-lettered with the reason, ``term``.

Nothing here talks to NATS: the settler publishes what an outcome holds.
Every message is kept under the server's max payload: results, data and error
texts that would not fit are cut and marked (:func:`truncated`).
"""

from __future__ import annotations

import logging
from typing import Any

from nats.aio.msg import Msg

from jetqueue import codec, names
from jetqueue.catalog import Catalog, QueueSpec
from jetqueue.client import H_MSG_ID, H_RUN_AT, H_SCHEDULE, H_SCHEDULE_TARGET, JobClient, JobRequest
from jetqueue.control import H_ERROR, H_FAILED_AT, H_ORIGINAL_SUBJECT, H_REASON
from jetqueue.errors import JetqueueError
from jetqueue.events import LifecycleRecord
from jetqueue.job import Envelope, EventType, JobState, JobStatus, now_ms, rfc3339, state_message
from jetqueue.publisher import Message
from jetqueue_worker.settle import ACK, TERM, Outcome

log = logging.getLogger("jetqueue.worker")

MAX_ERROR_LEN = 4000
# Room kept under the server's max payload for headers and the events batch around a record.
HEADROOM = 8 * 1024


class NoMsg:
    """Stands in for the message of an outcome that has nothing to ack (an advisory's dead letter)."""

    reply = ""
    subject = ""
    headers = None


NO_MSG: Any = NoMsg()


class Outcomes:
    """Builds outcomes of one queue's attempts, sized for the server's max payload."""

    def __init__(
        self, catalog: Catalog, spec: QueueSpec, worker_id: str, client: JobClient, *, max_payload: int, max_record: int
    ) -> None:
        self.catalog = catalog
        self.spec = spec
        self.worker_id = worker_id
        self.client = client
        self.max_state_bytes = max(max_payload - HEADROOM, 4096)
        self.max_record_bytes = min(self.max_state_bytes, max_record)

    # ----------------------------------------------------------- building blocks
    def record(self, type_: EventType, env: Envelope, **kw: Any) -> bytes:
        """An encoded lifecycle record of ``env``'s current attempt."""
        rec = LifecycleRecord(
            type=type_,
            job_id=env.id,
            queue=env.queue,
            name=env.name,
            attempt=env.attempt,
            attempts=env.attempts,
            worker=self.worker_id,
            **kw,
        )
        raw: bytes = codec.encode(rec)
        if len(raw) > self.max_record_bytes:
            rec.data = truncated(rec.data, 1000) if rec.data is not None else None
            rec.result = truncated(rec.result, 1000) if rec.result is not None else None
            rec.error = clip(rec.error, 1000)
            raw = codec.encode(rec)
        return raw

    def state(self, env: Envelope, state: JobStatus, **kw: Any) -> JobState:
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

    def state_message(self, st: JobState, ttl: int) -> Message:
        """The put of ``st`` into the jobs bucket, expiring after ``ttl`` seconds; cut to fit if it must be."""
        m = state_message(st, ttl)
        if len(m.payload) > self.max_state_bytes:
            st.result = truncated(st.result, 2000)
            st.error = clip(st.error, MAX_ERROR_LEN)
            st.errors = [e[:1000] for e in st.errors[-10:]]
            m = state_message(st, ttl)
        return m

    # ------------------------------------------------------------------ endings
    def completed(
        self,
        msg: Msg,
        seq: int,
        env: Envelope,
        result: Any,
        started: int,
        duration: int,
        files: Any,
        delivery: int,
        start: dict[str, Any],
    ) -> Outcome:
        """``start``: the fields of the run's ``started`` record when this record stands for it too."""
        st = self.state(env, JobStatus.COMPLETED, progress=100.0, result=result, started_at=started)
        st.finished_at = now_ms()
        return Outcome(
            msg,
            ACK,
            [self.state_message(st, self.spec.retention_s)],
            [
                self.record(
                    EventType.COMPLETED,
                    env,
                    duration_ms=duration,
                    result=result,
                    artifacts=files,
                    delivery=delivery,
                    **start,
                )
            ],
            seq,
        )

    def cancelled(
        self, msg: Msg, seq: int, env: Envelope, text: str, started: int, duration: int, delivery: int, start: Any
    ) -> Outcome:
        st = self.state(env, JobStatus.CANCELLED, error=text, started_at=started, finished_at=now_ms())
        return Outcome(
            msg,
            TERM,
            [self.state_message(st, self.spec.failed_retention_s)],
            [self.record(EventType.CANCELLED, env, duration_ms=duration, error=text, delivery=delivery, **start)],
            seq,
        )

    def retry(
        self,
        msg: Msg,
        seq: int,
        level: int,
        env: Envelope,
        text: str,
        duration: int,
        started: int,
        files: Any,
        delivery: int,
        start: dict[str, Any],
    ) -> Outcome:
        """The failed attempt's record and state, and the next attempt as a broker schedule."""
        failed_attempt = env.attempt
        delay_ms = int(env.backoff.delay_for(failed_attempt) * 1000)
        run_at = now_ms() + delay_ms
        record = self.record(
            EventType.RETRYING, env, duration_ms=duration, error=text, artifacts=files, delivery=delivery, **start
        )
        st = self.state(env, JobStatus.SCHEDULED, error=text, started_at=started, run_at=run_at)
        env.attempt += 1
        headers = {
            H_MSG_ID: f"{env.id}:a{env.attempt}",
            H_SCHEDULE: "@at " + rfc3339(run_at),
            H_SCHEDULE_TARGET: names.job_subject(env.queue, level, env.id),
            H_RUN_AT: str(run_at),
        }
        for k in ("traceparent", "tracestate"):
            if msg.headers and k in msg.headers:
                headers[k] = msg.headers[k]
        log.warning(
            "job attempt %d of %d failed (%s); retry in %.1fs", failed_attempt, env.attempts, text, delay_ms / 1000
        )
        schedule = Message(names.sched_subject(env.queue, env.id), env.to_bytes(), headers)
        return Outcome(msg, ACK, [schedule, self.state_message(st, self.spec.failed_retention_s)], [record], seq)

    def dead_letter(
        self,
        msg: Msg | None,
        seq: int,
        env: Envelope,
        text: str,
        error_type: str,
        reason: str,
        *,
        duration: int | None = None,
        started: int | None = None,
        files: Any = None,
        delivery: int | None = None,
        start: dict[str, Any] | None = None,
    ) -> Outcome:
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
        body = env.to_bytes()
        if len(body) > self.max_state_bytes:  # a job published by a foreign client past the SDK's limit
            env.data = truncated(env.data, 2000)
            body = env.to_bytes()
        log.error("job dead-lettered (%s) after attempt %d of %d: %s", reason, env.attempt, env.attempts, text)
        st = self.state(env, JobStatus.FAILED, error=text, started_at=started, finished_at=now_ms())
        messages = [
            Message(names.dlq_subject(env.queue, env.id), body, headers),
            self.state_message(st, self.spec.failed_retention_s),
        ]
        alert = self.alert(env, text, reason)
        if alert is not None:
            messages.append(alert)
        record = self.record(
            EventType.FAILED,
            env,
            duration_ms=duration,
            error=text,
            error_type=error_type,
            artifacts=files,
            delivery=delivery,
            **{**(start or {}), "data": env.data},
        )
        return Outcome(msg if msg is not None else NO_MSG, TERM, messages, [record], seq)

    def alert(self, env: Envelope, text: str, reason: str) -> Message | None:
        """The admin alert job of a dead-lettered job (the catalog's ``alerts``), or None."""
        alerts = self.catalog.alerts
        if alerts is None or (env.queue == alerts.queue and env.name == alerts.job_name):
            return None  # never alert about a failed alert (no loop)
        details = {"job_id": env.id, "queue": env.queue, "error": text[:500], "data": truncated(env.data, 2000)}
        data = {
            "type": "JOB_FAILED",
            "severity": "HIGH",
            "audience": "admins",
            "title": f"Job Failed: {env.name}",
            "message": f"Job {env.id} in queue {env.queue} failed after {env.attempt} attempts ({reason})",
            "details": details,
        }
        job_id = f"dlq-alert-{env.queue}-{env.id}"[:128]
        if alerts.queue not in self.catalog:
            return self._foreign_alert(alerts.queue, alerts.job_name, alerts.priority, job_id, data)
        try:
            return self.client.prepare(
                JobRequest(queue=alerts.queue, name=alerts.job_name, data=data, job_id=job_id, priority=alerts.priority)
            )
        except JetqueueError as exc:
            log.error("admin alert for job %s cannot be built: %s", env.id, exc)
            return None

    @staticmethod
    def _foreign_alert(queue: str, name: str, priority: int, job_id: str, data: Any) -> Message:
        """An alert job on a queue this worker's catalog does not hold: the envelope as any client
        may publish it (docs/envelope.md), options left to that queue's defaults. Priority 1 is
        level 0 on any queue; other priorities go to the middle level of the default three."""
        level = 0 if priority <= 1 else 1
        body = codec.encode({"v": 1, "id": job_id, "queue": queue, "name": name, "data": data, "enqueued_at": now_ms()})
        return Message(names.job_subject(queue, level, job_id), body, {H_MSG_ID: job_id})

    def malformed(self, msg: Msg, seq: int, reason: str) -> Outcome:
        headers = {
            H_REASON: "malformed",
            H_ERROR: reason[:1000].replace("\n", " "),
            H_FAILED_AT: str(now_ms()),
            H_ORIGINAL_SUBJECT: msg.subject,
            H_MSG_ID: f"malformed:{self.spec.name}:{seq}",
        }
        token = f"malformed-{seq}"
        record = codec.encode(
            LifecycleRecord(
                type=EventType.FAILED,
                job_id=token,
                queue=self.spec.name,
                name="(malformed)",
                attempt=1,
                worker=self.worker_id,
                error=f"malformed message: {reason[:1000]}",
                error_type="InvalidJob",
            )
        )
        log.warning("malformed message on %s dead-lettered: %s", msg.subject, reason)
        data = (msg.data or b"")[: self.max_state_bytes]
        return Outcome(msg, TERM, [Message(names.dlq_subject(self.spec.name, token), data, headers)], [record], seq)


def truncated(value: Any, keep: int) -> Any:
    """``value`` if its JSON is at most ``keep`` characters, else a marker with its size and a preview."""
    text = codec.encode(value).decode()
    if len(text) <= keep:
        return value
    return {"_truncated": True, "bytes": len(text.encode()), "preview": text[:keep]}


def clip(text: str | None, keep: int) -> str | None:
    if text is None or len(text) <= keep:
        return text
    return text[:keep] + f"… [truncated, {len(text)} characters]"


def error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return clip(text, MAX_ERROR_LEN) or ""
