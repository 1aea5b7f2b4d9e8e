"""What the API's controllers share: reasons, the caller, the control functions, confirmation tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from litestar import Request
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException, ValidationException
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from jetqueue.control import Controller as Control
from jetqueue.errors import NatsUnavailable
from jetqueue_monitor.api.spec import NO_NUL, parse_timestamp, utf8
from jetqueue_monitor.auth import Principal, Role, principal_of
from jetqueue_monitor.db.engine import is_unavailable

T = TypeVar("T")

# A reason lands in the audit log; bounded, and without NUL (PostgreSQL text cannot hold it).
Reason = Annotated[str | None, Field(max_length=500, pattern=NO_NUL), AfterValidator(utf8)]


def rfc3339(value: Any) -> Any:
    """Bodies are read strictly, which takes no string for a datetime: an RFC 3339 one is parsed here."""
    return parse_timestamp(value) if isinstance(value, str) else value


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = None


def principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request)


def payloads(request: Request[Any, Any, Any]) -> bool:
    p = principal(request)
    return p.role >= Role.OPERATOR or request.app.state.settings.viewer_sees_payloads


def control(state: State) -> Control:
    ctl: Control | None = state.get("control")
    if ctl is None:
        raise NatsUnavailable("not connected to NATS")
    return ctl


def iso_ms(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


async def quietly(write: Awaitable[T]) -> T | None:
    """A store update after an action that already happened in NATS: with the database down (None),
    the tracker's reconcile brings the row in line later, so the caller gets the action's answer."""
    try:
        return await write
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        return None


async def known_queue(state: State, job_id: str) -> str | None:
    """The queue the store knows a job by (so an action looks in one stream, not all of them)."""
    try:
        queue: str | None = await state.store.job_queue(job_id)
        return queue
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        return None


def time_param(value: str | None) -> datetime | None:
    try:
        return parse_timestamp(value) if value is not None else None
    except ValueError as exc:
        raise ValidationException(str(exc)) from exc


def sign(state: State, payload: dict[str, Any]) -> str:
    raw = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
    sig = hmac.new(state.settings.session_secret.encode(), raw.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{raw}.{sig}"


def verify(state: State, token: str) -> dict[str, Any]:
    raw, _, sig = token.partition(".")
    good = hmac.new(state.settings.session_secret.encode(), raw.encode(), hashlib.sha256).hexdigest()[:32]
    # bytes: compare_digest refuses str with non-ASCII characters, and a token is caller input
    if not sig or not hmac.compare_digest(sig.encode(), good.encode()):
        raise PermissionDeniedException("confirmation token is invalid")
    payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    if payload.get("exp", 0) < time.time():
        raise PermissionDeniedException("confirmation token expired: start again")
    return payload
