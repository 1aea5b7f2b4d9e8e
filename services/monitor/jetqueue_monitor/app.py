"""The monitor service: API, ingest, sampling and housekeeping in one Litestar app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.openapi import OpenAPIConfig
from litestar.params import JSONBody
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from jetqueue import __version__, telemetry
from jetqueue.catalog import Catalog, load_catalog
from jetqueue.connection import connect_and_check
from jetqueue.control import Controller as Control
from jetqueue.errors import ConflictError, InvalidJob, JetqueueError, JobNotFound, NatsUnavailable, UnknownQueue
from jetqueue_monitor import queries
from jetqueue_monitor.api.routes import MonitorController
from jetqueue_monitor.auth import Authenticator, principal_of, session_of
from jetqueue_monitor.db.engine import make_engine, migrate
from jetqueue_monitor.ingest import Ingestor
from jetqueue_monitor.live import MonitorMetrics, Sampler
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_monitor.store import Store
from jetqueue_monitor.ui import ui_routes
from jetqueue_monitor.worker_health import lost_worker_counts

log = logging.getLogger("jetqueue.monitor")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=500)


@post("/auth/login", status_code=200, tags=["auth"], summary="Start a UI session")
async def login(data: JSONBody[LoginIn], request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    p = state.auth.by_password(data.username, data.password)
    if p is None:
        raise NotAuthorizedException("wrong username or password")
    csrf = secrets.token_urlsafe(24)
    request.set_session({"user": p.name, "role": p.role_name, "csrf": csrf})
    return {"user": p.name, "role": p.role_name, "csrf_token": csrf}


@post("/auth/logout", status_code=200, tags=["auth"], summary="End the UI session")
async def logout(request: Request[Any, Any, Any]) -> dict[str, Any]:
    request.clear_session()
    return {"ok": True}


@get("/auth/me", tags=["auth"], summary="Who is calling")
async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    p = principal_of(request)
    return {"user": p.name, "role": p.role_name, "via": p.via, "csrf_token": session_of(request).get("csrf")}


@get("/health", tags=["ops"], summary="Liveness: NATS and database")
async def health(state: State) -> Response[dict[str, Any]]:
    nc = state.get("nc")
    nats_ok = nc is not None and nc.is_connected
    try:
        async with state.store.engine.connect() as c:
            await c.exec_driver_sql("SELECT 1")
        db_ok = True
    except Exception:
        db_ok = False
    ok = nats_ok and db_ok
    return Response(
        {"status": "ok" if ok else "degraded", "nats": nats_ok, "database": db_ok}, status_code=200 if ok else 503
    )


@get("/metrics", tags=["ops"], include_in_schema=False)
async def metrics(state: State) -> Response[bytes]:
    m: MonitorMetrics = state.metrics
    workers = [(q, st, n) for q, per in (await queries.worker_counts(state.store)).items() for st, n in per.items()]
    lost = await lost_worker_counts(state.store, window_s=state.settings.lost_worker_window_s)
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


def _on_jetqueue_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, (UnknownQueue, JobNotFound)):
        return _error(404, str(exc))
    if isinstance(exc, ConflictError):
        return _error(409, str(exc))
    if isinstance(exc, NatsUnavailable):
        resp = _error(503, f"{exc}; retry later", retry_after_s=5)
        resp.headers["Retry-After"] = "5"
        return resp
    if isinstance(exc, InvalidJob):
        return _error(400, str(exc))
    return _error(400, str(exc))


def _on_other_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, (HTTPException, ValidationException)):
        body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
        if getattr(exc, "extra", None):
            body["extra"] = exc.extra
        return Response(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, "internal error; the request was not completed")


def create_app(settings: MonitorSettings, *, catalog: Catalog | None = None) -> Litestar:
    """Build the monitor app; NATS, database and background loops start with it."""
    catalog = catalog or load_catalog(settings.common.catalog)
    auth = Authenticator(settings.tokens, settings.users)
    engine = make_engine(settings.database_url)
    store = Store(engine, catalog)
    metrics_ = MonitorMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        telemetry.setup_tracing("jetqueue-monitor")
        await migrate(engine)
        await store.load_finished_totals()  # before ingest starts counting on top
        nc, js = await connect_and_check(settings.common, name="jetqueue-monitor", catalog=catalog)
        app.state.nc = nc
        app.state.control = Control(nc, catalog, source="monitor")
        ingestor = Ingestor(nc, store) if settings.ingest else None
        sampler = Sampler(js, catalog, store, interval_s=settings.sample_interval_s)
        app.state.sampler = sampler
        app.state.ingestor = ingestor
        await sampler.sample_once()
        if ingestor is not None:
            await ingestor.start()
        sampler.start()
        stop_house = asyncio.Event()
        house = asyncio.create_task(_housekeeping(store, settings, stop_house))
        try:
            yield
        finally:
            stop_house.set()
            house.cancel()
            await asyncio.gather(house, return_exceptions=True)
            await sampler.stop()
            if ingestor is not None:
                await ingestor.stop()
            try:
                await nc.drain()
            except Exception:
                await nc.close()
            await engine.dispose()

    session = CookieBackendConfig(
        secret=_key(settings.session_secret),
        key="jq_session",
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        max_age=12 * 3600,
    )
    return Litestar(
        route_handlers=[MonitorController, login, logout, me, health, metrics, *ui_routes()],
        lifespan=[lifespan],
        middleware=[session.middleware],
        state=State({"settings": settings, "catalog": catalog, "auth": auth, "store": store, "metrics": metrics_}),
        exception_handlers={JetqueueError: _on_jetqueue_error, Exception: _on_other_error},
        openapi_config=OpenAPIConfig(title="jetqueue monitor", version=__version__, path="/schema"),
        debug=False,
    )


def _key(secret: str) -> bytes:
    import hashlib

    return hashlib.sha256(secret.encode()).digest()  # AES-256 key for the session cookie


async def _housekeeping(store: Store, settings: MonitorSettings, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await store.refresh_worker_statuses(
                offline_after_s=settings.offline_after_s,
                degraded_ratio=settings.degraded_failure_ratio,
                window=settings.degraded_window,
            )
            await store.expire()
        except Exception as exc:
            log.warning("housekeeping failed: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), timeout=min(5.0, settings.offline_after_s / 3))
        except TimeoutError:
            pass
