"""The worker's HTTP endpoints: ``/metrics`` for Prometheus, ``/health`` and ``/ready`` for Kubernetes probes.

``/health`` (liveness) answers 503 when the worker can no longer work — its
NATS connection is closed for good, or its fetch loop stopped turning — so
the kubelet restarts it; ``/ready`` (readiness) also needs the connection up
right now. Any other path is a 404 (prometheus_client's own server answered
200 on every path, which made a probe on it meaningless).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("jetqueue.worker")

Check = Callable[[], tuple[bool, bool, dict[str, Any]]]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    """A minimal HTTP/1.1 server on the worker's event loop (GET only, one request per connection)."""

    def __init__(self, registry: CollectorRegistry, check: Check, *, host: str = "0.0.0.0", port: int = 0) -> None:
        self.registry = registry
        self.check = check
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request line."""
        path = path.split("?", 1)[0]
        if path not in ("/metrics", "/health", "/healthz", "/ready"):
            return 404, "text/plain; charset=utf-8", b"not found\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        alive, ready, detail = self.check()
        ok = ready if path == "/ready" else alive
        body = {"status": "ok" if ok else "unavailable", "alive": alive, "ready": ready, **detail}
        return (200 if ok else 503), "application/json", json.dumps(body).encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing here needs them
            parts = line.decode("latin-1").split()
            if len(parts) < 2:
                return
            status, ctype, body = self.respond(parts[0].upper(), parts[1])
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            )
            if status == 405:
                head += "Allow: GET, HEAD\r\n"
            writer.write(head.encode() + b"\r\n" + (b"" if parts[0].upper() == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        except Exception:  # a probe must never take the worker down
            log.exception("health endpoint error")
        finally:
            writer.close()
