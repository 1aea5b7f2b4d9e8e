"""The broker restarts, or one worker is cut off from it: no accepted job is lost, none is stuck."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
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
    longest_gap,
    ran_at_least,
    read_runs,
    report,
    wait_for,
)
from tests.faults.proxy import TcpProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(90)]

N_JOBS = 3000
DOWN_S = 5.0
RECOVERY_BOUND_S = 30.0  # the work left after the restart takes a few seconds; ack_wait is 4 s


def completed(states: dict[str, str], ids: list[str]) -> list[str]:
    return [i for i in ids if states.get(i) == "completed"]


@pytest.mark.parametrize("when", ["mid-run", "idle"])
async def test_every_accepted_job_completes_after_the_broker_restarts(
    when: str, nats: EmbeddedNats, fault_catalog: Catalog, workers: Workers, connect: Connect, runs_file: Path
) -> None:
    """SIGTERM the file-store nats-server, keep it down 5 s, restart it on the same store and port.

    ``mid-run``: 3,000 jobs are enqueued and a quarter of them ran when the
    server stops; ``idle``: the workers wait on an empty queue when it stops,
    and the 3,000 jobs are enqueued right after the restart. Proves that both
    workers re-establish their pulls after the reconnect: every accepted job
    reaches ``completed`` within 30 s of the restart, none lost.
    """
    nc, client = await connect(nats.url, fault_catalog)
    js = nc.jetstream()
    since = time.time()
    for wid in ("w1", "w2"):
        workers.spawn(nats.url, fault_catalog, wid)
    up = await wait_for(lambda: all_online(nc, ["w1", "w2"], since), 30)
    assert up is not None, "workers did not come online within 30 s"

    accepted: list[str] = []
    if when == "mid-run":
        accepted = await enqueue_jobs(client, Q, "br", N_JOBS, {"sleep_ms": 20})
        started = await wait_for(lambda: ran_at_least(runs_file, N_JOBS // 4), 30, interval=0.05)
        assert started is not None, f"workers ran fewer than {N_JOBS // 4} jobs in 30 s"
    else:
        await asyncio.sleep(2)  # both workers are in their idle long-poll
    ran_before = len(count(read_runs(runs_file), "E"))
    await asyncio.to_thread(nats.stop)  # SIGTERM
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(nats.start)
    restarted = time.time()
    if when == "idle":
        accepted = await enqueue_jobs(client, Q, "bi", N_JOBS, {"sleep_ms": 20})

    async def all_completed() -> bool:
        return len(completed(await final_states(js), accepted)) == len(accepted)

    recovery = await wait_for(all_completed, RECOVERY_BOUND_S - (time.time() - restarted), interval=1.0)
    recovered_after = time.time() - restarted
    states = await final_states(js)
    runs = read_runs(runs_file)
    ends = count(runs, "E")
    after = [r.ts for r in runs if r.kind == "E" and r.ts >= restarted]
    done = completed(states, accepted)
    lost = [i for i in accepted if i not in set(done)]
    records = await lifecycle_counts(js, Q)
    text = report(
        f"broker restart ({when})",
        accepted=len(accepted),
        completed=len(done),
        not_completed=len(lost),
        their_states=dict(Counter(states.get(i, "none (never ran)") for i in lost)),
        ran_before_stop=ran_before,
        ran_after_restart=len(after),
        first_run_after_restart_s=round(min(after) - restarted, 2) if after else None,
        recovery_s=round(recovered_after, 1) if recovery is not None else f">{RECOVERY_BOUND_S}",
        ran_twice=sum(1 for i in accepted if ends[i] > 1),
        never_ran=sum(1 for i in accepted if ends[i] == 0),
        completed_records_missing=sum(1 for i in accepted if records[i] == 0),
        completed_records_duplicate=sum(1 for i in accepted if records[i] > 1),
        workers_alive=sum(1 for w in workers.procs if w.proc.poll() is None),
    )
    assert not lost and recovery is not None, text


@pytest.mark.parametrize("mode", ["blackhole", "reset"])
async def test_a_worker_cut_off_longer_than_ack_wait_loses_no_job(
    mode: str, nats: EmbeddedNats, fault_catalog: Catalog, workers: Workers, connect: Connect, runs_file: Path
) -> None:
    """Partition ONE worker from the server for ack_wait + 3 s while it holds jobs, then heal it.

    ``blackhole``: nothing passes but no connection is closed (dropped packets);
    ``reset``: connections are reset and reconnects refused until the heal.
    Proves: every job completes (the cut-off worker's jobs are redelivered to
    the other worker, none lost), and after the heal the cut-off worker takes
    jobs again (it re-established its pulls instead of living on idle).
    """
    ack_wait = fault_catalog.get(Q).ack_wait_s
    proxy = TcpProxy("127.0.0.1", nats.port)
    await proxy.start()
    try:
        nc, client = await connect(nats.url, fault_catalog)
        js = nc.jetstream()
        since = time.time()
        direct = workers.spawn(nats.url, fault_catalog, "direct")
        cut = workers.spawn(proxy.url, fault_catalog, "cut-off")
        up = await wait_for(lambda: all_online(nc, ["direct", "cut-off"], since), 30)
        assert up is not None, "workers did not come online within 30 s"

        batch1 = await enqueue_jobs(client, Q, "pa", 300, {"sleep_ms": 100})
        holding = await wait_for(lambda: _holds(runs_file, cut.proc.pid, 3), 20, interval=0.02)
        assert holding is not None, "the cut-off worker never held jobs: nothing to test"
        if mode == "blackhole":
            proxy.blackhole()
        else:
            proxy.reset()
        cut_at = time.time()
        held_at_cut = in_flight(read_runs(runs_file), cut.proc.pid)
        await asyncio.sleep(ack_wait + 3)
        await proxy.restore()
        healed = time.time()
        batch2 = await enqueue_jobs(client, Q, "pb", 300, {"sleep_ms": 100})
        accepted = batch1 + batch2

        async def all_completed() -> bool:
            return len(completed(await final_states(js), accepted)) == len(accepted)

        recovery = await wait_for(all_completed, RECOVERY_BOUND_S, interval=1.0)
        recovered_after = time.time() - healed
        states = await final_states(js)
    finally:
        await proxy.close()
    runs = read_runs(runs_file)
    ends = count(runs, "E")
    done = set(completed(states, accepted))
    ran_on_cut = {r.job_id for r in runs if r.pid == cut.proc.pid and r.kind == "S" and r.ts < cut_at}
    taken_after_heal = {r.job_id for r in runs if r.pid == cut.proc.pid and r.kind == "S" and r.ts >= healed}
    text = report(
        f"partition ({mode})",
        accepted=len(accepted),
        completed=len(done),
        lost=len(accepted) - len(done),
        held_by_cut_worker_at_cut=len(held_at_cut),
        of_those_lost=len(held_at_cut - done),
        ran_on_cut_worker_before_cut_lost=len(ran_on_cut - done),
        jobs_cut_worker_took_after_heal=len(taken_after_heal),
        recovery_after_heal_s=round(recovered_after, 1) if recovery is not None else f">{RECOVERY_BOUND_S}",
        ran_twice=sum(1 for i in accepted if ends[i] > 1),
        stall_s=round(longest_gap(r.ts for r in runs if r.kind == "E"), 2),
        direct_alive=direct.proc.poll() is None,
        cut_alive=cut.proc.poll() is None,
    )
    assert len(done) == len(accepted) and recovery is not None, text
    assert not held_at_cut - done and not ran_on_cut - done, text
    assert taken_after_heal, text


async def _holds(runs_file: Path, pid: int, n: int) -> bool:
    return len(in_flight(read_runs(runs_file), pid)) >= n
