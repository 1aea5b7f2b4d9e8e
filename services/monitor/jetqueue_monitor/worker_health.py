"""Workers that went silent: OFFLINE by the heartbeat rule, without having said goodbye."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from jetqueue_monitor.db.models import WorkerHeartbeat, WorkerStatus
from jetqueue_monitor.store import Store, utcnow


async def lost_worker_counts(store: Store, *, window_s: float) -> dict[str, int]:
    """``{queue: n}``: workers whose heartbeats stopped within the last ``window_s`` seconds.

    A worker that stops cleanly sends a last heartbeat with status OFFLINE; one
    that crashed, was OOM-killed or lost its network just goes quiet, and the
    monitor marks it OFFLINE after ``offline_after_s``. Only the second kind is
    counted (the rows of cleanly stopped workers stay in the table for the
    UI's history, so a plain OFFLINE count only ever grows with deployments).
    A worker coming back under the same id (a restarted container) leaves the count.
    """
    since = utcnow() - timedelta(seconds=window_s)
    async with store.sessions() as s:
        rows = await s.execute(
            select(WorkerHeartbeat.queue_name, func.count())
            .where(
                WorkerHeartbeat.status == WorkerStatus.OFFLINE.value,
                WorkerHeartbeat.reported_status != WorkerStatus.OFFLINE.value,
                WorkerHeartbeat.last_heartbeat >= since,
            )
            .group_by(WorkerHeartbeat.queue_name)
        )
        return {str(queue): int(n) for queue, n in rows}
