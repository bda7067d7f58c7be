"""``buzon logs``: read Buzón's JSON log lines, keep those of one ticket, message or spool
entry, and print them readably (``HH:MM:SS level component event key=value …``).

Input is FILE, ``-`` for stdin, or without FILE ``journalctl -u buzon -o cat`` when
journalctl exists (else stdin); ``--follow`` keeps reading. ``--ticket`` also keeps
lines that carry no ticket but a ``message_id``, ``spool_id`` or ``message`` an earlier
line tied to that ticket, so a message's later events stay in view. Filters combine.

Lines that are not JSON (a library writing to stderr) are passed through unchanged,
except that a terminal gets control characters escaped; with an id filter they never
match. Values are printed with control characters escaped (SEC-05): JSON carries a
hostile subject's ESC as ``\\u001b``, and decoding it must not hand it to the terminal.
This command needs no configuration, so an admin who may read the journal but not
the daemon's data can run it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from daemon.errors import UsageError

LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
LINKS = ("message_id", "spool_id", "message")  # ids that tie a line to a ticket
HEAD = ("timestamp", "level", "component", "event")
# C0, DEL and C1: a C1 byte such as CSI (0x9b) drives some terminals as ESC [ does.
_CTRL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
_COLOURS = {"debug": "2", "info": "32", "warning": "33", "error": "31;1", "critical": "31;1"}


@dataclass
class Filter:
    """Which records to keep; remembers the ids seen with ``ticket``."""

    ticket: str | None = None
    message_id: str | None = None
    spool_id: str | None = None
    level: int = 0
    linked: set[tuple[str, str]] = field(default_factory=set)

    @property
    def by_id(self) -> bool:
        return any(v is not None for v in (self.ticket, self.message_id, self.spool_id))

    def match(self, rec: dict[str, Any]) -> bool:
        level = LEVELS.get(str(rec.get("level", "info")).lower(), LEVELS["info"])
        if level < self.level:
            return False
        if self.message_id is not None and _bare(rec.get("message_id")) != _bare(self.message_id):
            return False
        if self.spool_id is not None and rec.get("spool_id") != self.spool_id:
            return False
        return self.ticket is None or self._of_ticket(rec)

    def _of_ticket(self, rec: dict[str, Any]) -> bool:
        ids = [(k, str(rec[k])) for k in LINKS if rec.get(k) not in (None, "")]
        if "ticket" in rec:
            if str(rec["ticket"]).upper() != self.ticket:
                return False
            self.linked.update(ids)
            return True
        return any(i in self.linked for i in ids)


def _bare(message_id: Any) -> str:
    """A Message-ID with or without its angle brackets: an admin copies either."""
    return str(message_id or "").strip().strip("<>")


def _text(value: str) -> str:
    return value.translate(_CTRL)


def _value(value: Any) -> str:
    if not isinstance(value, str):
        return _text(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    if value and not any(c.isspace() or c in '"=' for c in value):
        return _text(value)
    return '"' + _text(value.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _clock(stamp: Any) -> str:
    try:
        return datetime.fromisoformat(str(stamp)).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return "--:--:--"


def render(rec: dict[str, Any], colour: bool = False) -> str:
    """``HH:MM:SS level component event key=value …``, local time, control chars escaped."""
    level = _text(str(rec.get("level", "-")))
    component = _text(str(rec.get("component", "-")))
    event = _text(str(rec.get("event", "-")))
    pairs = [(_text(str(k)), _value(v)) for k, v in rec.items() if k not in HEAD]
    if colour:
        code = _COLOURS.get(level.lower(), "0")
        level = f"\x1b[{code}m{level:<7}\x1b[0m"
        event = f"\x1b[1m{event}\x1b[0m"
        kv = " ".join(f"\x1b[36m{k}\x1b[0m={v}" for k, v in pairs)
    else:
        level = f"{level:<7}"
        kv = " ".join(f"{k}={v}" for k, v in pairs)
    return f"{_clock(rec.get('timestamp'))} {level} {component:<11} {event} {kv}".rstrip()


def parse(line: bytes) -> dict[str, Any] | None:
    """The record on a log line; None for a line that is not a JSON object."""
    try:
        rec = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _follow(path: Path, poll: float = 0.5) -> Iterator[bytes]:
    """Lines of ``path``, then new ones as they are written; reopened after rotation."""
    f = path.open("rb")
    partial = b""
    try:
        while True:
            chunk = f.readline()
            if chunk.endswith(b"\n"):
                yield partial + chunk
                partial = b""
                continue
            partial += chunk  # a line still being written, or nothing new
            if chunk:
                continue
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                if st.st_ino != os.fstat(f.fileno()).st_ino or st.st_size < f.tell():
                    f.close()  # rotated or truncated: start on the new file
                    f, partial = path.open("rb"), b""
                    continue
            time.sleep(poll)
    finally:
        f.close()


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from f


def _source(args: argparse.Namespace) -> tuple[Iterator[bytes], subprocess.Popen[bytes] | None]:
    journalctl = shutil.which("journalctl")
    if args.file == "-" or (args.file is None and journalctl is None):
        if args.file is None and sys.stdin.isatty():
            raise UsageError("no journalctl here: name a log FILE, or pipe the log in (-)")
        return iter(sys.stdin.buffer.readline, b""), None
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        return (_follow(path) if args.follow else _read(path)), None
    assert journalctl is not None
    argv = [journalctl, "-u", args.unit, "-o", "cat", "--no-pager"]
    proc = subprocess.Popen([*argv, *(["-f"] if args.follow else [])], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return iter(proc.stdout.readline, b""), proc


def _plain(line: bytes, tty: bool) -> bytes:
    if not tty:
        return line
    return _text(line.decode("utf-8", "replace")).encode("utf-8")


def _emit(lines: Iterator[bytes], args: argparse.Namespace, out: IO[bytes], flt: Filter) -> None:
    tty = sys.stdout.isatty()
    colour = tty and not os.environ.get("NO_COLOR")
    live = args.follow or args.file in (None, "-") or tty  # a stream: show lines as they come
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        rec = parse(line)
        if rec is None:
            if flt.by_id or not line:
                continue
            out.write(_plain(line, tty) + b"\n")
        elif flt.match(rec):
            out.write(line + b"\n" if args.json else render(rec, colour).encode("utf-8") + b"\n")
        else:
            continue
        if live:
            out.flush()  # following: each line as it comes
    out.flush()


def logs(args: argparse.Namespace) -> int:
    """Print the matching lines; a closed pipe (``| head``) or Ctrl-C ends quietly."""
    flt = Filter(
        ticket=args.ticket.upper() if args.ticket else None,
        message_id=args.message_id,
        spool_id=args.spool_id,
        level=LEVELS[args.level] if args.level else 0,
    )
    lines, proc = _source(args)
    try:
        _emit(lines, args, sys.stdout.buffer, flt)
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it elsewhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except KeyboardInterrupt:
        pass
    finally:
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    return 0


def main(args: argparse.Namespace) -> int:
    """``buzon logs``, exit 2 on bad usage; called before any configuration is read."""
    try:
        return logs(args)
    except UsageError as exc:
        print(f"buzon: {exc}", file=sys.stderr)
        return 2
