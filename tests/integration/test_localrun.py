"""``jetqueue run`` as a supervisor: restarts with backoff, banner when ready, a quick clean Ctrl-C, credentials."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from jetqueue import localrun, names
from jetqueue.embedded import EmbeddedNats, free_port

STARTED = re.compile(r"started (nats-server|producer|monitor|worker [\w-]+) \(pid (\d+)\)")
BANNER = "jetqueue is running:"


def http_status(url: str, token: str | None = None) -> int | None:
    """Status of ``GET url`` (None when nothing answers); no proxies, as for loopback."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process of the stack."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and (b"jetqueue" in cmdline or b"nats-server" in cmdline)


class LocalRun:
    """A ``jetqueue run`` process in its own session (like a terminal's foreground job), output in a file."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port, self.monitor_port, self.nats_port = free_port(), free_port(), free_port()
        self.data_dir = tmp_path / "data"
        self.log_path = tmp_path / f"run-{time.monotonic_ns()}.log"
        cmd = [
            *(sys.executable, "-m", "jetqueue", "run", "--data-dir", str(self.data_dir)),
            *("--port", str(self.port), "--monitor-port", str(self.monitor_port), "--nats-port", str(self.nats_port)),
            *args,
        ]
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
            )
        self.seen: set[int] = set()

    def output(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def wait_for(self, pattern: str, timeout: float = 45.0, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the output past offset ``after``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.compile(pattern).search(self.output(), after):
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not seen within {timeout}s; output:\n{self.output()[-5000:]}")

    def pids(self) -> dict[str, int]:
        """The newest pid of each service, from the ``started <service> (pid N)`` lines."""
        out = {m[1]: int(m[2]) for m in STARTED.finditer(self.output())}
        self.seen.update(out.values())
        return out

    def banner(self) -> str:
        start = self.wait_for(re.escape(BANNER)).start()
        return self.wait_for(r"Ctrl-C stops everything.*", after=start).string[start:]

    def interrupt(self) -> None:
        """Ctrl-C in a terminal: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def kill_all(self) -> None:
        for pid in {self.proc.pid, *self.pids().values(), *self.seen}:
            if pid == self.proc.pid or alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.proc.wait(10)


@pytest.fixture
def local_run(tmp_path: Path) -> Iterator[Callable[..., LocalRun]]:
    """Start ``jetqueue run`` processes; every process of theirs is SIGKILLed at teardown."""
    runs: list[LocalRun] = []

    def start(*args: str, env: dict[str, str] | None = None) -> LocalRun:
        runs.append(LocalRun(tmp_path, *args, env=env))
        return runs[-1]

    yield start
    for r in runs:
        r.kill_all()


