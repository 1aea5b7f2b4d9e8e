"""The ``jetqueue`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jetqueue", description="jetqueue: job queue on NATS JetStream")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole stack locally (embedded nats-server, producer, workers)")
    run.add_argument("--demo", action="store_true", help="feed demo jobs: quick, slow, flaky, failing, delayed")
    run.add_argument("--host", default="127.0.0.1", help="producer bind address")
    run.add_argument("--port", type=int, default=8080, help="producer port (default 8080)")
    run.add_argument("--monitor-port", type=int, default=8090, help="monitor port (default 8090)")
    run.add_argument("--nats-url", default=None, help="use this NATS instead of an embedded nats-server")
    run.add_argument("--nats-port", type=int, default=0, help="port of the embedded nats-server (default: free)")
    run.add_argument("--data-dir", default=".jetqueue", help="where the embedded server keeps its data")
    run.add_argument("--queues", default=None, help="comma-separated queues to run workers for (default all)")
    run.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0 = until Ctrl-C)")
    args = parser.parse_args(argv)
    if args.command == "run":
        from jetqueue.localrun import run as run_cmd

        return run_cmd(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
