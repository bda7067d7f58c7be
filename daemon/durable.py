"""Durable file writes: a file or a rename is acknowledged only once it is on disk.

The spool, the instance id and the voicemail folders all promise that what they
wrote survives a power cut. The rules for that live here, once:

* a new file is created exclusively, written whole, and flushed before it is renamed
  into place (``write_new``, ``flush_files``);
* a rename is durable only once its directory is flushed (``fsync_dir``);
* many files of one filesystem are flushed with one ``syncfs(2)``, one journal commit,
  where Linux has it, and one ``fsync`` each elsewhere;
* a full disk is reported as :class:`~daemon.errors.SpoolFullError`, whose message names
  the problem, so callers answer a temporary failure instead of losing the mail.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from daemon.errors import SpoolFullError

_libc: Any = None
_libc_name = ctypes.util.find_library("c")
if _libc_name:
    try:
        _libc = ctypes.CDLL(_libc_name, use_errno=True)
        _libc.syncfs  # noqa: B018 — probe: absent on non-Linux libcs
    except (OSError, AttributeError):
        _libc = None


def syncfs(fd: int) -> bool:
    """Flush every dirty page of the filesystem holding ``fd``; False when unsupported."""
    if _libc is None:
        return False
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


def fsync_dir(path: Path) -> None:
    """Make the renames and unlinks done in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes, *, sync: bool) -> None:
    """Create ``path`` (it must not exist) holding ``data``; flushed to disk if ``sync``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def flush_files(directory: Path, names: Iterable[str]) -> None:
    """Flush the files ``names`` of ``directory``, written with ``sync=False``."""
    # One syncfs flushes every file of a batch in a single journal commit; per-file
    # fsync is the fallback where syncfs does not exist.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd):
            return
    finally:
        os.close(fd)
    for name in names:
        f = os.open(directory / name, os.O_RDONLY)
        try:
            os.fsync(f)
        finally:
            os.close(f)


def unlink_quietly(*paths: Path) -> None:
    """Remove ``paths``; one already gone is no error (a retry after a crash)."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def full_disk_error(exc: OSError) -> BaseException:
    """``exc`` as callers should see it: a full disk or quota as ``SpoolFullError``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SpoolFullError(f"spool filesystem is full: {exc.strerror}")
    return exc
