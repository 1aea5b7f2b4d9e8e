"""Settling jobs: what a finished attempt writes, made durable before the job is acked.

An :class:`Outcome` is the end of one delivery: the messages that must be in
their streams first (the job's state, a retry's schedule, a dead letter, an
admin alert), the lifecycle records it adds, and the acknowledgement to send
once they are (``+ACK``, ``+TERM``, ``-NAK``). The :class:`Settler` gathers the
outcomes of one event-loop turn, publishes their messages plus one events
batch holding every record waiting, waits for all PubAcks on one subscription,
then sends the acks. So a job's history and final state are durable no later
than its ack, at the cost of one events message per turn instead of one per
record, and nothing is lost if the process dies: an unacked job is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from jetqueue.job import SCHEMA_VERSION
from jetqueue.publisher import Message, Publisher

log = logging.getLogger("jetqueue.worker")

ACK = b"+ACK"
TERM = b"+TERM"
NAK = b"-NAK"

# One events message stays well under any server's max payload (1 MiB by default).
MAX_EVENTS_MESSAGE = 256 * 1024


@dataclass(slots=True)
class Outcome:
    """How one delivery ends: durable messages first, then ``ack`` to the message's reply subject."""

    msg: Msg
    ack: bytes
    messages: list[Message] = field(default_factory=list)
    records: list[bytes] = field(default_factory=list)
    seq: int = 0  # the job message's stream sequence (the worker's key for what it holds)


class Settler:
    """Publishes outcomes and records in batches and acks each job once its writes are confirmed."""

    def __init__(
        self,
        nc: NatsClient,
        publisher: Publisher,
        events_subject: str,
        *,
        interval: float = 0.2,
        max_events_bytes: int = MAX_EVENTS_MESSAGE,
        max_in_flight: int = 8,
        on_settled: Callable[[Outcome], None] | None = None,
        source: str | None = None,
    ) -> None:
        self.nc = nc
        self.publisher = publisher
        self.subject = events_subject
        self.interval = interval
        self.max_events_bytes = max_events_bytes
        self.on_settled = on_settled
        self._outcomes: list[Outcome] = []
        self._records: list[bytes] = []  # b"" where a record was taken back
        self._base = 0  # handle of self._records[0]
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._flights: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._source = source or uuid.uuid4().hex
        self._batch_no = 0
        self.records_published = 0
        self.settled = 0

    @property
    def backlog(self) -> int:
        """Outcomes waiting to be written or confirmed."""
        return len(self._outcomes) + sum(getattr(t, "jq_count", 0) for t in self._flights)

    def record(self, record: bytes) -> int:
        """Add an encoded lifecycle record; it is published within ``interval`` (or with the next outcome).

        Returns a handle for :meth:`take`.
        """
        self._records.append(record)
        if self._timer is None and not self._scheduled:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._kick)
        return self._base + len(self._records) - 1

    def take(self, handle: int) -> bool:
        """Withdraw a record not published yet (an outcome record will stand for it); False if it went out."""
        i = handle - self._base
        if 0 <= i < len(self._records) and self._records[i]:
            self._records[i] = b""
            return True
        return False

    def settle(self, outcome: Outcome) -> None:
        """Queue an outcome; every outcome queued in this loop turn goes out together."""
        self._outcomes.append(outcome)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._kick)

    def _kick(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._outcomes and not self._records:
            return
        outcomes, self._outcomes = self._outcomes, []
        records, self._records = self._records, []
        self._base += len(records)
        task = asyncio.create_task(self._flush(outcomes, records), name="jq-settle")
        task.jq_count = len(outcomes)  # type: ignore[attr-defined]
        self._flights.add(task)
        task.add_done_callback(self._flights.discard)

    def _events_messages(self, records: list[bytes]) -> list[Message]:
        out: list[Message] = []
        chunk: list[bytes] = []
        size = 0
        for rec in records:
            if not rec:
                continue
            if chunk and size + len(rec) > self.max_events_bytes:
                out.append(self._events_message(chunk))
                chunk, size = [], 0
            chunk.append(rec)
            size += len(rec) + 1
        if chunk:
            out.append(self._events_message(chunk))
        return out

    def _events_message(self, chunk: list[bytes]) -> Message:
        body = b'{"v":%d,"records":[%s]}' % (SCHEMA_VERSION, b",".join(chunk))
        self._batch_no += 1
        # A batch published again after a lost PubAck is dropped by the stream, not counted twice.
        return Message(self.subject, body, {"Nats-Msg-Id": f"{self._source}:{self._batch_no}"})

    async def _flush(self, outcomes: list[Outcome], records: list[bytes]) -> None:
        async with self._slots:
            messages = [m for o in outcomes for m in o.messages]
            for o in outcomes:
                records.extend(o.records)
            records = [r for r in records if r]
            messages.extend(self._events_messages(records))
            try:
                results = await self.publisher.publish(messages, details=False)
            except Exception as exc:  # the connection closed for good: jobs come back after ack_wait
                log.error("settling %d job(s) failed (%s); they will be redelivered", len(outcomes), exc)
                return
            for m, r in zip(messages, results, strict=True):
                if r.error:
                    log.error("the server refused a message on %s: %s", m.subject, r.error)
            self.records_published += len(records)
            try:
                await self.publisher.wire.send([(o.msg.reply, o.ack, "", None) for o in outcomes if o.msg.reply])
            except Exception as exc:  # reconnecting: the jobs are redelivered and found settled
                log.warning("acks failed (%s); those jobs will be redelivered and recognised as settled", exc)
            self.settled += len(outcomes)
            if self.on_settled is not None:
                for o in outcomes:
                    self.on_settled(o)

    async def drain(self, timeout: float) -> bool:
        """Publish what waits and wait for every flush in flight; False if that took longer than ``timeout``."""
        self._kick()
        if not self._flights:
            return True
        _done, pending = await asyncio.wait(set(self._flights), timeout=timeout)
        for t in pending:
            t.cancel()
        return not pending
