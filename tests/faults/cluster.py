"""nats-server processes from config files: single nodes (with auth) and a 3-node JetStream cluster on loopback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from jetqueue.embedded import free_port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class NatsNode:
    """One nats-server started with ``-c <config>``; ports and store survive restarts."""

    def __init__(self, binary: str, workdir: Path, name: str, *, extra_config: str = "") -> None:
        self.binary = binary
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.http_port = free_port()
        self.cluster_port: int | None = None
        self.routes: list[int] = []
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def config(self) -> str:
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            f'jetstream {{ store_dir: "{self.dir / "store"}", max_memory_store: 256MB, max_file_store: 2GB }}',
        ]
        if self.cluster_port:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            lines.append(f"cluster {{ name: jq, listen: 127.0.0.1:{self.cluster_port}, routes: [{routes}] }}")
        return "\n".join([*lines, self.extra_config, ""])

    def write_config(self) -> Path:
        path = self.dir / "server.conf"
        path.write_text(self.config(), "utf-8")
        return path

    def launch(self) -> None:
        """Start the process (returns at once; :meth:`wait_listening` waits for the client port)."""
        if self.running:
            return
        conf = self.write_config()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited; log:\n{self.log_tail()}")
            if _listening(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} not listening after {timeout}s; log:\n{self.log_tail()}")

    def start(self, timeout: float = 15.0) -> None:
        self.launch()
        self.wait_listening(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM: a clean shutdown."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: the node dies as in a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def reload(self) -> None:
        """Rewrite the config and make the running server reload it (SIGHUP)."""
        self.write_config()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def http(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as resp:
            return json.loads(resp.read())

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class NatsCluster:
    """Three JetStream nodes ``n1..n3`` routed to each other on loopback."""

    def __init__(self, binary: str, workdir: Path, size: int = 3) -> None:
        self.nodes = [NatsNode(binary, workdir, f"n{i + 1}") for i in range(size)]
        for node in self.nodes:
            node.cluster_port = free_port()
        for node in self.nodes:
            node.routes = [other.cluster_port or 0 for other in self.nodes if other is not node]

    @property
    def urls(self) -> str:
        """Every node's client URL, comma separated (JETQUEUE_NATS_URL)."""
        return ",".join(n.url for n in self.nodes)

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout: float = 30.0) -> None:
        for n in self.nodes:
            n.launch()
        for n in self.nodes:
            n.wait_listening()
        self.wait_ready(timeout)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader as the running nodes agree on it, or None."""
        seen = set()
        for n in self.nodes:
            if not n.running:
                continue
            try:
                seen.add((n.http("/jsz").get("meta_cluster") or {}).get("leader"))
            except OSError:
                return None
        return seen.pop() if len(seen) == 1 else None

    def healthy(self) -> bool:
        for n in self.nodes:
            if not n.running:
                continue
            try:
                if n.http("/healthz").get("status") != "ok":
                    return False
            except OSError:  # 503 while JetStream catches up
                return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait for a meta leader and every running node healthy; return the seconds it took."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.meta_leader() and self.healthy():
                return time.monotonic() - t0
            time.sleep(0.2)
        logs = "\n".join(f"--- {n.name}\n{n.log_tail(10)}" for n in self.nodes)
        raise RuntimeError(f"cluster not ready within {timeout}s\n{logs}")

    def kill_all(self) -> None:
        for n in self.nodes:
            n.kill()
