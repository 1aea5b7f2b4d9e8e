"""The monitor service: API, ingest, sampling and housekeeping in one Litestar app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import nats.errors
import nats.js.errors
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.plugins.pydantic import PydanticPlugin
from nats.aio.client import Client as NatsClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from jetqueue import __version__, telemetry
from jetqueue.catalog import Catalog, load_catalog
from jetqueue.connection import connect_and_check
from jetqueue.control import Controller as Control
from jetqueue.errors import (
    ConflictError,
    InvalidJob,
    JetqueueError,
    JobNotFound,
    NatsUnavailable,
    ScheduleNotFound,
    UnknownQueue,
)
from jetqueue_monitor import audit, housekeeping, queries
from jetqueue_monitor.api.actions import ActionsController, BulkFilterIn, BulkIn, IncidentIn, SnoozeIn
from jetqueue_monitor.api.common import ReasonIn
from jetqueue_monitor.api.routes import CleanIn, DangerIn, MonitorController, PauseIn
from jetqueue_monitor.api.schedules import ScheduleController, ScheduleEditIn
from jetqueue_monitor.api.spec import (
    COMPONENTS,
    DB_UNAVAILABLE,
    NO_NUL,
    RETRY_AFTER_S,
    SECURITY,
    complete_bodies,
    errors,
    utf8,
)
from jetqueue_monitor.auth import Authenticator, LoginLimiter, principal_of, session_of
from jetqueue_monitor.bulk import BulkRunner
from jetqueue_monitor.db.engine import is_unavailable, make_engine, migrate, migrate_url
from jetqueue_monitor.ingest import Ingestor
from jetqueue_monitor.metrics import MonitorMetrics
from jetqueue_monitor.sampler import Sampler
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_monitor.store import Store
from jetqueue_monitor.tracker import JobTracker
from jetqueue_monitor.ui import ui_routes

log = logging.getLogger("jetqueue.monitor")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Annotated[str, AfterValidator(utf8)] = Field(min_length=1, max_length=200, pattern=NO_NUL)
    password: str = Field(min_length=1, max_length=500)


@post(
    "/auth/login",
    status_code=200,
    tags=["auth"],
    summary="Start a UI session",
    description="Failed logins are limited per username and per client address (per replica): over the "
    "limit, 429 with Retry-After until the window frees. Every refusal is audited.",
    responses=errors(401, 429),
)
async def login(data: JSONBody[LoginIn], request: Request[Any, Any, Any], state: State) -> Response[dict[str, Any]]:
    limiter: LoginLimiter = state.login_limiter
    address = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(data.username, address)
    if wait:
        why = f"too many failed logins; retry in {wait} s"
        await _audit_login(state, data.username, address, why)
        return Response(
            {"status_code": 429, "detail": why, "retry_after_s": wait},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    p = state.auth.by_password(data.username, data.password)
    if p is None:
        limiter.failed(data.username, address)
        await _audit_login(state, data.username, address, "wrong username or password")
        raise NotAuthorizedException("wrong username or password")
    limiter.succeeded(data.username)
    csrf = secrets.token_urlsafe(24)
    request.set_session({"user": p.name, "role": p.role_name, "csrf": csrf})
    return Response({"user": p.name, "role": p.role_name, "csrf_token": csrf})


async def _audit_login(state: State, username: str, address: str, why: str) -> None:
    await audit.refusal(
        state,
        actor=username,
        role=None,
        action="LOGIN",
        entity_type="USER",
        entity_id=username,
        error=why,
        params={"client": address},
    )


@post("/auth/logout", status_code=200, tags=["auth"], summary="End the UI session")
async def logout(request: Request[Any, Any, Any]) -> dict[str, Any]:
    request.clear_session()
    return {"ok": True}


@get("/auth/me", tags=["auth"], summary="Who is calling", security=SECURITY, responses=errors(401))
async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    p = principal_of(request)
    return {"user": p.name, "role": p.role_name, "via": p.via, "csrf_token": session_of(request).get("csrf")}


class HealthOut(BaseModel):
    status: str = Field(description="ok, or degraded when NATS or the database is unavailable")
    nats: bool
    database: bool


@get(
    "/health",
    tags=["ops"],
    summary="Liveness: NATS and database",
    responses={503: ResponseSpec(data_container=HealthOut, description="degraded: NATS or the database is down")},
)
async def health(state: State) -> Response[HealthOut]:
    nc = state.get("nc")
    nats_ok = nc is not None and nc.is_connected
    try:
        # bounded: a database that stopped answering must not hang the probe
        await asyncio.wait_for(state.store.ping(), timeout=state.settings.health_timeout_s)
        db_ok = True
    except Exception:
        db_ok = False
    ok = nats_ok and db_ok
    return Response(
        HealthOut(status="ok" if ok else "degraded", nats=nats_ok, database=db_ok), status_code=200 if ok else 503
    )


@get("/metrics", tags=["ops"], include_in_schema=False)
async def metrics(state: State) -> Response[bytes]:
    m: MonitorMetrics = state.metrics
    workers: list[tuple[str, str, int]] | None
    try:
        counts = await queries.worker_counts(state.store)
        workers = [(q, st, n) for q, per in counts.items() for st, n in per.items()]
        lost: dict[str, int] | None = await queries.lost_worker_counts(
            state.store, window_s=state.settings.lost_worker_window_s
        )
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # The queue gauges come from NATS: keep serving them; the worker gauges keep their last values.
        workers = lost = None
    nc = state.get("nc")
    m.refresh(
        state.sampler.snapshot,
        workers,
        state.get("ingestor"),
        lost_workers=lost,
        nats_connected=nc is not None and nc.is_connected,
    )
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


def _error(status: int, detail: str, **extra: Any) -> Response[dict[str, Any]]:
    return Response({"status_code": status, "detail": detail, **extra}, status_code=status)


def _unavailable(detail: str) -> Response[dict[str, Any]]:
    return Response(
        {"status_code": 503, "detail": detail, "retry_after_s": RETRY_AFTER_S},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _nats_unavailable(exc: Exception) -> bool:
    """NATS did not answer, or JetStream said it cannot (503); any other answer of its API is our bug."""
    if isinstance(exc, nats.js.errors.APIError):
        return exc.code == 503
    return isinstance(exc, nats.errors.Error)


def _on_jetqueue_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, (UnknownQueue, JobNotFound, ScheduleNotFound)):
        return _error(404, str(exc))
    if isinstance(exc, ConflictError):
        return _error(409, str(exc))
    if isinstance(exc, NatsUnavailable):
        return _unavailable(f"{exc}; retry later")
    if isinstance(exc, InvalidJob):
        return _error(400, str(exc))
    return _error(400, str(exc))


def _on_other_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, (HTTPException, ValidationException)):
        body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
        if getattr(exc, "extra", None):
            body["extra"] = exc.extra
        return Response(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))
    # NATS first: its timeout is an OSError too, which is_unavailable counts as the database's.
    if _nats_unavailable(exc):
        log.warning("NATS unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _unavailable("NATS is unavailable; retry later")
    if is_unavailable(exc):
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
        return _unavailable(DB_UNAVAILABLE)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, "internal error; the request was not completed")


# The JSON bodies the API reads, completed in the document (complete_bodies)
BODIES: list[type[BaseModel]] = [
    LoginIn,
    PauseIn,
    ReasonIn,
    DangerIn,
    CleanIn,
    ScheduleEditIn,
    BulkIn,
    BulkFilterIn,
    IncidentIn,
    SnoozeIn,
]


def create_app(settings: MonitorSettings, *, catalog: Catalog | None = None) -> Litestar:
    """Build the monitor app; NATS, database and background loops start with it."""
    catalog = catalog or load_catalog(settings.common.catalog)
    auth = Authenticator(settings.tokens, settings.users)
    limiter = LoginLimiter(
        per_user=settings.login_max_failures,
        per_address=settings.login_max_failures_per_address,
        window_s=settings.login_window_s,
    )
    engine = make_engine(
        settings.database_url,
        connect_timeout_s=settings.db_connect_timeout_s,
        statement_timeout_s=settings.db_statement_timeout_s,
        pool_timeout_s=settings.db_pool_timeout_s,
    )
    store = Store(engine, catalog)
    metrics_ = MonitorMetrics()

    session = CookieBackendConfig(
        secret=_key(settings.session_secret),
        key="jq_session",
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        max_age=12 * 3600,
    )
    app = Litestar(
        route_handlers=[
            MonitorController,
            ScheduleController,
            ActionsController,
            login,
            logout,
            me,
            health,
            metrics,
            *ui_routes(),
        ],
        lifespan=[_lifespan(settings, catalog, engine, store)],
        middleware=[session.middleware],
        state=State(
            {
                "settings": settings,
                "catalog": catalog,
                "auth": auth,
                "login_limiter": limiter,
                "store": store,
                "metrics": metrics_,
                "bulk": BulkRunner(store, rate_per_s=settings.bulk_rate_per_s),
            }
        ),
        exception_handlers={JetqueueError: _on_jetqueue_error, Exception: _on_other_error},
        openapi_config=OpenAPIConfig(
            title="jetqueue monitor", version=__version__, path="/schema", components=COMPONENTS
        ),
        # strict: JSON bodies are taken as typed (0 is not false, false is not 0), as the schema says
        plugins=[PydanticPlugin(validate_strict=True)],
        debug=False,
    )
    complete_bodies(app.openapi_schema, BODIES)
    return app


def _lifespan(
    settings: MonitorSettings, catalog: Catalog, engine: AsyncEngine, store: Store
) -> Callable[[Litestar], contextlib.AbstractAsyncContextManager[None]]:
    """What runs for the app's life: migrations, NATS, ingest, the tracker, the sampler, housekeeping."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        telemetry.setup_tracing("jetqueue-monitor")
        # A migration may run longer than a request may: on PostgreSQL it gets an engine without the
        # statement timeout. (SQLite has none, and its in-memory database lives in one engine only.)
        await (migrate(engine) if engine.dialect.name == "sqlite" else migrate_url(settings.database_url))
        await store.load_finished_totals()  # before ingest starts counting on top
        nc, js = await connect_and_check(settings.common, name="jetqueue-monitor", catalog=catalog)
        app.state.nc = nc
        app.state.control = Control(nc, catalog, source="monitor")
        ingestor = Ingestor(nc, store) if settings.ingest else None
        sampler = Sampler(js, catalog, store, interval_s=settings.sample_interval_s)
        tracker = _tracker(nc, catalog, store, sampler, settings)
        app.state.sampler = sampler
        app.state.ingestor = ingestor
        app.state.tracker = tracker
        await sampler.sample_once()
        if ingestor is not None:
            await ingestor.start()
        if tracker is not None:
            await tracker.start()
        sampler.start()
        stop_house = asyncio.Event()
        house = asyncio.create_task(housekeeping.run(store, settings, stop_house))
        try:
            yield
        finally:
            stop_house.set()
            house.cancel()
            await asyncio.gather(house, return_exceptions=True)
            await sampler.stop()
            await app.state.bulk.stop()
            if tracker is not None:
                await tracker.stop()
            if ingestor is not None:
                await ingestor.stop()
            try:
                await nc.drain()
            except Exception:
                await nc.close()
            await engine.dispose()

    return lifespan


def _tracker(
    nc: NatsClient, catalog: Catalog, store: Store, sampler: Sampler, settings: MonitorSettings
) -> JobTracker | None:
    """The job tracker, where this replica ingests: it writes job rows, and one writer only may."""
    if not (settings.ingest and settings.track_jobs):
        return None
    return JobTracker(
        nc,
        catalog,
        store,
        lambda: sampler.snapshot,
        check_interval_s=settings.track_check_interval_s,
        reconcile_every_s=settings.reconcile_every_s,
    )


def _key(secret: str) -> bytes:
    import hashlib

    return hashlib.sha256(secret.encode()).digest()  # AES-256 key for the session cookie
