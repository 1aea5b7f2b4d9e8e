"""Lifecycle records and heartbeats: what workers tell the monitor.

Records are batched: one message on ``jq.events.<queue>`` carries
``{"v": 1, "records": [...]}``, flushed every ``interval`` seconds or when
``max_batch`` records wait, so a job costs no extra publish of its own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
from nats.js import JetStreamContext

from jetqueue import codec, names
from jetqueue.job import SCHEMA_VERSION, EventType, now_ms

log = logging.getLogger(__name__)


class LifecycleRecord(msgspec.Struct, omit_defaults=True):
    """One step in a job's life (see docs/envelope.md); unset fields are left out of the JSON."""

    type: EventType
    job_id: str
    queue: str
    name: str
    attempt: int
    worker: str
    ts: int = msgspec.field(default_factory=now_ms)
    delivery: int | None = None  # the broker's delivery count of this attempt (> 1: a redelivery after a stall)
    # On an outcome record (completed, retrying, failed, cancelled): the run also started in this
    # batch, and this record stands for its ``started`` record too (ms; data and enqueued_at come along).
    started_ts: int | None = None
    attempts: int | None = None
    duration_ms: int | None = None
    error: str | None = None
    error_type: str | None = None
    progress: float | None = None
    result: Any = None
    data: Any = None
    user_id: str | None = None
    enqueued_at: int | None = None
    trace_id: str | None = None
    artifacts: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The set fields, shallow; ``type`` as its string."""
        d = {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}
        d["type"] = self.type.value
        return d


@dataclass(slots=True)
class Heartbeat:
    """A worker's heartbeat (the seed's WorkerHeartbeat fields)."""

    worker_id: str
    queue: str
    hostname: str
    pid: int
    version: str
    started_at: int
    active_jobs: int
    processed_jobs: int
    failed_jobs: int
    concurrency: int
    status: str = "ONLINE"  # ONLINE while running; STOPPING during shutdown
    ts: int = field(default_factory=now_ms)

    def to_bytes(self) -> bytes:
        d = asdict(self)
        d["v"] = SCHEMA_VERSION
        return codec.encode(d)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Heartbeat:
        d = codec.decode(raw)
        d.pop("v", None)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def decode_batch(raw: bytes) -> list[dict[str, Any]]:
    """Records of one events message (the monitor's side of :class:`EventBatcher`)."""
    body = codec.decode(raw)
    if not isinstance(body, dict) or body.get("v") != SCHEMA_VERSION:
        raise ValueError("not a jetqueue events batch")
    records = body.get("records")
    if not isinstance(records, list):
        raise ValueError("events batch without records")
    return records


class EventBatcher:
    """Collects lifecycle records and publishes them in batches."""

    def __init__(
        self,
        js: JetStreamContext,
        queue: str,
        *,
        interval: float = 0.2,
        max_batch: int = 500,
        source: str | None = None,
    ) -> None:
        self.js = js
        self.subject = names.events_subject(queue)
        self.interval = interval
        self.max_batch = max_batch
        self._buf: list[str] = []  # records, JSON-encoded when added
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.published = 0
        # Each batch gets a message id, so a publish retried after a lost ack
        # is dropped by JetStream instead of being counted twice downstream.
        self._source = source or uuid.uuid4().hex
        self._batch_no = 0

    def add(self, record: LifecycleRecord) -> None:
        # encoded now: what a record says is what held when it was added, even if the job's
        # data or result objects change afterwards
        self._buf.append(codec.encode(record).decode())
        if len(self._buf) >= self.max_batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jq-event-batcher")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._buf:
            batch, self._buf = self._buf[: self.max_batch], self._buf[self.max_batch :]
            body = f'{{"v":{SCHEMA_VERSION},"records":[{",".join(batch)}]}}'
            msg_id = f"{self._source}:{self._batch_no}"
            try:
                await self.js.publish(self.subject, body.encode(), timeout=5, headers={"Nats-Msg-Id": msg_id})
                self.published += len(batch)
                self._batch_no += 1
            except Exception as exc:  # keep the records (same id next time); NATS may be reconnecting
                log.warning("events publish failed (%s); %d records kept for the next flush", exc, len(batch))
                self._buf[:0] = batch
                return

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
