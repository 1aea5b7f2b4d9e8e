"""The producer HTTP API (Litestar): enqueue, status, cancel, schedules, domain endpoints."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import HttpMethod, Litestar, Request, Response, Router, delete, get, post, put, route
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, OpenAPI, OpenAPIType, Operation, Schema, SecurityScheme
from litestar.openapi.spec import Parameter as OpenAPIParameter
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, Parameter
from litestar.plugins.pydantic import PydanticInitPlugin
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from jetqueue import __version__, names, telemetry
from jetqueue.catalog import Catalog, load_catalog
from jetqueue.client import JobClient, JobRequest
from jetqueue.connection import connect_and_check
from jetqueue.errors import (
    ConflictError,
    InvalidJob,
    JetqueueError,
    JobNotFound,
    NatsUnavailable,
    PayloadTooLarge,
    ScheduleNotFound,
    ServerTooOld,
    UnknownQueue,
)
from jetqueue.job import EnqueueResult, JobOptions, JobState, now_ms
from jetqueue_producer.auth import AuthConfigError, Authenticator, AuthRefused, Scope, Unauthenticated, require
from jetqueue_producer.openapi import PydanticContractPlugin
from jetqueue_producer.schemas import (
    TOKEN_PATTERN,
    BidEvaluationIn,
    BulkIn,
    BulkOut,
    EIUpdateIn,
    ErrorOut,
    JobIn,
    JobOut,
    ScheduleIn,
)
from jetqueue_producer.scoring import score_candidates, summarize
from jetqueue_producer.settings import ProducerSettings

log = logging.getLogger("jetqueue.producer")

IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", required=False, max_length=256)]
RequestId = Annotated[str | None, HeaderParameter(name="X-Request-Id", required=False, max_length=256)]
# POST /jobs/{queue} and GET, DELETE /jobs/{job_id} are one path, so OpenAPI needs one name for the segment.
QueueOrJobId = Annotated[str, Parameter(description="the queue to enqueue to")]
# Checked in the handlers (see _token): Litestar's own pattern check would let a trailing newline through.
JobId = Annotated[
    str, Parameter(description="the job's id", schema_extra={"pattern": TOKEN_PATTERN, "max_length": 128})
]
ScheduleName = Annotated[
    str, Parameter(description="the recurring job's name", schema_extra={"pattern": TOKEN_PATTERN, "max_length": 128})
]

_TOKEN = re.compile(TOKEN_PATTERN)
JOB_ID_RULE = "job_id must be 1-128 characters of letters, digits and _-:=@+ (no dots or spaces)"
SCHEDULE_NAME_RULE = "schedule name must be 1-128 letters, digits or _-:=@+"


def _token(value: str, rule: str) -> str:
    """``value`` if it is one NATS subject token, else a 400 saying ``rule``."""
    if not _TOKEN.fullmatch(value):
        raise InvalidJob(rule)
    return value


BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
ERRORS = {
    400: "invalid body or parameter: `detail` says why, `extra` lists each field",
    401: "no API token, or an unknown one (`WWW-Authenticate: Bearer`)",
    403: "the token lacks the scope this route needs",
    404: "unknown queue, job or recurring job",
    409: "the job has already finished",
    413: "the request body, or a job in it, is larger than allowed; `limit_bytes` is the limit",
    503: "NATS is unreachable or not answering; nothing was accepted or changed (`Retry-After`)",
}


def _errors(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the refusals a route can give; every one has the ``ErrorOut`` body."""
    return {code: ResponseSpec(ErrorOut, generate_examples=False, description=ERRORS[code]) for code in codes}


# Values of the ``reason`` label of jetqueue_producer_rejected_total: every refused request has one.
REJECT_REASONS = (
    "invalid",  # 400: a malformed body, field or parameter
    "not_found",  # 404: unknown queue, job, recurring job or path
    "method_not_allowed",  # 405
    "conflict",  # 409: the job has already finished
    "too_large",  # 413
    "unavailable",  # 503: NATS unreachable
    "unauthenticated",  # 401
    "forbidden",  # 403
)
_REASON_BY_STATUS = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    503: "unavailable",
}
# The job_name of a job whose name is not one of its queue's job types in the catalog: clients
# choose names, and a name they make up must not make a series.
OTHER_JOB_NAME = "other"


