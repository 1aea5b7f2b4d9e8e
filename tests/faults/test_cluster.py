"""A 3-node JetStream cluster on loopback: replicas from one setting, and nodes killed under load."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from jetqueue import names
from jetqueue.catalog import Catalog
from jetqueue.connection import connect_and_check
from jetqueue.errors import JetqueueError
from jetqueue.settings import CommonSettings
from tests.faults.cluster import NatsCluster
from tests.faults.conftest import Connect, Q, Workers, all_online, exited, online
from tests.faults.measure import (
    count,
    enqueue_jobs,
    final_states,
    lifecycle_counts,
    longest_gap,
    ran_at_least,
    read_runs,
    records_for,
    report,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(90)]

N_JOBS = 3000
KILLED_FOR_S = 4.0
RECOVERY_BOUND_S = 45.0  # from the kill: the node is back after 4 s, ack_wait is 4 s
KV_STREAM = f"KV_{names.JOBS_BUCKET}"
OBJ_STREAM = f"OBJ_{names.ARTIFACTS_BUCKET}"


def jetqueue_streams(queue: str) -> list[str]:
    """Every stream a worker of ``queue`` makes: its job stream, the shared streams, the bucket and the object store."""
    return [
        names.job_stream(queue),
        names.EVENTS_STREAM,
        names.DLQ_STREAM,
        names.ADVISORIES_STREAM,
        names.HEARTBEATS_STREAM,
        KV_STREAM,
        OBJ_STREAM,
    ]


async def replicas_of(js: JetStreamContext, streams: list[str]) -> dict[str, int | None]:
    """Configured replicas per stream (None: the stream does not exist)."""
    out: dict[str, int | None] = {}
    for s in streams:
        try:
            out[s] = (await js.stream_info(s)).config.num_replicas or 1
        except Exception:
            out[s] = None
    return out


async def test_every_stream_takes_the_replica_setting_and_is_never_downgraded(
    cluster: NatsCluster, fault_catalog: Catalog, workers: Workers, connect: Connect
) -> None:
    """JETQUEUE_REPLICAS on a 3-node cluster.

    Proves: a worker started with ``JETQUEUE_REPLICAS=3`` leaves every stream
    it makes (job stream, JQ_EVENTS, JQ_DLQ, JQ_ADVISORIES, JQ_HEARTBEATS, the
    ``jq-jobs`` bucket, the ``jq-artifacts`` object store) on 3 replicas; a
    second worker started with the default (1) does not lower any of them;
    asking for 5 replicas fails fast with an error naming replicas, both for
    a worker process (non-zero exit within 20 s) and for the SDK's
    ``connect_and_check`` (a JetqueueError, not a timeout).
    """
    streams = jetqueue_streams(Q)
    nc, _client = await connect(cluster.urls, fault_catalog, provision=False)
    js = nc.jetstream()

    since = time.time()
    r3 = workers.spawn(cluster.urls, fault_catalog, "r3", JETQUEUE_REPLICAS="3")
    up = await wait_for(lambda: online(nc, "r3", since), 40)
    assert up is not None, f"worker with JETQUEUE_REPLICAS=3 did not come online:\n{r3.log()[-2000:]}"
    after_r3 = await replicas_of(js, streams)
    r3.kill()

    since = time.time()
    r1 = workers.spawn(cluster.urls, fault_catalog, "r-default")
    up = await wait_for(lambda: online(nc, "r-default", since), 40)
    assert up is not None, f"worker with the default replicas did not come online:\n{r1.log()[-2000:]}"
    after_default = await replicas_of(js, streams)
    r1.kill()

    r5 = workers.spawn(cluster.urls, fault_catalog, "r5", JETQUEUE_REPLICAS="5")
    t0 = time.monotonic()
    gone = await wait_for(lambda: exited(r5), 20, interval=0.2)
    r5_s = time.monotonic() - t0
    r5_lines = [line for line in r5.log().splitlines() if "replica" in line.lower()]

    t0 = time.monotonic()
    sdk_error: Exception | None = None
    try:
        nc5, _js5 = await asyncio.wait_for(
            connect_and_check(CommonSettings(nats_url=cluster.urls, replicas=5), name="r5", catalog=fault_catalog),
            timeout=30,
        )
        await nc5.close()
    except Exception as exc:
        sdk_error = exc
    sdk_s = time.monotonic() - t0

    text = report(
        "replicas",
        after_worker_r3=after_r3,
        after_worker_default=after_default,
        r5_worker_exit=r5.proc.poll(),
        r5_worker_exit_s=round(r5_s, 1) if gone is not None else ">20",
        r5_worker_says=r5_lines[-1][:300] if r5_lines else None,
        r5_sdk=f"{type(sdk_error).__name__}: {str(sdk_error)[:200]}" if sdk_error else "no error",
        r5_sdk_s=round(sdk_s, 1),
    )
    assert all(after_r3[s] == 3 for s in streams), text
    assert all(after_default[s] == 3 for s in streams), text
    assert gone is not None and r5.proc.poll() != 0 and r5_lines, text
    assert "Traceback" not in r5.log(), text
    assert isinstance(sdk_error, JetqueueError) and "replica" in str(sdk_error).lower(), text


# ----------------------------------------------------------------- killing nodes
async def leader(js: JetStreamContext, stream: str, consumer: str | None = None) -> str | None:
    try:
        info = await (js.consumer_info(stream, consumer) if consumer else js.stream_info(stream))
    except Exception:
        return None
    return info.cluster.leader if info.cluster else None


async def move_leader(nc: NatsClient, js: JetStreamContext, to: str, stream: str, consumer: str | None = None) -> bool:
    """Ask the group's leader to step down in favour of server ``to``; True once ``to`` leads it."""
    if await leader(js, stream, consumer) == to:
        return True
    api = "$JS.API.CONSUMER.LEADER.STEPDOWN." if consumer else "$JS.API.STREAM.LEADER.STEPDOWN."
    api += f"{stream}.{consumer}" if consumer else stream
    try:
        await nc.request(api, json.dumps({"placement": {"preferred": to}}).encode(), timeout=5)
    except Exception:
        return False

    async def moved() -> bool:
        return await leader(js, stream, consumer) == to

    return await wait_for(moved, 10, interval=0.2) is not None


