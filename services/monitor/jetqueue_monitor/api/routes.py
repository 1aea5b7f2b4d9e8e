"""The Worker Monitor API (the seed's endpoint list), under /admin/worker-monitor."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, PermissionDeniedException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.response import ServerSentEvent
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from jetqueue import artifacts
from jetqueue.control import AuditAction, EntityType, queue_info
from jetqueue.errors import JobNotFound, UnknownQueue
from jetqueue.job import now_ms
from jetqueue_monitor import queries
from jetqueue_monitor.api.common import (
    Reason,
    ReasonIn,
    control,
    iso_ms,
    known_queue,
    payloads,
    principal,
    quietly,
    rfc3339,
    sign,
    time_param,
    verify,
)
from jetqueue_monitor.api.spec import (
    DB_UNAVAILABLE,
    RETRY_AFTER_S,
    SECURITY,
    ArtifactName,
    JobId,
    JobStatus,
    OptionalQueueName,
    QueueName,
    Text40,
    Text200,
    Timestamp,
    errors,
)
from jetqueue_monitor.auth import admin, audit_refused, operator, viewer
from jetqueue_monitor.db.engine import is_unavailable
from jetqueue_monitor.queries import CURSOR_PATTERN, JobFilter, decode_cursor
from jetqueue_monitor.summary import summarize

Limit = Annotated[int, QueryParameter(ge=1, le=500, description="at most this many items")]
Cursor = Annotated[str | None, QueryParameter(pattern=CURSOR_PATTERN, description="the next_cursor of the page before")]


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: Annotated[datetime | None, BeforeValidator(rfc3339)] = Field(
        default=None, description="auto-resume time (RFC 3339 with a time zone), in the future"
    )
    reason: Reason = None


class DangerIn(BaseModel):
    """First call: no token → the impact and a token. Second call: token + the typed word."""

    model_config = ConfigDict(extra="forbid")
    token: str | None = Field(
        default=None, max_length=2000, pattern=r"^[A-Za-z0-9_.\-]*$", description="the token the first call returned"
    )
    confirm: str | None = Field(default=None, max_length=20, description="type DRAIN (or CLEAN) to execute")
    reason: Reason = None
    include_delayed: bool = Field(default=False, description="drain: remove delayed jobs too")


class CleanIn(DangerIn):
    state: Literal["failed", "completed"] = "failed"
    older_than_s: float = Field(default=0, ge=0, le=10 * 365 * 86400, description="only records older than this")


async def _danger(
    request: Request[Any, Any, Any], state: State, action: str, word: str, queue: str, body: DangerIn, affected: int
) -> dict[str, Any] | None:
    """Two-step confirmation; returns the first step's answer, or None when the action may run."""
    p = principal(request)
    if not body.token:
        token = sign(
            state,
            {
                "a": action,
                "q": queue,
                "u": p.name,
                "n": affected,
                "x": secrets.token_hex(4),
                "exp": time.time() + state.settings.drain_token_ttl_s,
            },
        )
        return {
            "confirm_required": True,
            "action": action,
            "queue": queue,
            "affected": affected,
            "word": word,
            "token": token,
            "expires_in_s": state.settings.drain_token_ttl_s,
            "warning": {
                "ko": f"이 작업은 취소할 수 없습니다. 작업 {affected}개가 삭제됩니다.",
                "en": f"This cannot be undone. {affected} job(s) will be removed.",
            },
        }
    try:
        claims = verify(state, body.token)
        if claims.get("a") != action or claims.get("q") != queue or claims.get("u") != p.name:
            raise PermissionDeniedException("confirmation token was issued for another action, queue or user")
    except PermissionDeniedException as exc:
        await audit_refused(request, p, request.route_handler.opt["action"], str(exc.detail))
        raise
    if body.confirm != word:
        raise ValidationException(f"type {word} to confirm")
    return None


# The file comes as the type it was attached with (one of artifacts.ALLOWED_TYPES).
ARTIFACT_RESPONSE = ResponseSpec(
    data_container=bytes,
    media_type="*/*",
    description="the file, sandboxed by its Content-Security-Policy",
    generate_examples=False,
)