def test_exit_reason_names_the_signal_or_the_code() -> None:
    assert localrun.exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert localrun.exit_reason(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert localrun.exit_reason(3) == "exited with code 3"


def test_backoff_doubles_to_a_cap_and_starts_over_after_a_stable_run() -> None:
    b = localrun.Backoff(first_s=0.5, max_s=30, stable_s=60)
    assert [b.next_delay(up_s=1) for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.next_delay(up_s=61) == 0.5
    assert b.next_delay(up_s=1) == 1


def test_child_env_generates_a_producer_token_and_plain_http_cookies() -> None:
    env, token = localrun.child_env({"PATH": "/bin"}, nats_url="nats://127.0.0.1:1")
    assert token and env["JETQUEUE_PRODUCER_TOKENS"] == f"local:admin:{token}"
    assert env["JETQUEUE_MONITOR_SECURE_COOKIES"] == "false"
    assert env["JETQUEUE_NATS_URL"] == "nats://127.0.0.1:1"
    env, token = localrun.child_env({"JETQUEUE_PRODUCER_TOKENS": "ci:read:s3cret"}, nats_url="nats://127.0.0.1:1")
    assert token is None and env["JETQUEUE_PRODUCER_TOKENS"] == "ci:read:s3cret"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_banner_only_once_every_service_answers(local_run: Callable[..., LocalRun]) -> None:
    run = local_run("--queues", "email-send,audit-log")
    banner = run.banner()
    # the moment the banner is out, every service answers its health check
    assert http_status(f"http://127.0.0.1:{run.port}/health") == 200
    assert http_status(f"http://127.0.0.1:{run.monitor_port}/health") == 200
    worker_ports = [int(p) for p in re.search(r"ports ([\d, ]+)", banner)[1].split(", ")]  # type: ignore[index]
    assert len(worker_ports) == 2
    assert all(http_status(f"http://127.0.0.1:{p}/health") == 200 for p in worker_ports)
    # the producer's generated token is printed, with a curl example, and given to the producer
    token = re.search(r"producer API .*\n\s+token: (\S+)", banner)[1]  # type: ignore[index]
    assert f"Authorization: Bearer {token}" in banner and "curl" in banner
    pids = run.pids()
    assert set(pids) == {"nats-server", "producer", "monitor", "worker email-send", "worker audit-log"}
    assert process_env(pids["producer"])["JETQUEUE_PRODUCER_TOKENS"].endswith(f":{token}")
    assert process_env(pids["monitor"])["JETQUEUE_MONITOR_SECURE_COOKIES"] == "false"
    assert http_status(f"http://127.0.0.1:{run.port}/jobs/no-such-job", token) == 404


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_killed_worker_or_service_is_restarted_and_the_rest_keep_running(
    local_run: Callable[..., LocalRun],
) -> None:
    run = local_run("--queues", "email-send,audit-log")
    run.banner()
    before = run.pids()
    mark = len(run.output())
    os.kill(before["worker email-send"], signal.SIGKILL)
    run.wait_for(rf"worker email-send \(pid {before['worker email-send']}\) killed by SIGKILL", after=mark)
    run.wait_for(r"started worker email-send \(pid \d+\)", after=mark)
    os.kill(before["producer"], signal.SIGKILL)
    run.wait_for(rf"producer \(pid {before['producer']}\) killed by SIGKILL", after=mark)
    run.wait_for(r"started producer \(pid \d+\)", after=mark)
    after = run.pids()
    assert after["worker email-send"] != before["worker email-send"]
    assert after["producer"] != before["producer"]
    for name in ("nats-server", "monitor", "worker audit-log"):
        assert after[name] == before[name] and alive(before[name]), name
    assert run.proc.poll() is None
    deadline = time.monotonic() + 30
    while http_status(f"http://127.0.0.1:{run.port}/health") != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert http_status(f"http://127.0.0.1:{run.port}/health") == 200


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_nats_server_comes_back_on_its_port_and_store(local_run: Callable[..., LocalRun]) -> None:
    run = local_run("--queues", "audit-log")
    run.banner()
    before = run.pids()
    mark = len(run.output())
    os.kill(before["nats-server"], signal.SIGKILL)
    run.wait_for(rf"nats-server \(pid {before['nats-server']}\) killed by SIGKILL", after=mark)
    run.wait_for(r"started nats-server \(pid \d+\)", after=mark)
    nc = NatsClient()
    deadline = time.monotonic() + 20
    while not nc.is_connected:
        try:
            await nc.connect(f"nats://127.0.0.1:{run.nats_port}", allow_reconnect=False, connect_timeout=1)
        except Exception:
            assert time.monotonic() < deadline, "nats-server did not come back on its port"
            await asyncio.sleep(0.2)
    try:
        # the streams provisioned before the crash are still there: same store directory
        info = await nc.jetstream().stream_info(names.job_stream("audit-log"))
        assert info.config.name == names.job_stream("audit-log")
    finally:
        await nc.close()
    assert run.proc.poll() is None


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_ctrl_c_stops_everything_within_5s_without_tracebacks(local_run: Callable[..., LocalRun]) -> None:
    run = local_run("--demo", "--queues", "email-send,audit-log,report-generate")
    run.banner()
    time.sleep(3)  # jobs running, some slow
    pids = run.pids()
    mark = len(run.output())
    t0 = time.monotonic()
    run.interrupt()
    code = run.proc.wait(15)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert code == 0
    assert not [name for name, pid in pids.items() if alive(pid)]
    shutdown = run.output()[mark:]
    assert "Traceback" not in shutdown, shutdown[-5000:]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_service_that_never_becomes_ready_is_named_and_the_run_fails(local_run: Callable[..., LocalRun]) -> None:
    run = local_run("--queues", "audit-log", "--ready-timeout", "8", env={"JETQUEUE_MONITOR_DATABASE_URL": "nope://"})
    code = run.proc.wait(40)
    out = run.output()
    assert code == 1
    assert re.search(r"not ready after 8s: monitor", out), out[-3000:]
    assert BANNER not in out
    assert not [name for name, pid in run.pids().items() if alive(pid)]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_duration_stops_a_run_on_an_external_nats(
    local_run: Callable[..., LocalRun], nats_server: EmbeddedNats
) -> None:
    run = local_run("--queues", "audit-log", "--duration", "1", "--nats-url", nats_server.url)
    assert f"NATS            {nats_server.url}\n" in run.banner()
    assert run.proc.wait(20) == 0
    pids = run.pids()
    assert set(pids) == {"producer", "monitor", "worker audit-log"}
    assert not [name for name, pid in pids.items() if alive(pid)]
