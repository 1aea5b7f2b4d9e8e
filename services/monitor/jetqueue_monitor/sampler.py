"""The sampler: queue state read from JetStream every few seconds, kept in memory and in queue_samples."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext

from jetqueue import names
from jetqueue.catalog import Catalog, QueueSpec
from jetqueue.control import QueueInfo, queue_info
from jetqueue_monitor.clock import utcnow
from jetqueue_monitor.store import Store

log = logging.getLogger("jetqueue.monitor.sampler")


@dataclass(slots=True)
class QueueLive:
    info: QueueInfo
    oldest_waiting_s: float | None
    sampled_at: float


@dataclass(slots=True)
class Snapshot:
    queues: dict[str, QueueLive] = field(default_factory=dict)
    at: float = 0.0


async def oldest_waiting_age(js: JetStreamContext, spec: QueueSpec) -> float | None:
    """Age in seconds of the oldest undelivered job over all levels (consumer lag in time)."""
    oldest: float | None = None
    for lvl in range(spec.priority_levels):
        ci = await js.consumer_info(spec.stream, names.level_consumer(spec.name, lvl))
        if not ci.num_pending:
            continue
        start = (ci.delivered.stream_seq or 0) + 1 if ci.delivered else 1
        try:
            msg = await js.get_msg(spec.stream, seq=start, next=True, subject=names.level_filter(spec.name, lvl))
        except Exception:
            continue
        when = msg.time.timestamp() if msg.time is not None else None
        if when is not None:
            age = max(time.time() - when, 0.0)
            oldest = age if oldest is None else max(oldest, age)
    return oldest


class Sampler:
    """Reads every queue's counts periodically; feeds the overview, /metrics and queue_samples."""

    def __init__(
        self,
        js: JetStreamContext,
        catalog: Catalog,
        store: Store,
        *,
        interval_s: float,
    ) -> None:
        self.js = js
        self.catalog = catalog
        self.store = store
        self.interval_s = interval_s
        self.snapshot = Snapshot()
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    async def sample_once(self, *, persist: bool = True) -> Snapshot:
        snap = Snapshot(at=time.time())
        rows: list[dict[str, Any]] = []
        now = utcnow()
        for spec in self.catalog.queues:
            try:
                info = await queue_info(self.js, spec)
                lag = await oldest_waiting_age(self.js, spec)
            except Exception as exc:
                log.warning("sampling %s failed: %s", spec.name, exc)
                continue
            snap.queues[spec.name] = QueueLive(info=info, oldest_waiting_s=lag, sampled_at=snap.at)
            totals = self.store.finished_totals.get(spec.name, {})
            rows.append(
                {
                    "queue": spec.name,
                    "ts": now,
                    "waiting": info.waiting,
                    "active": info.active,
                    "delayed": info.scheduled,
                    "dlq": info.dead_lettered,
                    "paused": info.paused,
                    "redelivered": info.redelivered,
                    "completed_total": totals.get("completed", 0),
                    "failed_total": totals.get("failed", 0),
                    "oldest_waiting_s": lag,
                }
            )
        self.snapshot = snap
        if persist:
            try:
                await self.store.insert_samples(rows)
            except Exception as exc:
                log.warning("storing queue samples failed: %s", exc)
        return snap

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="monitor-sampler")

    async def _run(self) -> None:
        # A flag as well as cancellation: asyncio.wait_for inside nats-py can
        # swallow a cancel that lands just as a reply arrives (Python 3.11).
        while not self._stopped.is_set():
            await self.sample_once()
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
