"""Whatever a client types, the intake answers it as the client's mistake or does the work.

SMTP-level fuzzing of a live listener on loopback: sessions of commands built from the
characters address parsing turns on (brackets, quotes, literals, comments, encoded words,
controls, 8-bit text). No reply may be the ``451`` of ``IntakeHandler.handle_exception``,
which tells the client to retry and the admin that the server failed: a malformed
command is the client's (5xx), and a well-formed one is served. This found two crashes
of CPython's address parser under aiosmtpd (``MAIL FROM:<``, ``RCPT TO:<a@[``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.intake import Intake
from support.mail import read_reply

ATOMS = ["<", ">", "@", "[", "]", "(", ")", '"', "\\", ",", ":", ";", ".", " ", "\t", "=",
         "a", "Z", "9", "-", "+", "é", "\x00", "\x7f", "=?utf-8?q?x?=", "SIZE=", "BODY=",
         "8BITMIME", "SMTPUTF8"]  # fmt: skip
VERBS = ["MAIL FROM:", "RCPT TO:", "EHLO ", "HELO ", "VRFY ", "EXPN ", "NOOP ", "HELP ", "RSET "]

_junk = st.lists(st.sampled_from(ATOMS), max_size=12).map("".join)
_path = st.tuples(_junk, _junk, st.sampled_from(["", " ", " SIZE=1", " BODY=8BITMIME"])).map(
    lambda t: f"<{t[0]}@{t[1]}>{t[2]}"
)
_command = st.tuples(st.sampled_from(VERBS), _junk | _path).map(
    lambda t: (t[0] + t[1]).encode("utf-8")[:900] + b"\r\n"
)


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Intake]:
    with Intake(tmp_path_factory.mktemp("fuzz")) as server:
        yield server


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(_command, min_size=1, max_size=6))
def test_no_command_is_answered_as_a_server_failure(intake: Intake, commands: list[bytes]) -> None:
    failed = intake.handler.stats.failed
    with socket.create_connection(("127.0.0.1", intake.port), timeout=20) as sock:
        f = sock.makefile("rb")
        assert read_reply(f).startswith(b"220")
        for line in [b"EHLO fuzz\r\n", *commands]:
            sock.sendall(line)
            reply = read_reply(f)
            assert reply[:1] in (b"2", b"5"), (line, reply)
        sock.sendall(b"QUIT\r\n")
        assert read_reply(f).startswith(b"221")
        f.close()
    assert intake.handler.stats.failed == failed
