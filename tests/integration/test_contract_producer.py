"""The producer API against its own OpenAPI document: schemathesis, positive and negative data, every check.

The producer runs under uvicorn in a thread of its own against a real
nats-server and is called with an admin token, so every operation can succeed
and every refusal the document lists is reachable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from schemathesis import Case, GenerationMode
from schemathesis.core.parameters import ParameterLocation

from jetqueue.catalog import Catalog
from jetqueue.settings import CommonSettings
from jetqueue_producer.app import create_app
from jetqueue_producer.openapi import model_schema
from jetqueue_producer.schemas import BidEvaluationIn, BulkIn, EIUpdateIn, JobIn, ScheduleIn
from jetqueue_producer.settings import ProducerSettings
from tests.servers import serve_in_thread

ADMIN_TOKEN = "contract-admin-token"

# Bounded: a few examples per operation and mode, no shrinking (a failure is
# reported as found), and no example database (each run starts from the same place).
CONFIG = f"""
[generation]
mode = "all"
max-examples = 10
no-shrink = true
database = "none"

[phases]
examples.enabled = true
coverage.enabled = true
fuzzing.enabled = true
stateful.enabled = false

[checks]
enabled = true

# The schema's own bearer scheme: schemathesis then treats the token as real, and its ignored_auth
# check probes each operation without it and with a wrong one.
[auth.openapi.bearer]
bearer = "{ADMIN_TOKEN}"
"""


def make_app(common: CommonSettings, catalog: Catalog | None = None) -> Litestar:
    settings = ProducerSettings(common=common, tokens=f"contract:admin:{ADMIN_TOKEN}", register_schedules=True)
    return create_app(settings, catalog=catalog)


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, built without starting it (no NATS)."""
    return make_app(CommonSettings(nats_url="nats://127.0.0.1:1")).openapi_schema.to_schema()


# Loaded at import: schemathesis' fixture-based loader does not run on this pytest.
schema = schemathesis.openapi.from_dict(_document(), config=schemathesis.Config.from_str(CONFIG))


# ------------------------------------------------- rules no JSON Schema can state
# Each hook below touches only data generated as valid, and only where the rule
# it keeps depends on the clock or compares two values; everything else reaches
# the producer as generated.


def _body_is_positive(case: Case) -> bool:
    meta = case.meta
    return (
        meta is not None
        and meta.generation.mode is GenerationMode.POSITIVE
        and not meta.is_negative_at(ParameterLocation.BODY)
    )


def _within_a_year(job: dict[str, Any]) -> None:
    """run_at may be at most 365 days ahead of *now*: a window a schema cannot fix."""
    run_at = job.get("run_at")
    if isinstance(run_at, str):
        when = datetime.fromisoformat(run_at.upper().replace("Z", "+00:00"))
        if when > datetime.now(UTC) + timedelta(days=364):
            job["run_at"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat()


def _cron_the_broker_takes(cron: str) -> str:
    """A range runs low to high and a day must exist in some month: the two rules CRON_PATTERN leaves out."""
    cron = re.sub(r"(\d+)-(\d+)", lambda m: "-".join(sorted(m.groups(), key=int)), cron)
    fields = cron.split(" ")
    if len(fields) >= 5 and re.search(r"\b3[01]\b", fields[-3]):
        fields[-2] = "*"  # day 30 or 31 exists in some month
    return " ".join(fields)


@schema.hook
def map_case(_ctx: Any, case: Case) -> Case:
    if not _body_is_positive(case) or not isinstance(case.body, dict):
        return case
    path, method = case.operation.path, case.method.upper()
    if (method, path) == ("POST", "/jobs/{queue_or_job_id}"):
        _within_a_year(case.body)
        # Idempotency-Key and job_id must agree when both are given (a header and a body field)
        headers = case.headers or {}
        if "job_id" in case.body and case.body["job_id"] and "Idempotency-Key" in headers:
            headers["Idempotency-Key"] = case.body["job_id"]
    elif (method, path) == ("POST", "/jobs/{queue}/bulk"):
        for job in case.body.get("jobs", []):
            if isinstance(job, dict):
                _within_a_year(job)
    elif (method, path) == ("PUT", "/schedules/{queue}/{name}") and isinstance(case.body.get("cron"), str):
        case.body["cron"] = _cron_the_broker_takes(case.body["cron"])
    return case


# ------------------------------------------------------------- the producer


@pytest.fixture
def producer_url(common: CommonSettings, catalog: Catalog) -> Iterator[str]:
    yield from serve_in_thread(make_app(common, catalog))


def test_the_served_document_is_the_one_tested(producer_url: str) -> None:
    served = httpx.get(f"{producer_url}/schema/openapi.json", timeout=10)
    assert served.status_code == 200 and served.json() == _document()


@pytest.mark.parametrize("model", [JobIn, BulkIn, ScheduleIn, EIUpdateIn, BidEvaluationIn])
def test_request_bodies_are_published_as_pydantic_validates_them(model: Any) -> None:
    components = _document()["components"]["schemas"]
    assert components[model.__name__] == model_schema(model).to_schema()
    # what Litestar's own generator dropped, and the contract needs
    assert components["JobIn"]["additionalProperties"] is False
    assert components["JobIn"]["properties"]["delay_ms"]["anyOf"][0]["minimum"] == 0
    assert components["JobIn"]["properties"]["job_id"]["anyOf"][0]["pattern"]


@pytest.mark.slow
@schema.parametrize()
# One producer (and nats-server) per operation, shared by its generated cases on purpose.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_producer_keeps_its_contract(case: Case, producer_url: str) -> None:
    case.call_and_validate(base_url=producer_url)
