"""Bulk actions on jobs and the acknowledgement of incidents, in the monitor API."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from jetqueue.control import AuditAction, EntityType
from jetqueue.names import QUEUE_RE, TOKEN_RE
from jetqueue_monitor import incidents
from jetqueue_monitor.api.common import Reason, control, principal, rfc3339, sign, verify
from jetqueue_monitor.api.spec import NO_NUL, SECURITY, JobStatus, errors
from jetqueue_monitor.auth import admin, audit_refused, operator, viewer
from jetqueue_monitor.bulk import BulkRunner, targets
from jetqueue_monitor.clock import utcnow
from jetqueue_monitor.queries import JobFilter

Moment = Annotated[datetime | None, BeforeValidator(rfc3339)]
INCIDENT_TYPES = Literal["no_worker", "backlog_surge", "failure_spike", "stalled", "dlq_growth"]


class BulkFilterIn(BaseModel):
    """The Jobs list's filters: the action applies to every job they match (in a state it applies to)."""

    model_config = ConfigDict(extra="forbid")
    queue: str | None = Field(default=None, pattern=QUEUE_RE.pattern, max_length=63)
    status: JobStatus | None = None
    name: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    user_id: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    since: Moment = Field(default=None, description="RFC 3339 with a time zone")
    until: Moment = Field(default=None, description="RFC 3339 with a time zone")
    q: str | None = Field(default=None, max_length=200, pattern=NO_NUL, description="job-id prefix or error text")
    level: int | None = Field(default=None, gt=-1, le=9)  # gt=-1: Litestar leaves a minimum of 0 out of the document


class BulkIn(BaseModel):
    """``job_ids`` (a selection), ``filter`` (every job it matches; no filter: every job), or both (the
    selected jobs the filter matches). ``dry_run``: only count, and get the token a run without
    ``job_ids`` needs (bound to you, the action and the filter; the run never touches more than it counted)."""

    model_config = ConfigDict(extra="forbid")
    job_ids: list[Annotated[str, Field(pattern=TOKEN_RE.pattern, max_length=128)]] | None = Field(
        default=None, min_length=1, max_length=500
    )
    filter: BulkFilterIn | None = None
    dry_run: bool = False
    token: str | None = Field(default=None, max_length=2000, pattern=r"^[A-Za-z0-9_.\-]*$")
    reason: Reason = None


class IncidentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: INCIDENT_TYPES
    queue: str = Field(pattern=QUEUE_RE.pattern, max_length=63)
    reason: Reason = None


class SnoozeIn(IncidentIn):
    minutes: int = Field(ge=1, le=7 * 24 * 60, description="hide it from the banner this long (while it lasts)")


DRY_RUN = ResponseSpec(
    data_container=dict[str, Any],
    description="the dry run: how many jobs the action would touch, and the token a run on a filter needs",
    generate_examples=False,
)
BULK_DOC = (
    "Applies to the jobs in a state the action applies to (retry: failed; cancel: waiting, delayed, running; "
    "delete: all but running; promote: delayed). Runs in the background, at most `bulk_rate_per_s` jobs a "
    "second, one bulk action at a time (409 while one runs); poll `GET /bulk/{id}` for progress. Audited "
    "as one action (BULK_*) with its filter or ids and the count."
)
BulkId = Annotated[str, PathParameter(pattern=r"^[0-9a-f]{12}$", description="a bulk action's id")]


def _opt(action: str, entity: str) -> dict[str, str]:
    return {"action": action, "entity": entity}


