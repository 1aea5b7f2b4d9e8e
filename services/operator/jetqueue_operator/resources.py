"""The JobQueue and QueueAction specs as typed data, with the CRD's defaults.

The API server applies the CRD's ``default:`` values, but objects written
without them (older objects, other tools, the test emulator) must mean the
same, so every default here equals the CRD's (a test compares them).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jetqueue.catalog import Backoff, BackoffType, QueueSpec
from jetqueue.errors import JetqueueError


class _Model(BaseModel):
    # Unknown fields are ignored (the API server prunes them anyway); aliases are the CRD's camelCase.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class StreamSettings(_Model):
    storage: str = Field(default="file", pattern="^(file|memory)$")
    # Unset: the operator's JETQUEUE_REPLICAS, the one replica setting of a deployment.
    replicas: int | None = Field(default=None, ge=1, le=5)
    max_age_seconds: int = Field(default=14 * 86400, ge=60, alias="maxAgeSeconds")
    max_bytes: int = Field(default=-1, ge=-1, alias="maxBytes")
    duplicate_window_seconds: int = Field(default=120, ge=1, alias="duplicateWindowSeconds")


class BackoffSettings(_Model):
    type: BackoffType = BackoffType.EXPONENTIAL
    delay_ms: int = Field(default=1000, ge=0, le=86_400_000, alias="delayMs")


class JobDefaults(_Model):
    attempts: int = Field(default=3, ge=1, le=100)
    backoff: BackoffSettings = BackoffSettings()
    timeout_ms: int | None = Field(default=None, ge=1, alias="timeoutMs")
    priority_levels: int = Field(default=3, ge=1, le=10, alias="priorityLevels")
    retention_seconds: int = Field(default=3600, ge=1, alias="retentionSeconds")
    failed_retention_seconds: int = Field(default=7 * 86400, ge=1, alias="failedRetentionSeconds")
    ack_wait_seconds: float = Field(default=30.0, ge=1, le=3600, alias="ackWaitSeconds")
    max_stalled: int = Field(default=2, ge=0, le=50, alias="maxStalled")
    # The queue's job types: metric labels name these (and the processors' names), any other name is "other".
    names: tuple[str, ...] = Field(default=(), max_length=100)


class DisruptionBudget(_Model):
    """The worker Deployment's PodDisruptionBudget: how many workers a node drain may evict at once."""

    enabled: bool = True
    # An int or a percentage ("25%"), as in a PodDisruptionBudget. maxUnavailable (not
    # minAvailable) so a drain of a one-replica queue proceeds instead of blocking forever.
    max_unavailable: int | str = Field(default=1, alias="maxUnavailable")


class WorkerTemplate(_Model):
    image: str | None = None
    image_pull_policy: str | None = Field(default=None, alias="imagePullPolicy")
    processor: str | None = None
    concurrency: int = Field(default=10, ge=1, le=1000)
    resources: dict[str, Any] = Field(default_factory=dict)
    env: list[dict[str, Any]] = Field(default_factory=list)
    pod_annotations: dict[str, str] = Field(default_factory=dict, alias="podAnnotations")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    service_account_name: str | None = Field(default=None, alias="serviceAccountName")
    termination_grace_period_seconds: int = Field(default=45, ge=0, le=3600, alias="terminationGracePeriodSeconds")
    affinity: dict[str, Any] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    # None: the operator's default (spread over zones and hosts, best effort); []: no constraints.
    topology_spread_constraints: list[dict[str, Any]] | None = Field(default=None, alias="topologySpreadConstraints")
    priority_class_name: str | None = Field(default=None, alias="priorityClassName")
    pod_disruption_budget: DisruptionBudget = Field(default=DisruptionBudget(), alias="podDisruptionBudget")


