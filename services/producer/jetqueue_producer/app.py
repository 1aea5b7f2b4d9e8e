"""The producer HTTP API (Litestar): enqueue, status, cancel, schedules, domain endpoints."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Litestar, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
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
    ScheduleNotFound,
    ServerTooOld,
    UnknownQueue,
)
from jetqueue.job import EnqueueResult, JobOptions, JobState, now_ms
from jetqueue_producer.schemas import (
    BidEvaluationIn,
    BulkIn,
    BulkOut,
    EIUpdateIn,
    JobIn,
    JobOut,
    ScheduleIn,
)
from jetqueue_producer.scoring import score_candidates, summarize
from jetqueue_producer.settings import ProducerSettings

log = logging.getLogger("jetqueue.producer")

IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", required=False, max_length=256)]
RequestId = Annotated[str | None, HeaderParameter(name="X-Request-Id", required=False, max_length=256)]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.enqueued = Counter(
            "jetqueue_jobs_enqueued_total",
            "Jobs accepted by the producer",
            ["queue", "job_name"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "jetqueue_jobs_duplicate_total", "Enqueues answered with an existing job", ["queue"], registry=self.registry
        )
        self.rejected = Counter(
            "jetqueue_producer_rejected_total", "Requests refused, by reason", ["reason"], registry=self.registry
        )


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
        if r.duplicate:
            m.duplicates.labels(r.queue).inc()
        else:
            m.enqueued.labels(r.queue, name).inc()


@post("/jobs/{queue:str}", status_code=202, summary="Enqueue a job", tags=["jobs"])
async def enqueue(
    queue: FromPath[str], data: JSONBody[JobIn], state: State, idempotency_key: IdempotencyKey = None
) -> JobOut:
    """Enqueue one job. The same ``job_id`` / ``Idempotency-Key`` within the duplicate window gives one job."""
    req = _request(queue, data, idempotency_key)
    with telemetry.tracer().start_as_current_span("POST /jobs/{queue}", attributes={"jetqueue.queue": queue}):
        result = await _client(state).enqueue_request(req)
    _count(state, data.name, [result])
    return _out(result)


@post("/jobs/{queue:str}/bulk", status_code=202, summary="Enqueue many jobs", tags=["jobs"])
async def enqueue_bulk(queue: FromPath[str], data: JSONBody[BulkIn], state: State) -> BulkOut:
    """Enqueue many jobs in one request (pipelined publishes). A bad item rejects the whole request."""
    settings: ProducerSettings = state.settings
    if len(data.jobs) > settings.max_bulk:
        raise InvalidJob(f"at most {settings.max_bulk} jobs per bulk request (got {len(data.jobs)})")
    reqs = [_request(queue, j, None) for j in data.jobs]
    results = await _client(state).enqueue_many(reqs)
    m: Metrics = state.metrics
    for j, r in zip(data.jobs, results, strict=True):
        (m.duplicates.labels(r.queue) if r.duplicate else m.enqueued.labels(r.queue, j.name)).inc()
    return BulkOut(count=len(results), duplicates=sum(r.duplicate for r in results), jobs=[_out(r) for r in results])


@get("/jobs/{job_id:str}", summary="Job status", tags=["jobs"])
async def job_status(job_id: FromPath[str], state: State, queue: FromQuery[str | None] = None) -> dict[str, Any]:
    """State of a job (scheduled, waiting, active, completed, failed, cancelled) with progress and result."""
    st: JobState = await _client(state).status(job_id, queue)
    return st.to_dict()


@delete("/jobs/{job_id:str}", status_code=200, summary="Cancel a job", tags=["jobs"])
async def cancel_job(job_id: FromPath[str], state: State, queue: FromQuery[str | None] = None) -> dict[str, Any]:
    """Cancel a scheduled or waiting job; a running job is asked to stop (cooperative)."""
    st = await _client(state).cancel(job_id, queue, reason="cancelled through the producer API")
    body = st.to_dict()
    body["cancel"] = "requested" if st.state.value == "active" else "done"
    return body


@put(
    "/schedules/{queue:str}/{name:str}",
    status_code=200,
    summary="Create or replace a recurring job",
    tags=["schedules"],
)
async def put_schedule(
    queue: FromPath[str], name: FromPath[str], data: JSONBody[ScheduleIn], state: State
) -> dict[str, Any]:
    s = await _client(state).schedule(
        queue, name, data.cron, data=data.data, time_zone=data.time_zone, job_name=data.job_name, priority=data.priority
    )
    return s.to_dict()


@get("/schedules", summary="List recurring jobs", tags=["schedules"])
async def list_schedules(state: State, queue: FromQuery[str | None] = None) -> list[dict[str, Any]]:
    return [s.to_dict() for s in await _client(state).list_schedules(queue)]


@delete("/schedules/{queue:str}/{name:str}", status_code=200, summary="Remove a recurring job", tags=["schedules"])
async def delete_schedule(queue: FromPath[str], name: FromPath[str], state: State) -> dict[str, Any]:
    await _client(state).unschedule(queue, name)
    return {"queue": queue, "name": name, "deleted": True}


@post("/fleet/ei-update", status_code=202, summary="Queue a fleet EI update (seed §3.1)", tags=["domain"])
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


@get("/health", summary="Liveness and NATS connection", tags=["ops"])
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
        metrics_.rejected.labels("not_found").inc()
        return _error(404, str(exc))
    if isinstance(exc, InvalidJob):
        metrics_.rejected.labels("invalid").inc()
        return _error(400, str(exc))
    if isinstance(exc, ConflictError):
        return _error(409, str(exc))
    if isinstance(exc, (NatsUnavailable, ServerTooOld)):
        metrics_.rejected.labels("unavailable").inc()
        consequence = "the job was not accepted" if request.method == "POST" else "nothing was changed"
        if request.method == "GET":
            consequence = "the state could not be read"
        resp = _error(503, f"{exc}; {consequence}, retry later", retry_after_s=5)
        resp.headers["Retry-After"] = "5"
        return resp
    return _error(400, str(exc))


def _handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, (HTTPException, ValidationException)):
        return Response(
            {
                "status_code": exc.status_code,
                "detail": exc.detail,
                **({"extra": exc.extra} if getattr(exc, "extra", None) else {}),
            },
            status_code=exc.status_code,
        )
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "internal error; the request was not completed")


def create_app(settings: ProducerSettings, *, catalog: Catalog | None = None) -> Litestar:
    """Build the producer app; it connects to NATS and provisions streams at start-up."""
    catalog = catalog or load_catalog(settings.common.catalog)

    async def on_startup(app: Litestar) -> None:
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

    return Litestar(
        route_handlers=[
            enqueue,
            enqueue_bulk,
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
        state=State({"settings": settings, "catalog": catalog, "metrics": Metrics()}),
        exception_handlers={JetqueueError: _handle_jetqueue, Exception: _handle_unexpected},
        openapi_config=OpenAPIConfig(title="jetqueue producer", version=__version__, path="/schema"),
        debug=False,
    )