class MonitorController(Controller):
    """The Worker Monitor API.

    Every route needs a role. Reads that need the database answer 503 with
    ``Retry-After`` while it is unavailable, and so do the control actions that
    need it (clean); the others act on NATS alone and keep working.
    """

    path = "/admin/worker-monitor"
    tags = ["worker-monitor"]  # noqa: RUF012 (Litestar reads it as an instance attribute)
    security = SECURITY

    @get("/overview", guards=[viewer], summary="KPIs and current incidents", responses=errors(401, 503))
    async def overview(self, state: State) -> dict[str, Any]:
        return await queries.overview(state.store, state.sampler.snapshot, state.settings, state.catalog)

    @get("/queues", guards=[viewer], summary="Queues with status and counts", responses=errors(401, 503))
    async def queues(self, state: State) -> list[dict[str, Any]]:
        return await queries.queues(state.store, state.sampler.snapshot, state.settings, state.catalog)

    @get(
        "/queues/{name:str}",
        guards=[viewer],
        summary="One queue: trend, top errors, incidents",
        responses=errors(401, 404, 503),
    )
    async def queue(
        self,
        name: QueueName,
        state: State,
        window: Annotated[
            Literal["1h", "24h", "7d"],
            QueryParameter(description="1h: `trend` from the samples; 24h, 7d: `history`, one point per hour"),
        ] = "1h",
    ) -> dict[str, Any]:
        return await queries.queue_detail(
            state.store, state.sampler.snapshot, state.settings, state.catalog, name, window
        )

    @post(
        "/queues/{name:str}/pause",
        guards=[operator],
        status_code=200,
        summary="Pause (optionally until)",
        responses=errors(401, 403, 404, 503),
        opt={"action": "QUEUE_PAUSE"},
    )
    async def pause(
        self, name: QueueName, data: JSONBody[PauseIn], request: Request[Any, Any, Any], state: State
    ) -> dict[str, Any]:
        p = principal(request)
        res = await control(state).pause(name, actor=p.name, role=p.role_name, until=data.until, reason=data.reason)
        await state.sampler.sample_once(persist=False)
        return res

    @post(
        "/queues/{name:str}/resume",
        guards=[operator],
        status_code=200,
        summary="Resume",
        responses=errors(401, 403, 404, 503),
        opt={"action": "QUEUE_RESUME"},
    )
    async def resume(
        self, name: QueueName, data: JSONBody[ReasonIn], request: Request[Any, Any, Any], state: State
    ) -> dict[str, Any]:
        p = principal(request)
        res = await control(state).resume(name, actor=p.name, role=p.role_name, reason=data.reason)
        await state.sampler.sample_once(persist=False)
        return res

    @post(
        "/queues/{name:str}/retry-failed",
        guards=[operator],
        status_code=200,
        summary="Move the queue's dead-lettered jobs back to waiting",
        responses=errors(401, 403, 404, 503),
        opt={"action": "QUEUE_RETRY_FAILED"},
    )
    async def retry_failed(
        self, name: QueueName, data: JSONBody[ReasonIn], request: Request[Any, Any, Any], state: State
    ) -> dict[str, Any]:
        p = principal(request)
        return await control(state).retry_failed(name, actor=p.name, role=p.role_name, reason=data.reason)

    @delete(
        "/queues/{name:str}/drain",
        guards=[admin],
        status_code=200,
        summary="Remove waiting jobs (two steps: token, then token + DRAIN)",
        responses=errors(401, 403, 404, 503),
        opt={"action": "QUEUE_DRAIN"},
    )
    async def drain(
        self, name: QueueName, data: JSONBody[DangerIn], request: Request[Any, Any, Any], state: State
    ) -> dict[str, Any]:
        spec = state.catalog.get(name)
        info = await queue_info(control(state).js, spec)
        affected = info.waiting + (info.scheduled if data.include_delayed else 0)
        first = await _danger(request, state, "drain", "DRAIN", name, data, affected)
        if first is not None:
            return first
        p = principal(request)
        res = await control(state).drain(
            name, actor=p.name, role=p.role_name, reason=data.reason, include_delayed=data.include_delayed
        )
        await state.sampler.sample_once(persist=False)
        return res

    @post(
        "/queues/{name:str}/clean",
        guards=[admin],
        status_code=200,
        summary="Delete failed (dead-lettered) or completed job records older than an age (two steps)",
        responses=errors(401, 403, 404, 503),
        opt={"action": "QUEUE_CLEAN"},
    )
    async def clean(
        self, name: QueueName, data: JSONBody[CleanIn], request: Request[Any, Any, Any], state: State
    ) -> dict[str, Any]:
        spec = state.catalog.get(name)
        p = principal(request)
        # Both kinds delete job records too: with the database down, answer 503 before touching anything.
        await state.store.ping()
        if data.state == "failed":
            affected = (await queue_info(control(state).js, spec)).dead_lettered
        else:
            affected = await state.store.count_finished(name, "completed", data.older_than_s)
        first = await _danger(request, state, f"clean-{data.state}", "CLEAN", name, data, affected)
        if first is not None:
            return first
        if data.state == "failed":
            res = await control(state).clean(
                name, actor=p.name, role=p.role_name, reason=data.reason, older_than_s=data.older_than_s
            )
            res["records_removed"] = await state.store.delete_finished(name, "failed", data.older_than_s)
            return res

        async def remove_completed() -> dict[str, Any]:
            return {"removed": await state.store.delete_finished(name, "completed", data.older_than_s)}

        # Completed jobs live only in the monitor's database; the action is audited like every other one.
        return await control(state).audited(
            AuditAction.QUEUE_CLEAN,
            EntityType.QUEUE,
            name,
            remove_completed,
            actor=p.name,
            role=p.role_name,
            reason=data.reason,
            params={"state": "completed", "older_than_s": data.older_than_s},
        )

    @get(
        "/jobs",
        guards=[viewer],
        summary="Jobs, newest first, with filters and a cursor",
        responses=errors(401, 404, 503),
    )
    async def jobs(
        self,
        request: Request[Any, Any, Any],
        state: State,
        queue: OptionalQueueName = None,
        status: FromQuery[JobStatus | None] = None,
        name: Text200 = None,
        user_id: Text200 = None,
        since: Timestamp = None,
        until: Timestamp = None,
        q: Text200 = None,
        level: Annotated[
            int | None, QueryParameter(gt=-1, le=9, description="priority level (0: most urgent)")
        ] = None,  # gt=-1: Litestar leaves a minimum of 0 out of the document
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        if queue and queue not in state.catalog:
            raise UnknownQueue(queue)
        if cursor:
            try:
                decode_cursor(cursor)
            except ValueError as exc:
                raise ValidationException("invalid cursor") from exc
        f = JobFilter(
            queue=queue,
            status=status,
            name=name,
            user_id=user_id,
            since=time_param(since),
            until=time_param(until),
            q=q or None,
            level=level,
        )
        return await queries.list_jobs(state.store, f, cursor, limit, payloads=payloads(request))

    @get(
        "/jobs/{job_id:str}",
        guards=[viewer],
        summary="One job: data, result, errors, attempts, summary",
        responses=errors(401, 404, 503),
    )
    async def job(self, job_id: JobId, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        d = await queries.job_detail(state.store, job_id, payloads=payloads(request))
        if d is None:
            # not started yet (or expired from the store): ask JetStream
            try:
                st = await control(state).client.status(job_id)
            except JobNotFound as exc:
                raise NotFoundException(f"job {job_id!r} not found") from exc
            live = st.to_dict()
            d = {
                "job_id": st.id,
                "queue": st.queue,
                "name": st.name,
                "status": st.state.value,
                "attempts_made": st.attempt,
                "max_attempts": st.attempts,
                "error": st.error,
                "attempts": [],
                "user_id": st.user_id,
                "progress": st.progress,
                "created_at": iso_ms(st.enqueued_at),
                "enqueued_at": iso_ms(st.enqueued_at),
                "run_at": iso_ms(st.run_at),
            }
            if payloads(request):
                d["data"] = live.get("data")
                d["result"] = live.get("result")
        d["summary"] = summarize(d, state.catalog)
        return d

    @get(
        "/jobs/{job_id:str}/artifacts/{name:str}",
        guards=[viewer],
        summary="Download a file the job attached",
        responses={200: ARTIFACT_RESPONSE, **errors(401, 403, 404, 503)},
    )
    async def artifact(
        self, job_id: JobId, name: ArtifactName, request: Request[Any, Any, Any], state: State
    ) -> Response[bytes]:
        if not payloads(request):
            raise PermissionDeniedException("your role may not see job payloads or files")
        found = await artifacts.get(control(state).js, job_id, name)
        if found is None:
            raise NotFoundException(f"job {job_id!r} has no file {name!r}")
        data, content_type = found
        headers = {
            # Snapshots are untrusted pages: no scripts, no requests, no same-origin access.
            "Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'inline; filename="{name}"',
            "Cache-Control": "private, max-age=300",
        }
        return Response(data, media_type=content_type, headers=headers)

    @post(
        "/jobs/{job_id:str}/retry",
        guards=[operator],
        status_code=200,
        summary="Retry a dead-lettered job",
        responses=errors(401, 403, 404, 409, 503),
        opt={"action": "JOB_RETRY"},
    )
    async def retry_job(
        self, job_id: JobId, data: JSONBody[ReasonIn], request: Request[Any, Any, Any], state: State
    ) -> dict[str, Any]:
        p = principal(request)
        res = await control(state).retry_job(job_id, actor=p.name, role=p.role_name, reason=data.reason)
        await quietly(state.store.mark_requeued(job_id, now_ms()))
        return res

    @post(
        "/jobs/{job_id:str}/cancel",
        guards=[operator],
        status_code=200,
        summary="Cancel a job",
        responses=errors(401, 403, 404, 409, 503),
        opt={"action": "JOB_CANCEL"},
    )
    async def cancel_job(
        self, job_id: JobId, data: JSONBody[ReasonIn], request: Request[Any, Any, Any], state: State
    ) -> dict[str, Any]:
        p = principal(request)
        res = await control(state).cancel_job(job_id, actor=p.name, role=p.role_name, reason=data.reason)
        if res["state"] == "cancelled":  # it had not started: no worker will say so
            await quietly(
                state.store.mark_cancelled(job_id, error=data.reason or f"cancelled by {p.name}", ts_ms=now_ms())
            )
        return res

    @post(
        "/jobs/{job_id:str}/promote",
        guards=[operator],
        status_code=200,
        summary="Run a delayed job (or a retry waiting for its backoff) now",
        responses=errors(401, 403, 404, 409, 503),
        opt={"action": "JOB_PROMOTE"},
    )
    async def promote_job(
        self, job_id: JobId, data: JSONBody[ReasonIn], request: Request[Any, Any, Any], state: State
    ) -> dict[str, Any]:
        p = principal(request)
        queue = await known_queue(state, job_id)
        res = await control(state).promote_job(job_id, actor=p.name, role=p.role_name, queue=queue, reason=data.reason)
        await quietly(state.store.mark_waiting(job_id))
        return res

    @post(
        "/jobs/{job_id:str}/delete",
        guards=[admin],
        status_code=200,
        summary="Delete a job that is not running: its message (delayed, waiting or dead-lettered) and its record",
        description="A running job is a 409: cancel it first. A job that ended keeps no message: its record goes.",
        responses=errors(401, 403, 404, 409, 503),
        opt={"action": "JOB_DELETE"},
    )
    async def delete_job(
        self, job_id: JobId, data: JSONBody[ReasonIn], request: Request[Any, Any, Any], state: State
    ) -> dict[str, Any]:
        p = principal(request)
        queue = await known_queue(state, job_id)
        res = await control(state).delete_job(
            job_id, actor=p.name, role=p.role_name, queue=queue, missing_ok=queue is not None, reason=data.reason
        )
        res["records_removed"] = await quietly(state.store.forget([job_id]))
        return res

    @get("/workers", guards=[viewer], summary="Workers and their last heartbeat", responses=errors(401, 503))
    async def workers(self, state: State) -> list[dict[str, Any]]:
        return await queries.list_workers(state.store)

    @get("/audit", guards=[viewer], summary="Audit log, newest first", responses=errors(401, 503))
    async def audit(
        self,
        state: State,
        actor: Text200 = None,
        action: Text40 = None,
        entity_id: Text200 = None,
        since: Timestamp = None,
        until: Timestamp = None,
        queue: OptionalQueueName = None,
        ok: Annotated[bool | None, QueryParameter(description="false: refused and failed actions only")] = None,
        before_id: Annotated[int | None, QueryParameter(ge=1, le=2**63 - 1)] = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        return await queries.list_audit(
            state.store,
            actor=actor,
            action=action,
            entity_id=entity_id,
            since=time_param(since),
            until=time_param(until),
            queue=queue,
            ok=ok,
            before_id=before_id,
            limit=limit,
        )

    @get(
        "/stream",
        guards=[viewer],
        media_type="text/event-stream",
        summary="Server-sent events: `update` (overview and queues) every interval; `unavailable` while the "
        "database is down",
        responses=errors(401, 503),
    )
    async def stream(
        self, state: State, interval_s: Annotated[float, QueryParameter(ge=0.5, le=60.0)] = 2.0
    ) -> ServerSentEvent:
        async def update() -> dict[str, Any]:
            snap = state.sampler.snapshot
            ov = await queries.overview(state.store, snap, state.settings, state.catalog)
            qs = await queries.queues(state.store, snap, state.settings, state.catalog)
            data = {"overview": ov, "queues": qs, "ts": datetime.now(UTC).isoformat()}
            return {"event": "update", "data": json.dumps(data, default=str)}

        # The first event is read before the answer starts: a database outage at connect time is a 503.
        first = await update()

        async def gen() -> AsyncIterator[dict[str, Any]]:
            event = first
            while True:
                yield event
                await asyncio.sleep(interval_s)
                try:
                    event = await update()
                except Exception as exc:
                    if not is_unavailable(exc):
                        raise
                    # Mid-stream the status line is sent: say so in the stream, and keep trying.
                    body = {"detail": DB_UNAVAILABLE, "retry_after_s": RETRY_AFTER_S}
                    event = {"event": "unavailable", "data": json.dumps(body)}

        return ServerSentEvent(gen())
