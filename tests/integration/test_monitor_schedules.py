"""Recurring jobs: the monitor's Schedules API (SQLite and PostgreSQL) and the same operations in the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient

from jetqueue import names
from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.embedded import EmbeddedNats
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app
from jetqueue_monitor.settings import MonitorSettings
from tests.conftest import eventually
from tests.integration.tokens import ADMIN, OPERATOR, TOKENS, VIEWER

API = "/admin/worker-monitor/schedules"
Q = "report-generate"


@pytest.fixture
async def monitor(
    common: CommonSettings, catalog: Catalog, database_url: str, client: JobClient
) -> AsyncIterator[AsyncTestClient[Any]]:
    for s in catalog.schedules:  # what the producer registers at start
        await client.schedule(s.queue, s.name, s.cron, data=s.data, time_zone=s.time_zone, job_name=s.job_name)
    settings = MonitorSettings(
        common=common, database_url=database_url, tokens=TOKENS, sample_interval_s=0.5, track_check_interval_s=0.5
    )
    async with AsyncTestClient(app=create_app(settings, catalog=catalog)) as http:
        yield http


async def _list(http: AsyncTestClient[Any], headers: dict[str, str] = OPERATOR) -> dict[tuple[str, str], Any]:
    r = await http.get(API, headers=headers)
    assert r.status_code == 200, r.text
    return {(s["queue"], s["name"]): s for s in r.json()}


async def _subjects(nc: NatsClient, catalog: Catalog, queue: str) -> set[str]:
    si = await nc.jetstream().stream_info(catalog.get(queue).stream, subjects_filter=f"jq.{queue}.>")
    return set(si.state.subjects or {})


async def test_the_seed_schedules_with_next_run_and_payload_rules(monitor: AsyncTestClient[Any]) -> None:
    listed = await _list(monitor)
    daily = listed[("analytics-aggregate", "daily-aggregate")]
    assert (daily["cron"], daily["time_zone"], daily["paused"]) == ("0 0 * * *", "UTC", False)
    assert daily["data"] == {"aggregation_type": "daily"} and daily["last_runs"] == []
    next_run = datetime.fromisoformat(daily["next_run_at"])
    assert (next_run.hour, next_run.minute) == (0, 0) and 0 < (next_run - datetime.now(UTC)).total_seconds() <= 86400
    assert datetime.fromisoformat(listed[("cleanup-old-data", "cleanup-old-data")]["next_run_at"]).hour == 2
    # a viewer sees every schedule, without the data its jobs carry
    assert "data" not in (await _list(monitor, VIEWER))[("analytics-aggregate", "daily-aggregate")]


async def test_create_change_pause_resume_trigger_delete(
    monitor: AsyncTestClient[Any], nc: NatsClient, catalog: Catalog
) -> None:
    body = {"cron": "0 9 * * 1", "time_zone": "Asia/Seoul", "data": {"kind": "weekly"}, "reason": "new report"}
    r = await monitor.put(f"{API}/{Q}/weekly", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    s = (await _list(monitor))[(Q, "weekly")]
    next_run = datetime.fromisoformat(s["next_run_at"])
    assert next_run.weekday() == 0 and (next_run.hour, next_run.minute) == (0, 0)  # Monday 09:00 in Seoul
    # change it
    r = await monitor.put(f"{API}/{Q}/weekly", json={"cron": "30 8 * * 1-5", "time_zone": "UTC"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["cron"] == "30 8 * * 1-5"
    assert (await _list(monitor))[(Q, "weekly")]["time_zone"] == "UTC"
    # pause: the broker's schedule goes, the definition stays; no next run
    r = await monitor.post(f"{API}/{Q}/weekly/pause", json={"reason": "holidays"}, headers=OPERATOR)
    assert r.status_code == 200 and r.json()["paused"] is True
    subjects = await _subjects(nc, catalog, Q)
    assert names.cron_subject(Q, "weekly") not in subjects and names.cron_paused_subject(Q, "weekly") in subjects
    paused = (await _list(monitor))[(Q, "weekly")]
    assert paused["paused"] is True and paused["next_run_at"] is None and paused["cron"] == "30 8 * * 1-5"
    # a change keeps it paused
    r = await monitor.put(f"{API}/{Q}/weekly", json={"cron": "0 8 * * 1-5", "data": {"kind": "v2"}}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["paused"] is True
    # run it now, paused or not: a job with its name and data, listed among the schedule's last runs
    r = await monitor.post(f"{API}/{Q}/weekly/trigger", json={}, headers=OPERATOR)
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    assert job_id.startswith("cron-weekly-t")
    detail = (await monitor.get(f"/admin/worker-monitor/jobs/{job_id}", headers=OPERATOR)).json()
    assert (detail["name"], detail["data"]) == ("weekly", {"kind": "v2"})

    async def in_last_runs() -> list[dict[str, Any]] | None:
        return (await _list(monitor))[(Q, "weekly")]["last_runs"] or None

    [run] = await eventually(in_last_runs, timeout=10, what="the triggered job among the last runs")
    assert (run["job_id"], run["status"]) == (job_id, "waiting")
    # resume
    r = await monitor.post(f"{API}/{Q}/weekly/resume", json={}, headers=OPERATOR)
    assert r.status_code == 200 and r.json()["paused"] is False
    assert names.cron_subject(Q, "weekly") in await _subjects(nc, catalog, Q)
    assert (await _list(monitor))[(Q, "weekly")]["next_run_at"]
    # delete
    r = await monitor.post(f"{API}/{Q}/weekly/delete", json={"reason": "done"}, headers=ADMIN)
    assert r.status_code == 200
    assert (Q, "weekly") not in await _list(monitor)
    assert (await monitor.post(f"{API}/{Q}/weekly/pause", json={}, headers=OPERATOR)).status_code == 404
    # every step is in the audit log, on the schedule

    async def audited() -> list[str] | None:
        got = await monitor.get(f"/admin/worker-monitor/audit?entity_id={Q}/weekly&ok=true&limit=20", headers=VIEWER)
        actions = [a["action"] for a in got.json()["items"]]
        return actions if len(actions) == 7 else None

    actions = await eventually(audited, timeout=10, what="schedule actions audited")
    assert actions == [
        "SCHEDULE_DELETE",
        "SCHEDULE_RESUME",
        "SCHEDULE_TRIGGER",
        "SCHEDULE_UPDATE",
        "SCHEDULE_PAUSE",
        "SCHEDULE_UPDATE",
        "SCHEDULE_CREATE",
    ]


async def test_bad_schedules_are_refused(monitor: AsyncTestClient[Any]) -> None:
    for path, body, words in (
        (f"{Q}/bad", {"cron": "not a cron"}, "cron"),
        (f"{Q}/bad", {"cron": "*/5 * * * *", "time_zone": "Mars/Olympus"}, "time zone"),
        (f"{Q}/a.b", {"cron": "*/5 * * * *"}, "name"),
        ("no-such-queue/x", {"cron": "*/5 * * * *"}, "unknown queue"),
    ):
        r = await monitor.put(f"{API}/{path}", json=body, headers=ADMIN)
        assert r.status_code in (400, 404) and words in r.text, (body, r.text)
    assert (Q, "bad") not in await _list(monitor)
    # an operator runs schedules but does not create them
    r = await monitor.put(f"{API}/{Q}/x", json={"cron": "@daily"}, headers=OPERATOR)
    assert r.status_code == 403


async def jq(server: EmbeddedNats, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "jetqueue", *args, "--nats-url", server.url]
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60)


async def test_the_same_operations_in_the_cli(nats_server: EmbeddedNats, nc: NatsClient, client: JobClient) -> None:
    r = await jq(nats_server, "schedules", "set", Q, "nightly", "0 3 * * *", "--data", '{"k": 1}', "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads((await jq(nats_server, "schedules", "list", Q, "--json")).stdout)
    assert [(s["name"], s["cron"], s["state"], s["data"]) for s in listed] == [
        ("nightly", "0 3 * * *", "active", {"k": 1})
    ]
    assert (await jq(nats_server, "schedules", "pause", Q, "nightly", "--reason", "x")).returncode == 0
    assert (await client.get_schedule(Q, "nightly")).paused
    table = await jq(nats_server, "schedules", "list", Q)
    assert "nightly" in table.stdout and "paused" in table.stdout
    r = await jq(nats_server, "schedules", "trigger", Q, "nightly", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["job_id"].startswith("cron-nightly-t")
    assert (await jq(nats_server, "schedules", "resume", Q, "nightly")).returncode == 0
    assert not (await client.get_schedule(Q, "nightly")).paused
    assert (await jq(nats_server, "schedules", "delete", Q, "nightly")).returncode == 0
    r = await jq(nats_server, "schedules", "delete", Q, "nightly")
    assert r.returncode == 3 and "no schedule 'nightly'" in r.stderr
    r = await jq(nats_server, "schedules", "set", Q, "bad", "nope")
    assert r.returncode == 1 and "cron" in r.stderr and "Traceback" not in r.stderr
