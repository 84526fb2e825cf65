"""TLS and mutual TLS end to end: the real server started with openssl-made certificates (a
trusted CA, a rogue CA, a server certificate for 127.0.0.1, client certificates from each CA)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from conftest import server_binary
from stackshift import InvalidArgumentError, JobContext, StackShift, UnavailableError


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    for ca in ("good", "rogue"):
        _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{ca}-ca.key", "-out", f"{ca}-ca.pem", "-days", "2", "-subj", f"/CN={ca} test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name: str, issuer: str, ext: str) -> None:
        (d / f"{name}.ext").write_text(ext)
        _openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}-ca.pem", "-CAkey", f"{issuer}-ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")

    leaf("server", "good", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    leaf("client", "good", "extendedKeyUsage=clientAuth\n")
    leaf("intruder", "rogue", "extendedKeyUsage=clientAuth\n")
    return d


def _start(certs: Path, tmp: Path, client_ca: bool) -> Iterator[str]:
    args = [str(server_binary()), "--listen", "127.0.0.1:0", "--database-url", f"sqlite://{tmp}/tls.db",
            "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key")]
    if client_ca:
        args += ["--tls-client-ca", str(certs / "good-ca.pem")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "warn"})
    try:
        assert proc.stdout is not None
        addr = None
        for line in proc.stdout:
            if "listening on" in line:
                addr = line.rsplit(" ", 1)[1].strip()
                break
        if addr is None:
            raise RuntimeError("stackshift-server exited before listening")
        yield f"https://{addr}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def tls_endpoint(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _start(certs, tmp_path_factory.mktemp("tls"), client_ca=False)


@pytest.fixture(scope="module")
def mtls_endpoint(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _start(certs, tmp_path_factory.mktemp("mtls"), client_ca=True)


def _round_trip(endpoint: str, **tls: Any) -> None:
    async def scenario() -> None:
        async with StackShift(endpoint=endpoint, **tls) as ss:

            @ss.job("ping")
            async def ping(ctx: JobContext[Any]) -> str:
                return "pong"

            async with ss.worker(queues=["tls"]):
                started = await ss.start("ping", None, queue_name="tls")
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert run.status == "completed"
            assert run.result == "pong"

    asyncio.run(scenario())


def _refused(endpoint: str, **tls: Any) -> str:
    async def scenario() -> Optional[str]:
        async with StackShift(endpoint=endpoint, **tls) as ss:
            try:
                await asyncio.wait_for(ss.start("ping", None, queue_name="tls"), 10)
            except UnavailableError as e:
                return str(e)
        return None

    msg = asyncio.run(scenario())
    assert msg is not None, "the call succeeded; want a TLS refusal"
    return msg


def test_run_over_tls_with_ca_bytes_path_and_env(certs: Path, tls_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _round_trip(tls_endpoint, tls_ca=(certs / "good-ca.pem").read_bytes())
    _round_trip(tls_endpoint, tls_ca=str(certs / "good-ca.pem"))
    monkeypatch.setenv("STACKSHIFT_TLS_CA", str(certs / "good-ca.pem"))
    _round_trip(tls_endpoint)


def test_untrusted_server_certificate_is_refused(certs: Path, tls_endpoint: str) -> None:
    msg = _refused(tls_endpoint, tls_ca=certs / "rogue-ca.pem")
    assert "tls_ca" in msg, msg


def test_run_over_mutual_tls(certs: Path, mtls_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = certs / "good-ca.pem"
    _round_trip(mtls_endpoint, tls_ca=ca, tls_client_cert=certs / "client.pem", tls_client_key=certs / "client.key")
    monkeypatch.setenv("STACKSHIFT_TLS_CLIENT_CERT", str(certs / "client.pem"))
    monkeypatch.setenv("STACKSHIFT_TLS_CLIENT_KEY", str(certs / "client.key"))
    _round_trip(mtls_endpoint, tls_ca=ca)


def test_missing_or_foreign_client_certificate_is_refused(certs: Path, mtls_endpoint: str) -> None:
    ca = certs / "good-ca.pem"
    msg = _refused(mtls_endpoint, tls_ca=ca)
    assert "mutual TLS" in msg, msg
    msg = _refused(mtls_endpoint, tls_ca=ca, tls_client_cert=certs / "intruder.pem", tls_client_key=certs / "intruder.key")
    assert "mutual TLS" in msg, msg


def test_half_an_identity_is_invalid(certs: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="both"):
        StackShift(endpoint="https://127.0.0.1:1", tls_client_cert=certs / "client.pem")
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        StackShift(endpoint="https://127.0.0.1:1", tls_ca="/nonexistent/ca.pem")
