"""Bulk actions on jobs: retry, cancel, delete or run now, on a selection or on every job a filter matches.

One runs at a time per monitor, at most ``bulk_rate_per_s`` jobs a second (the
queues keep serving their workers meanwhile), and is audited as one action with
its filter (or ids), the count it matched and its outcome. Progress is kept in
memory for the API and the page to poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select

from jetqueue.control import AuditAction, EntityType, delete_job, promote_job, retry_job
from jetqueue.control import Controller as Control
from jetqueue.errors import ConflictError, JetqueueError
from jetqueue.job import JobStatus, now_ms
from jetqueue_monitor.queries import JobFilter, job_query
from jetqueue_monitor.store import Store

log = logging.getLogger("jetqueue.monitor.bulk")

# the states each action applies to (a bulk "cancel" skips the finished jobs a filter also matches)
_S = JobStatus
APPLIES: dict[str, tuple[JobStatus, ...]] = {
    "retry": (_S.FAILED,),
    "cancel": (_S.WAITING, _S.SCHEDULED, _S.ACTIVE),
    "delete": (_S.WAITING, _S.SCHEDULED, _S.FAILED, _S.COMPLETED, _S.CANCELLED),
    "promote": (_S.SCHEDULED,),
}
AUDIT = {
    "retry": AuditAction.BULK_RETRY,
    "cancel": AuditAction.BULK_CANCEL,
    "delete": AuditAction.BULK_DELETE,
    "promote": AuditAction.BULK_PROMOTE,
}
KEEP = 20  # finished bulk actions kept for the API
ERRORS_KEPT = 20


@dataclass(slots=True)
class Target:
    job_id: str
    queue: str
    status: str


@dataclass(slots=True)
class BulkOp:
    """One bulk action and how far it got."""

    id: str
    action: str
    actor: str
    scope: dict[str, Any]  # {"filter": {...}} or {"job_ids": [...]}
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0  # no longer in a state the action applies to
    status: str = "running"  # running, done, stopped, failed
    errors: list[str] = field(default_factory=list)
    started_at: int = field(default_factory=now_ms)
    finished_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "actor": self.actor,
            "scope": self.scope,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "status": self.status,
            "errors": self.errors,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def applicable(action: str, f: JobFilter) -> JobFilter | None:
    """``f`` narrowed to the states ``action`` applies to (None: it names a state the action does not)."""
    states = APPLIES[action]
    if f.status is not None:
        return f if f.status in states else None
    return replace(f, statuses=states)


async def targets(store: Store, action: str, f: JobFilter, limit: int) -> list[Target]:
    """Up to ``limit`` jobs ``f`` matches that ``action`` applies to, newest first (the Jobs list's order)."""
    narrowed = applicable(action, f)
    if narrowed is None:
        return []
    hits = job_query(narrowed, None, limit - 1, dialect=store.dialect).subquery()
    async with store.sessions() as s:
        rows = await s.execute(select(hits.c.job_id, hits.c.queue, hits.c.status))
        return [Target(j, q, st) for j, q, st in rows]


class BulkRunner:
    """Runs one bulk action at a time, throttled, and remembers the last few."""

    def __init__(self, store: Store, *, rate_per_s: float) -> None:
        self.store = store
        self.rate_per_s = rate_per_s
        self.ops: dict[str, BulkOp] = {}
        self._task: asyncio.Task[None] | None = None

    def busy(self) -> BulkOp | None:
        return next((op for op in self.ops.values() if op.status == "running"), None)

    def start(
        self,
        control: Control,
        action: str,
        jobs: list[Target],
        *,
        scope: dict[str, Any],
        actor: str,
        role: str,
        reason: str | None,
    ) -> BulkOp:
        """Start ``action`` on ``jobs`` in the background; audited when it ends.

        Raises:
            ConflictError: another bulk action is running.
        """
        running = self.busy()
        if running is not None:
            raise ConflictError(f"bulk action {running.id} is still running ({running.done}/{running.total})")
        op = BulkOp(id=secrets.token_hex(6), action=action, actor=actor, scope=scope, total=len(jobs))
        self.ops[op.id] = op
        for old in list(self.ops)[:-KEEP]:
            self.ops.pop(old)
        queues = {t.queue for t in jobs}
        entity = next(iter(queues)) if len(queues) == 1 else "*"
        params = {**scope, "matched": len(jobs)}

        async def run() -> dict[str, Any]:
            await self._run(control, op, jobs)
            return {"done": op.done, "failed": op.failed, "skipped": op.skipped, "status": op.status}

        async def audited() -> None:
            try:
                await control.audited(
                    AUDIT[action], EntityType.JOBS, entity, run, actor=actor, params=params, reason=reason, role=role
                )
            except Exception as exc:
                op.status = "failed"
                log.error("bulk %s %s failed: %s", action, op.id, exc)
            finally:
                op.finished_at = now_ms()

        self._task = asyncio.create_task(audited(), name=f"bulk-{op.id}")
        return op

    async def _run(self, control: Control, op: BulkOp, jobs: list[Target]) -> None:
        step = _STEPS[op.action]
        began = time.monotonic()
        try:
            for i, t in enumerate(jobs):
                try:
                    if await step(control, self.store, t):
                        op.done += 1
                    else:
                        op.skipped += 1
                except JetqueueError as exc:
                    op.failed += 1
                    if len(op.errors) < ERRORS_KEPT:
                        op.errors.append(f"{t.job_id}: {exc}")
                # throttle: the (i+1)th job no sooner than (i+1)/rate seconds after the start
                await asyncio.sleep(max(0.0, began + (i + 1) / self.rate_per_s - time.monotonic()))
        except asyncio.CancelledError:
            op.status = "stopped"  # the monitor is shutting down: audited with what was done
            return
        op.status = "done"

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _retry(control: Control, store: Store, t: Target) -> bool:
    await retry_job(control.js, control.catalog, t.job_id)
    await store.mark_requeued(t.job_id, now_ms())
    return True


async def _cancel(control: Control, store: Store, t: Target) -> bool:
    state = await control.client.cancel(t.job_id, t.queue, reason="cancelled in bulk")
    if state.state.value == "cancelled":
        await store.mark_cancelled(t.job_id, error=state.error, ts_ms=state.finished_at or now_ms())
    return True


async def _delete(control: Control, store: Store, t: Target) -> bool:
    await delete_job(control.nc, control.catalog, t.job_id, t.queue, missing_ok=True)
    await store.forget([t.job_id])
    return True


async def _promote(control: Control, store: Store, t: Target) -> bool:
    try:
        await promote_job(control.js, control.catalog, t.job_id, t.queue)
    except ConflictError:
        return False  # its time came meanwhile: nothing to do
    await store.mark_waiting(t.job_id)
    return True


_STEPS: dict[str, Callable[[Control, Store, Target], Awaitable[bool]]] = {
    "retry": _retry,
    "cancel": _cancel,
    "delete": _delete,
    "promote": _promote,
}
