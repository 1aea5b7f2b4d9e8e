"""What the new gauges and counters say: worker errors by reason, silent workers, JetStream health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient
from prometheus_client import generate_latest

from jetqueue import names
from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.job import JobStatus
from jetqueue.processors import JobContext, PermanentError, ProcessorRegistry
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app
from jetqueue_monitor.settings import MonitorSettings
from jetqueue_worker.metrics import ERROR_REASONS, WorkerMetrics
from jetqueue_worker.runtime import Worker
from tests.conftest import eventually

Q = "email-send"
IDLE = "report-generate"  # no worker takes these jobs: they stay waiting


@pytest.fixture
async def monitor(common: CommonSettings, catalog: Catalog, tmp_path: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = MonitorSettings(
        common=common,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}",
        sample_interval_s=0.3,
        offline_after_s=1.5,
    )
    async with AsyncTestClient(app=create_app(settings, catalog=catalog)) as http:
        yield http


async def _metrics_with(http: AsyncTestClient[Any], *needles: str) -> str | None:
    text = (await http.get("/metrics")).text
    return text if all(n in text for n in needles) else None


async def test_worker_counts_errors_by_reason(nc: NatsClient, catalog: Catalog, client: JobClient) -> None:
    reg = ProcessorRegistry()

    async def boom(ctx: JobContext) -> None:
        raise RuntimeError("downstream refused")

    async def slow(ctx: JobContext) -> None:
        await asyncio.sleep(5)

    async def bad_input(ctx: JobContext) -> None:
        raise PermanentError("no such customer")

    async def fine(ctx: JobContext) -> dict[str, bool]:
        return {"ok": True}

    for name, fn in (("boom", boom), ("slow", slow), ("bad-input", bad_input), ("fine", fine)):
        reg.register(Q, fn, name=name)
    metrics = WorkerMetrics()
    w = Worker(nc, catalog, Q, reg, metrics=metrics, idle_wait_s=0.3, heartbeat_s=5)
    await w.start()
    try:
        jobs = [
            await client.enqueue(Q, "boom", {}, attempts=2),
            await client.enqueue(Q, "slow", {}, attempts=1, timeout_ms=200),
            await client.enqueue(Q, "bad-input", {}, attempts=3),  # permanent: no retry
            await client.enqueue(Q, "nobody-handles-this", {}, attempts=3),
            await client.enqueue(Q, "fine", {}),
        ]

        async def all_final() -> bool:
            states = [(await client.status(j.job_id)).state for j in jobs]
            return all(s in (JobStatus.FAILED, JobStatus.COMPLETED) for s in states)

        await eventually(all_final, timeout=20, what="every job final")
    finally:
        await w.stop(grace_s=1)

    def errors(reason: str) -> float | None:
        return metrics.registry.get_sample_value("jetqueue_job_errors_total", {"queue": Q, "reason": reason})

    assert {r: errors(r) for r in ERROR_REASONS} == {
        "exception": 2.0,  # both attempts
        "timeout": 1.0,
        "permanent": 1.0,
        "no_processor": 1.0,
        "stalled": 0.0,  # present from the start, so dashboards show 0 rather than "No data"
        "malformed": 0.0,
    }
    assert metrics.registry.get_sample_value("jetqueue_worker_concurrency", {"queue": Q}) == w.concurrency
    text = generate_latest(metrics.registry).decode()
    assert f'jetqueue_worker_info{{queue="{Q}",version="0.1.0",worker_id="{w.worker_id}"}} 1.0' in text


async def test_a_worker_that_dies_counts_as_lost_and_one_that_stops_does_not(
    monitor: AsyncTestClient[Any], catalog: Catalog, spawn_worker: Any
) -> None:
    stopping = spawn_worker(Q, catalog)
    dying = spawn_worker(Q, catalog)
    await eventually(
        lambda: _metrics_with(monitor, f'jetqueue_workers{{queue="{Q}",status="ONLINE"}} 2.0'),
        timeout=30,
        interval=0.2,
        what="two workers online",
    )
    assert f'jetqueue_workers_lost{{queue="{Q}"}} 0.0' in (await monitor.get("/metrics")).text
    assert await asyncio.to_thread(stopping.terminate) == 0  # SIGTERM: a clean stop says OFFLINE
    dying.kill()  # SIGKILL: heartbeats just stop
    text = await eventually(
        lambda: _metrics_with(monitor, f'jetqueue_workers{{queue="{Q}",status="OFFLINE"}} 2.0'),
        timeout=20,
        interval=0.2,
        what="both workers OFFLINE",
    )
    assert f'jetqueue_workers_lost{{queue="{Q}"}} 1.0' in text
    assert f'jetqueue_workers{{queue="{IDLE}",status="ONLINE"}} 0.0' in text  # every queue, every status


async def test_monitor_exports_jetstream_health(monitor: AsyncTestClient[Any], client: JobClient) -> None:
    for _ in range(3):
        await client.enqueue(IDLE, "monthly", {})
    consumer = names.level_consumer(IDLE, 1)  # no priority: the middle level
    text = await eventually(
        lambda: _metrics_with(
            monitor,
            f'jetqueue_consumer_pending{{consumer="{consumer}",queue="{IDLE}"}} 3.0',
            f'jetqueue_stream_messages{{stream="{names.job_stream(IDLE)}"}} 3.0',
        ),
        timeout=10,
        interval=0.2,
        what="the sampled counts",
    )
    assert f'jetqueue_consumer_ack_pending{{consumer="{consumer}",queue="{IDLE}"}} 0.0' in text
    assert f'jetqueue_stream_messages{{stream="{names.DLQ_STREAM}"}} 0.0' in text
    assert "jetqueue_monitor_nats_connected 1.0" in text
    sampled_at = next(
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("jetqueue_monitor_last_sample_timestamp_seconds ")
    )
    assert sampled_at > 1.7e9  # a Unix time, not an age
