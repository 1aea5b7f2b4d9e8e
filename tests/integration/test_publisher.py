"""The publisher under the SDK and the worker: counted PubAcks, one write per turn, outages and refusals."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from jetqueue.connection import connect_and_check
from jetqueue.embedded import EmbeddedNats
from jetqueue.errors import NatsUnavailable
from jetqueue.publisher import Message, Publisher, Wire
from jetqueue.settings import CommonSettings
from tests.conftest import eventually


@pytest.fixture
async def stream(nc: NatsClient) -> str:
    await nc.jetstream().add_stream(StreamConfig(name="PUBTEST", subjects=["pubtest.>"]))
    return "PUBTEST"


async def test_the_fast_path_is_what_runs_with_the_pinned_client(nc: NatsClient, stream: str) -> None:
    """Wire writes into nats-py's buffer; if a nats-py upgrade drops the internals it uses, this fails."""
    assert Wire(nc).fast
    pub = Publisher(nc)
    msgs = [
        Message(f"pubtest.{i}", f"payload {i}".encode(), {"Nats-Msg-Id": f"m{i}", "X-Note": "a\r\nb"})
        for i in range(3000)
    ]
    results = await pub.publish(msgs)
    assert [r.seq for r in results] == list(range(1, 3001)) and not any(r.error or r.duplicate for r in results)
    js = nc.jetstream()
    last = await js.get_msg(stream, seq=3000)
    assert last.data == b"payload 2999" and last.headers is not None
    assert last.headers["Nats-Msg-Id"] == "m2999" and last.headers["X-Note"] == "a  b"  # no header injection
    again = await pub.publish(msgs[:10])
    assert all(r.duplicate for r in again)  # message ids dedupe a publish made twice


async def test_details_off_still_reports_errors(nc: NatsClient, stream: str) -> None:
    pub = Publisher(nc)
    ok = await pub.publish([Message("pubtest.x", b"1")], details=False)
    assert ok[0].error is None
    # an expected-stream header naming another stream: refused, not retried
    bad = await pub.publish([Message("pubtest.y", b"2", {"Nats-Expected-Stream": "OTHER"})], details=False)
    assert bad[0].error and "stream" in bad[0].error.lower()


async def test_an_oversized_message_is_refused_and_the_connection_lives(nc: NatsClient, stream: str) -> None:
    pub = Publisher(nc)
    big = Message("pubtest.big", b"x" * (nc.max_payload - 10), {"Nats-Msg-Id": "big" * 10})  # headers push it over
    small = Message("pubtest.small", b"ok")
    results = await pub.publish([big, small])
    assert results[0].code == 413 and results[1].error is None
    assert nc.is_connected and not nc.is_closed


async def test_no_stream_means_unavailable_after_the_deadline(nc: NatsClient) -> None:
    with pytest.raises(NatsUnavailable, match="did not confirm"):
        await Publisher(nc).publish([Message("nostream.here", b"x")], ack_timeout=0.3, deadline=1.0)


async def test_messages_published_across_a_server_restart_are_all_confirmed(
    nats_server: EmbeddedNats, nc: NatsClient, stream: str
) -> None:
    """PubAcks lost with the server are not waited for forever: the messages go out again once it is back."""
    pub = Publisher(nc)
    msgs = [Message(f"pubtest.r{i}", b"x", {"Nats-Msg-Id": f"r{i}"}) for i in range(2000)]
    task = asyncio.create_task(pub.publish(msgs, ack_timeout=1.0, deadline=30))
    await asyncio.sleep(0)  # the batch is written, the server goes before answering all of it
    await asyncio.to_thread(nats_server.stop)
    await asyncio.sleep(1.5)
    await asyncio.to_thread(nats_server.start)
    results = await asyncio.wait_for(task, 40)
    assert not any(r.error for r in results)
    info = await nc.jetstream().stream_info(stream)
    assert info.state.messages == 2000  # every message stored once (the id dedupes the ones sent twice)
    assert pub.in_flight == 0


