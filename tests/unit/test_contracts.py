"""Catalog, names, envelope, backoff and cron contracts (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from jetqueue import names
from jetqueue.catalog import Backoff, load_catalog
from jetqueue.client import to_broker_cron
from jetqueue.connection import check_server
from jetqueue.errors import InvalidJob, JetqueueError, ServerTooOld, UnknownQueue
from jetqueue.job import Envelope, JobState, JobStatus, new_job_id, validate_job_id
from jetqueue.settings import CommonSettings

SEED_QUEUES = {
    "ei-update": (1, 20, 3, 1000),
    "proposal-ranking": (2, 10, 2, 500),
    "order-status-update": (2, 15, 3, 1000),
    "notification-send": (3, 30, 5, 2000),
    "audit-log": (5, 10, 1, None),
    "analytics-aggregate": (4, 5, 2, None),
    "data-dtg-sync": (2, 5, 3, 5000),
    "dispatch-optimize": (1, 3, 2, 3000),
    "report-generate": (4, 2, 3, 5000),
    "email-send": (3, 20, 5, 2000),
    "cleanup-old-data": (5, 1, 2, 5000),
}


def test_seed_catalog_has_the_eleven_queues_with_their_settings() -> None:
    cat = load_catalog()
    assert set(cat.names) == set(SEED_QUEUES)
    for name, (prio, conc, attempts, delay) in SEED_QUEUES.items():
        q = cat.get(name)
        assert (q.priority, q.concurrency, q.attempts) == (prio, conc, attempts), name
        if delay is not None:
            assert q.backoff.delay_ms == delay, name
        assert q.display_name  # Korean label from the seed
    assert cat.get("dispatch-optimize").timeout_ms == 30000
    assert cat.get("report-generate").timeout_ms == 60000
    assert cat.get("ei-update").display_name == "EI 데이터 업데이트"
    assert {(s.queue, s.cron) for s in cat.schedules} == {
        ("analytics-aggregate", "0 0 * * *"),
        ("cleanup-old-data", "0 2 * * *"),
    }


def test_unknown_queue_is_a_clear_error() -> None:
    with pytest.raises(UnknownQueue, match="unknown queue 'nope'"):
        load_catalog().get("nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("queues: [{name: Bad_Name}]", "lower-case"),
        ("queues: [{name: a}, {name: a}]", "listed twice"),
        ("queues: [{name: a, attempts: 0}]", "attempts"),
        ("queues: [{name: a}]\nschedules: [{queue: b, name: n, cron: '* * * * *'}]", "unknown queue"),
        ("queues: [{name: a, colour: red}]", "colour"),
        (": not yaml : [", "invalid catalog"),
    ],
)
def test_invalid_catalog_files_are_rejected_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    with pytest.raises(JetqueueError, match=message):
        load_catalog(path)


def test_missing_catalog_file() -> None:
    with pytest.raises(JetqueueError, match="catalog file not found"):
        load_catalog("/nonexistent/catalog.yaml")


def test_backoff_delays() -> None:
    exp = Backoff(type="exponential", delay_ms=1000)
    assert [exp.delay_for(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]  # seed: retry after 1s, 2s, 4s
    assert [Backoff(type="fixed", delay_ms=500).delay_for(n) for n in (1, 2, 3)] == [0.5, 0.5, 0.5]


def test_backoff_is_capped_so_many_attempts_never_overflow_a_date() -> None:
    """Past the cap the delay stops doubling: attempt 60 of a 1 s backoff waits 6 h, not 18 billion years
    (which raised ValueError when the retry's run time was turned into a date)."""
    from jetqueue.catalog import DEFAULT_MAX_BACKOFF_MS
    from jetqueue.job import now_ms, rfc3339

    exp = Backoff(type="exponential", delay_ms=1000)
    assert exp.delay_for(14) == 8192.0  # still doubling below the cap
    for retry in (40, 60, 100, 10_000):
        delay = exp.delay_for(retry)
        assert delay == DEFAULT_MAX_BACKOFF_MS / 1000
        assert rfc3339(now_ms() + int(delay * 1000)).startswith(str(datetime.now(UTC).year))
    assert Backoff(delay_ms=1000, max_delay_ms=10_000).delay_for(9) == 10.0
    # a base delay above the cap is kept as the floor (the cap never shortens the first wait)
    assert Backoff(delay_ms=60_000, max_delay_ms=1000).delay_for(1) == 60.0


def test_backoff_jitter_takes_up_to_its_share_off_the_delay() -> None:
    b = Backoff(delay_ms=1000, jitter=0.5)
    assert b.delay_for(3, rand=0.0) == 4.0 and b.delay_for(3, rand=1.0) == 2.0
    draws = {b.delay_for(3) for _ in range(50)}
    assert len(draws) > 1 and all(2.0 <= d <= 4.0 for d in draws)
    with pytest.raises(ValidationError):
        Backoff(delay_ms=1000, jitter=1.5)


def test_priority_maps_to_levels() -> None:
    q = load_catalog().get("ei-update")
    assert q.priority_levels == 3
    assert [q.level_for(p) for p in (None, 1, 2, 3, 50)] == [1, 0, 1, 2, 2]


def test_names_are_valid_nats_tokens_and_round_trip() -> None:
    assert names.job_stream("ei-update") == "JQ_EI_UPDATE"
    subject = names.job_subject("ei-update", 0, "ei-fleet-1")
    assert subject == "jq.ei-update.job.p0.ei-fleet-1"
    assert names.parse_job_subject(subject) == ("ei-update", "job", 0, "ei-fleet-1")
    assert names.parse_job_subject(names.cronjob_subject("x", 2, "n")) == ("x", "cronjob", 2, "n")
    with pytest.raises(ValueError):
        names.parse_job_subject("jq.x.sched.id")


@pytest.mark.parametrize("bad", ["a.b", "a b", "a*", "a>", "", "x" * 129])
def test_job_ids_that_cannot_be_subject_tokens_are_refused(bad: str) -> None:
    with pytest.raises(InvalidJob):
        validate_job_id(bad)


def test_generated_job_ids_are_unique_and_time_ordered() -> None:
    ids = [new_job_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(names.is_valid_token(i) for i in ids)
    assert ids[0][:13] <= ids[-1][:13]


def test_envelope_round_trip_and_defaults() -> None:
    spec = load_catalog().get("email-send")
    env = Envelope(
        id="j1",
        queue="email-send",
        name="welcome",
        data={"to": "x"},
        attempts=5,
        backoff=spec.backoff,
        timeout_ms=None,
        user_id="u",
    )
    back = Envelope.from_bytes(env.to_bytes(), spec)
    assert (back.id, back.name, back.data, back.attempts, back.attempt, back.user_id) == (
        "j1",
        "welcome",
        {"to": "x"},
        5,
        1,
        "u",
    )
    # a non-Python publisher may send just a name and data; the queue's defaults fill in
    minimal = Envelope.from_bytes(b'{"name": "n", "data": [1]}', spec, job_id="from-subject")
    assert (minimal.id, minimal.attempts, minimal.backoff) == ("from-subject", spec.attempts, spec.backoff)
    # a backoff's cap and jitter travel with the job (a retry must honour the queue's settings)
    capped = Backoff(delay_ms=500, max_delay_ms=60_000, jitter=0.25)
    env.backoff = capped
    assert Envelope.from_bytes(env.to_bytes(), spec).backoff == capped


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"v": 2, "name": "x"}', "version"),
        (b'{"data": 1}', "name"),
        (b'{"name": "x", "opts": {"attempts": "many"}}', "bad job options"),
        (b'{"name": "x", "attempt": 0}', ">= 1"),
    ],
)
def test_malformed_envelopes_raise_invalid_job(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        Envelope.from_bytes(raw, load_catalog().get("email-send"), job_id="j")


def test_job_state_round_trip() -> None:
    st = JobState(id="j", queue="q", state=JobStatus.FAILED, errors=["e1"], result={"a": 1})
    assert JobState.from_bytes(st.to_bytes()) == st


@pytest.mark.parametrize(
    ("expr", "broker"),
    [
        ("0 0 * * *", "0 0 0 * * *"),
        ("*/5 * * * * *", "*/5 * * * * *"),
        ("@every 5m", "@every 5m"),
        ("  0   2 * * * ", "0 0 2 * * *"),
    ],
)
def test_cron_expressions_become_six_field(expr: str, broker: str) -> None:
    assert to_broker_cron(expr) == broker


@pytest.mark.parametrize("expr", ["", "* *", "1 2 3 4 5 6 7"])
def test_bad_cron_expressions(expr: str) -> None:
    with pytest.raises(InvalidJob):
        to_broker_cron(expr)


class _StubJS:
    def __init__(self, level: int | None) -> None:
        self.level = level

    async def account_info(self) -> Any:
        return SimpleNamespace(api=SimpleNamespace(level=self.level) if self.level is not None else None)


@pytest.mark.parametrize("level", [None, 1, 2, 3])
async def test_servers_before_2_14_are_refused(level: int | None) -> None:
    with pytest.raises(ServerTooOld, match=r"nats-server >= 2\.14"):
        await check_server(_StubJS(level))  # type: ignore[arg-type]


async def test_current_servers_are_accepted() -> None:
    assert await check_server(_StubJS(5)) == 5  # type: ignore[arg-type]


def test_nats_credentials_are_folded_into_urls() -> None:
    s = CommonSettings(nats_url="nats://a:4222, b:4223", nats_user="u@x", nats_password="p/w")
    assert s.servers() == ["nats://u%40x:p%2Fw@a:4222", "nats://u%40x:p%2Fw@b:4223"]
    assert CommonSettings(nats_url="nats://a:1").servers() == ["nats://a:1"]
