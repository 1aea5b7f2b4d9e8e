"""Request and response bodies of the producer API; their JSON Schema is the published contract."""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from jetqueue.catalog import Backoff

# What names.TOKEN_RE allows (job ids, schedule names: one NATS subject token).
TOKEN_PATTERN = r"^[A-Za-z0-9_\-:=@+]{1,128}$"

_STEP = r"(?:/[1-9][0-9]?)?"


def _cron_field(value: str, *, any_: str = r"\*") -> str:
    """One cron field: ``*``, a value or a range, each with an optional step, comma separated."""
    item = rf"(?:{any_}|(?:{value})(?:-(?:{value}))?){_STEP}"
    return rf"{item}(?:,{item})*"


_SEC_MIN = _cron_field(r"[1-5]?[0-9]")
_HOUR = _cron_field(r"1?[0-9]|2[0-3]")
_DOM = _cron_field(r"[1-9]|[12][0-9]|3[01]", any_=r"[*?]")
_MONTH = _cron_field(r"[1-9]|1[0-2]")
_DOW = _cron_field(r"[0-6]", any_=r"[*?]")
_DURATION = (
    r"[1-9][0-9]{0,4}h(?:[1-9][0-9]{0,4}m)?(?:[1-9][0-9]{0,4}s)?|[1-9][0-9]{0,4}m(?:[1-9][0-9]{0,4}s)?|[1-9][0-9]{0,4}s"
)
# The broker's cron grammar (numbers only; 6 fields put seconds first). Two rules a pattern cannot state
# without listing every pair of numbers are left to the broker, which refuses with a 400: a range runs
# low to high, and a day of the month must exist in one of the months (no "0 0 31 2 *").
CRON_PATTERN = (
    rf"^(?:(?:{_SEC_MIN}) )?(?:{_SEC_MIN}) (?:{_HOUR}) (?:{_DOM}) (?:{_MONTH}) (?:{_DOW})$"
    rf"|^@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)$"
    rf"|^@every (?:{_DURATION})$"
)
TIME_ZONES = sorted(zoneinfo.available_timezones())
_TIME_ZONE_SET = frozenset(TIME_ZONES)

# Bounds that keep every score finite (a price near the float limit overflows the weighting).
MAX_AMOUNT = 1e12
MAX_WEIGHT = 1e6

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    """An RFC 3339 string as a datetime; pydantic alone would also take numbers and other layouts."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with a zone, e.g. 2026-01-01T09:00:00Z")
    return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: 3 and 3.0, never true or "3" (pydantic's strict mode refuses 3.0, lax takes both)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Whole numbers with their bounds (the bounds first, or pydantic's JSON Schema misses them); the models'
# strict mode still refuses booleans, strings and 3.5.
_INT = BeforeValidator(_json_integer)
Priority = Annotated[int, Field(ge=1, le=1000), _INT]
Attempts = Annotated[int, Field(ge=1, le=100), _INT]
DelayMs = Annotated[int, Field(ge=0, le=365 * 86_400_000), _INT]
DayMs = Annotated[int, Field(ge=0, le=86_400_000), _INT]
TimeoutMs = Annotated[int, Field(ge=1, le=86_400_000), _INT]


_CRON = re.compile(CRON_PATTERN)


def _cron(value: str) -> str:
    """CRON_PATTERN, with a message a person can act on (pydantic's would quote the whole pattern)."""
    if not _CRON.fullmatch(value):
        raise ValueError(
            f"invalid cron expression {value!r}: give 5 fields (minute hour day month weekday, numbers), "
            "6 fields (seconds first), @hourly, @daily, @weekly, @monthly, @yearly or @every 90s / 5m / 1h30m"
        )
    return value


def _time_zone(value: Any) -> Any:
    if isinstance(value, str) and value not in _TIME_ZONE_SET:
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)")
    return value


