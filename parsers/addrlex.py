"""Split an address header into RFC 5322 lexical tokens and mailbox items.

One linear pass: quoted strings, domain literals and atoms by one regex,
comments by a small scanner with nesting capped at 32 levels, so hostile
headers (the deep parentheses that make ``email.utils.getaddresses`` raise
``RecursionError``) cost nothing special. Malformed pieces (an unterminated
quote, a stray ``)`` or ``\\``) become ``bad`` tokens for the caller to judge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_COMMENT_DEPTH = 32

_TOKEN = re.compile(
    r"""(?P<ws>[ \t]+)
    |(?P<qs>"(?:[^"\\]|\\.)*(?P<closed>")?)
    |(?P<dl>\[(?:[^\[\]\\]|\\.)*\]?)
    |(?P<sp>[<>@,;:.])
    |(?P<atom>[^\s"(),.:;<>@\[\]\\]+)
    |(?P<bad>.)""",
    re.S | re.X,
)
_ESCAPE = re.compile(r"\\(.)", re.S)


@dataclass(frozen=True, slots=True)
class Tok:
    """One lexical token of an address header."""

    kind: str  # atom, qs, dl, sp, comment or bad (whitespace is not a token)
    text: str  # as written (quotes kept); for sp the special character
    space: bool  # whitespace or a comment came before it
    value: str = ""  # unescaped content for qs and comment


def _comment(value: str, pos: int) -> tuple[int, str, bool]:
    """Scan a (possibly nested) comment from ``pos``; return end, text, well-formed."""
    depth, i, out = 0, pos, []
    while i < len(value):
        ch = value[i]
        i += 1
        if ch == "\\" and i < len(value):
            out.append(value[i])
            i += 1
        elif ch == "(":
            depth += 1
            if depth > MAX_COMMENT_DEPTH:
                return len(value), "".join(out), False
            if depth > 1:
                out.append(ch)
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i, "".join(out), True
            out.append(ch)
        else:
            out.append(ch)
    return i, "".join(out), False


def tokens(value: str) -> list[Tok]:
    """Split an unfolded header value into RFC 5322 lexical tokens."""
    toks: list[Tok] = []
    pos, space = 0, False
    while pos < len(value):
        if value[pos] == "(":
            pos, text, ok = _comment(value, pos)
            toks.append(Tok("comment" if ok else "bad", text, space, text))
            space = True
            continue
        m = _TOKEN.match(value, pos)
        if m is None:  # pragma: no cover - the "bad" branch matches any character
            break
        pos = m.end()
        kind = m.lastgroup or "bad"
        text = m.group()
        if kind == "ws":
            space = True
            continue
        if kind == "qs":
            closed = m.group("closed") is not None
            inner = text[1:-1] if closed else text[1:]
            toks.append(Tok("qs" if closed else "bad", text, space, _ESCAPE.sub(r"\1", inner)))
        elif kind == "dl" and not text.endswith("]"):
            toks.append(Tok("bad", text, space))
        else:
            toks.append(Tok(kind, text, space))
        space = False
    return toks


def split_items(toks: list[Tok]) -> tuple[list[list[Tok]], list[bool]]:
    """Split tokens into mailbox items; also say which items were in a group."""
    items: list[list[Tok]] = [[]]
    grouped: list[bool] = [False]
    in_angle = in_group = False
    for tok in toks:
        if tok.kind == "sp":
            if tok.text == "<":
                in_angle = True
            elif tok.text == ">":
                in_angle = False
            elif not in_angle and tok.text == ",":
                items.append([])
                grouped.append(in_group)
                continue
            elif not in_angle and tok.text == ":" and not in_group:
                if not any(t.kind == "sp" and t.text in "<@" for t in items[-1]):
                    items[-1] = []  # the group's display name is not a mailbox
                    grouped[-1] = in_group = True
                    continue
            elif not in_angle and tok.text == ";" and in_group:
                in_group = False
                items.append([])
                grouped.append(False)
                continue
        items[-1].append(tok)
    return items, grouped
