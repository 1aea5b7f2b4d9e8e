"""Engine, sessions and schema migrations (Alembic, run programmatically at start)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from jetqueue import codec

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(
    url: str,
    *,
    echo: bool = False,
    connect_timeout_s: float | None = None,
    statement_timeout_s: float | None = None,
    pool_timeout_s: float | None = None,
) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so ingest and API can share it.

    Args:
        url: SQLAlchemy async URL.
        echo: log every statement.
        connect_timeout_s: PostgreSQL only: give up connecting after this (asyncpg waits 60 s).
        statement_timeout_s: PostgreSQL only: give up on a statement after this (client side, so it
            also ends a statement whose server went silent). None for migrations, which may run long.
        pool_timeout_s: PostgreSQL only: give up waiting for a free pooled connection after this.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, json_serializer=_json)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    connect_args: dict[str, float] = {}
    if connect_timeout_s is not None:
        connect_args["timeout"] = connect_timeout_s
    if statement_timeout_s is not None:
        connect_args["command_timeout"] = statement_timeout_s
    return create_async_engine(
        url,
        echo=echo,
        json_serializer=_json,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=pool_timeout_s if pool_timeout_s is not None else 30.0,
        connect_args=connect_args,
    )


def _json(value: object) -> str:
    """JSON columns through msgspec: every job row carries its data (several times faster than the stdlib)."""
    return codec.encode(value).decode()


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be reached or did not answer in time.

    Such errors come in many shapes: SQLAlchemy's operational and pool errors,
    a connection it invalidated, asyncpg's connection errors, and plain
    ``OSError`` / ``TimeoutError`` from asyncpg's connect and its statement
    timeout. Callers that also talk to NATS check its errors first (a NATS
    timeout is an ``OSError`` as well).
    """
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error,
        exc.OperationalError
        | exc.InterfaceError
        | exc.DisconnectionError
        | exc.TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | OSError,
    )


def sessions(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent)."""

    def run(conn: Connection) -> None:
        command.upgrade(_alembic_config(conn), "head")

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def migrate_url(url: str) -> None:
    """Migrate the database at ``url`` on an engine of its own, without statement timeouts."""
    engine = make_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def migrate_blocking(url: str) -> None:
    """``python -m jetqueue_monitor migrate``: for an init container or a deploy hook."""
    asyncio.run(migrate_url(url))
