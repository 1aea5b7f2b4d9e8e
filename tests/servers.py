"""Litestar apps under a real uvicorn on a free loopback port, for tests that need HTTP on a socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
from litestar import Litestar


def _server(app: Litestar) -> tuple[uvicorn.Server, socket.socket, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, access_log=False, ws="none", http="h11", timeout_graceful_shutdown=2
    )
    return uvicorn.Server(config), sock, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[str]:
    """Run ``app`` in this event loop; yield its base URL. A shutdown that hangs prints every task."""
    server, sock, url = _server(app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the app did not start (see its log)")
        await asyncio.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({task}, timeout=15)
        sock.close()
        if not done:
            for t in asyncio.all_tasks():
                print(f"task {t.get_name()}:", file=sys.stderr)
                t.print_stack(file=sys.stderr)
            raise RuntimeError("the app's shutdown hangs")


def serve_in_thread(app: Litestar) -> Iterator[str]:
    """Run ``app`` in a thread with its own event loop (for synchronous callers such as
    schemathesis); yield its base URL. Use with ``yield from`` in a fixture."""
    server, sock, url = _server(app)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the app did not start (see its log)")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
