"""A loopback TCP forwarder in front of nats-server for one client, to partition that client alone."""

from __future__ import annotations

import asyncio


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; can fail like a network partition.

    * :meth:`blackhole`: nothing passes any more, but no connection is closed,
      as when packets are dropped on the way (neither side is told);
    * :meth:`reset`: every open connection is reset and new ones are refused,
      as when a firewall rejects or a node's network goes down hard;
    * :meth:`restore`: traffic flows again (on the same port); a blackholed
      connection resumes with the bytes held back, as TCP does after a short
      partition heals.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        pair = {client_w, up_w}
        self._open |= pair
        try:
            await asyncio.gather(self._pump(client_r, up_w), self._pump(up_r, client_w))
        finally:
            self._open -= pair

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                await self._flowing.wait()  # blackholed: hold the bytes, and let TCP back-pressure the rest
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    def blackhole(self) -> None:
        self._flowing.clear()

    def reset(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._open):
            w.transport.abort()
        self._open.clear()

    async def restore(self) -> None:
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        self._flowing.set()
        self.reset()
