"""``python -m jetqueue_producer``: run the producer HTTP API."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from jetqueue.errors import JetqueueError
from jetqueue.logs import setup_logging

if TYPE_CHECKING:
    from jetqueue.catalog import Catalog
    from jetqueue_producer.settings import ProducerSettings


async def _preflight(settings: ProducerSettings, catalog: Catalog) -> None:
    """Connect, check the server version and provision once, so start-up errors are one clear line."""
    from jetqueue.connection import connect_and_check

    nc, _js = await connect_and_check(settings.common, name="jetqueue-producer-preflight", catalog=catalog)
    await nc.close()


def main() -> int:
    import asyncio

    import uvicorn

    from jetqueue.catalog import load_catalog
    from jetqueue_producer.app import create_app
    from jetqueue_producer.auth import AuthConfigError
    from jetqueue_producer.settings import ProducerSettings

    try:
        settings = ProducerSettings()
        catalog = load_catalog(settings.common.catalog)
        app = create_app(settings, catalog=catalog)
    except (ValidationError, JetqueueError, AuthConfigError) as exc:
        print(f"jetqueue-producer: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_preflight(settings, catalog))
    except JetqueueError as exc:
        print(f"jetqueue-producer: {exc}", file=sys.stderr)
        return 1
    setup_logging(settings.log_level)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
