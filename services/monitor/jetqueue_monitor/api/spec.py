"""What the API promises in its OpenAPI document: parameter bounds, error answers and security."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, Example, OpenAPI, OpenAPIType, Schema, SecurityScheme
from litestar.params import PathParameter, QueryParameter
from pydantic import BaseModel

from jetqueue.artifacts import NAME_RE
from jetqueue.names import QUEUE_RE, TOKEN_RE

# PostgreSQL text cannot hold NUL: free text with one is refused at the door (400), not by the database.
NO_NUL = r"^[^\x00]*$"

RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")

JobStatus = Literal["scheduled", "waiting", "active", "completed", "failed", "cancelled"]

OptionalQueueName = Annotated[
    str | None, QueryParameter(pattern=QUEUE_RE.pattern, description="a queue of the catalog")
]
QueueName = Annotated[
    str,
    PathParameter(
        pattern=QUEUE_RE.pattern,
        description="a queue of the catalog",
        examples=[Example(value="email-send")],
    ),
]
JobId = Annotated[str, PathParameter(pattern=TOKEN_RE.pattern, description="a job id")]
ArtifactName = Annotated[str, PathParameter(pattern=NAME_RE.pattern, description="a file the job attached")]


# Optional free-text query parameters, as wide as the columns they filter.
Text40 = Annotated[str | None, QueryParameter(max_length=40, pattern=NO_NUL)]
Text200 = Annotated[str | None, QueryParameter(max_length=200, pattern=NO_NUL)]
# Text on the wire, read by parse_timestamp: Litestar's own datetime reading takes "0.5" as a Unix time.
Timestamp = Annotated[str | None, QueryParameter(format="date-time", description="RFC 3339, with a time zone")]

RETRY_AFTER_S = 5
DB_UNAVAILABLE = "the monitor database is unavailable; retry later"


def utf8(value: str | None) -> str | None:
    """Refuse text that is not valid UTF-8 (JSON can carry lone surrogates): it could not be stored."""
    if value is not None:
        value.encode()  # UnicodeEncodeError is a ValueError: a 400
    return value


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 date-time with its zone, in UTC.

    Query strings arrive as text, and a lenient parser reads ``0.5`` as a Unix
    time: only the RFC 3339 form is a time here. Times whose UTC value would
    fall outside what Python represents are clamped to its first or last one.

    Raises:
        ValueError: not an RFC 3339 date-time with a zone.
    """
    if not RFC3339.fullmatch(value):
        raise ValueError(f"{value[:40]!r} is not an RFC 3339 date-time with a time zone (e.g. 2026-12-01T09:00:00Z)")
    parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC) if parsed.year == 1 else datetime.max.replace(tzinfo=UTC)


class ErrorOut(BaseModel):
    """The body of every refusal and failure."""

    status_code: int
    detail: str
    extra: dict[str, Any] | list[Any] | None = None
    retry_after_s: int | None = None


WHY: dict[int, str] = {
    401: "no credentials, or unknown ones",
    403: "the role is too low, or a CSRF or confirmation token is missing or wrong",
    404: "no such queue, job or file",
    409: "the job is not in a state that allows this",
    429: "too many failed logins: wait Retry-After seconds",
    503: "the monitor database or NATS is unavailable: retry after Retry-After seconds",
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """The documented error answers ``codes`` (400 is documented by Litestar itself where input is validated)."""
    return {
        code: ResponseSpec(data_container=ErrorOut, description=WHY[code], generate_examples=False) for code in codes
    }


# Every route that needs a role: a bearer token, or the session cookie of a UI login.
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"session": []}]
COMPONENTS = Components(
    security_schemes={
        "bearer": SecurityScheme(type="http", scheme="bearer", description="an API token (JETQUEUE_MONITOR_TOKENS)"),
        "session": SecurityScheme(
            type="apiKey",
            name="jq_session",
            security_scheme_in="cookie",
            description="the session of POST /auth/login; state-changing calls also send X-CSRF-Token",
        ),
    }
)


def complete_bodies(document: OpenAPI, models: Iterable[type[BaseModel]]) -> None:
    """Add what Litestar leaves out of a pydantic body's schema: ``additionalProperties: false`` for
    ``extra="forbid"``, and each field's ``pattern``. Without them the document would promise to
    take input the API answers 400 to.
    """
    schemas = (document.components.schemas if document.components else None) or {}
    for model in models:
        schema = schemas.get(model.__name__)
        if not isinstance(schema, Schema):
            continue
        if model.model_config.get("extra") == "forbid":
            schema.additional_properties = False
        own = model.model_json_schema()["properties"]
        for name, prop in (schema.properties or {}).items():
            if not isinstance(prop, Schema):
                continue
            pattern = _pattern(own.get(name, {}))
            if pattern is not None:
                prop.pattern = pattern
            _array(prop, own.get(name, {}))


def _array(prop: Schema, own: dict[str, Any]) -> None:
    """A list property as pydantic bounds it: its items' pattern and length, and ``minItems``/``maxItems``
    (Litestar puts a list's length bounds on the property as string lengths, and leaves the items bare)."""
    branches = [own, *own.get("anyOf", [])]
    arr = next((b for b in branches if b.get("type") == "array"), None)
    targets = [prop, *(prop.one_of or [])]
    target = next((t for t in targets if isinstance(t, Schema) and t.type == OpenAPIType.ARRAY), None)
    if arr is None or target is None:
        return
    prop.min_length = prop.max_length = None
    target.min_items, target.max_items = arr.get("minItems"), arr.get("maxItems")
    items = arr.get("items", {})
    if isinstance(target.items, Schema):
        target.items.pattern = items.get("pattern")
        target.items.max_length = items.get("maxLength")


def _pattern(schema: dict[str, Any]) -> str | None:
    """The ``pattern`` of a property's JSON Schema, also when it sits in an ``anyOf`` branch (optional)."""
    if "pattern" in schema:
        return str(schema["pattern"])
    return next((p for branch in schema.get("anyOf", []) if (p := _pattern(branch)) is not None), None)
