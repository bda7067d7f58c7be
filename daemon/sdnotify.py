"""The systemd notification protocol (sd_notify(3)): READY, STATUS, WATCHDOG, STOPPING, RELOADING.

Each call sends one datagram of ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET`` (a path,
or an abstract socket when it starts with ``@``). Without ``NOTIFY_SOCKET`` every
call does nothing, so the daemon behaves the same outside systemd. The watchdog
interval is half of ``$WATCHDOG_USEC`` (as sd_watchdog_enabled(3) advises), and
only when ``$WATCHDOG_PID`` is unset or names this process. Sending never raises:
a notification lost because systemd restarted must not stop the mail.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from daemon.logging import get_logger


class Notifier:
    """A connection to systemd's notification socket, or nothing."""

    def __init__(self, address: str, watchdog_usec: int = 0) -> None:
        self.address = address
        self.watchdog_interval = watchdog_usec / 2_000_000 if watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._warned = False
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        return cls(env.get("NOTIFY_SOCKET", ""), int(usec) if usec.isdigit() and ours else 0)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram with ``fields`` (``READY=1`` is ``send(READY=1)``); False if not sent."""
        if self._sock is None:
            return False
        text = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock.sendto(text.encode(), target)
        except OSError as exc:
            if not self._warned:  # once: systemd gone or restarting; mail goes on
                self._warned = True
                get_logger(component="daemon").warning(
                    "daemon.notify_failed", error=str(exc), socket=self.address
                )
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd order this reload against its own clock (v253+).
        return self.send(
            RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000, STATUS="reloading"
        )

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
