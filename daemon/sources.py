"""Turn paths given to ``buzon ingest`` into raw messages: .eml files, mbox files, Maildirs.

A file whose first bytes are an mbox ``From `` line is split as mbox (each
message without its separator line); a directory with cur/ and new/ is a
Maildir; any other directory is walked in name order. Raw bytes are passed
through untouched otherwise.
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class RawItem:
    origin: str  # path, or path#index for a message inside an mbox or Maildir
    raw: bytes


class SourceError(Exception):
    """Raised for a path that does not exist or cannot be read."""


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _is_mbox(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(5) == b"From "


def expand(paths: list[str]) -> Iterator[RawItem]:
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise SourceError(f"{name}: no such file or directory")
        yield from _expand_one(path)


def _expand_one(path: Path) -> Iterator[RawItem]:
    if path.is_dir():
        if _is_maildir(path):
            box = mailbox.Maildir(path, factory=None, create=False)
            for key in sorted(box.iterkeys()):
                yield RawItem(f"{path}#{key}", box.get_bytes(key))
            return
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            yield from _expand_one(child)
        return
    if _is_mbox(path):
        mbox = mailbox.mbox(path, factory=None, create=False)
        try:
            for index, key in enumerate(mbox.iterkeys()):
                yield RawItem(f"{path}#{index}", mbox.get_bytes(key))
        finally:
            mbox.close()
        return
    yield RawItem(str(path), path.read_bytes())


def count(paths: list[str]) -> int | None:
    """How many messages ``expand`` will yield, when cheap to know (for a progress bar)."""
    total = 0
    for name in paths:
        path = Path(name)
        if path.is_file() and not _is_mbox(path):
            total += 1
        else:
            return None
    return total
