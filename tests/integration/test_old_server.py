"""Refusal of a nats-server older than 2.14 (the machine's Debian 2.9 on 4222)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from jetqueue.connection import connect_and_check
from jetqueue.errors import ServerTooOld
from jetqueue.settings import CommonSettings
from tests.conftest import IN_CI

OLD = "nats://127.0.0.1:4222"


def _old_server_version() -> str | None:
    """The version the server on 4222 announces, if one listens there."""
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1) as s:
            line = s.recv(4096).decode(errors="replace")
    except OSError:
        return None
    if not line.startswith("INFO "):
        return None
    import json

    return str(json.loads(line[5:]).get("version"))


@pytest.fixture
def old_server() -> str:
    version = _old_server_version()
    if version is None or tuple(int(p) for p in version.split(".")[:2]) >= (2, 14):
        # This machine kind runs Debian's nats-server 2.9 on 4222; a developer
        # machine without it has nothing old to test against.
        if IN_CI:
            pytest.fail(f"expected an old nats-server on 4222 in CI, found {version!r}")
        pytest.skip(f"no nats-server older than 2.14 on 127.0.0.1:4222 (found {version!r})")
    return version


async def test_sdk_refuses_an_old_server(old_server: str) -> None:
    with pytest.raises(ServerTooOld, match="nats-server too old"):
        await connect_and_check(CommonSettings(nats_url=OLD), name="t")


def test_worker_process_exits_with_a_clear_message(old_server: str) -> None:
    env = {"JETQUEUE_NATS_URL": OLD, "JETQUEUE_WORKER_QUEUE": "email-send", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "jetqueue_worker"], env=env, capture_output=True, timeout=60)
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode != 0
    assert "nats-server too old" in out and "2.14" in out
    assert "Traceback" not in out


def test_producer_process_exits_with_a_clear_message(old_server: str) -> None:
    env = {
        "JETQUEUE_NATS_URL": OLD,
        "JETQUEUE_PRODUCER_PORT": "0",
        "JETQUEUE_PRODUCER_TOKENS": "tests:admin:old-server-test",  # past the token check, to the server check
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run([sys.executable, "-m", "jetqueue_producer"], env=env, capture_output=True, timeout=60)
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode != 0
    assert "nats-server too old" in out
    assert "Traceback" not in out