class Metrics:
    """The producer's series. Every label value comes from a bounded set (the catalog's queues and
    job types, :data:`REJECT_REASONS`), and every series exists from the start at 0."""

    def __init__(self, catalog: Catalog) -> None:
        self.registry = CollectorRegistry()
        self.enqueued = Counter(
            "jetqueue_jobs_enqueued_total",
            "Jobs accepted by the producer's HTTP API (SDK enqueues do not pass through it)",
            ["queue", "job_name"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "jetqueue_jobs_duplicate_total", "Enqueues answered with an existing job", ["queue"], registry=self.registry
        )
        self.rejected = Counter(
            "jetqueue_producer_rejected_total", "Requests refused, by reason", ["reason"], registry=self.registry
        )
        self._job_names = {q: catalog.job_names(q) for q in catalog.names}
        for queue, job_names in self._job_names.items():
            self.duplicates.labels(queue)
            for name in sorted(job_names | {OTHER_JOB_NAME}):
                self.enqueued.labels(queue, name)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)

    def accepted(self, r: EnqueueResult, name: str) -> None:
        """Count one answered enqueue of a job called ``name``."""
        if r.duplicate:
            self.duplicates.labels(r.queue).inc()
        else:
            known = self._job_names.get(r.queue, frozenset())
            self.enqueued.labels(r.queue, name if name in known else OTHER_JOB_NAME).inc()

    def refused(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def refused_with(self, status: int) -> None:
        """Count a refusal by its HTTP status (a 4xx without a reason of its own is ``invalid``)."""
        if status in _REASON_BY_STATUS:
            self.refused(_REASON_BY_STATUS[status])
        elif 400 <= status < 500:
            self.refused("invalid")


def _client(state: State) -> JobClient:
    client: JobClient | None = state.get("client")
    if client is None:
        raise NatsUnavailable("not connected to NATS yet")
    return client


def _job_id_from_key(key: str) -> str:
    """An Idempotency-Key usable as a job id: itself if it is a valid token, else its hash."""
    if names.is_valid_token(key):
        return key
    return "idem-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _request(queue: str, job: JobIn, key: str | None) -> JobRequest:
    job_id = job.job_id
    if key:
        from_key = _job_id_from_key(key)
        if job_id and job_id != from_key:
            raise InvalidJob("Idempotency-Key and job_id differ; give one of them")
        job_id = from_key
    return JobRequest(
        queue=queue,
        name=job.name,
        data=job.data,
        job_id=job_id,
        priority=job.priority,
        delay_ms=job.delay_ms,
        run_at=job.run_at,
        user_id=job.user_id,
        options=JobOptions(
            attempts=job.attempts, backoff=job.backoff.to_backoff() if job.backoff else None, timeout_ms=job.timeout_ms
        ),
    )


def _out(r: EnqueueResult) -> JobOut:
    run_at = datetime.fromtimestamp(r.run_at / 1000, UTC) if r.run_at else None
    return JobOut(job_id=r.job_id, queue=r.queue, state=r.state.value, duplicate=r.duplicate, run_at=run_at)


def _count(state: State, name: str, results: list[EnqueueResult]) -> None:
    m: Metrics = state.metrics
    for r in results:
        m.accepted(r, name)


@post(
    "/jobs/{queue_or_job_id:str}",
    status_code=202,
    summary="Enqueue a job",
    tags=["jobs"],
    guards=[require(Scope.ENQUEUE)],
    security=BEARER,
    responses=_errors(400, 401, 403, 404, 413, 503),
)
async def enqueue(
    queue_or_job_id: QueueOrJobId, data: JSONBody[JobIn], state: State, idempotency_key: IdempotencyKey = None
) -> JobOut:
    """Enqueue one job. The same ``job_id`` / ``Idempotency-Key`` within the duplicate window gives one job."""
    queue = queue_or_job_id
    req = _request(queue, data, idempotency_key)
    if telemetry.enabled():
        with telemetry.tracer().start_as_current_span("POST /jobs/{queue}", attributes={"jetqueue.queue": queue}):
            result = await _client(state).enqueue_request(req)
    else:  # no span machinery per request when nothing collects spans
        result = await _client(state).enqueue_request(req)
    _count(state, data.name, [result])
    return _out(result)


@post(
    "/jobs/{queue:str}/bulk",
    status_code=202,
    summary="Enqueue many jobs",
    tags=["jobs"],
    guards=[require(Scope.ENQUEUE)],
    security=BEARER,
    responses=_errors(400, 401, 403, 404, 413, 503),
)
async def enqueue_bulk(queue: FromPath[str], data: JSONBody[BulkIn], state: State) -> BulkOut:
    """Enqueue many jobs in one request (pipelined publishes). A bad item rejects the whole request."""
    settings: ProducerSettings = state.settings
    if len(data.jobs) > settings.max_bulk:
        raise InvalidJob(f"at most {settings.max_bulk} jobs per bulk request (got {len(data.jobs)})")
    reqs = [_request(queue, j, None) for j in data.jobs]
    results = await _client(state).enqueue_many(reqs)
    m: Metrics = state.metrics
    for j, r in zip(data.jobs, results, strict=True):
        m.accepted(r, j.name)
    return BulkOut(count=len(results), duplicates=sum(r.duplicate for r in results), jobs=[_out(r) for r in results])


@get(
    "/jobs/{queue_or_job_id:str}",
    summary="Job status",
    tags=["jobs"],
    guards=[require(Scope.READ)],
    security=BEARER,
    responses=_errors(400, 401, 403, 404, 503),
)
async def job_status(queue_or_job_id: JobId, state: State, queue: FromQuery[str | None] = None) -> dict[str, Any]:
    """State of a job (scheduled, waiting, active, completed, failed, cancelled) with progress and result."""
    st: JobState = await _client(state).status(_token(queue_or_job_id, JOB_ID_RULE), queue)
    body: dict[str, Any] = st.to_dict()
    return body


@delete(
    "/jobs/{queue_or_job_id:str}",
    status_code=200,
    summary="Cancel a job",
    tags=["jobs"],
    guards=[require(Scope.CANCEL)],
    security=BEARER,
    responses=_errors(400, 401, 403, 404, 409, 503),
)
async def cancel_job(queue_or_job_id: JobId, state: State, queue: FromQuery[str | None] = None) -> dict[str, Any]:
    """Cancel a scheduled or waiting job; a running job is asked to stop (cooperative)."""
    job_id = _token(queue_or_job_id, JOB_ID_RULE)
    st = await _client(state).cancel(job_id, queue, reason="cancelled through the producer API")
    body: dict[str, Any] = st.to_dict()
    body["cancel"] = "requested" if st.state.value == "active" else "done"
    return body


@put(
    "/schedules/{queue:str}/{name:str}",
    status_code=200,
    summary="Create or replace a recurring job",
    tags=["schedules"],
    guards=[require(Scope.ADMIN)],
    security=BEARER,
    responses=_errors(400, 401, 403, 404, 413, 503),
)
async def put_schedule(
    queue: FromPath[str], name: ScheduleName, data: JSONBody[ScheduleIn], state: State
) -> dict[str, Any]:
    s = await _client(state).schedule(
        queue,
        _token(name, SCHEDULE_NAME_RULE),
        data.cron,
        data=data.data,
        time_zone=data.time_zone,
        job_name=data.job_name,
        priority=data.priority,
    )
    body: dict[str, Any] = s.to_dict()
    return body


@get(
    "/schedules",
    summary="List recurring jobs",
    tags=["schedules"],
    guards=[require(Scope.READ)],
    security=BEARER,
    responses=_errors(400, 401, 403, 404, 503),
)
async def list_schedules(state: State, queue: FromQuery[str | None] = None) -> list[dict[str, Any]]:
    return [s.to_dict() for s in await _client(state).list_schedules(queue)]


@delete(
    "/schedules/{queue:str}/{name:str}",
    status_code=200,
    summary="Remove a recurring job",
    tags=["schedules"],
    guards=[require(Scope.ADMIN)],
    security=BEARER,
    responses=_errors(400, 401, 403, 404, 503),
)
async def delete_schedule(queue: FromPath[str], name: ScheduleName, state: State) -> dict[str, Any]:
    await _client(state).unschedule(queue, _token(name, SCHEDULE_NAME_RULE))
    return {"queue": queue, "name": name, "deleted": True}


@post(
    "/fleet/ei-update",
    status_code=202,
    summary="Queue a fleet EI update (seed §3.1)",
    tags=["domain"],
    guards=[require(Scope.ENQUEUE)],
    security=BEARER,
    responses=_errors(400, 401, 403, 413, 503),
)
async def ei_update(
    data: JSONBody[EIUpdateIn], state: State, request_id: RequestId = None, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    if not 0 <= data.new_ei <= 200:
        raise InvalidJob("EI value out of range: new_ei must be between 0 and 200")
    basis = idempotency_key or request_id or f"{data.fleet_id}:{data.new_ei}"
    job_id = f"ei-{data.fleet_id[:60]}-{hashlib.sha256(basis.encode()).hexdigest()[:16]}"
    result = await _client(state).enqueue(
        "ei-update", "update-ei", {"fleet_id": data.fleet_id, "new_ei": data.new_ei}, job_id=job_id, priority=1
    )
    _count(state, "update-ei", [result])
    return {
        "status": "queued",
        "job_id": result.job_id,
        "duplicate": result.duplicate,
        "request_id": request_id,
        "message": f"EI update queued. Check status via GET /jobs/{result.job_id}",
    }


@post(
    "/order/bid-evaluation",
    status_code=200,
    summary="Score bids now, queue a ranking update (seed §3.2)",
    tags=["domain"],
    guards=[require(Scope.ENQUEUE)],
    security=BEARER,
    responses=_errors(400, 401, 403, 413, 503),
)
async def bid_evaluation(data: JSONBody[BidEvaluationIn], state: State) -> dict[str, Any]:
    scores = score_candidates(data.bid_candidates, data.evaluation_policy)
    ranking: dict[str, Any] | None = None
    if scores:
        # Evaluations of one order within the same 100 ms share a job id, so a
        # burst collapses into one ranking run (the seed's "delay to batch").
        job_id = f"rank-{data.order_id[:80]}-{now_ms() // 100}"
        r = await _client(state).enqueue(
            "proposal-ranking", "update-ranking", {"bid_id": data.order_id}, job_id=job_id, priority=2, delay_ms=100
        )
        _count(state, "update-ranking", [r])
        ranking = {"job_id": r.job_id, "state": r.state.value, "duplicate": r.duplicate}
    return {
        "order_id": data.order_id,
        "evaluated_results": scores,
        "summary": summarize(scores),
        "ranking_job": ranking,
    }


@route(
    ["/jobs/{queue_or_job_id:str}", "/schedules/{queue:str}/{name:str}"],
    http_method=HttpMethod.OPTIONS,
    include_in_schema=False,
)
async def allowed_methods(request: Request[Any, Any, Any]) -> Response[None]:
    """``Allow`` for a path served by several handlers (Litestar's own OPTIONS lists only the first one's)."""
    template = request.scope["path_template"]
    methods = {
        m for r in request.app.routes if isinstance(r, HTTPRoute) and r.path_format == template for m in r.methods
    }
    return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})


