"""The jetqueue command against a real nats-server: output, --json, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from nats.aio.client import Client as NatsClient

from jetqueue.client import JobClient
from jetqueue.embedded import EmbeddedNats


async def jq(server: EmbeddedNats, *args: str) -> subprocess.CompletedProcess[str]:
    return await run(sys.executable, "-m", "jetqueue", *args, "--nats-url", server.url)


async def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, list(cmd), capture_output=True, text=True, timeout=60)


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def test_enqueue_status_queues(nats_server: EmbeddedNats, nc: NatsClient) -> None:
    out = as_json(
        await jq(
            nats_server, "enqueue", "email-send", "welcome", "--data", '{"to": "a"}', "--job-id", "cli-1", "--json"
        )
    )
    assert out == {"job_id": "cli-1", "queue": "email-send", "state": "waiting", "duplicate": False}
    assert as_json(await jq(nats_server, "enqueue", "email-send", "welcome", "--job-id", "cli-1", "--json"))[
        "duplicate"
    ]
    st = as_json(await jq(nats_server, "status", "cli-1", "--json"))
    assert st["state"] == "waiting" and st["data"] == {"to": "a"}
    rows = {r["queue"]: r for r in as_json(await jq(nats_server, "queues", "--json"))}
    assert len(rows) == 11 and rows["email-send"]["waiting"] == 1 and rows["email-send"]["label"] == "이메일 발송"
    table = await jq(nats_server, "queues")
    assert table.returncode == 0 and "QUEUE" in table.stdout and "email-send" in table.stdout


async def test_errors_have_messages_and_exit_codes(nats_server: EmbeddedNats, nc: NatsClient) -> None:
    r = await jq(nats_server, "status", "nope-1")
    assert r.returncode == 3 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = await jq(nats_server, "enqueue", "no-queue", "x")
    assert r.returncode == 3 and "unknown queue 'no-queue'" in r.stderr
    r = await jq(nats_server, "enqueue", "email-send", "x", "--data", "{bad")
    assert r.returncode == 2 and "--data is not JSON" in r.stderr
    r = await jq(nats_server, "pause", "email-send", "--until", "2026-01-01T00:00:00")
    assert r.returncode == 2 and "time zone" in r.stderr
    r = await run(sys.executable, "-m", "jetqueue", "queues", "--nats-url", "nats://127.0.0.1:1")
    assert r.returncode == 1 and "cannot connect to NATS" in r.stderr and "Traceback" not in r.stderr


async def test_pause_resume_drain_with_confirmation(nats_server: EmbeddedNats, client: JobClient) -> None:
    for _ in range(3):
        await client.enqueue("email-send", "x", {})
    assert as_json(await jq(nats_server, "pause", "email-send", "--json", "--reason", "deploy"))["paused"] is True
    rows = {r["queue"]: r for r in as_json(await jq(nats_server, "queues", "--json"))}
    assert rows["email-send"]["paused"] is True
    # no terminal: refuses without --yes
    r = await jq(nats_server, "drain", "email-send")
    assert r.returncode == 2 and "--yes" in r.stderr
    out = as_json(await jq(nats_server, "drain", "email-send", "--yes", "--json"))
    assert out["removed"] == 3 and out["was_paused"] is True
    assert as_json(await jq(nats_server, "resume", "email-send", "--json"))["paused"] is False


async def test_dlq_list_and_replay(nats_server: EmbeddedNats, nc: NatsClient) -> None:
    from jetqueue import names
    from jetqueue.control import H_ERROR, H_REASON

    js = nc.jetstream()
    body = b'{"v":1,"id":"dead-1","name":"x","data":{"k":1},"attempt":2}'
    await js.publish(
        names.dlq_subject("email-send", "dead-1"), body, headers={H_REASON: "failed", H_ERROR: "RuntimeError: boom"}
    )
    rows = as_json(await jq(nats_server, "dlq", "list", "email-send", "--json"))
    assert [(r["job_id"], r["reason"], r["error"]) for r in rows] == [("dead-1", "failed", "RuntimeError: boom")]
    assert as_json(await jq(nats_server, "dlq", "replay", "dead-1", "--json"))["state"] == "waiting"
    assert as_json(await jq(nats_server, "dlq", "list", "--json")) == []
    assert as_json(await jq(nats_server, "status", "dead-1", "--json"))["state"] == "waiting"


def _json_objects(text: str) -> list[Any]:
    """Every JSON value printed one after another (the command's output, then the console exporter's spans)."""
    dec, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = dec.raw_decode(text, i)
        out.append(obj)
    return out


async def test_a_traced_command_exports_its_control_span(nats_server: EmbeddedNats, nc: NatsClient) -> None:
    cmd = [sys.executable, "-m", "jetqueue", "pause", "email-send", "--json", "--reason", "deploy"]
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "jetqueue-cli"}
    r = await asyncio.to_thread(
        subprocess.run, [*cmd, "--nats-url", nats_server.url], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stderr
    result, *spans = _json_objects(r.stdout)
    assert result["paused"] is True
    by_name = {s["name"]: s for s in spans}
    command, action = by_name["jetqueue pause"], by_name["control queue_pause"]
    assert action["parent_id"] == command["context"]["span_id"]
    assert action["context"]["trace_id"] == command["context"]["trace_id"]
    assert action["attributes"]["jetqueue.source"] == "cli" and action["attributes"]["jetqueue.result"] == "ok"
    # off by default: no exporter variables, no spans
    plain = await jq(nats_server, "resume", "email-send", "--json")
    assert len(_json_objects(plain.stdout)) == 1
