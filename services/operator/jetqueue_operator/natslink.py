"""The operator's one NATS connection, made (and the shared streams provisioned) on first use."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from jetqueue.connection import check_server, connect, provision_shared
from jetqueue.errors import JetqueueError, NatsUnavailable
from jetqueue_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


class NatsLink:
    """Connects lazily, so the operator starts (and reports why) while NATS is down."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self._nc: NatsClient | None = None
        self._lock = asyncio.Lock()
        self._fenced = False

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def client(self) -> NatsClient:
        """The connection, checked and with the shared streams provisioned.

        Raises:
            NatsUnavailable: NATS cannot be reached (the message has the URL).
            ServerTooOld: the server is older than jetqueue needs.
        """
        async with self._lock:
            if self._fenced:
                raise NatsUnavailable("this operator replica lost its Lease: it no longer touches NATS")
            if self._nc is not None and not self._nc.is_closed:
                if not self._nc.is_connected:
                    raise NatsUnavailable(f"NATS at {self.settings.common.nats_url} is reconnecting")
                return self._nc
            nc = await connect(self.settings.common, name="jetqueue-operator")
            try:
                js = nc.jetstream()
                await check_server(js)
                await provision_shared(js, replicas=self.settings.common.replicas)
            except BaseException:
                await nc.close()
                raise
            self._nc = nc
            log.info("connected to NATS at %s", self.settings.common.nats_url)
            return nc

    async def jetstream(self) -> JetStreamContext:
        return (await self.client()).jetstream()

    async def fence(self) -> None:
        """Close the connection for good: a replica that lost its Lease must not act on JetStream any more."""
        self._fenced = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.close()
            except Exception as exc:
                log.warning("closing the NATS connection: %s", exc)
        self._nc = None

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except JetqueueError:
                pass
            except Exception as exc:
                log.warning("closing the NATS connection: %s", exc)
        self._nc = None
