"""A pgqueuer worker process, started the way ``pgq run <factory> --batch-size N`` starts one.

``pgq run`` itself cannot start with the pinned typer (0.29): its ``--log-level`` option hands
``setup_fancy_logger`` a str, which fails on ``level.name`` even for the default. This calls what
the command calls after parsing: the logger set-up, then ``pgqueuer.run`` (the documented
programmatic entry) on the CLI's event loop choice (uvloop when importable).
"""

from __future__ import annotations

import sys

from pgqueuer import run
from pgqueuer.adapters.cli.cli import asyncio_run
from pgqueuer.core.logconfig import LogLevel, setup_fancy_logger


def main() -> int:
    batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    setup_fancy_logger(LogLevel.WARNING)
    asyncio_run(run("tests.bench.peers:pgq_factory", batch_size=batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
