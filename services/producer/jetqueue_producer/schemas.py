"""Request and response bodies of the producer API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jetqueue.catalog import Backoff


class BackoffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["exponential", "fixed"] = "exponential"
    delay_ms: int = Field(ge=0, le=86_400_000)

    def to_backoff(self) -> Backoff:
        return Backoff.model_validate(self.model_dump())


class JobIn(BaseModel):
    """A job to enqueue."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="job type, e.g. update-ei")
    data: Any = Field(default=None, description="payload handed to the processor (JSON)")
    priority: int | None = Field(default=None, ge=1, le=1000, description="1 = most urgent; default: normal")
    delay_ms: int | None = Field(default=None, ge=0, le=365 * 86_400_000, description="run after this delay")
    run_at: datetime | None = Field(default=None, description="run at this time (RFC 3339 with zone)")
    attempts: int | None = Field(default=None, ge=1, le=100, description="overrides the queue's attempts")
    backoff: BackoffIn | None = None
    timeout_ms: int | None = Field(default=None, ge=1, le=86_400_000)
    job_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_\-:=@+]+$",
        description="your id: the same id twice gives one job",
    )
    user_id: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _one_delay(self) -> JobIn:
        if self.delay_ms is not None and self.run_at is not None:
            raise ValueError("give delay_ms or run_at, not both")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ValueError("run_at needs a time zone, e.g. 2026-01-01T09:00:00Z")
        return self


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: list[JobIn] = Field(min_length=1)


class JobOut(BaseModel):
    job_id: str
    queue: str
    state: str
    duplicate: bool
    run_at: datetime | None = None


class BulkOut(BaseModel):
    count: int
    duplicates: int
    jobs: list[JobOut]


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str = Field(min_length=1, max_length=200, description="5-field (m h dom mon dow), 6-field or @every 5m")
    time_zone: str = Field(default="UTC", max_length=64)
    job_name: str | None = Field(default=None, max_length=200)
    data: Any = None
    priority: int | None = Field(default=None, ge=1, le=1000)


class EIUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fleet_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-]+$")
    new_ei: float


class BidCandidate(BaseModel):
    model_config = ConfigDict(extra="allow")
    proposal_id: str = Field(min_length=1, max_length=100)
    price: float = Field(ge=0)
    ei: float = Field(ge=0, le=200, description="carrier energy index (lower is greener)")
    eta_hours: float = Field(ge=0)
    rating: float = Field(default=3.0, ge=0, le=5)


class EvaluationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    price_weight: float = Field(default=0.4, ge=0)
    ei_weight: float = Field(default=0.3, ge=0)
    eta_weight: float = Field(default=0.2, ge=0)
    rating_weight: float = Field(default=0.1, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> EvaluationPolicy:
        if self.price_weight + self.ei_weight + self.eta_weight + self.rating_weight <= 0:
            raise ValueError("at least one weight must be positive")
        return self


class BidEvaluationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-]+$")
    bid_candidates: list[BidCandidate] = Field(max_length=1000)
    evaluation_policy: EvaluationPolicy = Field(default_factory=EvaluationPolicy)
