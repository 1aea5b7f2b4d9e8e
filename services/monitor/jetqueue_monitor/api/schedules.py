"""Recurring jobs in the monitor API: list, create or change, delete, pause, resume, run now.

Each path has one method (a delete is ``POST …/delete``): Litestar answers OPTIONS on a path with
two handlers with only the methods of one of them, and the document promises every one.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter
from pydantic import BaseModel, ConfigDict, Field

from jetqueue.errors import ScheduleNotFound
from jetqueue.names import QUEUE_RE, TOKEN_RE
from jetqueue_monitor.api.common import Reason, ReasonIn, control, payloads, principal
from jetqueue_monitor.api.spec import NO_NUL, SECURITY, OptionalQueueName, errors
from jetqueue_monitor.auth import admin, operator, viewer
from jetqueue_monitor.schedules import list_schedules

QueueKey = Annotated[str, PathParameter(pattern=QUEUE_RE.pattern, description="a queue of the catalog")]
ScheduleName = Annotated[str, PathParameter(pattern=TOKEN_RE.pattern, description="the schedule's name")]
CRON = Field(
    min_length=1,
    max_length=120,
    pattern=r"^[^\x00]*$",
    description="5 fields (minute first), 6 (second first), a macro (@daily, @hourly, ...) or @every <duration>",
)
TIME_ZONE = Field(default="UTC", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$", description="IANA zone")


def _opt(action: str) -> dict[str, str]:
    """The audit action of a route (its 403s are audited too), on the schedule the path names."""
    return {"action": action, "entity": "SCHEDULE"}


class ScheduleEditIn(BaseModel):
    """What a schedule runs and when (the path's queue and name are its identity)."""

    model_config = ConfigDict(extra="forbid")
    cron: str = CRON
    time_zone: str = TIME_ZONE
    job_name: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=NO_NUL, description="default: the schedule's name"
    )
    data: dict[str, Any] | None = Field(default=None, description="each job's data")
    priority: int | None = Field(default=None, ge=1, le=1000)
    reason: Reason = None


class ScheduleController(Controller):
    """Recurring jobs: viewers read them, operators pause, resume and run them now, admins create, change
    and delete them. Every change is audited (``SCHEDULE_*``), and so is every refusal."""

    path = "/admin/worker-monitor/schedules"
    tags = ["schedules"]  # noqa: RUF012 (Litestar reads it as an instance attribute)
    security = SECURITY

    @get(
        "/",
        guards=[viewer],
        summary="Every recurring job: expression, zone, next run, the outcome of its last runs, paused or not",
        responses=errors(401, 404, 503),
    )
    async def list_(self, request: Request[Any, Any, Any], state: State, queue: OptionalQueueName = None) -> list[Any]:
        if queue:
            state.catalog.get(queue)
        return await list_schedules(control(state).client, state.store, queue=queue, payloads=payloads(request))

    @put(
        "/{queue:str}/{name:str}",
        guards=[admin],
        summary="Create or change a recurring job (a paused one stays paused)",
        description="Audited as SCHEDULE_CREATE when the queue had no schedule by that name, else SCHEDULE_UPDATE.",
        responses=errors(401, 403, 404, 503),
        opt=_opt("SCHEDULE_UPDATE"),
    )
    async def save(
        self,
        queue: QueueKey,
        name: ScheduleName,
        data: JSONBody[ScheduleEditIn],
        request: Request[Any, Any, Any],
        state: State,
    ) -> dict[str, Any]:
        state.catalog.get(queue)
        try:
            await control(state).client.get_schedule(queue, name)
            create = False
        except ScheduleNotFound:
            create = True
        p = principal(request)
        return await control(state).save_schedule(
            queue,
            name,
            data.cron,
            actor=p.name,
            role=p.role_name,
            data=data.data,
            time_zone=data.time_zone,
            job_name=data.job_name,
            priority=data.priority,
            create=create,
            reason=data.reason,
        )

    @post(
        "/{queue:str}/{name:str}/delete",
        guards=[admin],
        status_code=200,
        summary="Delete a recurring job (paused or not)",
        responses=errors(401, 403, 404, 503),
        opt=_opt("SCHEDULE_DELETE"),
    )
    async def remove(
        self,
        queue: QueueKey,
        name: ScheduleName,
        data: JSONBody[ReasonIn],
        request: Request[Any, Any, Any],
        state: State,
    ) -> dict[str, Any]:
        p = principal(request)
        return await control(state).delete_schedule(queue, name, actor=p.name, role=p.role_name, reason=data.reason)

    @post(
        "/{queue:str}/{name:str}/pause",
        guards=[operator],
        status_code=200,
        summary="Stop a recurring job from firing, keeping its definition",
        responses=errors(401, 403, 404, 503),
        opt=_opt("SCHEDULE_PAUSE"),
    )
    async def pause(
        self,
        queue: QueueKey,
        name: ScheduleName,
        data: JSONBody[ReasonIn],
        request: Request[Any, Any, Any],
        state: State,
    ) -> dict[str, Any]:
        p = principal(request)
        return await control(state).pause_schedule(queue, name, actor=p.name, role=p.role_name, reason=data.reason)

    @post(
        "/{queue:str}/{name:str}/resume",
        guards=[operator],
        status_code=200,
        summary="Let a paused recurring job fire again",
        responses=errors(401, 403, 404, 503),
        opt=_opt("SCHEDULE_RESUME"),
    )
    async def resume(
        self,
        queue: QueueKey,
        name: ScheduleName,
        data: JSONBody[ReasonIn],
        request: Request[Any, Any, Any],
        state: State,
    ) -> dict[str, Any]:
        p = principal(request)
        return await control(state).resume_schedule(queue, name, actor=p.name, role=p.role_name, reason=data.reason)

    @post(
        "/{queue:str}/{name:str}/trigger",
        guards=[operator],
        status_code=200,
        summary="Run a recurring job once now: a job with its job name and data (id cron-<name>-t<ms>)",
        responses=errors(401, 403, 404, 503),
        opt=_opt("SCHEDULE_TRIGGER"),
    )
    async def trigger(
        self,
        queue: QueueKey,
        name: ScheduleName,
        data: JSONBody[ReasonIn],
        request: Request[Any, Any, Any],
        state: State,
    ) -> dict[str, Any]:
        p = principal(request)
        return await control(state).trigger_schedule(queue, name, actor=p.name, role=p.role_name, reason=data.reason)
