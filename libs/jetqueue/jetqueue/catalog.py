"""The queue catalog: validated per-queue settings loaded from a YAML file."""

from __future__ import annotations

import random
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jetqueue import names
from jetqueue.errors import JetqueueError, UnknownQueue


class BackoffType(StrEnum):
    EXPONENTIAL = "exponential"
    FIXED = "fixed"


DEFAULT_MAX_BACKOFF_MS = 6 * 3600 * 1000


class Backoff(BaseModel):
    """Delay before retry ``n`` (1-based): ``delay_ms * 2**(n-1)`` (capped at ``max_delay_ms``) or ``delay_ms``.

    ``jitter`` (0..1) takes up to that share off each delay at random, so jobs
    that failed together (an outage) do not all retry in the same instant
    (BullMQ's ``jitter`` option).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: BackoffType = BackoffType.EXPONENTIAL
    delay_ms: int = Field(default=1000, ge=0, le=86_400_000)
    max_delay_ms: int = Field(default=DEFAULT_MAX_BACKOFF_MS, ge=0, le=7 * 86_400_000)
    jitter: float = Field(default=0.0, ge=0.0, le=1.0)

    def delay_for(self, retry: int, *, rand: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry).

        ``rand`` (0..1) replaces the random draw of the jitter (tests).
        """
        if self.type is BackoffType.FIXED:
            ms = float(self.delay_ms)
        else:
            # 2**n overflows any datetime after ~40 attempts: stop doubling once past the cap.
            exponent = min(max(retry - 1, 0), 62)
            ms = float(min(self.delay_ms * (2**exponent), max(self.max_delay_ms, self.delay_ms)))
        if self.jitter:
            ms -= ms * self.jitter * (random.random() if rand is None else rand)
        return ms / 1000


# Job types one queue may list (each one is a metric label value: the list bounds their series).
MAX_JOB_NAMES = 100
MAX_JOB_NAME_LENGTH = 200  # as the producer API accepts a job's name


class QueueSpec(BaseModel):
    """Settings of one queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    display_name: str = ""
    display_name_en: str = ""
    priority: int = Field(default=3, ge=1, le=10)
    concurrency: int = Field(default=10, ge=1, le=1000)
    attempts: int = Field(default=3, ge=1, le=100)
    backoff: Backoff = Backoff()
    timeout_ms: int | None = Field(default=None, ge=1)
    retention_s: int = Field(default=3600, ge=1)
    failed_retention_s: int = Field(default=7 * 86400, ge=1)
    priority_levels: int = Field(default=3, ge=1, le=10)
    ack_wait_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    max_stalled: int = Field(default=2, ge=0, le=50)
    max_age_s: int = Field(default=14 * 86400, ge=60)
    duplicate_window_s: int = Field(default=120, ge=1)
    replicas: int | None = Field(
        default=None,
        ge=1,
        le=5,
        description="stream replicas; default: the deployment's one setting (JETQUEUE_REPLICAS)",
    )
    job_names: tuple[str, ...] = Field(
        default=(),
        max_length=MAX_JOB_NAMES,
        # Left out of dumps while empty: catalogs written before the field existed read and hash the same.
        exclude_if=lambda v: not v,
        description="the queue's job types: metric labels name these (and registered processors), others 'other'",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not names.QUEUE_RE.match(v):
            raise ValueError("queue names are lower-case letters, digits and '-' (max 63)")
        return v

    @field_validator("job_names")
    @classmethod
    def _job_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for n in v:
            if not 1 <= len(n) <= MAX_JOB_NAME_LENGTH:
                raise ValueError(f"job names are 1-{MAX_JOB_NAME_LENGTH} characters, not {n!r}")
        if len(set(v)) != len(v):
            raise ValueError("a job name is listed twice")
        return v

    @property
    def stream(self) -> str:
        return names.job_stream(self.name)

    @property
    def default_level(self) -> int:
        """Level of a job enqueued without a priority: the middle one."""
        return self.priority_levels // 2

    def level_for(self, priority: int | None) -> int:
        """Map a job priority (1 = most urgent, BullMQ style) to a level."""
        if priority is None:
            return self.default_level
        return min(max(priority, 1), self.priority_levels) - 1

    @property
    def max_deliver(self) -> int:
        # One delivery per run plus one per stall (a worker that died or lost
        # its lease). Retries are new messages, so they never count here.
        return 1 + self.max_stalled


class CronSpec(BaseModel):
    """A recurring job registered at producer start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str
    name: str
    cron: str
    time_zone: str = "UTC"
    job_name: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class AlertSpec(BaseModel):
    """Where a worker sends an admin alert when a job is dead-lettered (the seed's notification job).

    The queue may be outside the catalog that names it (then the alert carries
    no options: that queue's workers apply their own defaults).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str
    job_name: str = "admin-alert"
    priority: int = Field(default=1, ge=1, le=1000)


class Catalog(BaseModel):
    """All queues, the start-up schedules, and where dead-letter alerts go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queues: tuple[QueueSpec, ...]
    schedules: tuple[CronSpec, ...] = ()
    alerts: AlertSpec | None = None

    @model_validator(mode="after")
    def _unique(self) -> Catalog:
        seen: set[str] = set()
        for q in self.queues:
            if q.name in seen:
                raise ValueError(f"queue {q.name!r} is listed twice")
            seen.add(q.name)
        for s in self.schedules:
            if s.queue not in seen:
                raise ValueError(f"schedule {s.name!r} names unknown queue {s.queue!r}")
        # The alert queue need not be in this catalog: a worker's one-queue catalog (Kubernetes)
        # names it so that worker can still raise alerts there.
        return self

    def get(self, name: str) -> QueueSpec:
        for q in self.queues:
            if q.name == name:
                return q
        raise UnknownQueue(name)

    def __contains__(self, name: object) -> bool:
        return any(q.name == name for q in self.queues)

    @property
    def names(self) -> list[str]:
        return [q.name for q in self.queues]

    def job_names(self, queue: str) -> frozenset[str]:
        """The job types the catalog knows on ``queue``: its ``job_names``, the job names of its
        schedules, and the admin alert's when alerts go to it (empty for a queue not in the catalog)."""
        known = {n for q in self.queues if q.name == queue for n in q.job_names}
        known.update(s.job_name or s.name for s in self.schedules if s.queue == queue)
        if self.alerts is not None and self.alerts.queue == queue:
            known.add(self.alerts.job_name)
        return frozenset(known)

    def only(self, *queue_names: str) -> Catalog:
        """A catalog restricted to some queues (tests, single-queue workers)."""
        keep = [self.get(n) for n in queue_names]
        return Catalog(
            queues=tuple(keep), schedules=tuple(s for s in self.schedules if s.queue in queue_names), alerts=self.alerts
        )

    def replace(self, name: str, **changes: Any) -> Catalog:
        """A copy with one queue's settings changed."""
        self.get(name)
        qs = tuple(
            QueueSpec.model_validate({**q.model_dump(), **changes}) if q.name == name else q for q in self.queues
        )
        return Catalog(queues=qs, schedules=self.schedules, alerts=self.alerts)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate a catalog file; the packaged seed catalog by default.

    Raises:
        JetqueueError: the file is missing or invalid (the message says where).
    """
    try:
        if path is None:
            text = resources.files("jetqueue").joinpath("catalog.yaml").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        raw = yaml.safe_load(text)
        return Catalog.model_validate(raw)
    except FileNotFoundError as exc:
        raise JetqueueError(f"catalog file not found: {path}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise JetqueueError(f"invalid catalog {path or '(packaged)'}: {exc}") from exc
