"""NATS over mutual TLS: the SDK, the producer and a worker process connect with a CA, a client cert and key."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.connection import connect, connect_and_check
from jetqueue.embedded import find_binary, free_port
from jetqueue.errors import JetqueueError, NatsUnavailable
from jetqueue.job import JobStatus
from jetqueue.settings import CommonSettings
from tests.conftest import eventually, write_catalog
from tests.faults.cluster import NatsNode

Q = "email-send"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    **kw: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0] if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=kw.get("ca", False), path_length=None), critical=True)
    )
    if kw.get("server"):
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("jetqueue test CA", ca_key, None, ca=True)
    files: dict[str, Path] = {}
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"jetqueue {role}", key, (ca.subject, ca_key), server=role == "server")
        (tmp_path / f"{role}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / f"{role}.key").write_bytes(_pem_key(key))
        files[f"{role}_cert"], files[f"{role}_key"] = tmp_path / f"{role}.crt", tmp_path / f"{role}.key"
    (tmp_path / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["ca"] = tmp_path / "ca.crt"
    return files


@pytest.fixture
def tls_server(tmp_path: Path, pki: dict[str, Path]) -> Iterator[NatsNode]:
    """A nats-server that requires TLS and a client certificate signed by the test CA."""
    node = NatsNode(
        find_binary(),
        tmp_path,
        "tls",
        extra_config=(
            f'tls {{ cert_file: "{pki["server_cert"]}", key_file: "{pki["server_key"]}", '
            f'ca_file: "{pki["ca"]}", verify: true, timeout: 2 }}'
        ),
    )
    node.start()
    yield node
    node.kill()


def _spawn_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "jetqueue_worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _settings(node: NatsNode, pki: dict[str, Path], **kw: object) -> CommonSettings:
    return CommonSettings(
        nats_url=f"tls://127.0.0.1:{node.port}",
        nats_tls_ca=str(pki["ca"]),
        nats_tls_cert=str(pki["client_cert"]),
        nats_tls_key=str(pki["client_key"]),
        connect_timeout_s=2,
        **kw,
    )


async def test_the_sdk_enqueues_over_mutual_tls(tls_server: NatsNode, pki: dict[str, Path], catalog: Catalog) -> None:
    nc, _js = await connect_and_check(_settings(tls_server, pki), name="tls-test", catalog=catalog.only(Q))
    try:
        r = await JobClient(nc, catalog.only(Q)).enqueue(Q, "over-tls", {"to": "x"})
        assert (await JobClient(nc, catalog.only(Q)).status(r.job_id)).state is JobStatus.WAITING
    finally:
        await nc.close()


async def test_without_a_client_certificate_the_server_refuses(tls_server: NatsNode, pki: dict[str, Path]) -> None:
    settings = _settings(tls_server, pki).model_copy(update={"nats_tls_cert": None, "nats_tls_key": None})
    with pytest.raises(NatsUnavailable, match="cannot connect to NATS"):
        await connect(settings, name="no-client-cert")


def test_a_key_without_its_certificate_is_a_clear_error(pki: dict[str, Path]) -> None:
    from jetqueue.connection import tls_context

    with pytest.raises(JetqueueError, match="both a client certificate and its key"):
        tls_context(CommonSettings(nats_tls_key=str(pki["client_key"])))
    with pytest.raises(JetqueueError, match="unusable"):
        tls_context(CommonSettings(nats_tls_ca=str(pki["ca"]) + ".missing"))


async def test_a_worker_process_runs_a_job_over_mutual_tls(
    tls_server: NatsNode, pki: dict[str, Path], catalog: Catalog, tmp_path: Path
) -> None:
    """The worker's FastStream broker takes the same settings (JETQUEUE_NATS_TLS_*) as the SDK."""
    cat = catalog.only(Q)
    nc, _js = await connect_and_check(_settings(tls_server, pki), name="tls-test", catalog=cat)
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "JETQUEUE_NATS_URL": f"tls://127.0.0.1:{tls_server.port}",
        "JETQUEUE_NATS_TLS_CA": str(pki["ca"]),
        "JETQUEUE_NATS_TLS_CERT": str(pki["client_cert"]),
        "JETQUEUE_NATS_TLS_KEY": str(pki["client_key"]),
        "JETQUEUE_CATALOG": str(write_catalog(tmp_path / "catalog.yaml", cat)),
        "JETQUEUE_WORKER_QUEUE": Q,
        "JETQUEUE_WORKER_METRICS_PORT": str(free_port()),
    }
    proc = _spawn_worker(env, log_path)
    try:
        client = JobClient(nc, cat)
        r = await client.enqueue(Q, "welcome", {"to": "a@example.com", "subject": "hi", "body": "x"})

        async def done() -> bool:
            return (await client.status(r.job_id)).state is JobStatus.COMPLETED

        await eventually(done, timeout=30, what=f"the job completed over TLS (worker log: {log_path})")
    finally:
        proc.kill()
        proc.wait(10)
        await nc.close()
