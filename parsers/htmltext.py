"""Render an HTML body as plain text in linear time.

Why not ``html.parser``: on Python 3.11.7 (our interpreter) ``HTMLParser`` is
quadratic on malformed input (CVE-2025-6069; 200 KB of ``<a<a<a…`` ran for
more than 30 s when measured), and a mail body is attacker-chosen. This is a
small tokenizer instead: every search stops at the next ``<`` or at a fixed
closing string, so the cost stays proportional to the input. It drops script,
style, title and template contents and comments, turns block elements and
``<br>`` into line breaks, unescapes entities with ``html.unescape`` and
collapses whitespace (kept inside ``<pre>``).
"""

from __future__ import annotations

import html
import re

# One token per match: a text run, a comment (unterminated: to the end), a tag,
# a declaration or a lone "<". Every alternative stops at the next "<" or at a
# fixed closing string, so the scan is linear.
_TOKEN = re.compile(
    r"(?P<text>[^<]+)"
    r"|<!--(?s:.*?)(?:-->|\Z)"
    r"|<(?P<close>/?)(?P<name>[A-Za-z][A-Za-z0-9:-]{0,40})[^<>]*>"
    r"|<[!?/][^<>]*>"
    r"|<"
)
_SPACES = re.compile(r"[ \t\r\n\f\xa0]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_HIDDEN = ("script", "style", "title", "template")
_HIDDEN_END = {name: re.compile(rf"</{name}[^<>]*>", re.I) for name in _HIDDEN}
_BLOCK = frozenset((
    "address", "article", "aside", "blockquote", "caption", "center", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul",
))  # fmt: skip
_CELL = frozenset({"td", "th"})


def _text(chunk: str, in_pre: bool) -> str:
    """Unescape a text run; collapse its whitespace unless inside ``<pre>``."""
    text = html.unescape(chunk) if "&" in chunk else chunk
    if in_pre:
        return text.replace("\r\n", "\n").replace("\xa0", " ")
    return _SPACES.sub(" ", text)


def _tidy(raw: str) -> str:
    """Strip line ends, drop the space a collapse left at line starts, limit blank lines."""
    lines = []
    for raw_line in raw.split("\n"):
        line = raw_line.rstrip()
        lines.append(line[1:] if line.startswith(" ") and not line.startswith("  ") else line)
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")


def _tag_text(name: str, closing: bool) -> str:
    """What a tag contributes to the text: line breaks, list bullets, cell gaps."""
    if name == "br":
        return "\n"
    if name == "li":
        return "" if closing else "\n- "  # "</li><li>" is one line break
    if name in _BLOCK:
        return "\n"
    return " " if name in _CELL and not closing else ""


def html_to_text(source: str) -> str:
    """Return the readable text of an HTML document or fragment."""
    out: list[str] = []
    pos, end, pre_depth = 0, len(source), 0
    while pos < end:
        m = _TOKEN.match(source, pos)
        if m is None:  # pragma: no cover - the lone "<" alternative always matches
            break
        pos = m.end()
        if m.group("text") is not None:
            out.append(_text(m.group("text"), pre_depth > 0))
            continue
        name = m.group("name")
        if name is None:
            if m.group() == "<":
                out.append("<")
            continue
        name, closing = name.lower(), m.group("close") == "/"
        if name in _HIDDEN_END and not closing:
            hidden_end = _HIDDEN_END[name].search(source, pos)
            pos = end if hidden_end is None else hidden_end.end()
            continue
        if name == "pre":
            pre_depth = max(0, pre_depth - 1) if closing else pre_depth + 1
        out.append(_tag_text(name, closing))
    return _tidy("".join(out))