class ActionsController(Controller):
    """Bulk actions and incident acknowledgements."""

    path = "/admin/worker-monitor"
    tags = ["worker-monitor"]  # noqa: RUF012 (Litestar reads it as an instance attribute)
    security = SECURITY

    @post(
        "/bulk/retry",
        guards=[operator],
        status_code=202,
        summary="Retry dead-lettered jobs in bulk",
        description=BULK_DOC,
        responses={200: DRY_RUN, **errors(401, 403, 404, 409, 503)},
        opt=_opt("BULK_RETRY", "JOBS"),
    )
    async def bulk_retry(self, data: JSONBody[BulkIn], request: Request[Any, Any, Any], state: State) -> Response[Any]:
        return await _bulk(request, state, "retry", data)

    @post(
        "/bulk/cancel",
        guards=[operator],
        status_code=202,
        summary="Cancel jobs in bulk",
        description=BULK_DOC,
        responses={200: DRY_RUN, **errors(401, 403, 404, 409, 503)},
        opt=_opt("BULK_CANCEL", "JOBS"),
    )
    async def bulk_cancel(self, data: JSONBody[BulkIn], request: Request[Any, Any, Any], state: State) -> Response[Any]:
        return await _bulk(request, state, "cancel", data)

    @post(
        "/bulk/promote",
        guards=[operator],
        status_code=202,
        summary="Run delayed jobs now, in bulk",
        description=BULK_DOC,
        responses={200: DRY_RUN, **errors(401, 403, 404, 409, 503)},
        opt=_opt("BULK_PROMOTE", "JOBS"),
    )
    async def bulk_promote(
        self, data: JSONBody[BulkIn], request: Request[Any, Any, Any], state: State
    ) -> Response[Any]:
        return await _bulk(request, state, "promote", data)

    @post(
        "/bulk/delete",
        guards=[admin],
        status_code=202,
        summary="Delete jobs in bulk (their messages and records)",
        description=BULK_DOC,
        responses={200: DRY_RUN, **errors(401, 403, 404, 409, 503)},
        opt=_opt("BULK_DELETE", "JOBS"),
    )
    async def bulk_delete(self, data: JSONBody[BulkIn], request: Request[Any, Any, Any], state: State) -> Response[Any]:
        return await _bulk(request, state, "delete", data)

    @get("/bulk", guards=[viewer], summary="The latest bulk actions and their progress", responses=errors(401))
    async def bulk_list(self, state: State) -> list[dict[str, Any]]:
        runner: BulkRunner = state.bulk
        return [op.to_dict() for op in reversed(runner.ops.values())]

    @get("/bulk/{bulk_id:str}", guards=[viewer], summary="One bulk action's progress", responses=errors(401, 404))
    async def bulk_one(self, bulk_id: BulkId, state: State) -> dict[str, Any]:
        op = state.bulk.ops.get(bulk_id)
        if op is None:
            raise NotFoundException(f"no bulk action {bulk_id!r} (this monitor keeps the last few)")
        return dict(op.to_dict())

    @post(
        "/incidents/ack",
        guards=[operator],
        status_code=200,
        summary="Acknowledge an open incident (it stays listed, marked, while it lasts)",
        responses=errors(401, 403, 404, 503),
        opt=_opt("INCIDENT_ACK", "INCIDENT"),
    )
    async def ack(self, data: JSONBody[IncidentIn], request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        return await _acknowledge(request, state, data, "ack", None)

    @post(
        "/incidents/snooze",
        guards=[operator],
        status_code=200,
        summary="Snooze an open incident: out of the banner for some minutes, or until it clears",
        responses=errors(401, 403, 404, 503),
        opt=_opt("INCIDENT_SNOOZE", "INCIDENT"),
    )
    async def snooze(self, data: JSONBody[SnoozeIn], request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        return await _acknowledge(request, state, data, "snooze", utcnow() + timedelta(minutes=data.minutes))


def _job_filter(state: State, f: BulkFilterIn | None, ids: list[str] | None) -> JobFilter:
    f = f or BulkFilterIn()
    if f.queue:
        state.catalog.get(f.queue)
    return JobFilter(
        queue=f.queue,
        status=f.status,
        name=f.name,
        user_id=f.user_id,
        since=f.since,
        until=f.until,
        q=f.q,
        level=f.level,
        ids=tuple(sorted(set(ids))) if ids is not None else None,
    )


def _digest(scope: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(scope, sort_keys=True, default=str).encode()).hexdigest()[:24]


async def _bulk(request: Request[Any, Any, Any], state: State, action: str, body: BulkIn) -> Response[Any]:
    p = principal(request)
    limit: int = state.settings.bulk_max_jobs
    jobs = await targets(state.store, action, _job_filter(state, body.filter, body.job_ids), limit + 1)
    scope: dict[str, Any] = {"filter": body.filter.model_dump(mode="json", exclude_none=True) if body.filter else {}}
    if body.job_ids is not None:
        scope["job_ids"] = sorted(set(body.job_ids))
    over = len(jobs) > limit
    if body.dry_run:
        claims = {"a": action, "u": p.name, "s": _digest(scope), "n": min(len(jobs), limit), "x": secrets.token_hex(4)}
        claims["exp"] = time.time() + state.settings.drain_token_ttl_s
        out = {"dry_run": True, "action": action, "matched": min(len(jobs), limit), "over_limit": over}
        out |= {"limit": limit, "token": sign(state, claims), "expires_in_s": state.settings.drain_token_ttl_s}
        return Response(out, status_code=200)
    if body.job_ids is None:  # everything a filter matches: only what its dry run counted
        jobs = jobs[: await _confirmed(request, state, action, scope, body.token)]
    jobs = jobs[:limit]
    op = state.bulk.start(control(state), action, jobs, scope=scope, actor=p.name, role=p.role_name, reason=body.reason)
    return Response(op.to_dict(), status_code=202)


async def _confirmed(
    request: Request[Any, Any, Any], state: State, action: str, scope: dict[str, Any], token: str | None
) -> int:
    """The count a dry run of this action and filter showed this user: a run never touches more."""
    p = principal(request)
    try:
        if not token:
            raise PermissionDeniedException("a bulk action on a filter needs the token of its dry run")
        claims = verify(state, token)
        if claims.get("a") != action or claims.get("u") != p.name or claims.get("s") != _digest(scope):
            raise PermissionDeniedException("the dry run's token was issued for another action, filter or user")
    except PermissionDeniedException as exc:
        await audit_refused(request, p, request.route_handler.opt["action"], str(exc.detail), "JOBS")
        raise
    return int(claims["n"])


async def _acknowledge(
    request: Request[Any, Any, Any], state: State, data: IncidentIn, how: str, until: datetime | None
) -> dict[str, Any]:
    p = principal(request)
    current = await incidents.current(state.store, state.sampler.snapshot, state.settings, state.catalog)
    if not any(i["type"] == data.type and i["queue"] == data.queue for i in current):
        raise NotFoundException(f"no open {data.type} incident on {data.queue!r}")

    async def op() -> dict[str, Any]:
        await state.store.save_incident_ack(data.type, data.queue, how, actor=p.name, reason=data.reason, until=until)
        return {"type": data.type, "queue": data.queue, "kind": how, "until": until.isoformat() if until else None}

    action = AuditAction.INCIDENT_ACK if how == "ack" else AuditAction.INCIDENT_SNOOZE
    params = {"minutes": getattr(data, "minutes", None)} if how == "snooze" else {}
    return await control(state).audited(
        action,
        EntityType.INCIDENT,
        f"{data.queue}/{data.type}",
        op,
        actor=p.name,
        role=p.role_name,
        reason=data.reason,
        params=params,
    )
