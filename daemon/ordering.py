"""Conversation order between one instance's ingest workers.

Two workers storing a message and its reply at the same moment let the reply miss the
ticket its original is still opening (that transaction has not committed), so the reply
opens a ticket of its own. Each entry the dispatcher hands out takes a turn, in spool
order. Before parsing, a worker names the entry's keys (its senders' addresses, its own
Message-ID and the ones it refers to, read from the raw header block); before its
transaction it waits until every earlier turn has named its keys and the earlier ones
sharing a key have committed. Unrelated mail is stored side by side, which is what a
second worker is for, and a message that takes its parser to the time limit holds back
only its own conversation: the keys never wait for a parse.

No deadlock: a turn waits only for earlier turns, and every earlier turn was taken off
the queue before it (the queue is FIFO), so it is being worked on and never waits for a
later one. Across instances nothing orders; the sender lock (``storage.repository.
lock_sender``) covers what it can, and docs/SCALING.md says what that means.
"""

from __future__ import annotations

import re
import threading
from typing import Any

HEADER_LIMIT = 256 * 1024  # a header block longer than this is read this far
FIELD_LIMIT = 4096  # of one field's value: a few addresses or a long References chain
_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"\r?\n[ \t]")
_FIELD = re.compile(rb"^(from|sender|message-id|in-reply-to|references)[ \t]*:(.*)$", re.I | re.M)
_ID = re.compile(r"<([^<>\s]{1,998})>")
# Not an address parser (Python's recurses on nested comments; the parser's own is in
# the parser process): a key only has to name the same mailbox the same way each time.
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"@]{1,64}@[^\s<>()\[\],;:\"@]{1,255}")


def order_keys(raw: bytes, envelope: dict[str, Any]) -> frozenset[str]:
    """What ties this message to others: who sent it and which messages it names.

    Read from the raw header block with linear patterns, not the parsed message, so a
    turn names its keys at once and no input can make this fail; an odd header may be
    read differently from the parser's reading, which at worst costs a conversation its
    order, never a message. The envelope sender counts only when no header names one:
    a list's or a relay's is the same for all its mail, which would be one conversation.
    """
    keys: set[str] = set()
    senders: set[str] = set()
    head = raw[:HEADER_LIMIT].removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")  # as the parser
    end = _END.search(head)
    head = _FOLD.sub(b" ", head[: end.start()] if end else head)
    for name, value in _FIELD.findall(head):
        text = value[:FIELD_LIMIT].decode("latin-1")
        if name.lower() in (b"from", b"sender"):
            senders.update(a.lower() for a in _ADDRESS.findall(text))
            continue
        ids = _ID.findall(text)
        if not ids:  # some mailers leave out the <>; free text ("your mail of …") is no id
            ids = [t for t in text.split()[:1] if "@" in t or name.lower() == b"message-id"]
        keys.update(i.lower() for i in ids)
    mail_from = envelope.get("mail_from")
    if not senders and isinstance(mail_from, str) and mail_from.strip("<>"):
        senders.add(mail_from.strip("<>").lower())
    return frozenset(keys | senders)


class Turn:
    """One entry's place in the order: name its keys, then wait before committing."""

    __slots__ = ("_number", "_turns")

    def __init__(self, turns: Turns, number: int) -> None:
        self._turns, self._number = turns, number

    def name(self, keys: frozenset[str]) -> None:
        self._turns.name(self._number, keys)

    def wait(self) -> None:
        self._turns.wait(self._number)


class Turns:
    """Turn numbers in dispatch order; a turn waits for the earlier ones it shares a key
    with. Keys of ``None`` mean "not named yet": such a turn may share anything."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        # Insertion-ordered, so a scan can stop at the first later turn.
        self._open: dict[int, frozenset[str] | None] = {}

    def take(self) -> int:
        with self._cond:
            number, self._next = self._next, self._next + 1
            self._open[number] = None
            return number

    def turn(self, number: int) -> Turn:
        return Turn(self, number)

    def name(self, number: int, keys: frozenset[str]) -> None:
        with self._cond:
            if number in self._open:
                self._open[number] = keys
                self._cond.notify_all()

    def wait(self, number: int) -> None:
        """Return when no earlier open turn may share a key with ``number``."""
        with self._cond:
            self._cond.wait_for(lambda: not self._blocked(number))

    def done(self, number: int) -> None:
        """``number`` committed, failed or was never worked on: later turns may go."""
        with self._cond:
            self._open.pop(number, None)
            self._cond.notify_all()

    def open(self) -> int:
        with self._cond:
            return len(self._open)

    def _blocked(self, number: int) -> bool:
        keys = self._open.get(number) or frozenset()
        for other, theirs in self._open.items():
            if other >= number:
                return False
            if theirs is None or not keys.isdisjoint(theirs):
                return True
        return False
