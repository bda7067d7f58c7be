"""Socket activation (buzon.socket): the daemon serves on the listener systemd passes.

``systemd-socket-activate`` plays systemd: it binds the port, then runs ``buzon run``
with the socket as fd 3 and LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES set.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import missing
from daemon import sdlisten
from support.daemon import free_port, wait_until, write_config
from support.mail import message, send

ACTIVATE = shutil.which("systemd-socket-activate")


def test_the_daemon_serves_smtp_on_the_socket_systemd_passed(tmp_path: Path) -> None:
    if ACTIVATE is None:
        missing("systemd-socket-activate (Debian package systemd)")
    assert ACTIVATE is not None
    passed = free_port()
    cfg = write_config(tmp_path / "cfg", free_port())  # [smtp] listen: another port
    proc = subprocess.Popen(
        [ACTIVATE, "-l", f"127.0.0.1:{passed}", "--fdname=smtp",
         sys.executable, "-m", "daemon.cli", "--config", str(cfg), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    events: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"event": "<unparsed>", "line": line.decode(errors="replace")})

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Like systemd, the tool starts the service on the first connection; that client
        # waits in the kernel's backlog meanwhile and is served once the daemon is up.
        wait_until(lambda: _connects(passed), 30, what="the tool to bind the port")
        assert send(passed, message("Por el puerto de systemd")) == {}
        (listening,) = [e for e in events if e.get("event") == "smtp.listening"]
        assert (listening["port"], listening["source"]) == (passed, "systemd")
        wait_until(
            lambda: any(e.get("event") == "ticket.created" for e in events), 30, what="ticket"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def test_passed_sockets_are_taken_once_and_checked() -> None:
    """Variables for another process are ignored; a datagram socket is refused by name."""
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    assert sdlisten.take(env, pid=4242) == {}
    assert env == {}  # removed either way: no child inherits them
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(sdlisten.ListenError, match="ListenStream="):
            sdlisten.smtp_socket({"smtp": udp})
    finally:
        udp.close()
    tcp = socket.socket()
    try:
        with pytest.raises(sdlisten.ListenError, match="Accept=no"):
            sdlisten.smtp_socket({"smtp": tcp})  # not listening
        with pytest.raises(sdlisten.ListenError, match="FileDescriptorName=smtp"):
            sdlisten.smtp_socket({"a": tcp, "b": tcp})
    finally:
        tcp.close()
