"""Job wire formats: the message envelope, the state record and lifecycle records.

All three are JSON with a ``v`` (schema version) field so that non-Python
services can produce and read them; docs/envelope.md describes them.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import msgspec

from jetqueue import codec, names
from jetqueue.catalog import DEFAULT_MAX_BACKOFF_MS, Backoff, QueueSpec
from jetqueue.errors import InvalidJob
from jetqueue.publisher import Message

SCHEMA_VERSION = 1


class JobStatus(StrEnum):
    """Where a job is in its life."""

    SCHEDULED = "scheduled"  # delayed, or waiting for the backoff of a retry
    WAITING = "waiting"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"  # dead-lettered after its last attempt
    CANCELLED = "cancelled"


ACTIVE_STATUSES = frozenset({JobStatus.SCHEDULED, JobStatus.WAITING, JobStatus.ACTIVE})
TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class EventType(StrEnum):
    """Kinds of lifecycle records a worker emits."""

    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    RETRYING = "retrying"  # an attempt failed, another is scheduled
    FAILED = "failed"  # the last attempt failed: dead-lettered
    STALLED = "stalled"  # redelivered after a worker lost its lease
    CANCELLED = "cancelled"


def now_ms() -> int:
    return int(time.time() * 1000)


def rfc3339(ms: int) -> str:
    """A time in ms as RFC 3339 UTC with milliseconds (what a broker ``@at`` schedule takes)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    """A fresh job id: time-ordered (ms) + 48 random bits, safe as a subject token.

    The random part comes from the ``random`` module (seeded from the OS, and
    again in a forked child): a getrandom() call per job cost 4 µs. Ids need
    to be unique, not secret: reading or cancelling a job needs a token.
    """
    return f"{now_ms():013x}{random.getrandbits(48):012x}"


@dataclass(slots=True)
class JobOptions:
    """Per-job overrides of the queue's defaults (None = use the queue's)."""

    attempts: int | None = None
    backoff: Backoff | None = None
    timeout_ms: int | None = None
    priority: int | None = None

    def resolved(self, spec: QueueSpec) -> ResolvedOptions:
        return ResolvedOptions(
            attempts=self.attempts or spec.attempts,
            backoff=self.backoff or spec.backoff,
            timeout_ms=self.timeout_ms if self.timeout_ms is not None else spec.timeout_ms,
            priority=self.priority,
        )


@dataclass(slots=True, frozen=True)
class ResolvedOptions:
    attempts: int
    backoff: Backoff
    timeout_ms: int | None
    priority: int | None


def backoff_wire(b: Backoff) -> dict[str, Any]:
    """A backoff as the envelope carries it (the cap and jitter only when set)."""
    d: dict[str, Any] = {"type": b.type.value, "delay_ms": b.delay_ms}
    if b.max_delay_ms != DEFAULT_MAX_BACKOFF_MS:
        d["max_delay_ms"] = b.max_delay_ms
    if b.jitter:
        d["jitter"] = b.jitter
    return d


_BACKOFFS: dict[tuple[tuple[str, Any], ...], Backoff] = {}


def backoff_of(raw: Any) -> Backoff:
    """The backoff an envelope names; validated once per distinct value (every job carries one).

    Raises:
        ValueError: not a valid backoff.
    """
    try:
        key = tuple(sorted(raw.items()))
        hit = _BACKOFFS.get(key)
    except (AttributeError, TypeError):  # not a dict, or unhashable values: validate (and refuse) below
        return Backoff.model_validate(raw)
    if hit is None:
        hit = Backoff.model_validate(raw)
        if len(_BACKOFFS) < 256:
            _BACKOFFS[key] = hit
    return hit


