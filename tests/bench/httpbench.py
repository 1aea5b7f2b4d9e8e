"""The producer's HTTP API under load: ``POST /jobs/{queue}`` and ``POST /jobs/{queue}/bulk``.

The real producer (``python -m jetqueue_producer``, an admin token) and the bare Litestar endpoint of
``tests/bench/bare_app.py`` each run under uvicorn in their own process with the same settings. The
load comes from one client process (``httpbench:client``): a minimal HTTP/1.1 client on asyncio
streams with a fixed number of keep-alive connections, each sending its next request when the
previous answer is read, so the client costs far less per request than the servers measured.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections import Counter
from typing import Any

import httpx

from jetqueue.catalog import Catalog
from tests.bench import procs
from tests.bench.jq import JOB_DATA, QUEUE, bench_catalog, write_catalog
from tests.bench.procs import Child, CpuMeter, Proc, RunCtx

WARMUP = 200
_COUNT = re.compile(rb'"count":\s*(\d+)')


# ------------------------------------------------------------------ the client process
class Client:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.info: dict[str, Any] = {}

    async def _connection(self, req: bytes, left: list[int], statuses: Counter[int], expect: int | None) -> int:
        """Requests one after another on one keep-alive connection; the number of bad bulk answers."""
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=16 * 1024 * 1024)
        bad = 0
        try:
            while left[0] > 0:
                left[0] -= 1
                writer.write(req)
                status = int((await reader.readline()).split(b" ", 2)[1])
                length = -1
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length < 0:
                    raise RuntimeError("an answer without Content-Length")
                body = await reader.readexactly(length)
                statuses[status] += 1
                if expect is not None and status == 202:
                    m = _COUNT.search(body[:200])
                    bad += not m or int(m.group(1)) != expect
        finally:
            writer.close()
        return bad

    async def op_run(
        self, path: str, body: str, token: str, requests: int, concurrency: int, expect: int | None = None
    ) -> dict[str, Any]:
        data = body.encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        req = head.encode() + data
        left, statuses = [requests], Counter[int]()
        t0, c0 = time.time(), time.perf_counter()
        bad = await asyncio.gather(*(self._connection(req, left, statuses, expect) for _ in range(concurrency)))
        return {"t0": t0, "seconds": time.perf_counter() - c0, "statuses": dict(statuses), "bad_bodies": sum(bad)}


async def client(cfg: dict[str, Any]) -> Client:
    return Client(cfg["host"], cfg["port"])


# ------------------------------------------------------------------ the servers
async def wait_healthy(port: int, server: Proc, timeout: float = 60) -> None:
    async with httpx.AsyncClient() as http:

        async def ok() -> bool:
            server.check()
            try:
                return (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
            except httpx.HTTPError:
                return False

        await procs.wait_until(ok, timeout, f"{server.name} on port {port}", every=0.2)


class HttpTarget:
    """The producer (with a fresh nats-server) or the bare endpoint, and the client process."""

    def __init__(self, ctx: RunCtx, kind: str) -> None:
        self.ctx, self.kind, self.dir = ctx, kind, ctx.dir(f"http-{kind}")
        self.port = procs.free_port()
        self.token = secrets.token_urlsafe(24)
        self.server: Any = None
        self.proc: Proc | None = None
        self.client: Child | None = None

    async def start(self) -> HttpTarget:
        if self.kind == "producer":
            self.server = procs.start_nats(self.dir)
            self.catalog: Catalog = bench_catalog(100)
            env = {
                "JETQUEUE_NATS_URL": self.server.url,
                "JETQUEUE_CATALOG": str(write_catalog(self.dir / "catalog.yaml", self.catalog)),
                "JETQUEUE_PRODUCER_HOST": "127.0.0.1",
                "JETQUEUE_PRODUCER_PORT": str(self.port),
                "JETQUEUE_PRODUCER_TOKENS": f"bench:admin:{self.token}",
                "JETQUEUE_PRODUCER_LOG_LEVEL": "WARNING",
            }
            argv = procs.exec_argv("jetqueue_producer")
        else:
            env, argv = {}, procs.exec_argv("tests.bench.bare_app", str(self.port), "warning")
        self.proc = await Proc.start(self.kind, argv, self.dir / f"{self.kind}.log", self.ctx.env(env))
        await wait_healthy(self.port, self.proc)
        cfg = {"host": "127.0.0.1", "port": self.port}
        self.client = await Child.spawn("client", "httpbench:client", cfg, self.dir / "client.log", self.ctx.env())
        return self

    def meter(self) -> CpuMeter:
        assert self.proc is not None and self.client is not None
        groups = {"server": procs.trees(self.proc.pid)}
        if self.server is not None:
            groups["nats-server"] = procs.fixed(procs.nats_pid(self.server))
        return CpuMeter({**groups, "client": procs.fixed(self.client.pid)})

    async def stored_jobs(self) -> int | None:
        if self.server is None:
            return None
        import nats

        nc = await nats.connect(self.server.url)
        try:
            return (await nc.jetstream().stream_info(self.catalog.get(QUEUE).stream)).state.messages
        finally:
            await nc.close()

    async def close(self) -> None:
        for p in (self.client, self.proc):
            if p is not None:
                await p.stop()
        if self.server is not None:
            self.server.stop()


async def measure(
    t: HttpTarget, path: str, body: str, requests: int, concurrency: int, jobs_per_request: int
) -> dict[str, Any]:
    """Warm up, then ``requests`` requests; every answer must be a 202 and every job stored."""
    assert t.client is not None
    expect = jobs_per_request if path.endswith("/bulk") else None
    nwarm = WARMUP if jobs_per_request == 1 else 5
    warm = await t.client.call("run", path=path, body=body, token=t.token, requests=nwarm, concurrency=concurrency)
    meter = await t.meter().begin()
    res = await t.client.call(
        "run", path=path, body=body, token=t.token, requests=requests, concurrency=concurrency, expect=expect
    )
    cpu = await meter.end()
    problems = [f"answers {s}" for s in (warm["statuses"], res["statuses"]) if set(s) != {"202"}]
    if res["bad_bodies"]:
        problems.append(f"{res['bad_bodies']} bulk answers without count {jobs_per_request}")
    jobs = requests * jobs_per_request
    stored = await t.stored_jobs()
    if stored is not None and stored != (nwarm + requests) * jobs_per_request:
        problems.append(f"stream holds {stored} jobs, expected {(nwarm + requests) * jobs_per_request}")
    server_cpu = cpu["cpu_total_s"] - cpu["cpu_s"]["client"]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "jobs_per_request": jobs_per_request,
        "n": jobs,
        "seconds": round(res["seconds"], 3),
        "requests_per_s": round(requests / res["seconds"]),
        "per_s": round(jobs / res["seconds"]),
        "cpu": cpu,
        "server_cpu_us_per_request": round(server_cpu * 1e6 / requests, 1),
        "cpu_us_per_job": round(server_cpu * 1e6 / jobs, 1),
        "valid": not problems,
        "problems": problems,
    }


async def run_single(ctx: RunCtx, kind: str, requests: int, concurrency: int) -> dict[str, Any]:
    """``POST /jobs/bench`` with one job per request, to the producer or to the bare endpoint."""
    t = HttpTarget(ctx, kind)
    try:
        await t.start()
        body = json.dumps({"name": "bench", "data": JOB_DATA})
        r = await measure(t, f"/jobs/{QUEUE}", body, requests, concurrency, 1)
        return {"system": f"POST /jobs/{{queue}} ({kind})", **r}
    finally:
        await t.close()


async def run_bulk(ctx: RunCtx, n: int, per_request: int, concurrency: int) -> dict[str, Any]:
    """``POST /jobs/bench/bulk`` of ``per_request`` jobs each, n jobs in all."""
    t = HttpTarget(ctx, "producer")
    try:
        await t.start()
        body = json.dumps({"jobs": [{"name": "bench", "data": JOB_DATA}] * per_request})
        r = await measure(t, f"/jobs/{QUEUE}/bulk", body, max(1, n // per_request), concurrency, per_request)
        return {"system": "POST /jobs/{queue}/bulk (producer)", **r}
    finally:
        await t.close()
