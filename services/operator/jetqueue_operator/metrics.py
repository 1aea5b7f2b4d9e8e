"""Prometheus metrics of the operator (names in docs/metrics.md), served on ``/metrics``.

Every replica serves them; only the one holding the leader Lease reconciles, so
dashboards and alerts take the ``max`` over replicas.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

KIND_JOBQUEUE = "JobQueue"
KIND_QUEUEACTION = "QueueAction"
RESULT_SUCCESS = "success"
RESULT_ERROR = "error"


class OperatorMetrics:
    """Reconcile outcomes, scaling decisions and QueueAction results of one operator process."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.reconciles = Counter(
            "jetqueue_operator_reconciles_total",
            "Reconciles by resource kind and result (success, error)",
            ["kind", "result"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "jetqueue_operator_reconcile_errors_total",
            "Reconciles that did not bring a resource in line, by kind and reason (the condition reason)",
            ["kind", "reason"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "jetqueue_operator_reconcile_duration_seconds",
            "Time one reconcile took",
            ["kind"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        jq = ["jobqueue", "queue"]
        self.last_success = Gauge(
            "jetqueue_operator_last_reconcile_success_timestamp_seconds",
            "Unix time of the last reconcile that left the JobQueue Ready and not Degraded (0: none yet)",
            jq,
            registry=r,
        )
        self.replicas = Gauge(
            "jetqueue_operator_replicas", "Replicas the operator set on the worker Deployment", jq, registry=r
        )
        self.desired_replicas = Gauge(
            "jetqueue_operator_desired_replicas",
            "Replicas the queue's lag asks for (before the scale-down window)",
            jq,
            registry=r,
        )
        self.ready_replicas = Gauge(
            "jetqueue_operator_ready_replicas", "Ready replicas of the worker Deployment", jq, registry=r
        )
        self.actions = Counter(
            "jetqueue_operator_actions_total",
            "QueueActions run to the end, by action and result (Succeeded, Failed)",
            ["action", "result"],
            registry=r,
        )
        self.nats_connected = Gauge(
            "jetqueue_operator_nats_connected", "1 while the operator's NATS connection is up", registry=r
        )
        self._queues: dict[str, str] = {}  # JobQueue (namespace/name) -> queue key, for removal

    def watch_nats(self, connected: Callable[[], bool]) -> None:
        """Read the NATS connection state at every scrape."""
        self.nats_connected.set_function(lambda: 1.0 if connected() else 0.0)

    def jobqueue_reconciled(
        self,
        jobqueue: str,
        queue: str | None,
        *,
        seconds: float,
        error_reason: str | None,
        replicas: int | None = None,
        desired: int | None = None,
        ready: int | None = None,
    ) -> None:
        """Count one JobQueue reconcile; ``error_reason`` None means it succeeded."""
        self.reconcile_duration.labels(KIND_JOBQUEUE).observe(seconds)
        if error_reason is not None:
            self.reconciles.labels(KIND_JOBQUEUE, RESULT_ERROR).inc()
            self.reconcile_errors.labels(KIND_JOBQUEUE, error_reason).inc()
        else:
            self.reconciles.labels(KIND_JOBQUEUE, RESULT_SUCCESS).inc()
        if queue is None:
            return  # an invalid spec names no queue: nothing per queue to report
        seen = jobqueue in self._queues
        self._queues[jobqueue] = queue
        if error_reason is None:
            self.last_success.labels(jobqueue, queue).set(time.time())
        elif not seen:
            # 0 = no good reconcile since this process started: an alert can tell "never" from "not lately".
            self.last_success.labels(jobqueue, queue).set(0)
        for gauge, value in ((self.replicas, replicas), (self.desired_replicas, desired), (self.ready_replicas, ready)):
            if value is not None:
                gauge.labels(jobqueue, queue).set(value)

    def jobqueue_deleted(self, jobqueue: str) -> None:
        """Drop the per-queue series of a deleted JobQueue."""
        queue = self._queues.pop(jobqueue, None)
        if queue is None:
            return
        for gauge in (self.last_success, self.replicas, self.desired_replicas, self.ready_replicas):
            try:
                gauge.remove(jobqueue, queue)
            except KeyError:
                pass  # never set (e.g. no reconcile got that far)

    def action_finished(self, action: str, result: str, *, seconds: float, error_reason: str | None) -> None:
        """Count a QueueAction that reached a final phase."""
        self.actions.labels(action, result).inc()
        self.reconcile_duration.labels(KIND_QUEUEACTION).observe(seconds)
        if error_reason is not None:
            self.reconciles.labels(KIND_QUEUEACTION, RESULT_ERROR).inc()
            self.reconcile_errors.labels(KIND_QUEUEACTION, error_reason).inc()
        else:
            self.reconciles.labels(KIND_QUEUEACTION, RESULT_SUCCESS).inc()


class MetricsServer:
    """``GET /metrics`` on its own port, in the operator's event loop (aiohttp, as kopf's probes)."""

    def __init__(self, metrics: OperatorMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def _serve(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._runner = runner
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
