"""Parse address headers, strictly for From and tolerantly for recipient lists.

A sender address is only ``verified`` when the header holds exactly one mailbox
whose addr-spec is unambiguous: ``local@domain`` with an atom local part, a
domain of letters, digits and hyphens with at least one dot (or an IP literal),
no whitespace, comments, quotes, routes, encoded-words or control characters
inside it, a display name that does not carry a *different* address, and the
stdlib parser reading the same address (CVE-2023-27043 came from parsers
disagreeing). Anything else is kept, with ``verified=False`` and the reason in
``problem``: an unverified address must never authorise anything.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re

from parsers.addrlex import Tok, split_items, tokens
from parsers.model import Address
from parsers.rfc2047 import decode_words
from parsers.text import clean_line

_VERIFY_MAX_CHARS = 2048

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # TAB is folding whitespace
_ATEXT = re.compile(r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x9f\ud800-\udfff])+")
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[bBqQ]\?")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_ADDRESS_LIKE = re.compile(r"[^\s<>()\[\]\"',;:@]+@[^\s<>()\[\]\"',;:@]+")


def _local_part(toks: list[Tok], problems: list[str]) -> str:
    """Check a local part (atoms and dots) and return it as written."""
    if not toks:
        problems.append("empty local part")
        return ""
    expect_word = True
    for tok in toks:
        is_dot = tok.kind == "sp" and tok.text == "."
        if expect_word == is_dot:
            problems.append("empty label in local part")
            break
        expect_word = is_dot
        if tok.kind == "qs":
            problems.append("quoted local part")
        elif not is_dot and (tok.kind != "atom" or not _ATEXT.fullmatch(tok.text)):
            problems.append("invalid character in local part")
    if expect_word:
        problems.append("empty label in local part")
    local = "".join(t.text for t in toks)
    if len(local.encode("utf-8", "replace")) > 64:
        problems.append("local part longer than 64 octets")
    return local


def _domain(toks: list[Tok], problems: list[str]) -> str:
    """Check a domain (dotted labels or an address literal) and return it lower-cased."""
    domain = "".join(t.text for t in toks).lower()
    if len(toks) == 1 and toks[0].kind == "dl":
        literal = toks[0].text[1:-1].strip()
        try:
            ipaddress.ip_address(literal[5:] if literal.lower().startswith("ipv6:") else literal)
        except ValueError:
            problems.append("invalid address literal")
        return domain
    if not domain:
        problems.append("empty domain")
    elif any(t.kind != "atom" and t.text != "." for t in toks):
        problems.append("invalid character in domain")
    else:
        labels = domain.split(".")
        if len(labels) < 2:
            problems.append("domain without a dot")
        for label in labels:
            if not label:
                problems.append("empty label in domain")
                break
            if label.isascii() and not _LABEL.fullmatch(label):
                problems.append("invalid domain label")
                break
            if not label.isascii() and not all(c.isalnum() or c == "-" for c in label):
                problems.append("invalid domain label")
                break
        if len(domain) > 253:
            problems.append("domain longer than 253 characters")
    return domain


def _addr_spec(toks: list[Tok], problems: list[str]) -> str:
    """Check an addr-spec token run; return ``local@domain`` (as best as possible)."""
    if any(t.kind == "comment" for t in toks[1:-1]):
        problems.append("comment inside address")
    toks = [t for t in toks if t.kind != "comment"]
    if not toks:
        problems.append("empty address")
        return ""
    if any(_ENCODED_WORD.search(t.text) for t in toks):
        problems.append("encoded-word in address")
    if any(t.space for t in toks[1:]):
        problems.append("whitespace inside address")
    if any(_CONTROL.search(t.text) for t in toks):
        problems.append("control character in address")
    ats = [i for i, t in enumerate(toks) if t.kind == "sp" and t.text == "@"]
    if not ats:
        problems.append("no '@' in address")
        return ""
    if len(ats) > 1:
        problems.append("several '@' in address")
    local = _local_part(toks[: ats[-1]], problems)
    domain = _domain(toks[ats[-1] + 1 :], problems)
    return f"{local}@{domain}"


def _phrase(toks: list[Tok], problems: list[str]) -> str:
    """Render a display-name phrase, decoding encoded-words; flag specials in it."""
    parts: list[str] = []
    for tok in toks:
        if tok.kind == "comment":
            continue
        if tok.kind == "bad" or (tok.kind == "sp" and tok.text != "."):
            problems.append(f"unexpected {tok.text[:1]!r} in display name")
        if parts and tok.space:
            parts.append(" ")
        parts.append(tok.value if tok.kind == "qs" else tok.text)
    return clean_line(decode_words("".join(parts))[0], 256)


def _mailbox(toks: list[Tok]) -> Address:
    """Interpret one item: ``phrase <addr-spec>`` or a bare ``addr-spec``."""
    problems: list[str] = []
    if any(t.kind == "bad" for t in toks):
        problems.append("malformed quoting or comment")
    angles = [i for i, t in enumerate(toks) if t.kind == "sp" and t.text in "<>"]
    if angles:
        opens = [i for i in angles if toks[i].text == "<"]
        closes = [i for i in angles if toks[i].text == ">"]
        start = opens[0] if opens else 0
        end = closes[-1] if closes and closes[-1] > start else len(toks)
        if len(opens) != 1 or len(closes) != 1 or end < start:
            problems.append("malformed angle address")
        display = _phrase(toks[:start], problems)
        inner = [t for t in toks[start + 1 : end] if not (t.kind == "sp" and t.text in "<>")]
        if inner and inner[0].kind == "sp" and inner[0].text == "@":
            problems.append("obsolete route in address")
            colon = next((i for i, t in enumerate(inner) if t.text == ":"), len(inner) - 1)
            inner = inner[colon + 1 :]
        if any(t.kind != "comment" for t in toks[end + 1 :]):
            problems.append("text after angle address")
        addr = _addr_spec(inner, problems)
    else:
        comments = [t.value for t in toks if t.kind == "comment"]
        display = clean_line(decode_words(comments[0])[0], 256) if comments else ""
        addr = _addr_spec(toks, problems)
    # Comments are shown by some clients too, so they are checked with the name.
    shown = " ".join([display, *(decode_words(t.value)[0] for t in toks if t.kind == "comment")])
    if any(found.strip(".").lower() != addr.lower() for found in _ADDRESS_LIKE.findall(shown)):
        problems.append("display name contains a different address")
    unique = list(dict.fromkeys(problems))
    return Address(addr, display, not unique, "; ".join(unique)[:300])


def parse_address_list(values: list[str], cap: int) -> tuple[tuple[Address, ...], bool]:
    """Parse recipient headers tolerantly; return at most ``cap`` addresses.

    Groups (``undisclosed-recipients:;``) contribute their members, or nothing.
    Items without any word are skipped. The flag says whether the cap cut the list.
    """
    found: list[Address] = []
    for value in values:
        items, _grouped = split_items(tokens(value))
        for item in items:
            if not any(t.kind != "comment" for t in item):
                continue
            if len(found) >= cap:
                return tuple(found), True
            found.append(_mailbox(item))
    return tuple(found), False


def _stdlib_agrees(value: str, addr: str) -> bool:
    """Ask ``email.utils.getaddresses`` for a second opinion on one mailbox."""
    try:
        pairs = [p for p in email.utils.getaddresses([value]) if p != ("", "")]
    except Exception:  # a second opinion that crashes is a disagreement
        return False
    return len(pairs) == 1 and pairs[0][1].lower() == addr.lower()


def parse_sender(values: list[str], not_utf8: bool = False) -> Address:
    """Parse the From header values strictly into one, possibly unverified, Address.

    ``not_utf8`` says the raw field held 8-bit bytes that were not UTF-8.
    """
    if not values:
        return Address("", "", False, "no From header")
    value = values[0]
    items, grouped = split_items(tokens(value))
    boxes = [
        (_mailbox(item), in_group)
        for item, in_group in zip(items, grouped, strict=True)
        if any(t.kind != "comment" for t in item)
    ]
    if not boxes:
        return Address("", "", False, "From has no address")
    first, in_group = boxes[0]
    problems = [first.problem] if first.problem else []
    if len(values) > 1:
        problems.append(f"{len(values)} From headers")
    if len(boxes) > 1:
        problems.append(f"From has {len(boxes)} addresses")
    if in_group or any(g for g in grouped):
        problems.append("group syntax in From")
    if _CONTROL.search(value):
        problems.append("control character in From")
    if not_utf8:
        problems.append("From is not valid UTF-8")
    if not problems and len(value) > _VERIFY_MAX_CHARS:
        problems.append("From header too long to verify")
    if not problems and not _stdlib_agrees(value, first.addr_spec):
        problems.append("parsers disagree on this address")
    if not problems:
        return first
    unique = list(dict.fromkeys("; ".join(problems).split("; ")))
    return Address(first.addr_spec, first.display_name, False, "; ".join(unique)[:300])
