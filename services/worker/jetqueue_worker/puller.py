"""Raw JetStream pull requests on one inbox per consumer.

nats-py's ``fetch`` waits for its whole timeout on a short queue and cannot
long-poll several consumers at once; the worker needs both (take the most
urgent level first, sleep on all levels when idle), so it speaks the pull
protocol itself: a request to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``
with ``batch``/``expires``/``no_wait``, messages and status replies on an inbox.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription


class _Request:
    __slots__ = ("batch", "done", "received", "token")

    def __init__(self, token: str, batch: int) -> None:
        self.token = token
        self.batch = batch
        self.received = 0
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(self.received)


class Puller:
    """Pull requests against one durable consumer; messages go to ``on_msg``.

    At most one request is open at a time: delivered messages carry their
    stream subject, not the request's inbox, so only status replies (404 no
    messages, 408 expired, 409 paused...) can be matched to a request.
    """

    def __init__(self, nc: NatsClient, stream: str, consumer: str, on_msg: Callable[[Msg], None]) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.on_msg = on_msg
        self._ids = itertools.count()
        self._current: _Request | None = None
        self._sub: Subscription | None = None
        self._prefix = ""
        self._sends: set[asyncio.Task[None]] = set()

    @property
    def busy(self) -> bool:
        return self._current is not None and not self._current.done.done()

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(
            self._prefix + ".*", cb=self._cb, pending_msgs_limit=-1, pending_bytes_limit=-1
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        self.cancel_all()

    async def _cb(self, msg: Msg) -> None:
        req = self._current
        hdrs = msg.headers
        if hdrs and "Status" in hdrs and not msg.reply:
            if hdrs.get("Status") == "100":  # idle heartbeat / flow control
                return
            token = msg.subject.rsplit(".", 1)[-1]
            if req is not None and req.token == token:
                req.finish()
            return
        self.on_msg(msg)
        if req is not None:
            req.received += 1
            if req.received >= req.batch:
                req.finish()

    def pull(self, batch: int, *, no_wait: bool = False, expires: float | None = None) -> asyncio.Future[int]:
        """Send a pull request (or join the open one); resolves with the count received when it ends."""
        if self.busy:
            assert self._current is not None
            return self._current.done
        token = str(next(self._ids))
        req = _Request(token, batch)
        self._current = req
        body: dict[str, object] = {"batch": batch}
        if no_wait:
            body["no_wait"] = True
        if expires:
            body["expires"] = int(expires * 1e9)
        send = asyncio.ensure_future(
            self.nc.publish(self.subject, json.dumps(body).encode(), reply=f"{self._prefix}.{token}")
        )
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)
        return req.done

    def cancel_all(self) -> None:
        if self._current is not None:
            self._current.finish()
