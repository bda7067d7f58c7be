"""Log lines stay whole and safe when several processes share one stdout."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from daemon import logging as logmod

WRITER = """
import sys
import structlog

from daemon import logging as logmod
logmod.configure("info", "json")
log = logmod.get_logger(component=sys.argv[1])
for i in range(3000):
    log.info("test.line", n=i, payload="x" * 300, text="a\\r\\nb\\x1bc")
"""


def _two_writers(tmp_path: Path, source: str) -> list[dict[str, object]]:
    """Run ``source`` as processes "a" and "b" writing to one pipe; the events read."""
    script = tmp_path / "w.py"
    script.write_text(source)
    read_fd, write_fd = os.pipe()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), name],
            stdout=write_fd,
            cwd=Path(__file__).resolve().parents[2],
        )
        for name in ("a", "b")
    ]
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        lines = pipe.read().splitlines()
    assert [p.wait(60) for p in procs] == [0, 0]
    return [json.loads(line) for line in lines]  # a line cut or spliced fails to parse


def test_lines_from_concurrent_processes_never_interleave(tmp_path: Path) -> None:
    """Two processes logging to one pipe at once produce only whole JSON lines."""
    events = _two_writers(tmp_path, WRITER)
    assert len(events) == 6000
    assert {e["component"] for e in events} == {"a", "b"}
    assert all(e["text"] == "a\\x0d\\x0ab\\x1bc" for e in events)


def test_console_rendering_escapes_control_characters() -> None:
    """SEC-05 on a terminal: CR, LF and ESC are shown escaped, never acted on."""
    out = io.StringIO()
    logmod.configure("info", "console", stream=out)
    try:
        logmod.get_logger().info("x.y", subject="a\r\nforged line\x1b[2J")
    finally:
        structlog.reset_defaults()  # other tests must not log into this StringIO
    text = out.getvalue()
    assert text.count("\n") == 1 and "\r" not in text and "\x1b" not in text
    assert "x0dx0a" in text.replace("\\", "") and "forged line" in text


LEVELS_SCRIPT = """
from daemon import logging as logmod
logmod.configure("warning", "json", components={"imap": "debug"})
logmod.get_logger(component="imap").debug("imap.idle")
logmod.get_logger(component="smtp").info("smtp.accepted")
logmod.get_logger(component="smtp").warning("smtp.refused")
logmod.get_logger(component="imap").info("imap.fetched")
"""


def test_a_component_can_have_a_level_of_its_own(tmp_path: Path) -> None:
    """[log] components: imap at debug while the rest stays at warning."""
    script = tmp_path / "levels.py"
    script.write_text(LEVELS_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert events == ["imap.idle", "smtp.refused", "imap.fetched"]


def test_a_lone_surrogate_in_a_field_still_makes_one_json_line() -> None:
    """Hostile mail can carry a lone surrogate that UTF-8 cannot encode: the line is
    written escaped, whole, and reads back as the same string."""
    out = io.StringIO()
    logmod.configure("info", "json", stream=out)
    try:
        logmod.get_logger(component="t").warning("test.hostile", subject="a\ud800b ñ")
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["subject"] == "a\ud800b ñ"


HOLDING_WRITER = """
import sys

from daemon import logging as logmod
logmod.configure("info", "json")
log = logmod.get_logger(component=sys.argv[1])
for burst in range(30):
    with logmod.held():
        for i in range(100):
            log.info("test.line", n=burst * 100 + i, payload="x" * (i * 37 % 900))
"""


def test_held_lines_from_concurrent_processes_stay_whole_and_in_order(tmp_path: Path) -> None:
    """Lines written in bursts (``held``) by two processes to one pipe: every line whole,
    each process's lines in the order it logged them."""
    events = _two_writers(tmp_path, HOLDING_WRITER)
    for name in ("a", "b"):
        assert [e["n"] for e in events if e["component"] == name] == list(range(3000))


def test_held_lines_go_out_at_the_end_in_few_writes(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with path.open("w", encoding="utf-8") as out:
        logmod.configure("info", "json", stream=out)
        log = logmod.get_logger(component="t")
        try:
            with logmod.held():
                for i in range(200):
                    log.info("test.held", n=i)
                    if i == 0:
                        assert path.read_text() == ""  # held, not written yet
                with logmod.held():  # nested: written with the outer block
                    log.warning("test.nested")
                assert path.read_text() == ""
            text = path.read_text()
            log.info("test.after")  # outside a block: written at once
            assert path.read_text().count("\n") == 202
        finally:
            structlog.reset_defaults()
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert events == ["test.held"] * 200 + ["test.nested"]


def test_a_line_longer_than_a_pipe_write_is_written_alone_and_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real = os.write

    def counting(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", counting)
    path = tmp_path / "log.jsonl"
    with path.open("w", encoding="utf-8") as out:
        logmod.LineWriter(out).write_lines(["a" * 100, "b" * 10_000, "c" * 100, "d" * 100])
    monkeypatch.undo()
    assert writes == [101, 10_001, 202]
    assert path.read_text().splitlines() == ["a" * 100, "b" * 10_000, "c" * 100, "d" * 100]


def test_timestamps_are_utc_iso_8601_to_the_microsecond_and_keep_up() -> None:
    """Every line's ``timestamp`` is the UTC time it was logged, six fraction digits and a
    Z (the date part is formatted once a second: lines across a second change stay right)."""
    out = io.StringIO()
    logmod.configure("info", "json", stream=out)
    stamps: list[tuple[datetime, datetime]] = []
    try:
        log = logmod.get_logger(component="t")
        end = datetime.now(UTC) + timedelta(seconds=2.1)  # across two second changes at least
        while (before := datetime.now(UTC)) < end:
            log.info("test.tick")
            stamps.append((before, datetime.now(UTC)))
    finally:
        structlog.reset_defaults()
    written = [json.loads(line)["timestamp"] for line in out.getvalue().splitlines()]
    assert len(written) == len(stamps) > 100
    for text, (before, after) in zip(written, stamps, strict=True):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text
        assert before <= datetime.fromisoformat(text) <= after
