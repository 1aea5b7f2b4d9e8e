"""The ``jetqueue`` command: run the local stack, and operate queues straight on NATS.

Exit codes: 0 success, 1 failure (NATS unreachable, refused), 2 usage error,
3 not found, 4 conflict (e.g. a job already finished), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from jetqueue import telemetry
from jetqueue.errors import ConflictError, JetqueueError, JobNotFound, ScheduleNotFound, UnknownQueue

EXIT_FAIL, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT = 1, 2, 3, 4


def _out(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    print(json.dumps(data, ensure_ascii=False, default=str, indent=None) if args.json else text())


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in cols)]
    lines += [
        "  ".join(str(r.get(c, "") if r.get(c) is not None else "-").ljust(widths[c]) for c in cols) for r in rows
    ]
    return "\n".join(lines)


async def _session(args: argparse.Namespace) -> tuple[Any, Any]:
    from jetqueue.catalog import load_catalog
    from jetqueue.connection import connect_and_check
    from jetqueue.settings import CommonSettings

    settings = CommonSettings(**({"nats_url": args.nats_url} if args.nats_url else {}), provision=False)
    catalog = load_catalog(os.environ.get("JETQUEUE_CATALOG"))
    nc, _js = await connect_and_check(settings, name="jetqueue-cli")
    return nc, catalog


async def cmd_enqueue(args: argparse.Namespace) -> int:
    from jetqueue.client import JobClient

    try:
        data = json.loads(args.data) if args.data else None
    except ValueError as exc:
        print(f"jetqueue: --data is not JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    nc, catalog = await _session(args)
    try:
        r = await JobClient(nc, catalog).enqueue(
            args.queue, args.name, data, job_id=args.job_id, priority=args.priority, delay_ms=args.delay_ms
        )
    finally:
        await nc.close()
    _out(
        args,
        {"job_id": r.job_id, "queue": r.queue, "state": r.state.value, "duplicate": r.duplicate},
        lambda: f"{r.job_id}  {r.state.value}" + ("  (duplicate: already enqueued)" if r.duplicate else ""),
    )
    return 0


def _bar(progress: float | None, width: int = 30) -> str:
    p = max(0.0, min(100.0, progress or 0.0))
    filled = int(width * p / 100)
    return "[" + "#" * filled + "." * (width - filled) + f"] {p:5.1f}%"


async def cmd_status(args: argparse.Namespace) -> int:
    from jetqueue.client import JobClient
    from jetqueue.job import TERMINAL_STATUSES

    nc, catalog = await _session(args)
    client = JobClient(nc, catalog)
    try:
        st = await client.status(args.job_id, args.queue)
        if args.watch and not args.json:
            while st.state not in TERMINAL_STATUSES:
                sys.stdout.write(f"\r{st.id}  {st.state.value:<10} {_bar(st.progress)}  attempt {st.attempt}")
                sys.stdout.flush()
                await asyncio.sleep(0.5)
                st = await client.status(args.job_id, st.queue)
            sys.stdout.write("\n")
    finally:
        await nc.close()
    d = st.to_dict()
    _out(args, d, lambda: "\n".join(f"{k:12} {v}" for k, v in d.items() if v not in (None, [], "") and k != "v"))
    return 0 if st.state.value != "failed" or not args.watch else EXIT_FAIL


async def cmd_queues(args: argparse.Namespace) -> int:
    from jetqueue.control import queue_info

    nc, catalog = await _session(args)
    rows = []
    try:
        js = nc.jetstream()
        for spec in catalog.queues:
            i = await queue_info(js, spec)
            rows.append(
                {
                    "queue": spec.name,
                    "label": spec.display_name,
                    "paused": i.paused,
                    "waiting": i.waiting,
                    "active": i.active,
                    "delayed": i.scheduled,
                    "failed": i.dead_lettered,
                    "recurring": i.recurring,
                    "pause_until": i.pause_until,
                }
            )
    finally:
        await nc.close()
    _out(args, rows, lambda: _table(rows, ["queue", "label", "paused", "waiting", "active", "delayed", "failed"]))
    return 0


def _actor(args: argparse.Namespace) -> str:
    return args.actor or f"cli:{getpass.getuser()}"


async def _control(args: argparse.Namespace, op: Callable[[Any], Awaitable[dict[str, Any]]]) -> int:
    from jetqueue.control import Controller

    nc, catalog = await _session(args)
    try:
        res = await op(Controller(nc, catalog, source="cli"))
    finally:
        await nc.close()
    _out(args, res, lambda: "  ".join(f"{k}={v}" for k, v in res.items() if k != "job_ids"))
    return 0


async def cmd_pause(args: argparse.Namespace) -> int:
    until = None
    if args.until:
        try:
            until = datetime.fromisoformat(args.until.replace("Z", "+00:00"))
        except ValueError:
            print(f"jetqueue: --until is not an ISO time: {args.until!r}", file=sys.stderr)
            return EXIT_USAGE
        if until.tzinfo is None:
            print("jetqueue: --until needs a time zone, e.g. 2026-12-01T09:00:00Z", file=sys.stderr)
            return EXIT_USAGE
    return await _control(args, lambda c: c.pause(args.queue, actor=_actor(args), until=until, reason=args.reason))


async def cmd_resume(args: argparse.Namespace) -> int:
    return await _control(args, lambda c: c.resume(args.queue, actor=_actor(args), reason=args.reason))


async def cmd_retry_failed(args: argparse.Namespace) -> int:
    return await _control(args, lambda c: c.retry_failed(args.queue, actor=_actor(args), reason=args.reason))


async def cmd_drain(args: argparse.Namespace) -> int:
    from jetqueue.control import queue_info

    nc, catalog = await _session(args)
    try:
        info = await queue_info(nc.jetstream(), catalog.get(args.queue))
    finally:
        await nc.close()
    if not args.yes:
        if not sys.stdin.isatty():
            print("jetqueue: drain needs confirmation: run it in a terminal or pass --yes", file=sys.stderr)
            return EXIT_USAGE
        print(f"This removes {info.waiting} waiting job(s) of {args.queue} and cannot be undone.")
        if (await asyncio.to_thread(input, "Type DRAIN to continue: ")).strip() != "DRAIN":
            print("Not drained.")
            return EXIT_FAIL
    return await _control(
        args,
        lambda c: c.drain(args.queue, actor=_actor(args), reason=args.reason, include_delayed=args.include_delayed),
    )


async def cmd_dlq(args: argparse.Namespace) -> int:
    from jetqueue.control import H_ERROR, H_FAILED_AT, H_REASON, dead_letters

    if args.dlq_command == "replay":
        if args.job_id:
            return await _control(args, lambda c: c.retry_job(args.job_id, actor=_actor(args), reason=args.reason))
        if not args.queue:
            print("jetqueue: dlq replay needs a job id or --queue", file=sys.stderr)
            return EXIT_USAGE
        return await _control(args, lambda c: c.retry_failed(args.queue, actor=_actor(args), reason=args.reason))
    nc, catalog = await _session(args)
    try:
        if args.queue:
            catalog.get(args.queue)
        rows = []
        for seq, m in await dead_letters(nc.jetstream(), args.queue, limit=args.limit):
            h = m.headers or {}
            parts = m.subject.split(".")
            failed_at = int(h.get(H_FAILED_AT, 0) or 0)
            rows.append(
                {
                    "seq": seq,
                    "queue": parts[2],
                    "job_id": parts[3],
                    "reason": h.get(H_REASON),
                    "failed_at": datetime.fromtimestamp(failed_at / 1000).isoformat(timespec="seconds")
                    if failed_at
                    else None,
                    "error": (h.get(H_ERROR) or "")[:80],
                }
            )
    finally:
        await nc.close()
    _out(args, rows, lambda: _table(rows, ["queue", "job_id", "reason", "failed_at", "error"]))
    return 0


async def cmd_schedules(args: argparse.Namespace) -> int:
    """``jetqueue schedules list|set|pause|resume|trigger|delete``: recurring jobs, audited like every control."""
    if args.schedules_command == "list":
        from jetqueue.client import JobClient

        nc, catalog = await _session(args)
        try:
            rows = [s.to_dict() for s in await JobClient(nc, catalog).list_schedules(args.queue)]
        finally:
            await nc.close()
        for r in rows:
            r["state"] = "paused" if r["paused"] else "active"
        _out(args, rows, lambda: _table(rows, ["queue", "name", "cron", "time_zone", "job_name", "state"]))
        return 0
    if args.schedules_command == "set":
        try:
            data = json.loads(args.data) if args.data else None
        except ValueError as exc:
            print(f"jetqueue: --data is not JSON: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return await _control(
            args,
            lambda c: c.save_schedule(
                args.queue,
                args.name,
                args.cron,
                actor=_actor(args),
                data=data,
                time_zone=args.time_zone,
                job_name=args.job_name,
                priority=args.priority,
                reason=args.reason,
            ),
        )
    ops = {
        "pause": lambda c: c.pause_schedule(args.queue, args.name, actor=_actor(args), reason=args.reason),
        "resume": lambda c: c.resume_schedule(args.queue, args.name, actor=_actor(args), reason=args.reason),
        "trigger": lambda c: c.trigger_schedule(args.queue, args.name, actor=_actor(args), reason=args.reason),
        "delete": lambda c: c.delete_schedule(args.queue, args.name, actor=_actor(args), reason=args.reason),
    }
    return await _control(args, ops[args.schedules_command])


async def cmd_workers(args: argparse.Namespace) -> int:
    from jetqueue import names
    from jetqueue.events import Heartbeat

    nc, _catalog = await _session(args)
    rows = []
    try:
        js = nc.jetstream()
        info = await js.stream_info(names.HEARTBEATS_STREAM, subjects_filter=names.heartbeats_filter())
        for subject in sorted(info.state.subjects or {}):
            hb = Heartbeat.from_bytes((await js.get_last_msg(names.HEARTBEATS_STREAM, subject)).data or b"")
            age = time.time() - hb.ts / 1000
            status = "OFFLINE" if hb.status == "OFFLINE" or age > 30 else hb.status
            rows.append(
                {
                    "worker": hb.worker_id,
                    "queue": hb.queue,
                    "status": status,
                    "host": hb.hostname,
                    "pid": hb.pid,
                    "active": hb.active_jobs,
                    "processed": hb.processed_jobs,
                    "failed": hb.failed_jobs,
                    "last_seen_s": round(age, 1),
                }
            )
    finally:
        await nc.close()
    _out(
        args,
        rows,
        lambda: _table(
            rows, ["worker", "queue", "status", "host", "pid", "active", "processed", "failed", "last_seen_s"]
        ),
    )
    return 0


async def cmd_tail(args: argparse.Namespace) -> int:
    from nats.js.api import DeliverPolicy

    from jetqueue import names
    from jetqueue.events import decode_batch

    nc, catalog = await _session(args)
    subject = names.events_subject(args.queue) if args.queue else f"{names.PREFIX}.events.*"
    if args.queue:
        catalog.get(args.queue)
    sub = await nc.jetstream().subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                continue
            for r in decode_batch(msg.data):
                if args.json:
                    print(json.dumps(r, ensure_ascii=False, default=str), flush=True)
                else:
                    extra = r.get("error") or (f"{r['progress']}%" if r.get("progress") is not None else "")
                    print(
                        f"{r.get('ts')}  {r.get('queue'):<20} {r.get('type'):<10} {r.get('job_id')}  "
                        f"attempt {r.get('attempt')}  {extra}",
                        flush=True,
                    )
    finally:
        await sub.unsubscribe()
        await nc.close()
    return 0


def _schedule_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``jetqueue schedules list|set|pause|resume|trigger|delete``."""
    p = sub.add_parser("schedules", parents=[common], help="recurring jobs: list, set, pause, resume, trigger, delete")
    ssub = p.add_subparsers(dest="schedules_command", required=True)
    d = ssub.add_parser("list", parents=[common], help="every recurring job, paused ones included")
    d.add_argument("queue", nargs="?")
    d.set_defaults(fn=cmd_schedules)
    d = ssub.add_parser("set", parents=[common], help="create or change a recurring job (a paused one stays paused)")
    d.add_argument("queue")
    d.add_argument("name")
    d.add_argument("cron", help="5 or 6 fields, or @daily, @every 5m, ...")
    d.add_argument("--time-zone", default="UTC", help="IANA zone, e.g. Asia/Seoul (default UTC)")
    d.add_argument("--job-name", help="the jobs' name (default: the schedule's name)")
    d.add_argument("--data", help="JSON payload of each job")
    d.add_argument("--priority", type=int)
    d.set_defaults(fn=cmd_schedules)
    for name, what in (
        ("pause", "stop firing, keeping the definition"),
        ("resume", "fire again"),
        ("trigger", "run one job now"),
        ("delete", "remove the recurring job"),
    ):
        d = ssub.add_parser(name, parents=[common], help=what)
        d.add_argument("queue")
        d.add_argument("name")
        d.set_defaults(fn=cmd_schedules)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--nats-url", default=None, help="NATS URL (default: JETQUEUE_NATS_URL)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--actor", default=None, help="who is acting, for the audit log (default cli:$USER)")
    common.add_argument("--reason", default=None, help="why, for the audit log")
    parser = argparse.ArgumentParser(prog="jetqueue", description="jetqueue: job queue on NATS JetStream")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole stack locally (embedded nats-server, producer, workers, monitor)")
    run.add_argument("--demo", action="store_true", help="feed demo jobs: quick, slow, flaky, failing, delayed")
    run.add_argument("--host", default="127.0.0.1", help="bind address of the HTTP services")
    run.add_argument("--port", type=int, default=8080, help="producer port (default 8080)")
    run.add_argument("--monitor-port", type=int, default=8090, help="monitor port (default 8090)")
    run.add_argument("--nats-url", default=None, help="use this NATS instead of an embedded nats-server")
    run.add_argument("--nats-port", type=int, default=0, help="port of the embedded nats-server (default: free)")
    run.add_argument("--data-dir", default=".jetqueue", help="where the embedded server and SQLite keep data")
    run.add_argument("--queues", default=None, help="comma-separated queues to run workers for (default all)")
    run.add_argument(
        "--duration", type=float, default=0, help="stop this many seconds after the banner (0 = until Ctrl-C)"
    )
    run.add_argument(
        "--ready-timeout",
        type=float,
        default=60,
        help="give up (exit 1, naming the service) if the services do not all answer within this many seconds",
    )

    p = sub.add_parser("asyncapi", help="print the AsyncAPI document of every subject")
    p.set_defaults(fn=None)

    p = sub.add_parser("enqueue", parents=[common], help="enqueue a job")
    p.add_argument("queue")
    p.add_argument("name", help="job name (type)")
    p.add_argument("--data", help="JSON payload")
    p.add_argument("--job-id")
    p.add_argument("--priority", type=int)
    p.add_argument("--delay-ms", type=int)
    p.set_defaults(fn=cmd_enqueue)

    p = sub.add_parser("status", parents=[common], help="a job's state (--watch: progress bar until it ends)")
    p.add_argument("job_id")
    p.add_argument("--queue")
    p.add_argument("--watch", action="store_true")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("queues", parents=[common], help="queues with their counts")
    p.set_defaults(fn=cmd_queues)

    p = sub.add_parser("pause", parents=[common], help="pause a queue (optionally --until a time)")
    p.add_argument("queue")
    p.add_argument("--until", help="auto-resume time, ISO 8601 with zone")
    p.set_defaults(fn=cmd_pause)

    p = sub.add_parser("resume", parents=[common], help="resume a queue")
    p.add_argument("queue")
    p.set_defaults(fn=cmd_resume)

    p = sub.add_parser("drain", parents=[common], help="remove waiting jobs (asks for confirmation)")
    p.add_argument("queue")
    p.add_argument("--yes", action="store_true", help="do not ask (scripts)")
    p.add_argument("--include-delayed", action="store_true")
    p.set_defaults(fn=cmd_drain)

    p = sub.add_parser("retry-failed", parents=[common], help="move a queue's dead-lettered jobs back to waiting")
    p.add_argument("queue")
    p.set_defaults(fn=cmd_retry_failed)

    p = sub.add_parser("dlq", parents=[common], help="dead-lettered jobs: list, replay")
    dsub = p.add_subparsers(dest="dlq_command", required=True)
    d = dsub.add_parser("list", parents=[common], help="list dead-lettered jobs")
    d.add_argument("queue", nargs="?")
    d.add_argument("--limit", type=int, default=200)
    d.set_defaults(fn=cmd_dlq)
    d = dsub.add_parser("replay", parents=[common], help="requeue one job, or all of --queue")
    d.add_argument("job_id", nargs="?")
    d.add_argument("--queue")
    d.set_defaults(fn=cmd_dlq)

    _schedule_parsers(sub, common)

    p = sub.add_parser("workers", parents=[common], help="workers from their last heartbeat")
    p.set_defaults(fn=cmd_workers)

    p = sub.add_parser("tail", parents=[common], help="follow lifecycle records live")
    p.add_argument("queue", nargs="?")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    p.set_defaults(fn=cmd_tail)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        from jetqueue.localrun import run as run_cmd

        return run_cmd(args)
    if args.command == "asyncapi":
        from jetqueue.asyncapi import render

        sys.stdout.write(render())
        return 0
    # With OTEL_* set, each command is a trace: its control actions and the jobs it enqueues are in it.
    telemetry.setup_tracing("jetqueue-cli")
    try:
        with telemetry.tracer().start_as_current_span(f"jetqueue {args.command}"):
            return int(asyncio.run(args.fn(args)))
    except (UnknownQueue, JobNotFound, ScheduleNotFound) as exc:
        print(f"jetqueue: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except ConflictError as exc:
        print(f"jetqueue: {exc}", file=sys.stderr)
        return EXIT_CONFLICT
    except JetqueueError as exc:
        print(f"jetqueue: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    finally:
        telemetry.flush()


if __name__ == "__main__":
    sys.exit(main())
