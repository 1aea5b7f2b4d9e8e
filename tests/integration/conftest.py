"""Fixtures shared by the monitor's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from jetqueue.catalog import Catalog
from jetqueue_monitor.db.engine import make_engine, migrate
from jetqueue_monitor.store import Store


@pytest.fixture
async def store(database_url: str, catalog: Catalog) -> AsyncIterator[Store]:
    """A migrated monitor store on a fresh SQLite or PostgreSQL database (``database_url``)."""
    engine = make_engine(database_url)
    await migrate(engine)
    yield Store(engine, catalog)
    await engine.dispose()