class ScalingPolicy(_Model):
    min_replicas: int = Field(default=1, ge=1, le=1000, alias="minReplicas")
    max_replicas: int = Field(default=10, ge=1, le=1000, alias="maxReplicas")
    target_pending_per_replica: int = Field(default=100, ge=1, alias="targetPendingPerReplica")
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=86400, alias="scaleDownStabilizationSeconds")
    scale_to_zero: bool = Field(default=False, alias="scaleToZero")

    @model_validator(mode="after")
    def _bounds(self) -> ScalingPolicy:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class JobQueueSpec(_Model):
    """``JobQueue.spec``; :meth:`queue_spec` turns it into the library's :class:`QueueSpec`."""

    queue: str | None = None
    display_name: str = Field(default="", alias="displayName")
    display_name_en: str = Field(default="", alias="displayNameEn")
    priority: int = Field(default=3, ge=1, le=10)
    deletion_policy: DeletionPolicy = Field(default=DeletionPolicy.RETAIN, alias="deletionPolicy")
    stream: StreamSettings = StreamSettings()
    jobs: JobDefaults = JobDefaults()
    worker: WorkerTemplate = WorkerTemplate()
    scaling: ScalingPolicy = ScalingPolicy()

    def queue_spec(self, name: str) -> QueueSpec:
        """The catalog entry of this queue (``name`` = metadata.name, used if spec.queue is unset)."""
        j = self.jobs
        return QueueSpec(
            name=self.queue or name,
            display_name=self.display_name,
            display_name_en=self.display_name_en,
            priority=self.priority,
            concurrency=self.worker.concurrency,
            attempts=j.attempts,
            backoff=Backoff(type=j.backoff.type, delay_ms=j.backoff.delay_ms),
            timeout_ms=j.timeout_ms,
            retention_s=j.retention_seconds,
            failed_retention_s=j.failed_retention_seconds,
            priority_levels=j.priority_levels,
            ack_wait_s=j.ack_wait_seconds,
            max_stalled=j.max_stalled,
            max_age_s=self.stream.max_age_seconds,
            duplicate_window_s=self.stream.duplicate_window_seconds,
            replicas=self.stream.replicas,
            job_names=j.names,
        )


class InvalidSpec(JetqueueError):
    """A resource's spec does not hold (the API server's schema should have caught it)."""


def parse_jobqueue(name: str, spec: dict[str, Any]) -> tuple[JobQueueSpec, QueueSpec]:
    """Parse ``JobQueue.spec``.

    Raises:
        InvalidSpec: with every problem in the message.
    """
    try:
        parsed = JobQueueSpec.model_validate(dict(spec))
        return parsed, parsed.queue_spec(name)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise InvalidSpec(f"invalid JobQueue spec: {problems}") from exc


class ActionType(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    DRAIN = "drain"
    RETRY_FAILED = "retryFailed"
    CLEAN = "clean"


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})

# Destructive actions and the word their spec must carry in ``confirm`` (the CRD's CEL rules say the same).
CONFIRMATIONS = {ActionType.DRAIN: "DRAIN", ActionType.CLEAN: "CLEAN"}


class QueueActionSpec(_Model):
    """``QueueAction.spec``: what to do to which JobQueue, and why."""

    job_queue: str = Field(alias="jobQueue", min_length=1)
    action: ActionType
    reason: str = Field(min_length=1, max_length=1024)
    until: datetime | None = None
    include_delayed: bool | None = Field(default=None, alias="includeDelayed")
    state: str | None = Field(default=None, pattern="^failed$")
    older_than_seconds: int | None = Field(default=None, ge=0, alias="olderThanSeconds")
    confirm: str | None = None

    @model_validator(mode="after")
    def _params_fit(self) -> QueueActionSpec:
        word = CONFIRMATIONS.get(self.action)
        if word is not None and self.confirm != word:
            raise ValueError(f"{self.action} deletes jobs: set confirm: {word} to confirm it")
        if word is None and self.confirm is not None:
            raise ValueError("confirm is only valid with action drain or clean")
        if self.until is not None and self.action is not ActionType.PAUSE:
            raise ValueError("until is only valid with action pause")
        if self.include_delayed is not None and self.action is not ActionType.DRAIN:
            raise ValueError("includeDelayed is only valid with action drain")
        if (self.state is not None or self.older_than_seconds is not None) and self.action is not ActionType.CLEAN:
            raise ValueError("state and olderThanSeconds are only valid with action clean")
        return self


def parse_action(spec: dict[str, Any]) -> QueueActionSpec:
    """Parse ``QueueAction.spec``.

    Raises:
        InvalidSpec: with every problem in the message.
    """
    try:
        return QueueActionSpec.model_validate(dict(spec))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise InvalidSpec(f"invalid QueueAction spec: {problems}") from exc
