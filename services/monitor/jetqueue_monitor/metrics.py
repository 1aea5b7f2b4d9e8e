"""The monitor's Prometheus metrics: queue gauges from the sampler's snapshot, refreshed at scrape time."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from jetqueue import names
from jetqueue_monitor.db.models import WorkerStatus
from jetqueue_monitor.sampler import Snapshot


class MonitorMetrics:
    """Gauges for Grafana, refreshed from the snapshot at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        q = ["queue"]
        r = self.registry
        self.waiting = Gauge("jetqueue_queue_waiting", "Jobs waiting to run", q, registry=r)
        self.active = Gauge("jetqueue_queue_active", "Jobs being run", q, registry=r)
        self.delayed = Gauge("jetqueue_queue_delayed", "Delayed jobs and retries waiting for backoff", q, registry=r)
        self.dlq = Gauge("jetqueue_queue_dead_letter", "Jobs in the dead-letter stream", q, registry=r)
        self.paused = Gauge("jetqueue_queue_paused", "1 when the queue is paused", q, registry=r)
        self.lag_messages = Gauge(
            "jetqueue_queue_lag_messages", "Undelivered jobs (consumer num_pending)", q, registry=r
        )
        self.lag_seconds = Gauge("jetqueue_queue_lag_seconds", "Age of the oldest undelivered job", q, registry=r)
        self.redelivered = Gauge("jetqueue_queue_redelivered", "Jobs redelivered and not yet settled", q, registry=r)
        self.workers = Gauge("jetqueue_workers", "Workers by status", ["queue", "status"], registry=r)
        self.workers_lost = Gauge(
            "jetqueue_workers_lost",
            "Workers whose heartbeats stopped without a goodbye, within the lost-worker window",
            q,
            registry=r,
        )
        self.ingest_lag = Gauge(
            "jetqueue_monitor_ingest_lag_seconds", "Age of the newest lifecycle record applied to the store", registry=r
        )
        self.ingest_pending = Gauge(
            "jetqueue_monitor_ingest_pending_messages", "Messages waiting for ingest, by source", ["source"], registry=r
        )
        self.ingest_db_errors = Gauge("jetqueue_monitor_ingest_db_errors", "Store errors seen by ingest", registry=r)
        # JetStream health, from the replies the sampler already reads for the counts above.
        self.nats_connected = Gauge(
            "jetqueue_monitor_nats_connected", "1 while the monitor's NATS connection is up", registry=r
        )
        self.last_sample = Gauge(
            "jetqueue_monitor_last_sample_timestamp_seconds",
            "Unix time of the last sample that read a queue from JetStream",
            registry=r,
        )
        self.stream_messages = Gauge("jetqueue_stream_messages", "Messages in a stream", ["stream"], registry=r)
        self.stream_bytes = Gauge("jetqueue_stream_bytes", "Bytes in a stream", ["stream"], registry=r)
        c = ["queue", "consumer"]
        self.consumer_pending = Gauge(
            "jetqueue_consumer_pending", "Messages not yet delivered by a consumer (num_pending)", c, registry=r
        )
        self.consumer_ack_pending = Gauge(
            "jetqueue_consumer_ack_pending", "Messages delivered and not yet acked (num_ack_pending)", c, registry=r
        )
        self.consumer_redelivered = Gauge(
            "jetqueue_consumer_redelivered", "Messages redelivered and not yet acked (num_redelivered)", c, registry=r
        )
        self.consumer_waiting_pulls = Gauge(
            "jetqueue_consumer_waiting_pulls", "Open pull requests: idle worker pulls (num_waiting)", c, registry=r
        )
        self._last_sample_at = 0.0

    def refresh(
        self,
        snap: Snapshot,
        workers: list[tuple[str, str, int]] | None,
        ingest: Any | None,
        *,
        lost_workers: dict[str, int] | None = None,
        nats_connected: bool | None = None,
    ) -> None:
        for name, ql in snap.queues.items():
            i = ql.info
            self.waiting.labels(name).set(i.waiting)
            self.active.labels(name).set(i.active)
            self.delayed.labels(name).set(i.scheduled)
            self.dlq.labels(name).set(i.dead_lettered)
            self.paused.labels(name).set(1 if i.paused else 0)
            self.lag_messages.labels(name).set(i.waiting)
            self.lag_seconds.labels(name).set(ql.oldest_waiting_s or 0)
            self.redelivered.labels(name).set(i.redelivered)
            self.stream_messages.labels(names.job_stream(name)).set(i.stream_messages)
            self.stream_bytes.labels(names.job_stream(name)).set(i.stream_bytes)
            self.stream_messages.labels(names.DLQ_STREAM).set(i.dlq_stream_messages)
            self.stream_bytes.labels(names.DLQ_STREAM).set(i.dlq_stream_bytes)
            for cc in i.consumers:
                self.consumer_pending.labels(name, cc.name).set(cc.pending)
                self.consumer_ack_pending.labels(name, cc.name).set(cc.ack_pending)
                self.consumer_redelivered.labels(name, cc.name).set(cc.redelivered)
                self.consumer_waiting_pulls.labels(name, cc.name).set(cc.waiting_pulls)
            self._last_sample_at = max(self._last_sample_at, ql.sampled_at)
        if self._last_sample_at:
            self.last_sample.set(self._last_sample_at)
        # Every sampled queue gets every status (0 when none): "no worker online" is a 0 to
        # alert and graph on, not a missing series. Without worker counts (the database is
        # down) the worker gauges keep their last values.
        if workers is not None:
            self.workers.clear()
            for name in snap.queues:
                for known in WorkerStatus:
                    self.workers.labels(name, known.value).set(0)
            for queue, status, n in workers:
                self.workers.labels(queue, status).set(n)
        if lost_workers is not None:
            for name in snap.queues:
                self.workers_lost.labels(name).set(lost_workers.get(name, 0))
        if nats_connected is not None:
            self.nats_connected.set(1 if nats_connected else 0)
        if ingest is not None:
            last = ingest.stats.last_event_ms
            self.ingest_lag.set(max(time.time() - last / 1000, 0) if last else 0)
            for source, n in ingest.stats.pending.items():
                self.ingest_pending.labels(source).set(n)
            self.ingest_db_errors.set(ingest.stats.db_errors)
