"""Counting from the outside: processor runs, final states in ``jq-jobs``, lifecycle records on ``JQ_EVENTS``."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from jetqueue import names
from jetqueue.client import JobClient, JobRequest
from jetqueue.events import decode_batch

KV_STREAM = f"KV_{names.JOBS_BUCKET}"


@dataclass(frozen=True, slots=True)
class Run:
    """One line of the processors' runs file."""

    kind: str  # S started, E returned (ran to completion), F raised
    job_id: str
    pid: int
    ts: float


def read_runs(path: Path) -> list[Run]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text("utf-8").splitlines():
        parts = line.split()
        if len(parts) == 4:
            out.append(Run(parts[0], parts[1], int(parts[2]), float(parts[3])))
    return out


def count(runs: Iterable[Run], kind: str) -> Counter[str]:
    """Runs of ``kind`` per job id."""
    return Counter(r.job_id for r in runs if r.kind == kind)


def ran_to_completion(runs_file: Path) -> int:
    """How many jobs' processors returned so far (each job counted once)."""
    return len(count(read_runs(runs_file), "E"))


async def ran_at_least(runs_file: Path, n: int) -> bool:
    return ran_to_completion(runs_file) >= n


def in_flight(runs: Iterable[Run], pid: int) -> set[str]:
    """Jobs process ``pid`` started and has not finished (it holds them)."""
    mine = [r for r in runs if r.pid == pid]
    return {r.job_id for r in mine if r.kind == "S"} - {r.job_id for r in mine if r.kind in ("E", "F")}


def longest_gap(stamps: Iterable[float]) -> float:
    """Longest pause (s) between consecutive events: the stall a fault caused."""
    ordered = sorted(stamps)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


async def read_subject(js: JetStreamContext, stream: str, subject: str, *, last_per_subject: bool = False) -> list[Any]:
    """Every stored message of ``subject`` (or the last per subject), in stream order.

    The reading consumer may sit on a replica that is still catching up (a
    node just restarted), so the read is checked against the stream leader's
    count of the subject's messages and newest sequence, and retried; it raises rather than return
    a partial read.
    """
    for _ in range(10):
        try:
            info = await js.stream_info(stream, subjects_filter=subject)
        except NotFoundError:
            return []
        subjects = info.state.subjects or {}
        expected = len(subjects) if last_per_subject else sum(subjects.values())
        if not expected:
            return []
        newest = (await js.get_last_msg(stream, subject)).seq or 0  # answered by the stream leader
        out = await _read_once(js, stream, subject, last_per_subject)
        if len(out) >= expected and max(m.metadata.sequence.stream for m in out) >= newest:
            return out
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{stream}: read {len(out)} of {expected} messages of {subject} (a replica behind?)")


async def _read_once(js: JetStreamContext, stream: str, subject: str, last_per_subject: bool) -> list[Any]:
    policy = DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else DeliverPolicy.ALL
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=policy)
    out = []
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            out.append(msg)
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await sub.unsubscribe()


async def final_states(js: JetStreamContext) -> dict[str, str]:
    """Job id -> state recorded in the ``jq-jobs`` bucket (expiry markers skipped)."""
    out: dict[str, str] = {}
    for msg in await read_subject(js, KV_STREAM, f"$KV.{names.JOBS_BUCKET}.>", last_per_subject=True):
        if not msg.data:
            continue
        out[msg.subject.rsplit(".", 1)[-1]] = json.loads(msg.data)["state"]
    return out


async def lifecycle_counts(js: JetStreamContext, queue: str, record_type: str = "completed") -> Counter[str]:
    """How many ``record_type`` lifecycle records each job has on ``JQ_EVENTS``."""
    out: Counter[str] = Counter()
    for msg in await read_subject(js, names.EVENTS_STREAM, names.events_subject(queue)):
        for rec in decode_batch(msg.data):
            if rec.get("type") == record_type:
                out[rec["job_id"]] += 1
    return out


async def records_for(js: JetStreamContext, queue: str, wanted: dict[str, str]) -> bool:
    """Whether every job in ``wanted`` has a lifecycle record of the type given for it."""
    by_type: dict[str, Counter[str]] = {}
    for job_id, record_type in wanted.items():
        if record_type not in by_type:
            by_type[record_type] = await lifecycle_counts(js, queue, record_type)
        if not by_type[record_type][job_id]:
            return False
    return True


async def enqueue_jobs(
    client: JobClient, queue: str, prefix: str, n: int, data: dict[str, Any], *, chunk: int = 500
) -> list[str]:
    """Enqueue ``n`` jobs in bulk; return the ids the broker confirmed (accepted)."""
    accepted: list[str] = []
    for start in range(0, n, chunk):
        reqs = [
            JobRequest(queue=queue, name="work", data=data, job_id=f"{prefix}-{i:05d}")
            for i in range(start, min(start + chunk, n))
        ]
        accepted += [r.job_id for r in await client.enqueue_many(reqs)]
    return accepted


async def wait_for(fn: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.5) -> float | None:
    """Seconds until ``fn()`` held, or None if it did not within ``timeout`` (never raises on timeout)."""
    t0 = time.monotonic()
    while True:
        try:
            if await fn():
                return time.monotonic() - t0
        except Exception:  # NATS reconnecting: keep polling until the bound
            pass
        if time.monotonic() - t0 > timeout:
            return None
        await asyncio.sleep(interval)


def report(test: str, **figures: Any) -> str:
    """Print the measured figures (visible with ``-s``) and return them for assertion messages."""
    text = f"[faults] {test}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print(text)
    return text
