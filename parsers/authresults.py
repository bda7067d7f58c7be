"""Read Authentication-Results fields (RFC 8601) and say whether DMARC failed.

Only top-level ``Authentication-Results`` fields are read, topmost first, at
most 20 and 8 KiB each: a receiving MTA adds its field on top, and anything
further down was written by an earlier hop or by the sender, who can write
whatever they like. ``ARC-Authentication-Results`` is deliberately ignored:
intermediaries (mailing lists, forwarders) set it about what *they* saw, and
trusting it needs ARC chain validation, which Buzón does not do; so do
vendor copies such as ``Authentication-Results-Original``.

The lexer is forgiving, as these fields are often hand-rolled: comments
``( … )`` (nested, with escapes) vanish, quoted strings are values, ``;``
separates method results, and CFWS around ``=`` is allowed. A field whose
first segment already holds ``method=result`` (Microsoft 365 writes no
authserv-id) has authserv-id "". Garbage gives an ``AuthResult`` with empty
values, never an exception: the field still counts as the topmost one.
"""

from __future__ import annotations

from collections.abc import Iterable

from parsers.headers import HeaderIndex
from parsers.model import AuthResult
from parsers.text import clean_line

MAX_FIELDS = 20
MAX_FIELD_CHARS = 8 * 1024
_SPECIALS = frozenset('();"')

# A lexed token: ("word", text), ("quoted", text) or (";", ";").
Token = tuple[str, str]


def _skip_comment(text: str, i: int) -> int:
    """Index after the comment opening at ``text[i]``; nested, ``\\`` escapes."""
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n  # unterminated: the rest is comment


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The content of the quoted string opening at ``text[i]`` and the index after it."""
    out: list[str] = []
    i += 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), n  # unterminated: take the rest


def lex(text: str) -> list[Token]:
    """Words, quoted strings and ``;`` of a field value; comments and spaces dropped."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "(":
            i = _skip_comment(text, i)
        elif c == '"':
            value, i = _quoted(text, i)
            tokens.append(("quoted", value))
        elif c == ";":
            tokens.append((";", ";"))
            i += 1
        elif c.isspace() or c == ")":  # a stray ")" is garbage
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in _SPECIALS:
                i += 1
            tokens.append(("word", text[start:i]))
    return tokens


def _segments(tokens: list[Token]) -> list[list[Token]]:
    segments: list[list[Token]] = [[]]
    for token in tokens:
        if token[0] == ";":
            segments.append([])
        else:
            segments[-1].append(token)
    return segments


def _pairs(segment: list[Token]) -> list[tuple[str, str]]:
    """``name=value`` pairs of one segment; CFWS around ``=`` and quoted values allowed.

    A word is split at its first ``=`` only: property values such as SRS
    addresses (``smtp.mailfrom=SRS0=63fc=V7=…``) contain more.
    """
    pieces: list[str] = []
    for kind, text in segment:
        joins = bool(pieces) and (pieces[-1].endswith("=") or text.startswith("="))
        if joins and (kind == "word" or pieces[-1].endswith("=")):
            pieces[-1] += text
        else:
            pieces.append(text if kind == "word" else "")  # a lone quoted string is no pair
    pairs: list[tuple[str, str]] = []
    for piece in pieces:
        name, sep, value = piece.partition("=")
        if sep and name:
            pairs.append((name.strip().lower(), value.strip()))
    return pairs


def _domain(value: str) -> str:
    """A header.from value as a bare lower-cased domain (an address gives its domain)."""
    value = value.strip().strip('"<>').rsplit("@", 1)[-1]
    return clean_line(value, 255).rstrip(".").lower()


def parse_field(value: str) -> AuthResult:
    """One Authentication-Results value as an ``AuthResult``; never raises."""
    segments = _segments(lex(value[:MAX_FIELD_CHARS]))
    first = segments[0]
    authserv_id = ""
    if first and not _pairs(first[:1]) and not (len(first) > 1 and first[1][1].startswith("=")):
        authserv_id = clean_line(first[0][1], 255).lower()
        # The rest is a version number, or a result whose ";" is missing: read it too.
        segments[0] = first[1:]
    for segment in segments:
        pairs = _pairs(segment)
        if not pairs:
            continue  # "none", or garbage
        method, result = pairs[0]
        if method.split("/", 1)[0].strip() != "dmarc":
            continue
        header_from = next((v for k, v in pairs[1:] if k == "header.from"), "")
        return AuthResult(
            authserv_id=authserv_id,
            dmarc=clean_line(result, 64).lower(),
            header_from=_domain(header_from),
        )
    return AuthResult(authserv_id=authserv_id)


def auth_results(index: HeaderIndex) -> tuple[AuthResult, ...]:
    """Every top-level Authentication-Results field, topmost first, at most 20."""
    return tuple(parse_field(v) for v in index.all("authentication-results")[:MAX_FIELDS])


def dmarc_fail_for(
    results: Iterable[AuthResult], from_domain: str, trusted_authserv_ids: frozenset[str]
) -> AuthResult | None:
    """The field that says ``dmarc=fail`` for ``from_domain``, or None.

    With ``trusted_authserv_ids``, only fields of those authserv-ids count
    (compared lower-cased), wherever they are. Without, only the topmost
    field counts: the one our receiving MTA added; a field below it came from
    an earlier hop or the sender and may be forged. A field counts for the
    domain when its header.from equals it or is absent. An empty
    ``from_domain`` gives None: there is nothing to judge.
    """
    domain = _domain(from_domain)
    if not domain:
        return None
    listed = list(results)
    if trusted_authserv_ids:
        trusted = {t.strip().lower() for t in trusted_authserv_ids}
        candidates = [r for r in listed if r.authserv_id in trusted]
    else:
        candidates = listed[:1]
    for result in candidates:
        if result.dmarc == "fail" and result.header_from in ("", domain):
            return result
    return None
