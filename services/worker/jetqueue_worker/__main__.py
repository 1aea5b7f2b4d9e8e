"""``python -m jetqueue_worker --queue <name>``: run the worker of one queue."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError

from jetqueue.errors import JetqueueError
from jetqueue.logs import setup_logging


def run(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run on uvloop when it is installed and not refused: about a tenth less CPU per job."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise JetqueueError("JETQUEUE_WORKER_LOOP=uvloop but uvloop is not installed") from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jetqueue-worker", description="Run the jetqueue worker of one queue.")
    parser.add_argument("--queue", help="queue to serve (or JETQUEUE_WORKER_QUEUE)")
    parser.add_argument("--concurrency", type=int, help="jobs at once (default: the catalog's)")
    parser.add_argument("--metrics-port", type=int, help="serve /metrics on this port")
    args = parser.parse_args(argv)

    from jetqueue_worker.app import create_app
    from jetqueue_worker.settings import WorkerSettings

    overrides = {
        k: v
        for k, v in {"queue": args.queue, "concurrency": args.concurrency, "metrics_port": args.metrics_port}.items()
        if v is not None
    }
    try:
        settings = WorkerSettings(**overrides)
    except ValidationError as exc:
        print(f"jetqueue-worker: invalid settings: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    if not settings.queue:
        print("jetqueue-worker: no queue given (--queue or JETQUEUE_WORKER_QUEUE)", file=sys.stderr)
        return 2
    try:
        app = create_app(settings)
    except JetqueueError as exc:
        print(f"jetqueue-worker: {exc}", file=sys.stderr)
        return 1
    state = app.jq  # type: ignore[attr-defined]
    try:
        run(app.run(), settings.loop)
    except JetqueueError as exc:
        print(f"jetqueue-worker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception:
        if not state["exit_code"]:
            raise
        # FastStream's own shutdown fails on the dead connection; the reason was logged already.
    if state["exit_code"]:
        print(f"jetqueue-worker: {state['reason']}; exiting with {state['exit_code']}", file=sys.stderr)
    return int(state["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
