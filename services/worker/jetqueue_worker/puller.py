"""Raw JetStream pull requests on one inbox per consumer, with deadlines that survive reconnects.

nats-py's ``fetch`` waits for its whole timeout on a short queue and cannot
long-poll several consumers at once; the worker needs both (take the most
urgent level first, sleep on all levels when idle), so it speaks the pull
protocol itself: a request to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``
with ``batch``/``expires``/``no_wait``/``idle_heartbeat``; messages and status
replies arrive on the consumer's inbox subscription.

A request ends when its batch is full, when a status names it (404 no
messages, 408 expired, 409 paused or leader change...), when its deadline
passes, or when the connection reconnected after it was sent: the server
forgot it then, and waiting for it would stop the worker for good (seen after
a nats-server restart). Delivered messages carry their stream subject, not the
request's inbox, so they are counted against the open requests in the order
the server serves them: oldest first.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from jetqueue import names


class PullRequest:
    """One pull request; ``done`` resolves with the count of messages it brought."""

    __slots__ = ("batch", "deadline", "done", "hb_s", "last_seen", "received", "reconnects", "token")

    def __init__(self, token: str, batch: int, deadline: float, hb_s: float, reconnects: int) -> None:
        self.token = token
        self.batch = batch
        self.received = 0
        self.deadline = deadline
        self.hb_s = hb_s
        self.last_seen = time.monotonic()
        self.reconnects = reconnects
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(self.received)


class Puller:
    """Pull requests against one durable consumer; messages go to ``on_msg``."""

    def __init__(
        self, nc: NatsClient, stream: str, consumer: str, on_msg: Callable[[Msg], None], *, level: int = 0
    ) -> None:
        self.nc = nc
        self.level = level
        self.subject = names.pull_subject(stream, consumer)
        self.on_msg = on_msg
        self._ids = itertools.count()
        self._open: deque[PullRequest] = deque()
        self._sub: Subscription | None = None
        self._prefix = ""
        self.paused = False  # the last status said the consumer is paused
        self.pending: int | None = None  # the consumer's pending count, from the newest delivery

    @property
    def open_requests(self) -> int:
        self.expire()
        return len(self._open)

    def open_futures(self) -> list[asyncio.Future[int]]:
        """What resolves when each open request ends."""
        return [r.done for r in self._open]

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(
            self._prefix + ".*", cb=self._cb, pending_msgs_limit=-1, pending_bytes_limit=-1
        )

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # closed connection: nothing to unsubscribe from
                pass
            self._sub = None
        self.cancel_all()

    async def _cb(self, msg: Msg) -> None:
        hdrs = msg.headers
        if hdrs and not msg.reply and "Status" in hdrs:
            self._on_status(msg.subject.rsplit(".", 1)[-1], hdrs.get("Status", ""), hdrs.get("Description", ""))
            return
        self.on_msg(msg)
        if self._open:
            req = self._open[0]
            req.received += 1
            req.last_seen = time.monotonic()
            if req.received >= req.batch:
                self._open.popleft()
                req.finish()

    def _on_status(self, token: str, status: str, description: str) -> None:
        now = time.monotonic()
        for req in self._open:
            if req.token == token:
                if status == "100":  # idle heartbeat: the request is alive
                    req.last_seen = now
                    return
                self._open.remove(req)
                req.finish()
                break
        else:
            return
        self.paused = status == "409" and "paused" in description.lower()
        if status == "404":
            self.pending = 0

    def pull(self, batch: int, *, no_wait: bool = False, expires: float | None = None) -> PullRequest:
        """Send a pull request; ``done`` resolves with the count received when it ends."""
        token = str(next(self._ids))
        now = time.monotonic()
        body: dict[str, object] = {"batch": batch}
        hb = 0.0
        if no_wait:
            body["no_wait"] = True
            deadline = now + 5.0  # answered at once; 5 s covers a busy server, not a lost request
        else:
            exp = expires or 5.0
            body["expires"] = int(exp * 1e9)
            if exp >= 2.0:
                hb = min(exp / 4, 5.0)
                body["idle_heartbeat"] = int(hb * 1e9)
            deadline = now + exp + 1.0
        req = PullRequest(token, batch, deadline, hb, self.nc.stats["reconnects"])
        self._open.append(req)
        if not self.nc.is_connected:
            # Written to the reconnect buffer the request would reach a server that no longer
            # knows the consumer's waiting list; end it now and let the caller ask again later.
            self._open.remove(req)
            req.finish()
            return req
        task = asyncio.ensure_future(
            self.nc.publish(self.subject, json.dumps(body).encode(), reply=f"{self._prefix}.{token}")
        )
        task.add_done_callback(_swallow)
        return req

    def expire(self) -> None:
        """End requests the server cannot answer any more: past their deadline, silent, or from before a reconnect."""
        if not self._open:
            return
        now = time.monotonic()
        reconnects = self.nc.stats["reconnects"]
        for req in list(self._open):
            silent = req.hb_s and now - req.last_seen > 3 * req.hb_s
            if now > req.deadline or silent or req.reconnects != reconnects:
                self._open.remove(req)
                req.finish()

    def cancel_all(self) -> None:
        while self._open:
            self._open.popleft().finish()


def _swallow(fut: asyncio.Future[None]) -> None:
    # A request that could not be written ends by its deadline; nothing to report here.
    if not fut.cancelled():
        fut.exception()
