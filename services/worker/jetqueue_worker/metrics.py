"""Prometheus metrics of a worker process (names in docs/metrics.md)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

# Values of the ``reason`` label of jetqueue_job_errors_total.
ERROR_EXCEPTION = "exception"  # the processor raised (retried while attempts are left)
ERROR_TIMEOUT = "timeout"  # the processor ran past the queue's timeout
ERROR_PERMANENT = "permanent"  # PermanentError: dead-lettered at once
ERROR_NO_PROCESSOR = "no_processor"  # no processor registered for the job's name
ERROR_STALLED = "stalled"  # workers kept dying while holding it: dead-lettered
ERROR_MALFORMED = "malformed"  # an unreadable message: dead-lettered
ERROR_REASONS = (ERROR_EXCEPTION, ERROR_TIMEOUT, ERROR_PERMANENT, ERROR_NO_PROCESSOR, ERROR_STALLED, ERROR_MALFORMED)


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _Buckets:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class FastCounter:
    """A labelled counter without locks: the worker writes it from one event loop thread only.

    prometheus_client's own takes a lock per increment; five of them a job
    were a tenth of a no-op job's cost. Exposed in the same format (``_total``).
    """

    def __init__(self, name: str, doc: str, labels: Sequence[str], registry: CollectorRegistry) -> None:
        self.name, self.doc, self.label_names = name.removesuffix("_total"), doc, list(labels)
        self._children: dict[tuple[str, ...], _Count] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Count:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Count()
        return child

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.doc, labels=self.label_names)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family


class FastHistogram:
    """A labelled histogram without locks (see :class:`FastCounter`)."""

    def __init__(
        self, name: str, doc: str, labels: Sequence[str], registry: CollectorRegistry, buckets: Sequence[float]
    ) -> None:
        self.name, self.doc, self.label_names, self.bounds = name, doc, list(labels), tuple(buckets)
        self._children: dict[tuple[str, ...], _Buckets] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Buckets:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Buckets(self.bounds)
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.label_names)
        for values, h in list(self._children.items()):
            running, cumulative = 0, []
            for bound, n in zip([*self.bounds, float("inf")], h.counts, strict=True):
                running += n
                cumulative.append((_le(bound), float(running)))
            family.add_metric(list(values), cumulative, h.sum)
        yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["queue", "job_name"]
        # Per-job series: lock-free (FastCounter); the rest are rare and stay prometheus_client's.
        self.completed = FastCounter("jetqueue_jobs_completed_total", "Jobs that completed", labels, self.registry)
        self.failed = FastCounter(
            "jetqueue_jobs_failed_total", "Jobs dead-lettered after their last attempt", labels, self.registry
        )
        self.retried = FastCounter(
            "jetqueue_jobs_retried_total", "Failed attempts that were scheduled for retry", labels, self.registry
        )
        self.stalled = Counter(
            "jetqueue_jobs_stalled_total",
            "Redeliveries after a worker lost a job's lease",
            ["queue"],
            registry=self.registry,
        )
        self.cancelled = Counter(
            "jetqueue_jobs_cancelled_total", "Running jobs cancelled", ["queue"], registry=self.registry
        )
        self.malformed = Counter(
            "jetqueue_jobs_malformed_total", "Unreadable messages dead-lettered", ["queue"], registry=self.registry
        )
        self.duration = FastHistogram(
            "jetqueue_job_duration_seconds",
            "Run time of one attempt",
            labels,
            self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.wait = FastHistogram(
            "jetqueue_job_wait_seconds",
            "Time from enqueue (or scheduled time) to start",
            ["queue"],
            self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.in_flight = Gauge(
            "jetqueue_jobs_in_flight", "Jobs running in this worker", ["queue"], registry=self.registry
        )
        self.errors = Counter(
            "jetqueue_job_errors_total",
            "Failed attempts and dead-lettered messages, by reason (ERROR_REASONS)",
            ["queue", "reason"],
            registry=self.registry,
        )
        self.concurrency = Gauge(
            "jetqueue_worker_concurrency",
            "Jobs this worker runs at once (its slots)",
            ["queue"],
            registry=self.registry,
        )
        self.info = Gauge(
            "jetqueue_worker_info",
            "1 per running worker: its id (as in the monitor) and version",
            ["queue", "worker_id", "version"],
            registry=self.registry,
        )


# The job_name of every job whose name the worker does not know: clients choose job names,
# and a name they make up must not make series (a thousand names would be a thousand).
OTHER_JOB_NAME = "other"


class JobSeries:
    """The per-job-name series of one queue, bound once."""

    __slots__ = ("completed", "duration", "failed", "retried")
    completed: _Count
    failed: _Count
    retried: _Count
    duration: _Buckets

    def __init__(self, m: WorkerMetrics, queue: str, name: str) -> None:
        self.completed = m.completed.labels(queue, name)
        self.failed = m.failed.labels(queue, name)
        self.retried = m.retried.labels(queue, name)
        self.duration = m.duration.labels(queue, name)


class QueueMetrics:
    """The series one worker writes, bound to its queue (a ``labels()`` lookup costs microseconds;
    a job used to make eight of them).

    ``known_names`` bounds the ``job_name`` label: the names processors are registered for and
    the catalog's job types of the queue; any other name is counted as ``other``. Every series
    exists from the start (at 0), so a dashboard or alert reads 0 rather than nothing.
    """

    def __init__(self, m: WorkerMetrics, queue: str, known_names: Iterable[str] = ()) -> None:
        self.m = m
        self.queue = queue
        self._other = JobSeries(m, queue, OTHER_JOB_NAME)
        # Fixed here: job() only reads it (no lock, no growth on the hot path).
        self._jobs: dict[str, JobSeries] = {name: JobSeries(m, queue, name) for name in sorted(set(known_names))}
        self.wait = m.wait.labels(queue)
        self.in_flight = m.in_flight.labels(queue)
        self.stalled = m.stalled.labels(queue)
        self.cancelled = m.cancelled.labels(queue)
        self.malformed = m.malformed.labels(queue)
        self.errors = {reason: m.errors.labels(queue, reason) for reason in ERROR_REASONS}

    def job(self, name: str) -> JobSeries:
        return self._jobs.get(name, self._other)

    def start(self, concurrency: int, worker_id: str, version: str) -> None:
        """The worker's own gauges, once it knows its slots and id."""
        self.m.concurrency.labels(self.queue).set(concurrency)
        self.m.info.labels(self.queue, worker_id, version).set(1)