def queue_groups(queue: str, levels: int) -> list[tuple[str, str | None]]:
    """RAFT groups of the queue itself: its stream and its level consumers (which take the acks)."""
    stream = names.job_stream(queue)
    return [(stream, None)] + [(stream, names.level_consumer(queue, lvl)) for lvl in range(levels)]


STATE_GROUPS: list[tuple[str, str | None]] = [(names.EVENTS_STREAM, None), (KV_STREAM, None)]


async def place_leaders(
    nc: NatsClient,
    js: JetStreamContext,
    on: str,
    away: str,
    leads: list[tuple[str, str | None]],
    avoids: list[tuple[str, str | None]],
) -> list[str]:
    """Make server ``on`` lead ``leads`` and not lead ``avoids`` (moved to ``away``); return the moves that failed."""
    failed = []
    for s, c in leads:
        if not await move_leader(nc, js, on, s, c):
            failed.append(f"{s}/{c}" if c else s)
    for s, c in avoids:
        if await leader(js, s, c) == on and not await move_leader(nc, js, away, s, c):
            failed.append(f"{s}/{c}" if c else s)
    return failed


async def choose_victim(
    nc: NatsClient, js: JetStreamContext, cluster: NatsCluster, role: str, fault_catalog: Catalog
) -> tuple[str, list[str]]:
    """The node to SIGKILL for ``role`` and the leader moves that failed (RAFT leaders are moved so the role holds).

    ``queue-leader`` leads the queue's stream and level consumers, not JQ_EVENTS
    or the bucket; ``state-leader`` leads JQ_EVENTS and the bucket, not the
    queue's groups; ``follower`` leads none of them.
    """
    spec = fault_catalog.get(Q)
    queue = queue_groups(Q, spec.priority_levels)
    names_ = [n.name for n in cluster.nodes]
    if role == "queue-leader":
        victim = await leader(js, spec.stream)
        assert victim, "the queue stream has no leader"
        away = next(n for n in names_ if n != victim)
        return victim, await place_leaders(nc, js, victim, away, queue, STATE_GROUPS)
    if role == "state-leader":
        victim = await leader(js, names.EVENTS_STREAM)
        assert victim, "JQ_EVENTS has no leader"
        away = next(n for n in names_ if n != victim)
        return victim, await place_leaders(nc, js, victim, away, STATE_GROUPS, queue)
    leaders = {await leader(js, s, c) for s, c in queue + STATE_GROUPS}
    victim = next((n for n in names_ if n not in leaders), names_[-1])
    away = next(n for n in names_ if n != victim)
    return victim, await place_leaders(nc, js, victim, away, [], queue + STATE_GROUPS)


async def roles_of(js: JetStreamContext, node: str, cluster: NatsCluster, levels: int) -> list[str]:
    """What ``node`` leads (meta, streams, consumers of the queue)."""
    spec_groups = [*queue_groups(Q, levels), *STATE_GROUPS, (names.DLQ_STREAM, None), (names.HEARTBEATS_STREAM, None)]
    out = [f"{s}/{c}" if c else s for s, c in spec_groups if await leader(js, s, c) == node]
    if cluster.meta_leader() == node:
        out.append("meta")
    return out


