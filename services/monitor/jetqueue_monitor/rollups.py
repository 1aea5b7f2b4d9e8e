"""Totals of finished attempts, as the minute and hourly rollup rows keep them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jetqueue.job import EventType
from jetqueue_monitor.clock import aware
from jetqueue_monitor.db.models import DURATION_BUCKETS_MS

# the lifecycle records a rollup counts, and the counter each adds to
COUNTED = {
    EventType.COMPLETED.value: "completed",
    EventType.FAILED.value: "failed",
    EventType.RETRYING.value: "retried",
}


def bucket_of(duration_ms: float) -> str:
    """The histogram key of a duration: the index of the first bucket bound it stays under."""
    return str(next(i for i, ub in enumerate(DURATION_BUCKETS_MS) if duration_ms <= ub))


def percentile(hist: dict[str, int], q: float) -> float | None:
    """Upper bound (ms) of the bucket holding quantile ``q`` of a merged duration histogram."""
    total = sum(hist.values())
    if not total:
        return None
    need = q * total
    seen = 0
    for i, ub in enumerate(DURATION_BUCKETS_MS):
        seen += hist.get(str(i), 0)
        if seen >= need:
            return float(ub if ub < 10**9 else DURATION_BUCKETS_MS[-2])
    return float(DURATION_BUCKETS_MS[-2])


@dataclass(slots=True)
class Stats:
    """Finished attempts of a queue over some minutes: counts, durations of the completed ones, newest finish.

    ``hist`` counts completed durations per bucket (``bucket_of``); ``last`` is the newest completed or
    failed attempt's finish.
    """

    completed: int = 0
    failed: int = 0
    retried: int = 0
    duration_sum_ms: int = 0
    duration_count: int = 0
    hist: dict[str, int] = field(default_factory=dict)
    last: datetime | None = None

    @classmethod
    def of_row(cls, row: Any) -> Stats:
        """The totals of a rollup row (a ``JobStat``/``JobStatHourly`` or a tuple read with its columns)."""
        return cls(
            row.completed,
            row.failed,
            row.retried,
            row.duration_sum_ms,
            row.duration_count,
            dict(row.hist or {}),
            aware(row.last_finished_at),
        )

    def add(self, other: Stats) -> None:
        """Add ``other``'s totals to these."""
        self.completed += other.completed
        self.failed += other.failed
        self.retried += other.retried
        self.duration_sum_ms += other.duration_sum_ms
        self.duration_count += other.duration_count
        for b, n in other.hist.items():
            self.hist[b] = self.hist.get(b, 0) + n
        self.finished_at(other.last)

    def count(self, kind: str, duration_ms: Any, when: datetime | None) -> None:
        """Count one lifecycle record (``completed``, ``failed`` or ``retrying``)."""
        setattr(self, COUNTED[kind], getattr(self, COUNTED[kind]) + 1)
        if kind == EventType.COMPLETED.value and isinstance(duration_ms, int | float):
            self.duration_sum_ms += int(duration_ms)
            self.duration_count += 1
            b = bucket_of(duration_ms)
            self.hist[b] = self.hist.get(b, 0) + 1
        if kind != EventType.RETRYING.value:
            self.finished_at(when)

    def finished_at(self, when: datetime | None) -> None:
        when = aware(when)
        if when is not None and (self.last is None or when > self.last):
            self.last = when

    def write_to(self, row: Any) -> None:
        """Set a rollup row's columns to these totals."""
        row.completed, row.failed, row.retried = self.completed, self.failed, self.retried
        row.duration_sum_ms, row.duration_count, row.hist = self.duration_sum_ms, self.duration_count, self.hist
        row.last_finished_at = self.last

    @property
    def avg_duration_ms(self) -> float | None:
        return round(self.duration_sum_ms / self.duration_count, 1) if self.duration_count else None

    @property
    def p95_duration_ms(self) -> float | None:
        return percentile(self.hist, 0.95)

    @property
    def success_rate(self) -> float | None:
        """Completed attempts as a percentage of completed and failed ones."""
        done = self.completed + self.failed
        return round(self.completed / done * 100, 2) if done else None
