"""This instance: an exclusive hold on its spool, and a name that survives its restarts.

A ``buzon run`` holds ``<spool>/instance.lock`` (``flock``) for its whole life, so a
second daemon started on the same spool refuses to start, instead of recovering the
first one's claimed entries as crashed or fetching its IMAP folders beside it. The
kernel drops the hold when the process dies, ``kill -9`` included.

The name, ``<hostname>:<id>`` with the id created once in ``<spool>/instance-id``, is
the holder of this instance's IMAP folder leases. A restarted daemon is the same
holder and takes its folders back at once; with a name per process it waited for its
own dead lease to expire (``[[imap]] lease``, 60 s) before fetching again, after every
crash and every ``systemctl restart``. Two instances never share a name: each has its
own spool (docs/SCALING.md), and two processes cannot hold one spool.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon import durable
from daemon.errors import BuzonError

LOCK = "instance.lock"
ID = "instance-id"


class InstanceBusyError(BuzonError):
    """Raised when another live process holds this spool."""


@contextmanager
def hold(spool: Path) -> Iterator[str]:
    """Hold ``spool`` for this process until the block ends; this instance's name."""
    spool.mkdir(parents=True, exist_ok=True)
    fd = os.open(spool / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstanceBusyError(
                f"another buzon run (pid {_pid_in(fd)}) is using the spool {spool}; stop it first, "
                "or give this instance a [storage] spool of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message above, not a lock
        yield f"{socket.gethostname()}:{_stable_id(spool)}"
    finally:
        os.close(fd)


def holder(spool: Path) -> str | None:
    """The pid of the live ``buzon run`` holding ``spool``; None when none does.

    Only looks: creates nothing (a command run as root must not leave a lock file the
    service's user cannot open) and takes the hold for an instant at most."""
    try:
        fd = os.open(spool / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _pid_in(fd)
    finally:
        os.close(fd)  # drops the shared hold, if taken
    return None


def _pid_in(fd: int) -> str:
    """The pid the holder wrote into the lock file (for messages, not for locking)."""
    return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"


def _stable_id(spool: Path) -> str:
    """The id stored in the spool, created (durably) on its first run."""
    path = spool / ID
    try:
        value = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        value = ""
    if value:
        return value
    value = secrets.token_hex(6)
    tmp = spool / f".{ID}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    durable.fsync_dir(spool)
    return value
