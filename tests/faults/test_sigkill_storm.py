"""A SIGKILL storm: workers die mid-job every ~2 s and are replaced, as in a crash-looping or preempted fleet."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from jetqueue.catalog import Catalog
from jetqueue.embedded import EmbeddedNats
from tests.faults.conftest import Connect, Q, Workers, all_online
from tests.faults.measure import (
    count,
    enqueue_jobs,
    final_states,
    in_flight,
    lifecycle_counts,
    ran_to_completion,
    read_runs,
    records_for,
    report,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(90)]

N_JOBS = 3000
WORKERS = 3
KILL_EVERY_S = 2.0
MAX_KILLS = 8
COMPLETION_BOUND_S = 40.0  # after the last kill; ack_wait is 3 s


async def test_every_job_completes_with_exactly_one_completed_record_through_a_sigkill_storm(
    nats: EmbeddedNats, fault_catalog: Catalog, workers: Workers, connect: Connect, runs_file: Path
) -> None:
    """3 workers; every ~2 s the longest-running one is SIGKILLed and a new one started, during 3,000 jobs.

    Proves: every accepted job completes, and JQ_EVENTS holds exactly ONE
    ``completed`` lifecycle record per job (none died with a killed
    process's in-memory batch, none doubled by a re-run). A killed job may
    run again (at-least-once): how many did is reported, not asserted.
    """
    catalog = fault_catalog.replace(Q, ack_wait_s=3.0)
    nc, client = await connect(nats.url, catalog)
    js = nc.jetstream()
    since = time.time()
    live = [workers.spawn(nats.url, catalog, f"w{i}") for i in range(WORKERS)]
    up = await wait_for(lambda: all_online(nc, [f"w{i}" for i in range(WORKERS)], since), 30)
    assert up is not None, "workers did not come online within 30 s"

    accepted = await enqueue_jobs(client, Q, "st", N_JOBS, {"sleep_ms": 100})
    kills, serial, held_at_kill = 0, WORKERS, 0
    while kills < MAX_KILLS and ran_to_completion(runs_file) < N_JOBS:
        await asyncio.sleep(KILL_EVERY_S)
        victim = live.pop(0)
        held_at_kill += len(in_flight(read_runs(runs_file), victim.proc.pid))
        await asyncio.to_thread(victim.kill)  # SIGKILL: no chance to flush or release anything
        kills += 1
        live.append(workers.spawn(nats.url, catalog, f"w{serial}"))
        serial += 1

    async def all_completed() -> bool:
        states = await final_states(js)
        return all(states.get(i) == "completed" for i in accepted)

    recovery = await wait_for(all_completed, COMPLETION_BOUND_S, interval=1.0)
    states = await final_states(js)
    done = {i for i in accepted if states.get(i) == "completed"}
    await wait_for(lambda: records_for(js, Q, dict.fromkeys(done, "completed")), 10, interval=1.0)
    records = await lifecycle_counts(js, Q)
    runs = read_runs(runs_file)
    ends, starts = count(runs, "E"), count(runs, "S")
    missing = [i for i in accepted if records[i] == 0]
    doubled = [i for i in accepted if records[i] > 1]
    text = report(
        "sigkill storm",
        kills=kills,
        jobs_held_by_killed_workers=held_at_kill,
        accepted=len(accepted),
        completed=len(done),
        not_completed=len(accepted) - len(done),
        ran_twice=sum(1 for i in accepted if ends[i] > 1),
        started_twice=sum(1 for i in accepted if starts[i] > 1),
        never_ran=sum(1 for i in accepted if ends[i] == 0),
        completed_records_missing=len(missing),
        completed_records_duplicate=len(doubled),
        missing_share=f"{len(missing) / max(len(accepted), 1):.2%}",
        all_completed_after_last_kill_s=round(recovery, 1) if recovery is not None else f">{COMPLETION_BOUND_S}",
        examples_missing=missing[:3],
        examples_doubled=doubled[:3],
    )
    assert len(done) == len(accepted), text
    assert not missing and not doubled, text
