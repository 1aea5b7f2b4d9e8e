"""W3C trace context travels in NATS headers from the producer's span to the worker's span."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nats.aio.client import Client as NatsClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.job import JobStatus
from jetqueue.processors import JobContext, ProcessorRegistry
from jetqueue_worker.runtime import Worker
from tests.conftest import eventually

Q = "email-send"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The global provider can be set once per process; tests use their own tracer instead.
    old = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER = provider
    yield exporter
    trace._TRACER_PROVIDER = old


async def test_worker_span_continues_the_producer_trace(
    spans: InMemorySpanExporter, nc: NatsClient, catalog: Catalog
) -> None:
    reg = ProcessorRegistry()
    seen: list[str] = []

    async def proc(ctx: JobContext) -> None:
        seen.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))

    reg.register(Q, proc)
    client = JobClient(nc, catalog)
    w = Worker(nc, catalog, Q, reg, idle_wait_s=0.3, heartbeat_s=5)
    await w.start()
    try:
        with trace.get_tracer("test").start_as_current_span("POST /jobs/email-send") as root:
            r = await client.enqueue(Q, "x", {})
        await eventually(lambda: _done(client, r.job_id))
    finally:
        await w.stop(grace_s=1)
    trace_id = format(root.get_span_context().trace_id, "032x")
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert {"POST /jobs/email-send", f"{Q} publish", f"{Q} process"} <= set(by_name)
    process = by_name[f"{Q} process"]
    assert format(process.context.trace_id, "032x") == trace_id
    assert process.parent is not None and process.parent.span_id == by_name[f"{Q} publish"].context.span_id
    assert seen == [trace_id]  # the processor runs inside the worker span


async def _done(client: JobClient, job_id: str) -> bool:
    return (await client.status(job_id)).state is JobStatus.COMPLETED
