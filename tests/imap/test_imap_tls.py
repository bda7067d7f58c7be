"""STARTTLS against a real Dovecot, with certificate verification left on."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.parts import Parts
from support.daemon import wait_until
from support.dovecot import running_dovecot
from support.imaptest import PASSWORD_ENV, WorkerRun, account, spooled_nonces
from support.mail import message


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN), readable by Dovecot's unprivileged processes."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_starttls_verified_fetch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    parts: Parts,
    worker_factory: Callable[..., WorkerRun],
) -> None:
    """security = "starttls" upgrades the connection and verifies the server certificate
    (here trusted through SSL_CERT_FILE, as a private CA would be) before logging in."""
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv(PASSWORD_ENV, "secret")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    extra = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n"
    with running_dovecot(tmp_path, extra=extra) as server:
        server.append("support", "INBOX", message("cifrado", nonce="a" * 32))
        run = worker_factory(account(server.port, security="starttls"))
        wait_until(lambda: spooled_nonces(parts) == {"a" * 32: 1}, 20, what="fetch over TLS")
        run.stop()


def test_starttls_refuses_an_untrusted_certificate(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    parts: Parts,
    worker_factory: Callable[..., WorkerRun],
) -> None:
    """A certificate nobody vouches for is refused: nothing is fetched, no password sent."""
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv(PASSWORD_ENV, "secret")
    extra = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n"
    with running_dovecot(tmp_path, extra=extra) as server:
        server.append("support", "INBOX", message("cifrado", nonce="b" * 32))
        logins = server.log_text().count("Info: Login: user=")
        run = worker_factory(account(server.port, security="starttls"))
        run.worker.stop.wait(1.5)
        run.stop()
        assert server.log_text().count("Info: Login: user=") == logins  # no password sent
    assert spooled_nonces(parts) == {}
