"""JetStream publishes confirmed on one shared inbox: a counter per batch, no future per message.

nats-py's ``publish_async`` costs a future, a NUID, a token and a semaphore per
message, and its futures never time out: a PubAck lost in a reconnect leaks a
semaphore slot for good, until publishing blocks forever. Here every message of
a batch is a core publish whose reply subject is ``<inbox>.<n>``; one wildcard
subscription counts the PubAcks, and a batch ends when all arrived. Messages
left unconfirmed when the deadline passes are published again (their
``Nats-Msg-Id``, where they carry one, makes that safe), after the connection
is back, until the caller's overall deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

# JetStream errors that end in success if asked again: a stream or its leader is
# moving (cluster election, a node restarting) or the server is overloaded.
_TRANSIENT_CODES = frozenset({10008, 10023, 10074, 10077})  # JS not available, cluster not avail., insufficient res.


@dataclass(slots=True)
class Message:
    """One message to publish into a stream."""

    subject: str
    payload: bytes
    headers: dict[str, str] | None = None


@dataclass(slots=True)
class PubResult:
    """What the server answered for one message (``error`` set when it was refused)."""

    seq: int = 0
    duplicate: bool = False
    error: str | None = None
    code: int = 0


class Wire:
    """Writes many protocol messages as one write into nats-py's outgoing buffer.

    ``Client.publish`` costs about 5 µs a message here (a coroutine, subject
    checks, headers encoded through a regular expression, a flusher kick);
    building the ``PUB``/``HPUB`` lines of a whole loop turn and handing them
    over at once costs about 1 µs a message. It uses two internals of nats-py
    (``_send_command`` and ``_flush_pending``, what ``publish`` itself calls),
    checked at start and pinned with the dependency (tests/integration/test_publisher.py
    fails if they change); without them, or while the connection is not up
    (nats-py's own buffering and errors apply then), it falls back to
    ``Client.publish``. Subjects come from jetqueue's names (valid tokens);
    header values have CR and LF replaced, as nats-py does.
    """

    CHUNK = 256 * 1024

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.fast = all(hasattr(nc, a) for a in ("_send_command", "_flush_pending"))
        self._headers: dict[tuple[tuple[str, str], ...], bytes] = {}

    def header_block(self, headers: dict[str, str]) -> bytes:
        """The encoded header block (cached for repeating ones, such as a TTL)."""
        key = tuple(headers.items())
        block = self._headers.get(key)
        if block is None:
            lines = "".join(f"{k}: {_one_line(v)}\r\n" for k, v in key)
            block = f"NATS/1.0\r\n{lines}\r\n".encode()
            if len(self._headers) < 64:  # TTL headers repeat; message ids do not
                self._headers[key] = block
        return block

    async def send(self, messages: Sequence[tuple[str, bytes, str, dict[str, str] | None]]) -> None:
        """Publish ``(subject, payload, reply, headers)`` tuples (reply and headers may be empty)."""
        nc = self.nc
        if not self.fast or not nc.is_connected:
            for subject, payload, reply, headers in messages:
                await nc.publish(subject, payload, reply=reply, headers=headers)
            return
        parts: list[bytes] = []
        size = 0
        for subject, payload, reply, headers in messages:
            target = f"{subject} {reply}" if reply else subject
            if headers:
                hdr = self.header_block(headers)
                line = f"HPUB {target} {len(hdr)} {len(hdr) + len(payload)}\r\n".encode()
                parts += (line, hdr, payload, b"\r\n")
                size += len(line) + len(hdr) + len(payload) + 2
            else:
                line = f"PUB {target} {len(payload)}\r\n".encode()
                parts += (line, payload, b"\r\n")
                size += len(line) + len(payload) + 2
            if size >= self.CHUNK:
                await self._write(parts)
                parts, size = [], 0
        if parts:
            await self._write(parts)

    async def _write(self, parts: list[bytes]) -> None:
        nc: Any = self.nc
        await nc._send_command(b"".join(parts))
        await nc._flush_pending()


def _give_up(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)  # the replies still missing are published again


# How often a wait for PubAcks looks for a reconnect.
WATCH_S = 0.25


class _Watch:
    """Ends a wait for PubAcks at its timeout, or as soon as the connection was re-established:
    the answers to what went out on the old connection will not come, and waiting out the timeout
    let a job's lease run out before its state was written again (it then ran twice)."""

    __slots__ = ("done", "end", "handle", "nc", "reconnects")

    def __init__(self, nc: NatsClient, done: asyncio.Future[None], timeout: float) -> None:
        loop = done.get_loop()
        self.nc, self.done, self.end = nc, done, loop.time() + timeout
        self.reconnects = nc.stats["reconnects"]
        self.handle = loop.call_later(min(WATCH_S, timeout), self._tick)

    def _tick(self) -> None:
        if self.done.done():
            return
        loop = self.done.get_loop()
        now = loop.time()
        if now >= self.end or self.nc.stats["reconnects"] != self.reconnects:
            _give_up(self.done)
            return
        self.handle = loop.call_later(min(WATCH_S, self.end - now), self._tick)

    def cancel(self) -> None:
        self.handle.cancel()


def _one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


class _Batch:
    __slots__ = ("done", "fast", "outstanding", "replies", "tokens")

    def __init__(self, n: int) -> None:
        self.replies: list[bytes | None] = [None] * n
        self.outstanding = n
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tokens: list[str] = []  # reply tokens of this round, to forget when it ends
        self.fast: dict[str, list[int]] = {}  # fast-batch id -> the message indices it carries


# Fast batches: at least this many messages to one stream, asking the server for an ack every FAST_FLOW.
FAST_MIN = 8
FAST_FLOW = 100
# Batch errors meaning "not here": the stream does not allow batches, or the server does not know them.
_FAST_UNSUPPORTED = frozenset({10205})  # "batch publish is disabled" (the stream does not allow it)
_STORED_RAW = b'{"stored":true}'

_NO_RESPONDERS = b"\x00no-responders"
_STORED = PubResult()  # a PubAck without an error, when its details are not wanted
_TOO_LARGE = b'{"error":{"code":413,"err_code":0,"description":"message larger than max payload"}}'


class Publisher:
    """Publishes batches of messages and waits for their PubAcks on one subscription."""

    def __init__(self, nc: NatsClient, *, fast_prefix: str | None = None) -> None:
        """``fast_prefix``: subjects (of one stream with ``allow_batched``) that go out as a fast batch
        when a publish holds at least ``FAST_MIN`` of them (the worker's job states)."""
        self.nc = nc
        self.wire = Wire(nc)
        self.fast_prefix = fast_prefix
        self._fast_ok = fast_prefix is not None
        self._fast_inbox = ""
        self._fast_waiting: dict[str, tuple[_Batch, list[int]]] = {}
        self._fast_next = 0
        self._fast_failures = 0
        self._prefix = ""
        self._sub: Subscription | None = None
        self._fast_sub: Subscription | None = None
        self._next = 0
        self._waiting: dict[str, tuple[_Batch, int]] = {}
        self._starting: asyncio.Lock | None = None

    async def _ensure_started(self) -> None:
        if self._sub is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._sub is None:
                self._prefix = self.nc.new_inbox()
                self._sub = await self.nc.subscribe(
                    self._prefix + ".*", cb=self._on_reply, pending_msgs_limit=-1, pending_bytes_limit=-1
                )
                if self.fast_prefix is not None:
                    self._fast_inbox = self.nc.new_inbox()
                    self._fast_sub = await self.nc.subscribe(
                        self._fast_inbox + ".>", cb=self._on_fast_reply, pending_msgs_limit=-1, pending_bytes_limit=-1
                    )

    async def stop(self) -> None:
        for sub in (self._sub, self._fast_sub):
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception:  # the connection may be gone already
                    pass
        self._sub = self._fast_sub = None
        for batch, _i in self._waiting.values():
            _give_up(batch.done)
        for batch, _indices in self._fast_waiting.values():
            _give_up(batch.done)
        self._waiting.clear()
        self._fast_waiting.clear()

    @property
    def in_flight(self) -> int:
        """Messages sent whose PubAck has not arrived."""
        return len(self._waiting)

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._prefix) + 1 :], None)
        if entry is None:
            return  # the answer to a message given up on, or published again since
        batch, i = entry
        data = msg.data
        if not data and msg.headers and msg.headers.get("Status") == "503":
            data = _NO_RESPONDERS
        batch.replies[i] = data
        batch.outstanding -= 1
        if batch.outstanding == 0 and not batch.done.done():
            batch.done.set_result(None)

    async def _send(self, batch: _Batch, messages: Sequence[Message], indices: Sequence[int]) -> None:
        limit = self.nc.max_payload
        prefix = self._prefix + "."
        out: list[tuple[str, bytes, str, dict[str, str] | None]] = []
        if self._fast_ok and self.fast_prefix is not None:
            fast = [i for i in indices if messages[i].subject.startswith(self.fast_prefix)]
            if len(fast) >= FAST_MIN:
                out += self._fast_batch(batch, messages, fast)
                chosen = set(fast)
                indices = [i for i in indices if i not in chosen]
        for i in indices:
            m = messages[i]
            # Headers count against the limit too; never hand the server an oversized
            # message: it would close the connection for good.
            if len(m.payload) + (len(self.wire.header_block(m.headers)) if m.headers else 0) > limit:
                batch.replies[i] = _TOO_LARGE
                batch.outstanding -= 1
                continue
            self._next += 1
            token = str(self._next)
            self._waiting[token] = (batch, i)
            batch.tokens.append(token)
            out.append((m.subject, m.payload, prefix + token, m.headers))
        await self.wire.send(out)
        if batch.outstanding == 0 and not batch.done.done():
            batch.done.set_result(None)

    async def publish(
        self,
        messages: Sequence[Message],
        *,
        ack_timeout: float = 5.0,
        deadline: float | None = None,
        details: bool = True,
    ) -> list[PubResult]:
        """Publish ``messages`` and return the server's answer for each, in order.

        A message without an answer after ``ack_timeout`` (or refused with a
        transient error) is published again, once the connection is back, until
        ``deadline`` (seconds from now; None: until it is confirmed or refused).
        ``details=False`` skips reading sequence numbers out of the PubAcks (only
        errors are looked for), for callers that need no more than "stored".

        Raises:
            NatsUnavailable: some messages were not confirmed before the deadline.
        """
        from jetqueue.errors import NatsUnavailable

        await self._ensure_started()
        end = None if deadline is None else time.monotonic() + deadline
        batch = _Batch(len(messages))
        todo: list[int] = list(range(len(messages)))
        results: list[PubResult | None] = [None] * len(messages)
        delay = 0.1
        while True:
            if todo:
                batch.outstanding = len(todo)
                batch.done = asyncio.get_running_loop().create_future()
                try:
                    await self._send(batch, messages, todo)
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
                    log.debug("publish interrupted (%s)", exc)
                except nats.errors.OutboundBufferLimitError:
                    log.debug("publish buffer full while reconnecting")
                timeout = ack_timeout if end is None else max(min(ack_timeout, end - time.monotonic()), 0.0)
                if not batch.done.done():
                    # A timer that ends the wait, not wait_for(shield(...)): two tasks per publish.
                    watch = _Watch(self.nc, batch.done, timeout)
                    await batch.done
                    watch.cancel()
            todo = []
            for i, raw in enumerate(batch.replies):
                if results[i] is not None:
                    continue
                res = None if raw is None else (_STORED if not details and _plain_ack(raw) else _parse(raw))
                if res is None or (res.error and _transient(res)):
                    todo.append(i)
                    batch.replies[i] = None
                else:
                    results[i] = res
            self._forget(batch)
            if not todo:
                return [r for r in results if r is not None]
            if end is not None and time.monotonic() >= end:
                raise NatsUnavailable(f"NATS did not confirm {len(todo)} of {len(messages)} messages in time")
            await self._wait_connected(end)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _forget(self, batch: _Batch) -> None:
        waiting = self._waiting
        for t in batch.tokens:
            waiting.pop(t, None)
        batch.tokens.clear()
        for bid in batch.fast:
            self._fast_waiting.pop(bid, None)
        batch.fast.clear()

    # ------------------------------------------------------------ fast batches
    def _fast_batch(
        self, batch: _Batch, messages: Sequence[Message], indices: list[int]
    ) -> list[tuple[str, bytes, str, dict[str, str] | None]]:
        """The messages as one fast-ingest batch (ADR-50, nats-server 2.14): one confirmation for all.

        Gap mode ``fail``: the final ack's count is how many of them, from the first, are stored,
        in order; the rest are published again. The batch ends with a commit that stores nothing
        (operation 3), so a confirmation covers the last state too. A PubAck per message cost the
        worker about 8 µs a job to receive.
        """
        self._fast_next += 1
        bid = f"{self._fast_inbox.rsplit('.', 1)[-1][:40]}{self._fast_next}"
        base = f"{self._fast_inbox}.{bid}.{FAST_FLOW}.fail."
        out = []
        for k, i in enumerate(indices, start=1):
            m = messages[i]
            out.append((m.subject, m.payload, f"{base}{k}.{0 if k == 1 else 1}.$FI", m.headers))
        out.append((messages[indices[-1]].subject, b"", f"{base}{len(indices) + 1}.3.$FI", None))
        batch.fast[bid] = indices
        self._fast_waiting[bid] = (batch, indices)
        batch.outstanding -= len(indices) - 1  # the group resolves as one
        return out

    async def _on_fast_reply(self, msg: Msg) -> None:
        data = msg.data
        if b'"type"' in data[:16]:
            return  # flow control ("ack" every N messages) or a gap report: the final ack says it all
        bid = msg.subject[len(self._fast_inbox) + 1 :].split(".", 1)[0]
        entry = self._fast_waiting.pop(bid, None)
        if entry is None:
            return
        batch, indices = entry
        if not data:
            # "no responders": the stream has no leader (an election) or is gone. Nothing of the
            # batch is stored; it goes out again, and it says nothing about batches being allowed.
            body: dict[str, Any] = {}
        else:
            try:
                body = json.loads(data)
            except ValueError:
                body = {"error": {"description": f"unreadable batch ack {data[:80]!r}"}}
        stored = int(body.get("count") or 0) if not body.get("error") else 0
        if body.get("error"):
            err = body["error"]
            self._fast_failures += 1
            if int(err.get("err_code") or 0) in _FAST_UNSUPPORTED or self._fast_failures >= 3:
                self._fast_ok = False
            log.warning(
                "fast batch refused (%s); %s",
                err.get("description", err),
                "publishing one by one from now on" if not self._fast_ok else "publishing its messages one by one",
            )
        else:
            self._fast_failures = 0
        for n, i in enumerate(indices):
            # stored ones are confirmed; the rest stay unanswered and are published again
            batch.replies[i] = _STORED_RAW if n < stored else None
        batch.outstanding -= 1
        if batch.outstanding <= 0 and not batch.done.done():
            batch.done.set_result(None)

    async def _wait_connected(self, end: float | None) -> None:
        from jetqueue.errors import NatsUnavailable

        while not self.nc.is_connected:
            if self.nc.is_closed:
                raise NatsUnavailable("the NATS connection is closed")
            if end is not None and time.monotonic() >= end:
                return
            await asyncio.sleep(0.1)


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_read_ack = msgspec.json.Decoder(_PubAck).decode


def _parse(raw: bytes) -> PubResult:
    if raw == _NO_RESPONDERS:
        return PubResult(error="no responders: the stream is missing or has no leader", code=503)
    try:
        ack = _read_ack(raw)
    except msgspec.MsgspecError:  # no PubAck came (an empty reply): ask again, as for no responders
        return PubResult(error=f"unreadable PubAck: {raw[:80]!r}", code=503)
    if ack.error is not None:
        return PubResult(error=ack.error.description or "refused", code=ack.error.err_code or ack.error.code)
    return PubResult(seq=ack.seq, duplicate=ack.duplicate)


def _plain_ack(raw: bytes) -> bool:
    """A PubAck without an error: a JSON object. Anything else (a "no responders" status while a
    stream has no leader, an empty reply) is read in full, so it is retried, never taken for stored."""
    return raw[:1] == b"{" and b'"error"' not in raw


def _transient(res: PubResult) -> bool:
    return res.code in _TRANSIENT_CODES or res.code == 503
