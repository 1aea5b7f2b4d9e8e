"""A process of the bench: ``python -m tests.bench.child <module>:<factory> '<json config>'``.

The factory (an async function in ``tests.bench.<module>``) sets the role up and returns an object;
its ``info`` (a dict) is printed as the ready line, then every command line read from stdin,
``{"op": name, ...}``, calls its ``op_<name>(**kw)`` and prints the result as one JSON line.
``{"op": "exit"}`` calls its ``close()`` and ends the process.

``python -m tests.bench.child exec <module> [args...]`` runs ``python -m <module> [args...]`` instead:
how the bench starts the peers' CLIs, the jetqueue services and uvicorn, so that with
``JQBENCH_NO_UVLOOP=1`` none of them can pick uvloop (every system then runs on the stdlib loop).
"""

from __future__ import annotations

import os
import sys

if os.environ.get("JQBENCH_NO_UVLOOP"):
    # `import uvloop` raises ImportError, which pgqueuer's and taskiq's CLIs and uvicorn's
    # loop="auto" take as "not installed". Forked children (taskiq's workers) inherit it.
    sys.modules["uvloop"] = None  # type: ignore[assignment]

import asyncio
import importlib
import json
import runpy
import traceback
from typing import Any


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


async def serve(role: str, cfg: dict[str, Any]) -> int:
    module, _, name = role.partition(":")
    factory = getattr(importlib.import_module(f"tests.bench.{module}"), name)
    try:
        obj = await factory(cfg)
    except Exception:
        emit({"error": traceback.format_exc()})
        return 1
    emit({"ready": True, **getattr(obj, "info", {})})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "exit":
            break
        try:
            emit(await getattr(obj, f"op_{op}")(**cmd))
        except Exception:
            emit({"error": traceback.format_exc()})
    close = getattr(obj, "close", None)
    if close is not None:
        await close()
    return 0


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "exec":
        sys.argv = [sys.argv[2], *sys.argv[3:]]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
        return 0
    role, cfg = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    return asyncio.run(serve(role, cfg))


if __name__ == "__main__":
    sys.exit(main())
