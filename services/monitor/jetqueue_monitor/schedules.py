"""The Schedules page: every recurring job with its next run and the outcome of its last runs."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from jetqueue import names
from jetqueue.client import CronSchedule, JobClient, to_broker_cron
from jetqueue_monitor.clock import ms_to_dt, utcnow
from jetqueue_monitor.cronexpr import next_run
from jetqueue_monitor.db.models import Job
from jetqueue_monitor.queries import id_prefix, iso
from jetqueue_monitor.store import Store

LAST_RUNS = 14  # points of the sparkline
# what follows "cron-<name>-" in the id of a job the schedule fired (stream seq) or a "run now" made (t<ms)
RUN_SUFFIX = re.compile(r"t?[0-9]+")


async def last_runs(store: Store, queue: str, name: str, n: int = LAST_RUNS) -> list[dict[str, Any]]:
    """The newest ``n`` jobs of a schedule, newest first: ids ``cron-<name>-<seq>`` or ``cron-<name>-t<ms>``."""
    prefix = names.cron_job_prefix(name)
    stmt = (
        select(Job.job_id, Job.status, Job.created_at, Job.finished_at, Job.duration_ms)
        .where(Job.queue == queue, *id_prefix(prefix, store.dialect))
        .order_by(Job.created_at.desc())
        .limit(n * 2)  # room for a schedule whose name continues this one's ("daily" and "daily-eu")
    )
    async with store.sessions() as s:
        rows = await s.execute(stmt)
        out = [
            {
                "job_id": job_id,
                "status": status,
                "created_at": iso(created),
                "finished_at": iso(finished),
                "duration_ms": duration,
            }
            for job_id, status, created, finished, duration in rows
            if RUN_SUFFIX.fullmatch(job_id[len(prefix) :])
        ]
    return out[:n]


def _row(s: CronSchedule, *, payloads: bool) -> dict[str, Any]:
    d = s.to_dict()
    if not payloads:
        d.pop("data", None)
    d["next_run_at"] = None
    if not s.paused:
        since = ms_to_dt(s.updated_at)
        d["next_run_at"] = iso(next_run(to_broker_cron(s.cron), s.time_zone, utcnow(), since=since))
    return d


async def list_schedules(
    client: JobClient, store: Store, *, queue: str | None = None, payloads: bool
) -> list[dict[str, Any]]:
    """Every recurring job (of ``queue``) with ``next_run_at`` (None while paused) and ``last_runs``."""
    out = []
    for s in await client.list_schedules(queue):
        d = _row(s, payloads=payloads)
        d["last_runs"] = await last_runs(store, s.queue, s.name)
        out.append(d)
    return out
