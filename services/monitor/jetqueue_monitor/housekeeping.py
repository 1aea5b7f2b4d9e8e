"""Housekeeping: the worker status rules (OFFLINE, DEGRADED) and expiry of finished jobs and old samples."""

from __future__ import annotations

import asyncio
import logging

from jetqueue_monitor.settings import MonitorSettings
from jetqueue_monitor.store import Store

log = logging.getLogger("jetqueue.monitor.housekeeping")


async def run(store: Store, settings: MonitorSettings, stop: asyncio.Event) -> None:
    """Apply the rules every few seconds until ``stop`` is set; a failed pass (database down) is retried."""
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
