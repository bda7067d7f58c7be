"""PARSE-05 through the real daemon: hostile sizes are cut by limits, stored raw, in time.

The unit tests (tests/parsers/test_parsers_limits.py) pin what each limit cuts; here
the same shapes go in over SMTP to a running ``buzon run`` while ordinary mail and
``buzon status`` keep being answered.
"""

from __future__ import annotations

import json
import smtplib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from support.daemon import Daemon, wait_until
from support.invariants import assert_invariants
from support.mail import message

HANDLED_WITHIN = 10.0  # seconds from the 250 to the stored row (RELIABILITY.md PARSE-05)


def _head(name: str) -> bytes:
    return (
        f"From: Ana <ana@cliente.es>\r\nMessage-ID: <{name}@cliente.es>\r\n"
        f"Subject: bomba {name}\r\nMIME-Version: 1.0\r\n"
    ).encode()


def _huge_to() -> bytes:
    """A 1 MB To: header, folded every 20 addresses as a real MTA would send it."""
    lines = [
        b", ".join(b"user%d@example.com" % (i + j) for j in range(20)) for i in range(0, 52_000, 20)
    ]
    return _head("to-1mb") + b"To: " + b",\r\n ".join(lines) + b"\r\n\r\nhola\r\n"


def _many_parts() -> bytes:
    parts = b"".join(
        b"--b\r\nContent-Type: application/octet-stream\r\n\r\n%d\r\n" % i for i in range(100_000)
    )
    return (
        _head("parts-100k")
        + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + parts
        + b"--b--\r\n"
    )


def _deep_multipart() -> bytes:
    levels = [_head("multipart-10k-deep") + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"]
    levels += [
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i)
        for i in range(1, 10_000)
    ]
    return b"".join(levels) + b"--b9999\r\nContent-Type: text/plain\r\n\r\ndeep\r\n"


def _deep_rfc822() -> bytes:
    nested = b"Content-Type: message/rfc822\r\n\r\n" * 10_000
    return _head("rfc822-10k-deep") + nested + b"\r\ninnermost\r\n"


# name: (raw, a defect the cut must record)
HOSTILE: dict[str, tuple[bytes, str]] = {
    "to-1mb": (_huge_to(), "header field to over 65536 bytes; truncated"),
    "parts-100k": (_many_parts(), "parts limit 1000 exceeded; remaining parts not parsed"),
    "multipart-10k-deep": (_deep_multipart(), "depth limit 50 exceeded"),
    "rfc822-10k-deep": (_deep_rfc822(), "depth limit 50 exceeded"),
}


def _send(port: int, raw: bytes) -> float:
    """Send one message; the seconds the whole SMTP transaction took."""
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail("ana@cliente.es", ["support@example.com"], raw)
    return time.monotonic() - started


@pytest.mark.timeout(240)
def test_parse05_hostile_mail_is_cut_stored_raw_and_the_daemon_keeps_answering(
    daemon_factory: Callable[..., Daemon],
) -> None:
    """PARSE-05: a 1 MB To:, 100,000 parts and 10,000-deep nesting (multipart and
    message/rfc822), sent over SMTP, are each stored within 10 s of their 250 with the
    raw bytes byte-exact and the limit recorded as a defect, while ordinary mail sent
    meanwhile is answered and stored and ``buzon status`` answers."""
    assert len(HOSTILE["to-1mb"][0]) > 1_000_000
    d = daemon_factory("parse05")
    # The first message pays for loading the triage model; that is not parsing time.
    _send(d.port, message("primero"))
    d.wait_event("message.stored", timeout=60)
    accepted_at: dict[str, datetime] = {}
    errors: list[BaseException] = []

    def hostile_sender() -> None:
        try:
            for name, (raw, _) in HOSTILE.items():
                _send(d.port, raw)
                accepted_at[name] = datetime.now(UTC)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    sender = threading.Thread(target=hostile_sender)
    sender.start()
    ordinary: list[str] = []
    smtp_times: list[float] = []
    statuses: list[dict[str, Any]] = []
    while sender.is_alive() or len(ordinary) < 5:
        nonce = uuid.uuid4().hex
        smtp_times.append(_send(d.port, message("pedido normal", nonce=nonce)))
        ordinary.append(nonce)
        if len(statuses) < 2:
            statuses.append(json.loads(d.cli("status", "--json").stdout))
        time.sleep(0.3)
    sender.join()
    assert errors == []
    assert max(smtp_times) < 5, f"ordinary SMTP transactions took {smtp_times}"
    assert all(s["listeners"]["smtp"]["state"] == "listening" for s in statuses), statuses

    total = 1 + len(HOSTILE) + len(ordinary)
    wait_until(lambda: d.count("message.stored") >= total, 60, what="every message stored")
    stored_at = {
        e["message_id"].split("@", 1)[0]: datetime.fromisoformat(e["timestamp"])
        for e in list(d.events)
        if e.get("event") == "message.stored"
    }
    took = {name: (stored_at[name] - accepted_at[name]).total_seconds() for name in HOSTILE}
    assert all(t < HANDLED_WITHIN for t in took.values()), f"seconds from 250 to stored: {took}"
    assert d.stop() == 0

    with sqlite3.connect(d.config.parent / "buzon.db") as conn:
        rows = {
            mid.split("@", 1)[0]: (bytes(raw), state, json.loads(defects))
            for mid, raw, state, defects in conn.execute(
                "SELECT message_id, raw, state, defects FROM messages"
            )
        }
        texts = [bytes(raw) for (raw,) in conn.execute("SELECT raw FROM messages")]
    for name, (raw, defect) in HOSTILE.items():
        stored_raw, state, defects = rows[name]
        assert stored_raw == raw, f"{name}: raw bytes changed"
        assert state == "done", f"{name}: {state}"
        assert any(defect in d for d in defects), f"{name}: {defects}"
    assert all(any(n.encode() in raw for raw in texts) for n in ordinary)
    assert_invariants(d.config)