@dataclass(slots=True)
class Envelope:
    """Body of a job message (producer-set fields, plus ``attempt``).

    Producer-set: ``id``, ``name``, ``data``, ``opts``, ``user_id``,
    ``enqueued_at``, ``trace``. System-set: ``attempt`` (1-based, raised by the
    worker when it schedules a retry) and ``errors`` (messages of failed
    attempts so far).
    """

    id: str
    queue: str
    name: str
    data: Any
    attempts: int
    backoff: Backoff
    timeout_ms: int | None
    priority: int | None = None
    user_id: str | None = None
    enqueued_at: int = field(default_factory=now_ms)
    attempt: int = 1
    errors: list[str] = field(default_factory=list)
    cron: str | None = None

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "id": self.id,
            "queue": self.queue,
            "name": self.name,
            "data": self.data,
            "attempt": self.attempt,
            "opts": {
                "attempts": self.attempts,
                "backoff": backoff_wire(self.backoff),
                "timeout_ms": self.timeout_ms,
                "priority": self.priority,
            },
            "user_id": self.user_id,
            "enqueued_at": self.enqueued_at,
        }
        if self.errors:
            body["errors"] = self.errors
        if self.cron:
            body["cron"] = self.cron
        return codec.encode(body)

    @classmethod
    def from_bytes(cls, raw: bytes, spec: QueueSpec, *, job_id: str | None = None) -> Envelope:
        """Parse a job body; missing options take the queue's defaults.

        Raises:
            InvalidJob: not JSON, not an object, unknown schema version or bad fields.
        """
        try:
            body = codec.decode(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidJob(f"job body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InvalidJob("job body must be a JSON object")
        version = body.get("v", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise InvalidJob(f"unsupported envelope version {version!r}")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidJob("job body needs a non-empty string 'name'")
        opts = body.get("opts") or {}
        if not isinstance(opts, dict):
            raise InvalidJob("'opts' must be an object")
        try:
            backoff = backoff_of(opts["backoff"]) if opts.get("backoff") else spec.backoff
            attempts = int(opts.get("attempts") or spec.attempts)
            timeout = opts.get("timeout_ms", spec.timeout_ms)
            timeout_ms = int(timeout) if timeout is not None else None
            attempt = int(body.get("attempt", 1))
            enqueued_at = int(body.get("enqueued_at") or now_ms())
        except (ValueError, TypeError) as exc:
            raise InvalidJob(f"bad job options: {exc}") from exc
        if attempts < 1 or attempt < 1:
            raise InvalidJob("'attempts' and 'attempt' must be >= 1")
        jid = job_id or body.get("id")
        if not isinstance(jid, str) or not jid:
            raise InvalidJob("job has no id")
        errors = body.get("errors") or []
        return cls(
            id=jid,
            queue=spec.name,
            name=name,
            data=body.get("data"),
            attempts=attempts,
            backoff=backoff,
            timeout_ms=timeout_ms,
            priority=opts.get("priority"),
            user_id=body.get("user_id"),
            enqueued_at=enqueued_at,
            attempt=attempt,
            errors=[str(e) for e in errors] if isinstance(errors, list) else [],
            cron=body.get("cron"),
        )


class JobState(msgspec.Struct):
    """Last known state of a job, as kept in the ``jq-jobs`` bucket and returned by status.

    A msgspec struct: a worker writes one per job, and encoding it straight
    costs about a tenth of building a dict first.
    """

    id: str
    queue: str
    state: JobStatus
    name: str | None = None
    attempt: int = 0
    attempts: int | None = None
    progress: float | None = None
    result: Any = None
    error: str | None = None
    errors: list[str] = msgspec.field(default_factory=list)
    user_id: str | None = None
    enqueued_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    run_at: int | None = None
    worker: str | None = None
    data: Any = None
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """All fields, shallow; ``state`` as its string."""
        d = msgspec.structs.asdict(self)
        d["state"] = self.state.value
        return d

    def to_bytes(self) -> bytes:
        return codec.encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> JobState:
        """Parse a state record (unknown fields are ignored; numbers given as strings are accepted).

        Raises:
            ValueError: not a state record.
        """
        try:
            return msgspec.json.decode(raw, type=cls, strict=False)
        except msgspec.MsgspecError as exc:
            raise ValueError(f"not a job state: {exc}") from exc


_TTL_HEADERS: dict[int, dict[str, str]] = {}


def state_message(st: JobState, ttl_s: int) -> Message:
    """The put of a job's state into the ``jq-jobs`` bucket, expiring after ``ttl_s`` seconds.

    ``KeyValue.put`` cannot carry a TTL, so states go straight to the bucket's
    subject with a ``Nats-TTL`` header (server >= 2.11).
    """
    headers = _TTL_HEADERS.get(ttl_s)
    if headers is None:
        headers = _TTL_HEADERS.setdefault(ttl_s, {"Nats-TTL": f"{int(ttl_s)}s"})
    return Message(names.state_subject(st.id), st.to_bytes(), headers)


@dataclass(slots=True, frozen=True)
class EnqueueResult:
    """What an enqueue returns."""

    job_id: str
    queue: str
    state: JobStatus
    duplicate: bool
    seq: int
    run_at: int | None = None


def validate_job_id(job_id: str) -> str:
    if not names.is_valid_token(job_id):
        raise InvalidJob("job_id must be 1-128 characters of letters, digits and _-:=@+ (no dots or spaces)")
    return job_id
