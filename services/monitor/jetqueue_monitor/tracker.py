"""Every job from the moment it is accepted: waiting and delayed jobs in the store before a worker takes them.

Workers report a job only once they start it. To list what waits, the tracker
follows the queues' streams from the monitor's side, adding nothing to the
enqueue path:

* **Live**: a core NATS subscription on each queue's job and delay subjects
  gets a copy of every publish (a WorkQueue stream refuses a second consumer
  overlapping the workers', but plain subscribers see every message). The
  copies are parsed in batches and upserted as ``waiting`` or ``scheduled``
  rows; a worker's records fold into the same row later.
* **Reconcile**: the subscription is not durable, and some changes publish
  nothing a subscriber sees (the broker firing a delay or a cron schedule, a
  purge). So the tracker compares each queue's stream with the store — at
  start, after a reconnect, when the store's counts drift from the live ones,
  and when a delayed job's time has come — with a batched direct get of the
  stream's messages. A row whose message is gone is settled from the job's
  state record: cancelled, or (no record: drained or deleted) forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from jetqueue import codec, names
from jetqueue.catalog import Catalog, QueueSpec
from jetqueue.client import H_RUN_AT, H_SCHEDULE_TARGET
from jetqueue.job import JobState, JobStatus, now_ms
from jetqueue_monitor.clock import ms_to_dt, utcnow
from jetqueue_monitor.db.engine import is_unavailable
from jetqueue_monitor.sampler import Snapshot
from jetqueue_monitor.store import Store

log = logging.getLogger("jetqueue.monitor.tracker")

DATA_KEEP = 64 * 1024  # bytes of job data kept in a row; more is cut to a marker with a preview
SCAN_BATCH = 2000  # messages per batched direct get
GRACE_MS = 2_000  # a row younger than this may be newer than a scan: not even checked one by one
SETTLE_LIMIT = 1000  # rows checked one by one per reconcile of a queue
BUFFER_LIMIT = 200_000  # copies held while the database is down; past it they are dropped and reconciled


@dataclass(slots=True)
class TrackerStats:
    """What the tracker has done (tests and /metrics read it)."""

    seen: int = 0  # job messages received live
    rows: int = 0  # rows upserted (live and reconciled)
    reconciles: int = 0
    settled: int = 0  # rows corrected one by one (due, cancelled, forgotten)
    dropped: int = 0  # copies dropped while the database was down (reconciled instead)
    db_errors: int = 0
    last_reconcile: dict[str, float] = field(default_factory=dict)


def _cut(data: Any, size: int) -> Any:
    if size <= DATA_KEEP:
        return data
    return {"_truncated": True, "bytes": size, "preview": codec.encode(data)[:2000].decode(errors="replace")}


def _level_of(subject: str | None) -> int | None:
    try:
        return names.parse_job_subject(subject or "")[2]
    except ValueError:
        return None


def job_row(
    queue: str, job_id: str, kind: str, subject: str, raw: bytes, headers: dict[str, str]
) -> dict[str, Any] | None:
    """The store row a job message stands for, or None when it is not a readable job (a worker dead-letters it).

    Args:
        kind: ``job``, ``cronjob`` (waiting) or ``sched`` (delayed; due at its ``Jq-Run-At``).
    """
    if not names.is_valid_token(job_id):
        return None
    try:
        body = codec.decode(raw)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or "\x00" in body["name"]:
        return None
    opts = body["opts"] if isinstance(body.get("opts"), dict) else {}
    enqueued = body.get("enqueued_at") if isinstance(body.get("enqueued_at"), int) else now_ms()
    delayed = kind == "sched"
    run_at = int(headers[H_RUN_AT]) if delayed and str(headers.get(H_RUN_AT, "")).isdigit() else None
    user = str(body.get("user_id") or "").replace("\x00", "") or None
    # PostgreSQL's jsonb cannot hold a NUL character: such data is left out, not the job
    data = {"_omitted": "the data holds a NUL character"} if b"\\u0000" in raw else _cut(body.get("data"), len(raw))
    return {
        "job_id": job_id,
        "queue": queue,
        "name": body["name"][:200],
        "status": "scheduled" if delayed else "waiting",
        "user_id": user[:200] if user else None,
        "data": data,
        "max_attempts": opts.get("attempts") if isinstance(opts.get("attempts"), int) else None,
        "enqueued_at": ms_to_dt(enqueued),
        "created_at": ms_to_dt(enqueued),
        "last_event_ms": enqueued,
        "run_at": ms_to_dt(run_at),
        "level": _level_of(headers.get(H_SCHEDULE_TARGET) if delayed else subject),
        "_attempt": body.get("attempt") if isinstance(body.get("attempt"), int) else 1,
    }


@dataclass(slots=True)
class Seen:
    """A job message found in a stream."""

    kind: str
    level: int | None
    seq: int
    row: dict[str, Any]


class JobTracker:
    """Keeps the store's waiting and delayed jobs in step with the queues' streams.

    Args:
        snapshot: the sampler's latest live counts (to notice a store that drifted).
        check_interval_s: how often due delays, drift and reconnects are looked at.
        reconcile_every_s: the least time between two drift reconciles of one queue.
    """

    def __init__(
        self,
        nc: NatsClient,
        catalog: Catalog,
        store: Store,
        snapshot: Callable[[], Snapshot],
        *,
        flush_interval_s: float = 0.2,
        max_batch: int = 2000,
        check_interval_s: float = 5.0,
        reconcile_every_s: float = 60.0,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.catalog = catalog
        self.store = store
        self.snapshot = snapshot
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.check_interval_s = check_interval_s
        self.reconcile_every_s = reconcile_every_s
        self.stats = TrackerStats()
        self._buf: list[Msg] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._subs: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._reconnects = 0
        self._drift: dict[str, int] = {}  # queue -> consecutive checks its counts disagreed
        self._dirty: set[str] = set()  # queues to reconcile at the next check whatever their counts say
        self._kv: KeyValue | None = None

    async def start(self) -> None:
        """Subscribe, then reconcile every queue in the background (what was published while down)."""
        for spec in self.catalog.queues:
            for subject in (names.job_filter(spec.name), names.sched_filter(spec.name)):
                self._subs.append(await self.nc.subscribe(subject, cb=self._on_msg))
        self._reconnects = int(self.nc.stats.get("reconnects", 0))
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="tracker-flush"),
            asyncio.create_task(self._check_loop(), name="tracker-check"),
            asyncio.create_task(self.reconcile_all(), name="tracker-reconcile"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def _on_msg(self, msg: Msg) -> None:
        self._buf.append(msg)
        if len(self._buf) >= self.max_batch:
            self._wake.set()

    # ------------------------------------------------------------ live copies
    async def _flush_loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            self._wake.clear()
            while self._buf and not self._stop.is_set():
                batch = self._buf[: self.max_batch]
                if not await self._write(batch):  # the database is down: keep the copies (bounded), retry
                    self.stats.db_errors += 1
                    log.warning("tracker: store unavailable; retrying in %.1fs", delay)
                    if len(self._buf) > BUFFER_LIMIT:
                        self.stats.dropped += len(self._buf)
                        self._buf.clear()
                        self._dirty.update(self.catalog.names)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = 0.5
                del self._buf[: len(batch)]

    async def _write(self, batch: list[Msg]) -> bool:
        """Store a batch; False while the database is unavailable. A row the store refuses (not an
        outage) must not block the rest: then the batch goes one by one, without the refused rows."""
        try:
            await self._apply(batch)
            return True
        except Exception as exc:
            if is_unavailable(exc):
                return False
        try:
            await self._apply_each(batch)
        except Exception:  # only an outage leaves _apply_each
            return False
        return True

    async def _apply_each(self, msgs: list[Msg]) -> None:
        for m in msgs:
            try:
                await self._apply([m])
            except Exception as exc:
                if is_unavailable(exc):
                    raise
                self.stats.dropped += 1
                log.error("tracker: dropping the copy of %s the store refused: %s", m.subject, exc)

    async def _apply(self, msgs: list[Msg]) -> None:
        rows: dict[str, dict[str, Any]] = {}
        due: list[tuple[str, datetime]] = []
        for m in msgs:
            parts = m.subject.split(".")
            queue, kind, job_id = parts[1], parts[2], parts[-1]
            row = job_row(queue, job_id, kind, m.subject, m.data, dict(m.headers or {}))
            if row is None:
                continue
            if row.pop("_attempt") > 1:
                # a retry going back to its delay: its worker's record made the job "scheduled" already
                if kind == "sched" and row["run_at"] is not None:
                    due.append((job_id, row["run_at"]))
                continue
            rows[job_id] = row
        self.stats.seen += len(msgs)
        await self.store.apply_enqueued(list(rows.values()))
        await self.store.set_run_at(due)
        self.stats.rows += len(rows)

    # ------------------------------------------------------------ reconcile
    async def _check_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.check_interval_s)
            if self._stop.is_set():
                return
            try:
                await self.check()
            except Exception as exc:
                log.warning("tracker: check failed: %s", exc)

    async def check(self) -> None:
        """Reconcile after a reconnect, settle due delays, and reconcile queues whose counts drifted."""
        reconnects = int(self.nc.stats.get("reconnects", 0))
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            await self.reconcile_all()
            return
        due = await self.store.due(utcnow() - timedelta(seconds=2), SETTLE_LIMIT)
        by_queue: dict[str, dict[str, int]] = {}
        for job_id, queue, seen in due:
            by_queue.setdefault(queue, {})[job_id] = seen
        for queue, rows in by_queue.items():
            if queue in self.catalog:
                await self._settle(self.catalog.get(queue), rows)
        for queue in sorted(self._dirty | set(await self._drifted())):
            await self.reconcile(queue)

    async def _drifted(self) -> list[str]:
        """Queues whose store counts disagreed with the live ones at two checks in a row.

        The store's waiting jobs lie between the live waiting count and that plus
        the jobs being delivered (their workers' records are on their way);
        its delayed ones equal the live count.
        """
        counts = await self.store.unsettled_counts()
        out = []
        now = time.monotonic()
        for name, ql in self.snapshot().queues.items():
            waiting, delayed = counts.get((name, "waiting"), 0), counts.get((name, "scheduled"), 0)
            info = ql.info
            off = not (info.waiting <= waiting <= info.waiting + info.active) or delayed != info.scheduled
            self._drift[name] = self._drift.get(name, 0) + 1 if off else 0
            recent = now - self.stats.last_reconcile.get(name, 0.0) < self.reconcile_every_s
            if self._drift[name] >= 2 and not recent:
                out.append(name)
        return out

    async def reconcile_all(self) -> None:
        for spec in self.catalog.queues:
            try:
                await self.reconcile(spec.name)
            except Exception as exc:
                log.warning("tracker: reconciling %s failed: %s", spec.name, exc)

    async def reconcile(self, queue: str) -> dict[str, int]:
        """Bring the store's waiting and delayed jobs of ``queue`` in line with its stream.

        Returns how many rows were added (or changed) and settled.
        """
        spec = self.catalog.get(queue)
        started = now_ms()
        seen = await self._scan(spec)
        delivered = await self._delivered(spec)
        known = await self.store.unsettled(queue)
        rows = []
        for job_id, s in seen.items():
            if s.kind != "sched" and s.level is not None and s.seq <= delivered.get(s.level, 0):
                continue  # a worker holds it: its records tell the rest
            if known.get(job_id, ("", 0))[0] != s.row["status"]:
                s.row.pop("_attempt", None)
                rows.append(s.row)
        for i in range(0, len(rows), 2000):
            await self.store.apply_enqueued(rows[i : i + 2000])
        # gone from the stream, or delayed in the store while waiting in the stream (the broker fired it)
        odd = {
            j: ms
            for j, (status, ms) in known.items()
            if ms < started - GRACE_MS and (j not in seen or (status == "scheduled" and seen[j].kind != "sched"))
        }
        settled = await self._settle(spec, dict(list(odd.items())[:SETTLE_LIMIT]))
        self.stats.rows += len(rows)
        self.stats.reconciles += 1
        self.stats.last_reconcile[queue] = time.monotonic()
        self._drift[queue] = 0
        self._dirty.discard(queue)
        return {"added": len(rows), "settled": settled}

    async def _scan(self, spec: QueueSpec) -> dict[str, Seen]:
        """Every job message of a queue's stream (waiting, fired by cron, delayed), by job id."""
        out: dict[str, Seen] = {}
        seq = 1
        while True:
            msgs, pending = await self._batch(spec.stream, names.queue_filter(spec.name), seq)
            for m in msgs:
                h = dict(m.headers or {})
                subject, mseq = h.get("Nats-Subject", ""), int(h.get("Nats-Sequence", 0))
                seq = max(seq, mseq + 1)
                parts = subject.split(".")
                kind = parts[2] if len(parts) > 3 else ""
                if kind not in ("job", "cronjob", "sched"):
                    continue  # schedule definitions
                job_id = names.cron_job_id(parts[-1], mseq) if kind == "cronjob" else parts[-1]
                row = job_row(spec.name, job_id, kind, subject, m.data, h)
                if row is not None:
                    out[job_id] = Seen(kind, row["level"], mseq, row)
            if not msgs or not pending:
                return out

    async def _batch(self, stream: str, subjects: str, seq: int) -> tuple[list[Msg], int]:
        """One batched direct get: up to SCAN_BATCH messages from ``seq`` on; and how many are left after."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            req = {"seq": seq, "next_by_subj": subjects, "batch": SCAN_BATCH}
            await self.nc.publish(names.direct_get_subject(stream), json.dumps(req).encode(), reply=inbox)
            msgs: list[Msg] = []
            while True:
                m = await sub.next_msg(timeout=5)
                status = (m.headers or {}).get("Status")
                if status is None:
                    msgs.append(m)
                    continue
                # 204: end of this batch (with what is left); 404: nothing from seq on
                left = (m.headers or {}).get("Nats-Num-Pending", "0")
                return msgs, int(left) if status == "204" and left.isdigit() else 0
        finally:
            await sub.unsubscribe()

    async def _delivered(self, spec: QueueSpec) -> dict[int, int]:
        """Per level, the highest stream sequence its consumer delivered (a job at or below it is running)."""
        out = {}
        for lvl in range(spec.priority_levels):
            ci = await self.js.consumer_info(spec.stream, names.level_consumer(spec.name, lvl))
            out[lvl] = ci.delivered.stream_seq if ci.delivered else 0
        return out

    async def _settle(self, spec: QueueSpec, rows: dict[str, int]) -> int:
        """Settle rows one by one (``{job_id: last_event_ms as seen}``) from the stream and the state records."""
        n = 0
        for job_id, seen_ms in rows.items():
            n += await self._settle_one(spec, job_id, seen_ms)
        self.stats.settled += n
        return n

    async def _settle_one(self, spec: QueueSpec, job_id: str, seen_ms: int) -> int:
        try:
            await self.js.get_last_msg(spec.stream, names.sched_subject(spec.name, job_id))
            return 0  # still delayed
        except NotFoundError:
            pass
        try:
            await self.js.get_last_msg(spec.stream, names.job_subject_any_level(spec.name, job_id))
            return int(await self.store.mark_waiting(job_id, seen_ms=seen_ms))  # its time came
        except NotFoundError:
            pass
        state = await self._state(job_id)
        if state is None:  # no message and no record: drained, purged or deleted; it will never run
            return await self.store.forget([job_id], unsettled_since={job_id: seen_ms})
        if state.state is JobStatus.CANCELLED:
            done = await self.store.mark_cancelled(
                job_id, error=state.error, ts_ms=state.finished_at or now_ms(), seen_ms=seen_ms
            )
            return int(done)
        return 0  # a worker took it: its records are on their way

    async def _state(self, job_id: str) -> JobState | None:
        if self._kv is None:
            self._kv = await self.js.key_value(names.JOBS_BUCKET)
        try:
            # job ids may hold ':', '@' and '+', valid subject tokens nats-py's key check refuses
            entry = await self._kv.get(names.kv_key(job_id), validate_keys=False)
        except (KeyNotFoundError, NotFoundError):
            return None
        return JobState.from_bytes(entry.value) if entry.value else None
