"""The daemon under a real NOTIFY_SOCKET: readiness, watchdog, status, stop and reload.

The test plays systemd: it binds a datagram socket, passes its path as NOTIFY_SOCKET
(and WATCHDOG_USEC), and reads what ``buzon run`` says, when it says it.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.daemon import Daemon, wait_until
from support.mail import message, send


@dataclass
class Said:
    at: float
    fields: dict[str, str]
    listener_answered: bool | None = None


@dataclass
class FakeSystemd:
    """A notification socket and everything sent to it, with arrival times."""

    path: Path
    port: int = 0
    said: list[Said] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._sock is not None
        while self._sock.fileno() != -1:
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            said = Said(time.monotonic(), fields)
            if fields.get("READY") == "1":
                # The moment systemd would start dependants: the listener must answer now.
                said.listener_answered = _answers(self.port)
            self.said.append(said)

    def has(self, key: str, value: str = "1") -> list[Said]:
        return [s for s in list(self.said) if s.fields.get(key) == value]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


def _answers(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            return smtp.noop()[0] == 250
    except OSError:
        return False


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    fake.start()
    yield fake
    fake.close()


def start(daemon_factory: Callable[..., Daemon], systemd: FakeSystemd, extra: str = "") -> Daemon:
    d = daemon_factory(extra=extra, start=False)
    systemd.port = d.port
    d.start(env={"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "2000000"})
    return d


def test_ready_only_once_the_listener_answers_then_status_and_stopping(
    daemon_factory: Callable[..., Daemon], systemd: FakeSystemd
) -> None:
    d = start(daemon_factory, systemd)
    wait_until(lambda: systemd.has("READY"), what="READY=1")
    (ready,) = systemd.has("READY")
    assert ready.listener_answered is True
    assert "accepting on 127.0.0.1:" in ready.fields["STATUS"]
    send(d.port, message("Una consulta"))
    wait_until(
        lambda: any("1 accepted" in s.fields.get("STATUS", "") for s in systemd.said),
        timeout=15,
        what="a STATUS line counting the message",
    )
    assert d.stop() == 0
    wait_until(lambda: systemd.has("STOPPING"), timeout=10, what="STOPPING=1")  # its reader
    (stopping,) = systemd.has("STOPPING")
    assert stopping.at > ready.at


def test_a_bad_rules_file_fails_the_start_before_ready(
    daemon_factory: Callable[..., Daemon], systemd: FakeSystemd, tmp_path: Path
) -> None:
    """The ingest process says "ready" only once the rules are read: a rule with an
    unknown key stops the start, no READY is sent, and the log names the file, the key
    and the ingest process's exit code."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[category.printing]\nstrong = ["impresora*"]\ncolour = "red"\n')
    d = daemon_factory(extra=f'[triage]\nrules = "{rules}"\n', start=False)
    systemd.port = d.port
    d.start(wait_ready=False, env={"NOTIFY_SOCKET": str(systemd.path)})
    assert d.wait(30) == 1
    crashed = d.wait_event("ingest.crashed")
    assert str(rules) in crashed["error"]
    assert "category.printing.colour: unknown key" in crashed["error"]
    failed = d.wait_event("daemon.failed")
    assert failed["error"] == "the ingest process did not start (exit code 1)"
    assert not systemd.has("READY")
    assert all(e.get("event") != "daemon.ready" for e in d.events)


def test_watchdog_pings_stop_while_the_ingest_process_hangs(
    daemon_factory: Callable[..., Daemon], systemd: FakeSystemd
) -> None:
    d = start(daemon_factory, systemd)
    wait_until(lambda: len(systemd.has("WATCHDOG")) >= 3, timeout=15, what="watchdog pings")
    child = int(d.wait_event("ingest.started")["pid"])
    os.kill(child, signal.SIGSTOP)  # every worker of the ingest process is stuck
    try:
        hung_at = time.monotonic()
        d.wait_event("daemon.unhealthy", timeout=20)
        silent_from = time.monotonic()
        time.sleep(3)
        late = [s for s in systemd.has("WATCHDOG") if s.at > silent_from]
        assert late == [], "the watchdog kept pinging while ingest was hung"
        assert silent_from - hung_at < 15
    finally:
        os.kill(child, signal.SIGCONT)
    resumed = time.monotonic()
    wait_until(
        lambda: any(s.at > resumed for s in systemd.has("WATCHDOG")),
        timeout=15,
        what="pings after the ingest process resumed",
    )
    assert d.stop() == 0


def _config_with(d: Daemon, extra: str) -> None:
    text = d.config.read_text()
    d.config.write_text(text.replace('level = "info"', 'level = "debug"') + extra)


def test_reload_applies_a_valid_config_and_refuses_an_invalid_one(
    daemon_factory: Callable[..., Daemon], systemd: FakeSystemd
) -> None:
    d = start(daemon_factory, systemd)
    wait_until(lambda: systemd.has("READY"), what="READY=1")
    assert d.proc is not None
    original = d.config.read_text()
    _config_with(
        d,
        '\n[agents]\n"luis@desk.example.org" = "Luis"\n[sla]\nreopen_within = "3d"\n',
    )
    d.proc.send_signal(signal.SIGHUP)
    done = d.wait_event("daemon.reloaded", timeout=60)
    assert "log.level" in done["applied"] and "desk" in done["applied"]
    assert done["needs_restart"] == []
    # The notifications are datagrams on another channel than the log lines read here
    # (READY=1 is even sent after daemon.reloaded is logged): wait for the reader.
    wait_until(lambda: systemd.has("RELOADING"), timeout=10, what="RELOADING=1")
    (reloading,) = systemd.has("RELOADING")
    assert int(reloading.fields["MONOTONIC_USEC"]) > 0
    wait_until(lambda: len(systemd.has("READY")) == 2, timeout=10, what="READY=1 after reload")
    # The new ingest process works: mail still becomes tickets.
    send(d.port, message("Después de recargar"))
    d.wait_event("ticket.created", timeout=30)
    # A broken file is refused, the old configuration keeps running.
    d.config.write_text(original + "\n[smtp\nbroken")
    d.proc.send_signal(signal.SIGHUP)
    failed = d.wait_event("daemon.reload_failed", timeout=30)
    assert "unchanged" in failed["fix"]
    send(d.port, message("Sigue funcionando"))
    wait_until(lambda: d.count("ticket.created") >= 2, timeout=30, what="a second ticket")
    # A new listen address is reported as needing a restart, and not applied.
    d.config.write_text(original.replace(f"127.0.0.1:{d.port}", "127.0.0.1:1"))
    d.proc.send_signal(signal.SIGHUP)
    restart = d.wait_event(
        "daemon.reloaded", timeout=30, where=lambda e: bool(e.get("needs_restart"))
    )
    assert restart["needs_restart"][0].startswith("smtp.listen")
    assert _answers(d.port)
    assert d.stop() == 0
