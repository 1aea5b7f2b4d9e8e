"""``python -m jetqueue_monitor [migrate]``: run the monitor (or only migrate its database)."""

from __future__ import annotations

import asyncio
import sys

from pydantic import ValidationError

from jetqueue.errors import JetqueueError
from jetqueue.logs import setup_logging


async def _preflight(settings: object) -> None:
    from jetqueue.connection import connect_and_check

    nc, _ = await connect_and_check(settings.common, name="jetqueue-monitor-preflight")  # type: ignore[attr-defined]
    await nc.close()


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from jetqueue_monitor.app import create_app
    from jetqueue_monitor.db.engine import migrate_blocking
    from jetqueue_monitor.settings import MonitorSettings

    args = sys.argv[1:] if argv is None else argv
    try:
        settings = MonitorSettings()
    except ValidationError as exc:
        print(f"jetqueue-monitor: invalid settings: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        if args[:1] == ["migrate"]:
            migrate_blocking(settings.database_url)
            print("jetqueue-monitor: database schema is current")
            return 0
        app = create_app(settings)
        asyncio.run(_preflight(settings))
    except (JetqueueError, ValueError) as exc:
        print(f"jetqueue-monitor: {exc}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