def worker_connections(cluster: NatsCluster) -> dict[str, int]:
    """Worker connections per node (from each node's /connz)."""
    out = {}
    for n in cluster.nodes:
        try:
            conns = n.http("/connz?limit=1024").get("connections") or []
        except OSError:
            conns = []
        out[n.name] = sum(1 for c in conns if str(c.get("name", "")).startswith("jetqueue-worker"))
    return out


@pytest.mark.parametrize("role", ["queue-leader", "state-leader", "follower"])
async def test_a_node_killed_under_load_loses_no_job_and_runs_none_twice(
    role: str,
    cluster: NatsCluster,
    fault_catalog: Catalog,
    workers: Workers,
    connect: Connect,
    runs_file: Path,
) -> None:
    """SIGKILL one node of the R3 cluster mid-run (3,000 jobs, 2 workers), restart it after 4 s.

    ``queue-leader``: the leader of the queue's stream and level consumers;
    ``state-leader``: the leader of JQ_EVENTS and the ``jq-jobs`` bucket;
    ``follower``: a node leading none of these (leaders are moved with
    preferred step-downs so that each case kills what it names).
    Proves: 0 lost jobs, 0 lost state records (every accepted job's state is
    ``completed`` within 45 s of the kill), 0 jobs whose processor ran to
    completion twice; reports the stall (longest gap between completions).
    """
    nc, client = await connect(cluster.urls, fault_catalog, replicas=3)
    js = nc.jetstream()
    since = time.time()
    for wid in ("w1", "w2"):
        workers.spawn(cluster.urls, fault_catalog, wid, JETQUEUE_REPLICAS="3")
    up = await wait_for(lambda: all_online(nc, ["w1", "w2"], since), 40)
    assert up is not None, "workers did not come online within 40 s"
    streams = jetqueue_streams(Q)
    provisioned = await replicas_of(js, streams)
    assert all(provisioned[s] == 3 for s in streams), report("cluster precondition: R3", replicas=provisioned)

    victim, failed_moves = await choose_victim(nc, js, cluster, role, fault_catalog)
    accepted = await enqueue_jobs(client, Q, "cl", N_JOBS, {"sleep_ms": 20})
    started = await wait_for(lambda: ran_at_least(runs_file, N_JOBS // 4), 40, interval=0.05)
    assert started is not None, f"workers ran fewer than {N_JOBS // 4} jobs in 40 s"
    led = await roles_of(js, victim, cluster, fault_catalog.get(Q).priority_levels)
    connected = await asyncio.to_thread(worker_connections, cluster)
    node = cluster.node(victim)
    await asyncio.to_thread(node.kill)
    killed = time.time()
    await asyncio.sleep(KILLED_FOR_S)
    await asyncio.to_thread(node.start)

    async def all_completed() -> bool:
        states = await final_states(js)
        return all(states.get(i) == "completed" for i in accepted)

    recovery = await wait_for(all_completed, RECOVERY_BOUND_S - (time.time() - killed), interval=1.0)
    recovered_after = time.time() - killed
    states = await final_states(js)
    done = {i for i in accepted if states.get(i) == "completed"}
    await wait_for(lambda: records_for(js, Q, dict.fromkeys(done, "completed")), 10, interval=1.0)
    records = await lifecycle_counts(js, Q)
    runs = read_runs(runs_file)
    ends = count(runs, "E")
    text = report(
        f"cluster kill ({role})",
        victim=victim,
        victim_led=led,
        failed_leader_moves=failed_moves,
        worker_connections=connected,
        accepted=len(accepted),
        completed=len(done),
        lost_or_stuck=len(accepted) - len(done),
        no_state_record=sum(1 for i in accepted if i not in states),
        ran_twice=sum(1 for i in accepted if ends[i] > 1),
        never_ran=sum(1 for i in accepted if ends[i] == 0),
        completed_records_missing=sum(1 for i in accepted if records[i] == 0),
        completed_records_duplicate=sum(1 for i in accepted if records[i] > 1),
        recovery_after_kill_s=round(recovered_after, 1) if recovery is not None else f">{RECOVERY_BOUND_S}",
        stall_s=round(longest_gap(r.ts for r in runs if r.kind == "E" and r.ts >= killed - 5), 2),
        workers_alive=sum(1 for w in workers.procs if w.proc.poll() is None),
    )
    assert len(done) == len(accepted), text
    assert not [i for i in accepted if ends[i] > 1], text
