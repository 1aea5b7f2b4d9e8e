"""Durable ingest of lifecycle records, audit records and heartbeats into the store.

Each source is a durable pull consumer; a message is acked only after its
rows are committed. If the database is down the message is not acked: the
loop backs off and retries, and JetStream keeps everything until then, so
nothing is lost across an outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError

from jetqueue import names
from jetqueue.events import Heartbeat, decode_batch
from jetqueue_monitor.store import Store

log = logging.getLogger("jetqueue.monitor.ingest")

Handler = Callable[[list[Msg]], Awaitable[None]]


@dataclass(slots=True)
class IngestStats:
    """What ingest has done (exported on /metrics)."""

    records: int = 0
    batches: int = 0
    heartbeats: int = 0
    audits: int = 0
    db_errors: int = 0
    last_event_ms: int = 0  # newest record time applied
    pending: dict[str, int] = field(default_factory=dict)  # messages not yet ingested, per source


class Ingestor:
    """Runs the three ingest loops."""

    def __init__(
        self,
        nc: NatsClient,
        store: Store,
        *,
        durable_prefix: str = "jq-monitor",
        fetch_batch: int = 50,
        retry_max_s: float = 10.0,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.prefix = durable_prefix
        self.fetch_batch = fetch_batch
        self.retry_max_s = retry_max_s
        self.stats = IngestStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[Any] = []
        self._stop = asyncio.Event()

    async def start(self) -> None:
        sources: list[tuple[str, str, str, Handler, DeliverPolicy]] = [
            ("events", names.EVENTS_STREAM, names.events_all(), self._on_events, DeliverPolicy.ALL),
            ("audit", names.EVENTS_STREAM, names.audit_all(), self._on_audit, DeliverPolicy.ALL),
            (
                "heartbeats",
                names.HEARTBEATS_STREAM,
                names.heartbeats_all(),
                self._on_heartbeats,
                DeliverPolicy.LAST_PER_SUBJECT,
            ),
        ]
        for source, stream, subject, handler, policy in sources:
            durable = f"{self.prefix}-{source}"
            cfg = ConsumerConfig(
                durable_name=durable,
                filter_subject=subject,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=policy,
                ack_wait=120,
                max_ack_pending=1000,
            )
            sub = await self.js.pull_subscribe(subject, durable=durable, stream=stream, config=cfg)
            self._subs.append(sub)
            self._tasks.append(asyncio.create_task(self._loop(source, sub, handler), name=f"ingest-{source}"))

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        # Open pull subscriptions would hold up the connection's drain for its whole timeout.
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        self._subs.clear()

    async def _loop(self, source: str, sub: object, handler: Handler) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                msgs = await sub.fetch(self.fetch_batch, timeout=1.0)  # type: ignore[attr-defined]
            except (FetchTimeoutError, TimeoutError):
                self.stats.pending[source] = 0
                continue
            except Exception as exc:  # NATS reconnecting
                log.warning("ingest %s: fetch failed: %s", source, exc)
                await asyncio.sleep(1)
                continue
            while not self._stop.is_set():
                try:
                    await handler(msgs)
                    break
                except Exception as exc:  # the database is down or refused: keep the messages, retry
                    self.stats.db_errors += 1
                    log.warning("ingest %s: store unavailable (%s); retrying in %.1fs", source, exc, delay)
                    for m in msgs:
                        try:
                            await m.in_progress()
                        except Exception:
                            pass
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_s)
            else:
                return
            delay = 0.5
            for m in msgs:
                await m.ack()
            if msgs:
                self.stats.pending[source] = msgs[-1].metadata.num_pending

    async def _on_events(self, msgs: list[Msg]) -> None:
        batches: list[tuple[int, list[dict[str, object]]]] = []
        for m in msgs:
            seq = m.metadata.sequence.stream
            try:
                batches.append((seq, decode_batch(m.data)))
            except (ValueError, UnicodeDecodeError) as exc:
                log.error("ingest: dropping unreadable events message %s: %s", seq, exc)
                batches.append((seq, []))
        self.stats.records += await self.store.apply_events(batches)
        self.stats.batches += len(msgs)
        newest = [int(r.get("ts") or 0) for _seq, recs in batches for r in recs]  # type: ignore[call-overload]
        if newest:
            self.stats.last_event_ms = max(self.stats.last_event_ms, *newest)

    async def _on_audit(self, msgs: list[Msg]) -> None:
        for m in msgs:
            try:
                rec = json.loads(m.data)
            except ValueError:
                log.error("ingest: dropping unreadable audit record %s", m.metadata.sequence.stream)
                continue
            await self.store.insert_audit(rec, source_seq=m.metadata.sequence.stream)
            self.stats.audits += 1

    async def _on_heartbeats(self, msgs: list[Msg]) -> None:
        for m in msgs:
            try:
                hb = Heartbeat.from_bytes(m.data)
            except (ValueError, TypeError):
                log.error("ingest: dropping unreadable heartbeat on %s", m.subject)
                continue
            await self.store.upsert_heartbeat(hb)
            self.stats.heartbeats += 1
