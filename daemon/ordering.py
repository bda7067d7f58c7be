"""Conversation order between one instance's ingest workers.

Two workers storing a message and its reply at the same moment let the reply miss the
ticket its original is still opening (that transaction has not committed), so the reply
opens a ticket of its own. Each entry the dispatcher hands out takes a turn, in spool
order; once parsed, a worker names the entry's keys (its sender's addresses, its own
Message-ID and the ones it refers to) and waits until every earlier entry has named its
keys and the earlier ones sharing a key have committed. Unrelated mail is still stored
side by side, which is what a second worker is for.

No deadlock: an entry waits only for earlier turns, and every earlier turn was taken off
the queue before it (the queue is FIFO), so it is being worked on and never waits for a
later one. Across instances nothing orders; docs/SCALING.md says what that means.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from parsers.model import ParsedMessage


def order_keys(parsed: ParsedMessage | None, envelope: dict[str, Any]) -> frozenset[str]:
    """What ties this message to others: who sent it and which messages it names."""
    keys: set[str] = set()
    mail_from = envelope.get("mail_from")
    if isinstance(mail_from, str) and mail_from.strip("<>"):
        keys.add(mail_from.strip("<>").lower())
    if parsed is not None:
        if parsed.sender is not None and parsed.sender.addr_spec:
            keys.add(parsed.sender.addr_spec.lower())
        ids: Iterable[str] = (parsed.message_id, *parsed.in_reply_to, *parsed.references)
        keys.update(i.lower() for i in ids if i)
    return frozenset(keys)


class Turns:
    """Turn numbers in dispatch order; a turn waits for the earlier ones it shares a key
    with. Keys of ``None`` mean "not parsed yet": such a turn may share anything."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        # Insertion-ordered, so a scan can stop at the first later turn.
        self._open: dict[int, frozenset[str] | None] = {}

    def take(self) -> int:
        with self._cond:
            turn, self._next = self._next, self._next + 1
            self._open[turn] = None
            return turn

    def wait(self, turn: int, keys: frozenset[str]) -> None:
        """Name ``turn``'s keys; return when no earlier open turn may share one."""
        with self._cond:
            self._open[turn] = keys
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._blocked(turn, keys))

    def done(self, turn: int) -> None:
        """``turn`` committed, failed or was never worked on: later turns may go."""
        with self._cond:
            self._open.pop(turn, None)
            self._cond.notify_all()

    def open(self) -> int:
        with self._cond:
            return len(self._open)

    def _blocked(self, turn: int, keys: frozenset[str]) -> bool:
        for other, theirs in self._open.items():
            if other >= turn:
                return False
            if theirs is None or not keys.isdisjoint(theirs):
                return True
        return False
