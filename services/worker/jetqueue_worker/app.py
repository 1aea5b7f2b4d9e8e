"""The worker process: a FastStream app around :class:`~jetqueue_worker.runtime.Worker`.

FastStream owns the process (signals, start-up/shut-down hooks, the NATS
connection) and the core-NATS subscription for cancel requests. Jobs (and
the max-deliveries advisories kept in a stream) are pulled by the runtime from the queue's
priority-level consumers, because FastStream 0.7 pulls one consumer per
subscriber and cannot take the most urgent level first.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from faststream.nats.security import NatsCredentials, NatsSecurity

from jetqueue import __version__, names, telemetry
from jetqueue.catalog import Catalog, load_catalog
from jetqueue.connection import check_server, connect_options, provision_queue, provision_shared, tls_context
from jetqueue.processors import ProcessorRegistry
from jetqueue.settings import CommonSettings
from jetqueue_worker.health import HealthServer
from jetqueue_worker.metrics import WorkerMetrics
from jetqueue_worker.processors import register_all
from jetqueue_worker.processors.services import Services
from jetqueue_worker.runtime import Worker
from jetqueue_worker.settings import WorkerSettings

log = logging.getLogger("jetqueue.worker")


def default_registry(services: Services | None = None) -> ProcessorRegistry:
    reg = ProcessorRegistry()
    register_all(reg, services or Services.simulated())
    return reg


def load_processors(spec: str, queue: str) -> ProcessorRegistry:
    """Import the user's processors named by ``package.module[:function]``.

    Raises:
        JetqueueError: the module cannot be imported, or registers nothing for ``queue``.
    """
    import importlib

    from jetqueue.errors import JetqueueError
    from jetqueue.processors import registry as global_registry

    module_name, _, func = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise JetqueueError(f"cannot import processor module {module_name!r}: {exc}") from exc
    if func:
        reg = ProcessorRegistry()
        fn = getattr(module, func, None)
        if not callable(fn):
            raise JetqueueError(f"{module_name} has no function {func!r}")
        fn(reg)
    else:
        reg = global_registry
    if queue not in reg.queues():
        raise JetqueueError(f"{spec} registers no processor for queue {queue!r}")
    return reg


def _security(common: CommonSettings) -> NatsSecurity | None:
    """TLS and a creds file, in the form FastStream's broker takes them."""
    ctx = tls_context(common)
    if common.nats_creds:
        return NatsCredentials(common.nats_creds, ssl_context=ctx)
    return NatsSecurity(ssl_context=ctx) if ctx is not None else None


def create_app(
    settings: WorkerSettings, *, catalog: Catalog | None = None, registry: ProcessorRegistry | None = None
) -> FastStream:
    """Build the worker app for ``settings.queue`` (nothing connects until it starts).

    ``app.jq["exit_code"]`` is set when the worker had to stop on its own
    (its NATS connection closed for good): ``__main__`` exits with it.
    """
    catalog = catalog or load_catalog(settings.common.catalog)
    spec = catalog.get(settings.queue)
    registry = registry or (
        load_processors(settings.processor, spec.name) if settings.processor else default_registry()
    )
    common = settings.common
    opts = connect_options(common, name=f"jetqueue-worker-{spec.name}")
    broker = NatsBroker(
        opts["servers"],
        name=opts["name"],
        connect_timeout=int(max(common.connect_timeout_s, 1)),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=opts["reconnect_time_wait"],
        ping_interval=opts["ping_interval"],
        max_outstanding_pings=opts["max_outstanding_pings"],
        security=_security(common),
    )
    app = FastStream(broker)
    holder: dict[str, Any] = {}
    metrics = WorkerMetrics()
    app_state: dict[str, Any] = {"exit_code": 0, "reason": ""}
    app.jq = app_state  # type: ignore[attr-defined]

    def fatal(reason: str) -> None:
        app_state["exit_code"] = 70  # EX_SOFTWARE: restarted by Kubernetes or the local supervisor
        app_state["reason"] = reason
        app.exit()

    @broker.subscriber(names.cancel_subject(spec.name))
    async def on_cancel(msg: NatsMessage) -> None:
        if (w := holder.get("worker")) is not None:
            await w.on_cancel(msg.body)

    @app.after_startup
    async def start_worker() -> None:
        telemetry.setup_tracing(f"jetqueue-worker-{spec.name}")
        nc = broker.connection
        js = nc.jetstream()
        await check_server(js)
        if common.provision:
            await provision_shared(js, replicas=common.replicas)
            await provision_queue(js, spec, replicas=common.replicas)
        worker = Worker(
            nc,
            catalog,
            spec.name,
            registry,
            worker_id=settings.worker_id,
            concurrency=settings.concurrency,
            prefetch=settings.prefetch,
            heartbeat_s=settings.heartbeat_s,
            idle_wait_s=settings.idle_wait_s,
            grace_s=settings.grace_s,
            metrics=metrics,
            version=__version__,
            on_fatal=fatal,
        )
        if settings.metrics_port:
            server = HealthServer(metrics.registry, worker.health, port=settings.metrics_port)
            await server.start()
            holder["health"] = server
        await worker.start(own_subscriptions=False)
        holder["worker"] = worker

    @app.on_shutdown
    async def stop_worker() -> None:
        if (w := holder.pop("worker", None)) is not None:
            await w.stop()
        if (server := holder.pop("health", None)) is not None:
            await server.stop()

    return app