class RequestBody(BaseModel):
    """A request body: JSON types as they are (no ``true`` or ``"1"`` for 1), unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid")


class BackoffIn(RequestBody):
    type: Literal["exponential", "fixed"] = "exponential"
    delay_ms: DayMs

    def to_backoff(self) -> Backoff:
        return Backoff.model_validate(self.model_dump())


class JobIn(RequestBody):
    """A job to enqueue."""

    model_config = ConfigDict(
        # delay_ms and run_at exclude each other, which the schema states too
        json_schema_extra={
            "not": {
                "required": ["delay_ms", "run_at"],
                "properties": {"delay_ms": {"type": "integer"}, "run_at": {"type": "string"}},
            }
        }
    )

    name: str = Field(min_length=1, max_length=200, description="job type, e.g. update-ei")
    data: Any = Field(default=None, description="payload handed to the processor (JSON)")
    priority: Priority | None = Field(default=None, description="1 = most urgent; default: normal")
    delay_ms: DelayMs | None = Field(default=None, description="run after this delay")
    run_at: Rfc3339 | None = Field(
        default=None, description="run at this time (RFC 3339 with zone), at most 365 days ahead; past = now"
    )
    attempts: Attempts | None = Field(default=None, description="overrides the queue's attempts")
    backoff: BackoffIn | None = None
    timeout_ms: TimeoutMs | None = None
    job_id: str | None = Field(
        default=None, pattern=TOKEN_PATTERN, description="your id: the same id twice gives one job"
    )
    user_id: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _one_delay(self) -> JobIn:
        if self.delay_ms is not None and self.run_at is not None:
            raise ValueError("give delay_ms or run_at, not both")
        return self


class BulkIn(RequestBody):
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


class ScheduleIn(RequestBody):
    cron: Annotated[str, AfterValidator(_cron)] = Field(
        max_length=200,
        json_schema_extra={"pattern": CRON_PATTERN},
        description="5 fields (m h dom mon dow), 6 fields (seconds first), @daily… or @every 5m; "
        "a range runs low to high and a day must exist in one of the months",
    )
    time_zone: Annotated[str, BeforeValidator(_time_zone)] = Field(
        default="UTC", json_schema_extra={"enum": list(TIME_ZONES)}, description="IANA time zone of the cron's clock"
    )
    job_name: str | None = Field(default=None, min_length=1, max_length=200)
    data: Any = None
    priority: Priority | None = None


class EIUpdateIn(RequestBody):
    fleet_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-]+$")
    # The range is checked in the handler, which answers "EI value out of range"; the schema states it too.
    new_ei: float = Field(allow_inf_nan=False, json_schema_extra={"minimum": 0, "maximum": 200})


class BidCandidate(BaseModel):
    # Extra fields (carrier details) are kept for the caller; the scored ones are strict.
    model_config = ConfigDict(strict=True, extra="allow")
    proposal_id: str = Field(min_length=1, max_length=100)
    price: float = Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)
    ei: float = Field(ge=0, le=200, allow_inf_nan=False, description="carrier energy index (lower is greener)")
    eta_hours: float = Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)
    rating: float = Field(default=3.0, ge=0, le=5, allow_inf_nan=False)


_WEIGHTS = ("price_weight", "ei_weight", "eta_weight", "rating_weight")
_ALL_ZERO: dict[str, Any] = {w: {"maximum": 0} for w in _WEIGHTS}


class EvaluationPolicy(RequestBody):
    # An omitted weight takes its positive default, so only four explicit zeros leave no weight.
    model_config = ConfigDict(json_schema_extra={"not": {"required": list(_WEIGHTS), "properties": _ALL_ZERO}})
    price_weight: float = Field(default=0.4, ge=0, le=MAX_WEIGHT, allow_inf_nan=False)
    ei_weight: float = Field(default=0.3, ge=0, le=MAX_WEIGHT, allow_inf_nan=False)
    eta_weight: float = Field(default=0.2, ge=0, le=MAX_WEIGHT, allow_inf_nan=False)
    rating_weight: float = Field(default=0.1, ge=0, le=MAX_WEIGHT, allow_inf_nan=False)

    @model_validator(mode="after")
    def _some_weight(self) -> EvaluationPolicy:
        if self.price_weight + self.ei_weight + self.eta_weight + self.rating_weight <= 0:
            raise ValueError("at least one weight must be positive")
        return self


class BidEvaluationIn(RequestBody):
    order_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-]+$")
    bid_candidates: list[BidCandidate] = Field(max_length=1000)
    evaluation_policy: EvaluationPolicy = Field(default_factory=EvaluationPolicy)


class ErrorOut(BaseModel):
    """Every refusal: the status again, a message for people, and details where they help."""

    status_code: int
    detail: str
    extra: Any = Field(default=None, description="per-field reasons of a 400")
    retry_after_s: int | None = Field(default=None, description="503: when to retry (also the Retry-After header)")
    limit_bytes: int | None = Field(default=None, description="413: the size limit that was exceeded")
