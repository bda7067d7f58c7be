"""Several ``buzon run`` instances on one database, an MTA-like load generator, a relay sink.

For the scale-out tests: each instance is a real daemon subprocess with its own SMTP
port and spool; the load generator keeps a log (the oracle) of what every attempt was
told and retries a refused message, unchanged, on the next instance, as an MTA with
several MX hosts would; the sink is the relay the instances deliver acknowledgements to.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import Any

from support.daemon import Daemon, serving


@dataclass
class Instance(Daemon):
    """A daemon that keeps the log of its earlier runs."""

    name: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def start(self, wait_ready: bool = True, env: dict[str, str] | None = None) -> Instance:
        self.history.extend(self.events)  # Daemon.start forgets the last run's log
        super().start(wait_ready=False, env=env)
        assert self.proc is not None
        self.pids.append(self.proc.pid)
        if wait_ready:
            self.wait_event("daemon.ready", timeout=60)
        return self

    def every_event(self, name: str) -> list[dict[str, Any]]:
        """Events called ``name`` from every run so far, this one included."""
        return [e for e in [*self.history, *list(self.events)] if e.get("event") == name]


class Sink:
    """A relay that counts every mail it is given by Message-ID."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.message_ids: Counter[str] = Counter()
        self.mails = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        headers = BytesHeaderParser().parsebytes(raw)
        with self.lock:
            self.mails += 1
            self.message_ids[str(headers.get("Message-ID", "")).strip().strip("<>")] += 1
        return "250 2.0.0 Ok: queued"


@contextmanager
def relay_sink() -> Iterator[tuple[Sink, int]]:
    """A started sink on a free loopback port; stopped however the block ends."""
    sink = Sink()
    with serving(sink) as port:
        yield sink, port


class Mta:
    """Parallel SMTP clients that retry like an MTA: same message, next instance.

    With ``rate``, new messages start at most that many a second (retries are not paced),
    so that a load lasts long enough to be crashed into.

    ``oracle[nonce]`` lists what each attempt was told, as (instance index, reply code
    or exception name); a message is done at its first 250.
    """

    def __init__(
        self, ports: list[int], *, clients: int, deadline: float, rate: float | None = None
    ) -> None:
        self.ports, self.clients, self.deadline = ports, clients, deadline
        self.gap = 1 / rate if rate else 0.0  # seconds between two new messages, all clients
        self._next = 0.0
        self.oracle: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.accepted = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, work: list[tuple[str, str, bytes]]) -> Mta:
        """Send ``work`` items (nonce, envelope sender, raw) in the background."""
        queue = list(reversed(list(enumerate(work))))

        def client() -> None:
            while True:
                with self._lock:
                    if not queue:
                        return
                    i, (nonce, sender, raw) = queue.pop()
                    slot = max(time.monotonic(), self._next)
                    self._next = slot + self.gap
                time.sleep(max(0.0, slot - time.monotonic()))
                self._deliver(i % len(self.ports), nonce, sender, raw)

        self._threads = [threading.Thread(target=client) for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self._threads:
            t.join()

    def _deliver(self, first: int, nonce: str, sender: str, raw: bytes) -> None:
        attempt = 0
        while time.monotonic() < self.deadline:
            target = (first + attempt) % len(self.ports)
            attempt += 1
            try:
                with smtplib.SMTP("127.0.0.1", self.ports[target], timeout=20) as smtp:
                    smtp.ehlo()
                    smtp.mail(sender)
                    smtp.rcpt("support@example.com")
                    code, _ = smtp.data(raw)
            except (OSError, smtplib.SMTPException) as exc:
                self.oracle[nonce].append((target, type(exc).__name__))
            else:
                self.oracle[nonce].append((target, str(code)))
                if code == 250:
                    with self._lock:
                        self.accepted += 1
                    return
            time.sleep(min(0.05 * attempt, 0.5))

    def retried(self) -> dict[str, list[tuple[int, str]]]:
        """The messages that needed more than one attempt, with what each attempt got."""
        return {n: replies for n, replies in self.oracle.items() if len(replies) > 1}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` twice a second until it is true (database queries are not free)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if not value:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
    return value
