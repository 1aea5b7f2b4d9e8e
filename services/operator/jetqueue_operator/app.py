"""Build and run the operator: :func:`create_runtime` + :func:`operate` (also used by the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import kopf
from aiohttp import web

from jetqueue_operator.handlers import Runtime, build_registry
from jetqueue_operator.kube import KubeApi
from jetqueue_operator.leader import LeaderElector, LeaderLost
from jetqueue_operator.metrics import MetricsServer, OperatorMetrics
from jetqueue_operator.natslink import NatsLink
from jetqueue_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

# What kopf accepts as a stop or ready flag (and so does operate()).
Flag = asyncio.Event | asyncio.Future[Any] | threading.Event


def create_runtime(settings: OperatorSettings, kube: KubeApi) -> Runtime:
    return Runtime(settings=settings, kube=kube, nats=NatsLink(settings))


def _raise(flag: Flag | None) -> None:
    if flag is None:
        return
    if isinstance(flag, asyncio.Future):
        if not flag.done():
            flag.set_result(None)
    else:
        flag.set()


def _is_set(flag: Flag | None) -> bool:
    if flag is None:
        return False
    return flag.done() if isinstance(flag, asyncio.Future) else flag.is_set()


async def _wait(flag: Flag | None) -> None:
    """Until ``flag`` is set (forever for None); a threading.Event is polled (set from another thread)."""
    while not _is_set(flag):
        if isinstance(flag, asyncio.Event):
            await flag.wait()
        else:
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _standby_probe(settings: OperatorSettings, host: str, elector: LeaderElector) -> AsyncIterator[None]:
    """``GET /healthz`` while standing by: a standby is healthy and Ready (a rollout waits for Ready pods)."""
    if not settings.liveness_port:
        yield
        return

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"leader": False, "holder": elector.holder})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, settings.liveness_port).start()
    try:
        yield
    finally:
        await runner.cleanup()  # frees the port for kopf's own probe


async def _kopf(
    settings: OperatorSettings,
    registry: kopf.OperatorRegistry,
    host: str,
    stop_flag: Flag | None,
    ready_flag: Flag | None,
    **kwargs: Any,
) -> None:
    namespaces = settings.namespace_list()
    # standalone: kopf's peering is off; the Lease (if any) already decided who acts.
    await kopf.operator(
        registry=registry,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        liveness_endpoint=f"http://{host}:{settings.liveness_port}/healthz" if settings.liveness_port else None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        **kwargs,
    )


async def operate(
    settings: OperatorSettings,
    registry: kopf.OperatorRegistry,
    *,
    kube: KubeApi | None = None,
    metrics: OperatorMetrics | None = None,
    fence: Callable[[], Awaitable[None]] | None = None,
    liveness_host: str = "0.0.0.0",
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    **kwargs: Any,
) -> None:
    """Run kopf until ``stop_flag`` is set (or a signal arrives); with leader election, only while leading.

    ``ready_flag`` is set once this replica is up: at once when standing by, or when
    kopf is ready without leader election. ``metrics`` (served on ``metrics_port``)
    are served by standby replicas too, so every pod answers its scrape. ``fence``
    cuts this replica off from what it acts on (the NATS connection) the moment the
    Lease is lost, before kopf has wound down.

    Raises:
        LeaderLost: the Lease could not be renewed in time; kopf was stopped (exit
            and restart to stand by again).
    """
    server = (
        MetricsServer(metrics, settings.metrics_host, settings.metrics_port)
        if metrics and settings.metrics_port
        else None
    )
    if server is not None:
        await server.start()
    try:
        if not settings.leader_election:
            await _kopf(settings, registry, liveness_host, stop_flag, ready_flag, **kwargs)
            return
        if kube is None:
            raise ValueError("leader election needs a KubeApi")
        await _lead(settings, registry, kube, fence, liveness_host, stop_flag, ready_flag, **kwargs)
    finally:
        if server is not None:
            await server.stop()


async def _lead(
    settings: OperatorSettings,
    registry: kopf.OperatorRegistry,
    kube: KubeApi,
    fence: Callable[[], Awaitable[None]] | None,
    host: str,
    stop_flag: Flag | None,
    ready_flag: Flag | None,
    **kwargs: Any,
) -> None:
    elector = LeaderElector(kube, settings)
    async with _standby_probe(settings, host, elector):
        _raise(ready_flag)
        log.info("standing by for Lease %s/%s as %s", elector.namespace, elector.name, elector.identity)
        if not await elector.acquire(lambda: _is_set(stop_flag)):
            return
    lost = asyncio.Event()
    kopf_stop = asyncio.Event()
    holder = asyncio.create_task(elector.hold(lost))
    stopping = asyncio.create_task(_wait(stop_flag))
    losing = asyncio.create_task(lost.wait())
    operator = asyncio.create_task(_kopf(settings, registry, host, kopf_stop, None, **kwargs))
    fenced_at = 0.0
    try:
        await asyncio.wait({operator, stopping, losing}, return_when=asyncio.FIRST_COMPLETED)
        if lost.is_set():
            # Stop acting now, not once kopf has wound down (its API calls retry for a while):
            # a standby may take over one lease duration after the last renewal.
            fenced_at = time.time()
            if fence is not None:
                await fence()
        kopf_stop.set()
        if lost.is_set():
            done, _ = await asyncio.wait({operator}, timeout=settings.retry_period_s)
            if not done:
                operator.cancel()  # fenced already; do not wait for its retries
            await asyncio.gather(operator, return_exceptions=True)
        else:
            await operator  # a clean stop: kopf's own errors propagate
    finally:
        for t in (holder, stopping, losing, operator):
            t.cancel()
        await asyncio.gather(holder, stopping, losing, operator, return_exceptions=True)
        if not lost.is_set():
            await elector.release()
    if lost.is_set():
        raise LeaderLost(f"{elector.identity} lost Lease {elector.namespace}/{elector.name}", fenced_at=fenced_at)


__all__ = ["LeaderLost", "build_registry", "create_runtime", "operate"]