# /health and /metrics stay open: Kubernetes probes and Prometheus carry no token.
@get(
    "/health",
    summary="Liveness and NATS connection",
    tags=["ops"],
    responses={503: ResponseSpec(dict[str, str], generate_examples=False, description="NATS is not connected")},
)
async def health(state: State) -> Response[dict[str, Any]]:
    client: JobClient | None = state.get("client")
    ok = client is not None and client.nc.is_connected
    return Response(
        {"status": "ok" if ok else "degraded", "nats": "connected" if ok else "disconnected"},
        status_code=200 if ok else 503,
    )


@get("/metrics", summary="Prometheus metrics", tags=["ops"], include_in_schema=False)
async def metrics(state: State) -> Response[bytes]:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _error(status: int, message: str, **extra: Any) -> Response[dict[str, Any]]:
    return Response({"status_code": status, "detail": message, **extra}, status_code=status)


def _handle_jetqueue(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    metrics_: Metrics = request.app.state.metrics
    if isinstance(exc, (UnknownQueue, JobNotFound, ScheduleNotFound)):
        metrics_.refused("not_found")
        return _error(404, str(exc))
    if isinstance(exc, PayloadTooLarge):
        metrics_.refused("too_large")
        return _error(413, str(exc), limit_bytes=exc.limit)
    if isinstance(exc, InvalidJob):
        metrics_.refused("invalid")
        return _error(400, str(exc))
    if isinstance(exc, ConflictError):
        metrics_.refused("conflict")
        return _error(409, str(exc))
    if isinstance(exc, (NatsUnavailable, ServerTooOld)):
        metrics_.refused("unavailable")
        consequence = "the job was not accepted" if request.method == "POST" else "nothing was changed"
        if request.method == "GET":
            consequence = "the state could not be read"
        resp = _error(503, f"{exc}; {consequence}, retry later", retry_after_s=5)
        resp.headers["Retry-After"] = "5"
        return resp
    metrics_.refused("invalid")
    return _error(400, str(exc))


def _handle_auth(request: Request[Any, Any, Any], exc: AuthRefused) -> Response[dict[str, Any]]:
    request.app.state.metrics.refused(exc.reason)
    log.warning("refused %s %s: %s", request.method, request.url.path, exc)
    resp = _error(exc.status_code, str(exc))
    if isinstance(exc, Unauthenticated):
        # RFC 6750: a bad token says so; a missing one only names the scheme
        resp.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if exc.invalid_token else "Bearer"
    return resp


def _handle_too_large(request: Request[Any, Any, Any], exc: RequestEntityTooLarge) -> Response[dict[str, Any]]:
    request.app.state.metrics.refused("too_large")
    limit = request.route_handler.resolve_request_max_body_size()
    return _error(413, f"request body too large: this route takes at most {limit} bytes", limit_bytes=limit)


def _detail(exc: HTTPException) -> str:
    """The exception's detail; for a 400 with per-field reasons, the first few of them too."""
    if not isinstance(exc.extra, list) or not exc.extra:
        return exc.detail
    reasons = [f"{e.get('key') or 'body'}: {e.get('message')}" for e in exc.extra[:3] if isinstance(e, dict)]
    return f"{exc.detail}: {'; '.join(reasons)}" if reasons else exc.detail


def _handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, (HTTPException, ValidationException)):
        # Litestar's own refusals: a body that is not JSON or not a valid job (a missing name,
        # delay_ms with run_at), an unknown path, a method the path does not serve.
        request.app.state.metrics.refused_with(exc.status_code)
        return Response(
            {
                "status_code": exc.status_code,
                "detail": _detail(exc),
                **({"extra": exc.extra} if getattr(exc, "extra", None) else {}),
            },
            status_code=exc.status_code,
            headers=exc.headers,  # e.g. Allow on a 405
        )
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "internal error; the request was not completed")


