"""Processes of a benchmark: CPU and memory from /proc, and child processes spoken to in JSON lines."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from jetqueue.embedded import EmbeddedNats

CLK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ /proc
def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine used so far (/proc/stat, every CPU)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / CLK


def tree(root: int) -> list[int]:
    """``root`` and all its descendants (a CLI that forks its worker processes)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


PidSource = Callable[[], Awaitable[list[int]]]


def fixed(*pids: int) -> PidSource:
    async def get() -> list[int]:
        return list(pids)

    return get


def trees(*roots: int) -> PidSource:
    async def get() -> list[int]:
        return [p for r in roots for p in tree(r)]

    return get


@dataclass
class CpuMeter:
    """CPU time of named groups of processes over an interval, and of the whole machine.

    A group is a function giving its pids now (a process tree, PostgreSQL's backends of a database),
    asked at the start and at the end; a pid seen only at the end started during the interval and counts
    in full. A pid gone by the end is lost (``lost`` names its group).
    """

    groups: dict[str, PidSource]
    t0: float = 0.0
    busy0: float = 0.0
    start: dict[str, dict[int, float]] = field(default_factory=dict)

    async def begin(self) -> CpuMeter:
        self.start = {k: {p: cpu_s(p) for p in await src()} for k, src in self.groups.items()}
        self.t0, self.busy0 = time.monotonic(), machine_busy_s()
        return self

    async def end(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        busy = machine_busy_s() - self.busy0
        cpu: dict[str, float] = {}
        lost: list[str] = []
        for k, src in self.groups.items():
            now = await src()
            cpu[k] = round(sum(max(cpu_s(p) - self.start[k].get(p, 0.0), 0.0) for p in now), 3)
            if set(self.start[k]) - set(now):
                lost.append(k)
        ours = sum(cpu.values())
        ncpu = os.cpu_count() or 1
        return {
            "cpu_s": cpu,
            "cpu_total_s": round(ours, 3),
            "lost_pids_in": lost,
            "machine_busy_pct": round(100 * busy / (wall * ncpu), 1) if wall else None,
            "machine_other_pct": round(100 * max(busy - ours, 0) / (wall * ncpu), 1) if wall else None,
        }


def per_item_us(cpu: dict[str, Any], n: int) -> float | None:
    return round(cpu["cpu_total_s"] * 1e6 / n, 1) if n else None


# ------------------------------------------------------------------ stats
def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def median(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


# ------------------------------------------------------------------ helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(every)


def child_env(extra: dict[str, str] | None = None, *, no_uvloop: bool = True) -> dict[str, str]:
    """Environment of a process the bench starts: the repo on the path (``tests.bench`` imports)."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    if no_uvloop:
        env["JQBENCH_NO_UVLOOP"] = "1"
    else:
        env.pop("JQBENCH_NO_UVLOOP", None)
    return env


def append(log: Path) -> BinaryIO:
    return open(log, "ab")


class Proc:
    """A process started by the bench, output to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log

    @classmethod
    async def start(cls, name: str, argv: list[str], log: Path, env: dict[str, str], **kw: Any) -> Proc:
        with append(log) as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=REPO, env=env, stdout=kw.pop("stdout", out), stderr=out, **kw
            )
        return cls(name, proc, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None

    def check(self) -> None:
        if not self.alive():
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} (pid {self.pid}) exited with {self.proc.returncode}:\n{tail}")

    async def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def count_in_log(self, needle: str) -> int:
        try:
            return self.log.read_text(errors="replace").count(needle)
        except OSError:
            return 0


class Child(Proc):
    """A bench child (``python -m tests.bench.child <role>``): JSON lines on stdin and stdout.

    It prints ``{"ready": ...}`` once set up, then answers each command line with one result line.
    """

    ready_info: dict[str, Any]

    @classmethod
    async def spawn(
        cls, name: str, role: str, cfg: dict[str, Any], log: Path, env: dict[str, str], timeout: float = 60
    ) -> Child:
        argv = [sys.executable, "-m", "tests.bench.child", role, json.dumps(cfg)]
        with append(log) as out:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=REPO,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=out,
                limit=256 * 1024 * 1024,
            )
        child = cls(name, proc, log)
        child.ready_info = await child._read(timeout)
        return child

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no answer within {timeout:.0f} s") from None
        if not line:
            await self.proc.wait()
            self.check()
            raise RuntimeError(f"{self.name} closed its output")
        out: dict[str, Any] = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"{self.name}: {out['error']}")
        return out

    async def send(self, op: str, **kw: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}).encode() + b"\n")
        await self.proc.stdin.drain()

    async def result(self, timeout: float = 600) -> dict[str, Any]:
        return await self._read(timeout)

    async def call(self, op: str, timeout: float = 600, **kw: Any) -> dict[str, Any]:
        await self.send(op, **kw)
        return await self.result(timeout)

    async def stop(self, timeout: float = 20.0) -> None:
        if self.alive() and self.proc.stdin is not None:
            try:
                await self.send("exit")
                await asyncio.wait_for(self.proc.wait(), 5)
            except (TimeoutError, ConnectionError, BrokenPipeError):
                pass
        await super().stop(timeout)


@dataclass
class RunCtx:
    """What every measurement shares: the scratch directory and how processes are started."""

    tmp: Path
    no_uvloop: bool = True
    runs: int = 0

    def dir(self, label: str) -> Path:
        """A fresh directory for one measured run (server store, logs)."""
        self.runs += 1
        d = self.tmp / f"{self.runs:03d}-{label}"
        d.mkdir(parents=True)
        return d

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return child_env(extra, no_uvloop=self.no_uvloop)


def exec_argv(module: str, *args: str) -> list[str]:
    """``python -m <module> args`` through the bench launcher (which can keep uvloop out)."""
    return [sys.executable, "-m", "tests.bench.child", "exec", module, *args]


async def paced(rate: int, n: int, send: Callable[[int], Awaitable[None]], tick: float = 0.002) -> dict[str, Any]:
    """Call ``send(k)`` every ``tick`` with the k items due so that ``n`` go out at ``rate`` per second."""
    t0 = time.monotonic()
    count = 0
    while count < n:
        due = min(n, int((time.monotonic() - t0) * rate) + 1) - count
        if due > 0:
            await send(due)
            count += due
        await asyncio.sleep(tick)
    dt = time.monotonic() - t0
    return {"n": n, "send_seconds": round(dt, 3), "achieved_rate": round(n / dt) if dt else None}


def start_nats(d: Path) -> EmbeddedNats:
    """A fresh nats-server (its own store in ``d``) for one measured run."""
    return EmbeddedNats(store_dir=str(d / "nats"), log_file=str(d / "nats.log")).start()


def nats_pid(server: EmbeddedNats) -> int:
    assert server.proc is not None
    return server.proc.pid
