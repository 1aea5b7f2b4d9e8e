"""The monitor API against its own OpenAPI document: schemathesis, positive and negative data, every check.

The monitor runs under uvicorn in a thread of its own (SQLite store, a real
nats-server), called with an admin token, so every operation can succeed and
every refusal the schema documents is reachable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case

from jetqueue.catalog import load_catalog
from jetqueue.embedded import EmbeddedNats
from jetqueue.settings import CommonSettings
from jetqueue_monitor.app import create_app
from jetqueue_monitor.settings import MonitorSettings
from tests.servers import serve_in_thread

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "contract-admin-token"

# The whole run is bounded: a few examples per operation and mode, no shrinking (a failure is
# reported as found), no example database (each run starts from the same place), and the event
# stream read up to its first event (it never ends by itself).
CONFIG = f"""
max-stream-events = 1

[generation]
mode = "all"
max-examples = 30
no-shrink = true
database = "none"

[phases]
examples.enabled = true
coverage.enabled = true
fuzzing.enabled = true
stateful.enabled = false

[checks]
enabled = true

[headers]
Authorization = "Bearer {ADMIN_TOKEN}"

# A pause `until` in the past is refused with 400: JSON Schema has no way to say "in the future",
# so a valid-looking past time is the one schema-valid input this operation may refuse.
[[operations]]
include-path = "/admin/worker-monitor/queues/{{name}}/pause"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

# Nor "a cron expression and a time zone the broker takes": the broker checks them, and refuses with 400.
[[operations]]
include-path = "/admin/worker-monitor/schedules/{{queue}}/{{name}}"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]
"""


@pytest.fixture(scope="module")
def monitor_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("contract")
    nats = EmbeddedNats(store_dir=str(tmp / "nats"))
    nats.start()
    settings = MonitorSettings(
        common=CommonSettings(nats_url=nats.url),
        database_url=f"sqlite+aiosqlite:///{tmp / 'monitor.db'}",
        tokens=f"contract:admin:{ADMIN_TOKEN}",
        sample_interval_s=1.0,
    )
    try:
        yield from serve_in_thread(create_app(settings, catalog=load_catalog()))
    finally:
        nats.cleanup()


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, built without starting it (no NATS, no database)."""
    settings = MonitorSettings(
        common=CommonSettings(nats_url="nats://127.0.0.1:1"), database_url="sqlite+aiosqlite:///:memory:"
    )
    return create_app(settings, catalog=load_catalog()).openapi_schema.to_schema()


# Loaded at import: schemathesis' fixture-based loader (from_fixture) fails on pytest 9, where the node
# attribute it renames tests through is gone.
schema = schemathesis.openapi.from_dict(_document(), config=schemathesis.Config.from_str(CONFIG))


def test_the_served_document_is_the_one_tested(monitor_url: str) -> None:
    served = httpx.get(f"{monitor_url}/schema/openapi.json", timeout=10)
    assert served.status_code == 200 and served.json() == _document()


@schema.parametrize()
def test_the_monitor_keeps_its_contract(case: Case, monitor_url: str) -> None:
    case.call_and_validate(base_url=monitor_url)