async def test_after_a_reconnect_unconfirmed_messages_go_out_again_at_once(
    nats_server: EmbeddedNats, nc: NatsClient, common: CommonSettings
) -> None:
    """The answers to what was sent on a lost connection never come: the publisher does not wait out
    ack_timeout (30 s here) but sends again once reconnected. A worker that waited let its job's lease
    run out before the job's state was written again, and the job ran twice (cluster fault test).

    A responder stands in for a stream whose leader died: it takes the first copy without answering
    and answers the copy sent again."""
    seen: set[bytes] = set()
    responder, _js = await connect_and_check(common, name="responder")

    async def answer(msg: Msg) -> None:
        if msg.data in seen:
            await msg.respond(b'{"stream":"LOST","seq":1}')
        seen.add(msg.data)

    await responder.subscribe("lostleader.x", cb=answer)
    await responder.flush()
    task = asyncio.create_task(Publisher(nc).publish([Message("lostleader.x", b"state")], ack_timeout=30.0))

    async def first_copy_arrived() -> bool:
        return bool(seen)

    await eventually(first_copy_arrived, timeout=5, what="the first copy")
    await asyncio.to_thread(nats_server.stop)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(nats_server.start)
    results = await asyncio.wait_for(task, 15)  # reconnect (a few seconds) + one round, far below 30 s
    assert results[0].error is None and results[0].seq == 1
    await responder.close()


async def test_no_stream_is_never_taken_for_stored_with_details_off(nc: NatsClient) -> None:
    """The worker settles with details off; a "no responders" answer (no stream, or a stream without a
    leader during a cluster election) must be retried, not read as a PubAck: the job would be acked
    with its state and records never stored (found by the cluster fault test)."""
    with pytest.raises(NatsUnavailable, match="did not confirm"):
        await Publisher(nc).publish([Message("nostream.here", b"x")], ack_timeout=0.3, deadline=1.0, details=False)


async def test_a_leaderless_stream_does_not_turn_fast_batches_off(nc: NatsClient) -> None:
    """Batches answered by "no responders" (no leader yet) are published again; only refusals count."""
    pub = Publisher(nc, fast_prefix="gone.")
    for _ in range(4):
        with pytest.raises(NatsUnavailable):
            await pub.publish([Message(f"gone.{i}", b"x") for i in range(10)], ack_timeout=0.3, deadline=0.5)
    assert pub._fast_ok


async def test_states_go_out_as_one_fast_batch(nc: NatsClient) -> None:
    """Many messages to a stream that allows batches: one confirmation for all, every one stored, in order."""
    from dataclasses import replace

    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="FAST", subjects=["fast.>"], allow_msg_ttl=True))
    info = await js.stream_info("FAST")
    await js.update_stream(replace(info.config, allow_batched=True))
    pub = Publisher(nc, fast_prefix="fast.")
    msgs = [Message(f"fast.{i}", f"s{i}".encode(), {"Nats-TTL": "60s"}) for i in range(250)]
    results = await pub.publish(msgs, details=False)
    assert not any(r.error for r in results) and pub._fast_next == 1 and pub._fast_ok
    state = (await js.stream_info("FAST")).state
    assert state.messages == 250  # the closing commit (operation 3) stores nothing
    assert (await js.get_msg("FAST", seq=250)).data == b"s249"


async def test_without_batches_on_the_stream_it_publishes_one_by_one(nc: NatsClient, stream: str) -> None:
    pub = Publisher(nc, fast_prefix="pubtest.")
    results = await pub.publish([Message(f"pubtest.f{i}", b"x") for i in range(20)], deadline=10)
    assert not any(r.error for r in results) and not pub._fast_ok  # learned once, then plain publishes
    assert (await nc.jetstream().stream_info(stream)).state.messages == 20
