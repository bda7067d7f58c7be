"""The wire form of the mail we write: headers folded by hand, the text part set directly.

``EmailMessage`` stores a header object whose ``fold`` it calls as is (``Folded``), so
what is written here reaches the bytes unchanged. Folded here rather than by the email
package for two reasons. Correctness (SEC-01): CPython 3.11's folder can drop a space
between encoded words (gh-144156), encodes a long Message-ID, and writes a long quoted
name unquoted (``"x"*90 + " <evil@x>"`` became a second recipient). Cost: each header set
as a string is parsed into a header object and folded back, and
``email.header.Header.encode`` re-encodes every candidate line from its start; all of it
was ~60 % of composing a mail (bench/compose.py).

Text reaching here is already clean (``outmail.header_text``: one line, no controls).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from email import quoprimime
from email.charset import Charset
from email.message import EmailMessage
from email.policy import Policy

_PLAIN_NAME = re.compile(r"[A-Za-z0-9 !#$%&'*+/^_`{|}~-]{1,60}")  # atext and spaces, short


@dataclass(frozen=True, slots=True)
class Folded:
    """A header folded here; ``EmailMessage`` stores it as is and writes ``fold()``."""

    name: str
    wire: str  # ASCII, folded with "\n "
    text: str  # what a reader decodes

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self.wire}".replace("\n", policy.linesep) + policy.linesep

    def __str__(self) -> str:
        return self.text


def folded(name: str, text: str, *, encode: bool = True) -> Folded:
    """``text`` (single spaces, no controls) folded at spaces, else as encoded words."""
    words = text.split(" ")
    if encode and (not text.isascii() or max(map(len, words)) > 70):
        # Every space inside the encoded words (encoded_words): folding cannot lose one.
        wire = encoded_words(text, len(name) + 2)
        return Folded(name, wire, text)
    wire, width = words[0], len(name) + 2 + len(words[0])
    for word in words[1:]:
        fold = width + 1 + len(word) > 78
        wire += ("\n " if fold else " ") + word
        width = (0 if fold else width) + 1 + len(word)
    return Folded(name, wire, text)


_UTF8 = Charset("utf-8")  # each word in the shorter of quoted-printable and base64
_LINE = 76  # RFC 2047: a line holding an encoded word is at most 76 characters
_WORD_FRAME = len("=?utf-8?b??=")


def encoded_words(text: str, taken: int) -> str:
    """``text`` as RFC 2047 encoded words folded with "\n ", every line at most 76
    characters, the first after ``taken`` characters of its header's name (a name so long
    that no character fits beside it, over ~50, gets its first character anyway).

    Every space stays inside a word, so no decoder can lose one between words. What
    ``email.header.Header.encode`` writes, a third of the time: it measures each
    candidate line by re-encoding it from its start (a composed mail cost 15 % more with
    it; bench/compose.py). Here each word holds as many whole characters as base64 of
    them fits; the charset then writes the word in quoted-printable when that is shorter.
    """
    data, words = text.encode(), []
    start, room = 0, _LINE - taken
    while start < len(data):
        end = start + 3 * ((room - _WORD_FRAME) // 4)  # the bytes whose base64 fits
        if end < len(data):
            while end > start and data[end] & 0xC0 == 0x80:  # not inside a character
                end -= 1
            if end <= start:  # no room for one character: it goes alone
                end = start + 1
                while end < len(data) and data[end] & 0xC0 == 0x80:
                    end += 1
        words.append(_UTF8.header_encode(data[start:end].decode()))
        start, room = end, _LINE - 1  # a folded line starts with a space
    return "\n ".join(words)


def mailbox(name: str, display_name: str, address: str) -> Folded:
    if not display_name:
        return Folded(name, address, address)
    phrase = display_name
    if not _PLAIN_NAME.fullmatch(display_name):
        phrase = encoded_words(display_name, len(name) + 2)
    return Folded(name, f"{phrase} <{address}>", f"{display_name} <{address}>")


def ids(name: str, ids: list[str]) -> Folded:
    return folded(name, " ".join(f"<{mid}>" for mid in ids), encode=False)


def set_text(msg: EmailMessage, text: str) -> None:
    """What ``msg.set_content(text, charset="utf-8")`` sets, byte for byte, with its
    three headers stored folded.

    The stdlib's text handler parses the Content-Type it has just written, twice, to add
    the charset (a fifth of a composed mail's cost). The encoding is chosen as CPython's
    ``email.contentmanager`` chooses it under ``msg``'s policy (tests/daemon/test_outmail.py
    holds the bytes to its): 7bit when every line is ASCII and short, else the shorter of
    quoted-printable and base64 on the first ten lines, base64 in lines of 76.
    """
    lines = text.encode("utf-8").splitlines()
    normal = b"\n".join(lines) + b"\n"
    sep = msg.policy.linesep.encode()
    longest = msg.policy.max_line_length or 78  # None means unlimited; ours set 78
    cte, payload = "7bit", ""
    if max(map(len, lines), default=0) <= longest and normal.isascii():
        payload = normal.decode("ascii")
    else:
        sniff = sep.join(lines[:10]) + sep
        sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), longest)
        if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
            cte, whole = "base64", sep.join(lines) + sep
            step = longest // 4 * 3
            payload = "".join(
                binascii.b2a_base64(whole[i : i + step]).decode("ascii")
                for i in range(0, len(whole), step)
            )
        else:
            cte = "quoted-printable"
            payload = (
                sniff_qp
                if len(lines) <= 10
                else quoprimime.body_encode(normal.decode("latin-1"), longest)
            )
    msg["Content-Type"] = folded("Content-Type", 'text/plain; charset="utf-8"', encode=False)
    msg.set_payload(payload)
    msg["Content-Transfer-Encoding"] = folded("Content-Transfer-Encoding", cte)
    msg["MIME-Version"] = folded("MIME-Version", "1.0")