def _authenticator(settings: ProducerSettings) -> Authenticator | None:
    """The token checker, or None when auth is disabled; refuses a configuration that is neither.

    Raises:
        AuthConfigError: no tokens and auth not disabled, both, or a malformed token entry.
    """
    tokens = settings.tokens.get_secret_value()
    if not settings.auth_disabled:
        return Authenticator(tokens)
    if tokens.strip():
        raise AuthConfigError("give JETQUEUE_PRODUCER_TOKENS or JETQUEUE_PRODUCER_AUTH_DISABLED=true, not both")
    return None


def create_app(settings: ProducerSettings, *, catalog: Catalog | None = None) -> Litestar:
    """Build the producer app; it connects to NATS and provisions streams at start-up.

    Raises:
        AuthConfigError: the API tokens are missing or malformed (see ``_authenticator``).
    """
    catalog = catalog or load_catalog(settings.common.catalog)
    auth = _authenticator(settings)

    async def on_startup(app: Litestar) -> None:
        if auth is None:
            log.warning(
                "authentication is DISABLED (JETQUEUE_PRODUCER_AUTH_DISABLED=true): anyone who reaches this port "
                "can enqueue, cancel and change recurring jobs; for local development only"
            )
        telemetry.setup_tracing("jetqueue-producer")
        nc, _js = await connect_and_check(settings.common, name="jetqueue-producer", catalog=catalog)
        client = JobClient(nc, catalog)
        app.state.nc = nc
        app.state.client = client
        if settings.register_schedules:
            for s in catalog.schedules:
                await client.schedule(s.queue, s.name, s.cron, data=s.data, time_zone=s.time_zone, job_name=s.job_name)
        log.info("producer ready: %d queues, %d schedules", len(catalog.queues), len(catalog.schedules))

    async def on_shutdown(app: Litestar) -> None:
        nc = app.state.get("nc")
        if nc is None:
            return
        try:
            await nc.drain()
        except Exception as exc:  # reconnecting or closed: nothing in flight to flush
            log.warning("NATS drain at shutdown failed (%s); closing", exc)
            try:
                await nc.close()
            except Exception as close_exc:  # the socket is already gone
                log.warning("NATS close at shutdown failed: %s", close_exc)

    app = Litestar(
        route_handlers=[
            allowed_methods,  # first, so Litestar makes no OPTIONS handler of its own on these paths
            enqueue,
            # a bulk body holds many jobs; every other body holds one
            Router("/", route_handlers=[enqueue_bulk], request_max_body_size=settings.max_bulk_body_bytes),
            job_status,
            cancel_job,
            put_schedule,
            list_schedules,
            delete_schedule,
            ei_update,
            bid_evaluation,
            health,
            metrics,
        ],
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        state=State({"settings": settings, "catalog": catalog, "metrics": Metrics(catalog), "auth": auth}),
        exception_handlers={
            JetqueueError: _handle_jetqueue,
            AuthRefused: _handle_auth,
            RequestEntityTooLarge: _handle_too_large,
            Exception: _handle_unexpected,
        },
        request_max_body_size=settings.max_job_bytes,
        # strict: a JSON true is not the number 1 (pydantic's lax mode would take it)
        plugins=[PydanticContractPlugin(), PydanticInitPlugin(validate_strict=True)],
        openapi_config=OpenAPIConfig(
            title="jetqueue producer",
            version=__version__,
            path="/schema",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="an API token from JETQUEUE_PRODUCER_TOKENS (name:scopes:secret)",
                    )
                }
            ),
        ),
        debug=False,
    )
    _name_the_queues(app.openapi_schema, catalog.names)
    return app


def _name_the_queues(document: OpenAPI, queues: list[str]) -> None:
    """State the catalog's queues as the values of every queue path segment.

    The handlers are shared by every app, so their parameters cannot carry one
    app's catalog; the document (built once, then served as is) can. An
    unknown queue is still answered with a 404.
    """
    queue_schema = Schema(type=OpenAPIType.STRING, enum=sorted(queues), description="a queue of the catalog")
    for item in (document.paths or {}).values():
        for method in ("post", "put", "delete"):
            operation: Operation | None = getattr(item, method)
            for param in (operation.parameters or []) if operation else []:
                if not isinstance(param, OpenAPIParameter) or param.param_in != "path":
                    continue
                if param.name == "queue" or (method == "post" and param.name == "queue_or_job_id"):
                    param.schema = queue_schema
