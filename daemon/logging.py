"""Structured logs: one JSON object per line on stdout, a readable rendering on a terminal.

Event names are stable and dotted (``smtp.accepted``); ids such as
``message_id``, ``ticket`` and ``source`` are bound with contextvars so one
message can be followed end to end. docs/EVENTS.md is the catalogue.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import operator
import os
import re
import select
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_METHODS = {**LEVELS, "warn": 30, "exception": 40, "critical": 50, "fatal": 50}
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c not in (0x09,)}
_HAS_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def escape_control_characters(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> EventDict:
    """Escape CR, LF and other control characters in string values (SEC-05).

    JSON escapes them already; the console renderer would print them raw, so a
    hostile subject could forge log lines on a terminal.
    """
    for key, value in event_dict.items():
        # isprintable() first: true of nearly every value and several times cheaper than
        # the search; every control character is unprintable (TAB too, kept by the search).
        if isinstance(value, str) and not value.isprintable() and _HAS_CONTROL.search(value):
            event_dict[key] = value.translate(_CONTROL)
    return event_dict


_encode = msgspec.json.Encoder(enc_hook=repr).encode


def json_line(event: Any, **kw: Any) -> str:
    """The JSON of one log event: msgspec's C encoder (a few times ``json.dumps``'s speed on
    the scheduler's thousands of lines per pass), ``json.dumps`` for the string it refuses
    (a lone surrogate from hostile mail). An unknown type is written as its ``repr``."""
    try:
        return _encode(event).decode()
    except UnicodeEncodeError:
        return json.dumps(event, separators=(",", ":"), **kw)


class LineWriter:
    """A structlog logger that emits each event with a single write(2).

    The daemon's processes (SMTP, ingest) share one stdout. print() writes the
    text and its newline separately, so two processes could splice their lines
    together; one write of a line under PIPE_BUF (4 KiB) is atomic on a pipe
    and is never split on journald's stream socket in practice. Inside ``held()``
    a thread's lines wait and go out several per write, each write still whole
    lines under PIPE_BUF.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None  # an in-memory stream (tests): plain writes are fine
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        waiting: list[tuple[LineWriter, str]] | None = getattr(_HELD, "lines", None)
        if waiting is not None:
            waiting.append((self, message))
            return
        self.write_lines([message])

    log = debug = info = warn = warning = error = critical = exception = fatal = msg

    def write_lines(self, messages: Sequence[str]) -> None:
        """Write ``messages`` as lines, as few writes as keep each under PIPE_BUF whole."""
        if self._fd is None:
            self._stream.write("".join(m + "\n" for m in messages))
            self._stream.flush()
            return
        chunk: list[bytes] = []
        size = 0
        for message in messages:
            line = (message + "\n").encode("utf-8", "backslashreplace")
            if chunk and size + len(line) > _PIPE_BUF:
                self._write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        with self._lock:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]


_PIPE_BUF = select.PIPE_BUF
_HELD = threading.local()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold the lines this thread logs until the block ends, then write them together.

    For a burst of lines that are ready at once (a scheduler batch logs hundreds): one
    write(2) per ~4 KiB instead of one per line, and journald wakes once per write. The
    lines keep their order; another thread's lines may come between the writes. Nested
    blocks write at the outermost one's end.
    """
    if getattr(_HELD, "lines", None) is not None:
        yield
        return
    lines: list[tuple[LineWriter, str]] = []
    _HELD.lines = lines
    try:
        yield
    finally:
        _HELD.lines = None
        for writer, group in itertools.groupby(lines, key=operator.itemgetter(0)):
            writer.write_lines([message for _, message in group])


class UtcStamper:
    """``timestamp``: the UTC time in ISO 8601 to the microsecond, e.g.
    ``2026-12-03T14:00:00.000000Z`` (structlog's ``TimeStamper(fmt="iso", utc=True)``
    text, but always six digits). The date and time to the second are formatted once a
    second: structlog's stamper was a quarter of the processing of a scheduler line."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # one tuple: threads never see a torn pair

    def __call__(self, _logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        cached, prefix = self._second
        if second != cached:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, prefix)
        event["timestamp"] = f"{prefix}.{nanos // 1000:06d}Z"
        return event


class ComponentLevels:
    """Drops an event below its component's own level (``[log] components``)."""

    def __init__(self, default: str, components: Mapping[str, str]) -> None:
        self.default = LEVELS[default.lower()]
        self.levels = {name: LEVELS[lvl.lower()] for name, lvl in components.items()}

    def __call__(self, _logger: Any, method: str, event: EventDict) -> EventDict:
        floor = self.levels.get(str(event.get("component", "")), self.default)
        if _METHODS.get(method, logging.INFO) < floor:
            raise structlog.DropEvent
        return event


def configure(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    components: Mapping[str, str] | None = None,
) -> None:
    """Install the process-wide structlog configuration (called once, by the CLI; again on
    reload). ``components`` gives some components a level of their own."""
    out = stream or sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    components = dict(components or {})
    floor = min([LEVELS[level.lower()], *(LEVELS[v.lower()] for v in components.values())])
    writer = LineWriter(out)  # one lock for every logger of the process
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        ComponentLevels(level, components),
        structlog.processors.add_log_level,
        UtcStamper(),
        structlog.processors.format_exc_info,
        escape_control_characters,
    ]
    if use_console:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=json_line))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(floor),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (aiosmtpd, alembic) stay quiet below WARNING
    # so their lines do not interleave unstructured text with our JSON.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for noisy in ("mail.log", "alembic", "mailparser"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def get_logger(**bound: Any) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(**bound)
    return logger
