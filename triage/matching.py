"""Find rule terms in message text: one compiled pattern, one pass per field.

A term is a word (``factura``), a stem (``factur*``: any word starting so) or a
phrase of such words (``no carga``, ``no carg* la web``). Text and terms are
*folded* the same way first: lower case, accents and other marks removed
(``Ingresé`` -> ``ingrese``, ``Й`` -> ``и``), so rules need no spelling variants.

Folding keeps every character in place (one character in, one out), so a match's
span in the folded text is also its span in the original: explanations quote the
customer's own words. All terms of a rule set go into one regular expression
shaped as a trie: the engine walks shared prefixes once per word instead of
trying a thousand alternatives. The pattern has no groups (capture groups make
``re`` ten times slower here); the matched words are mapped back to their term
by a lookup that is cached, since customers reuse the same few hundred words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

WORD = re.compile(r"\w+")
_TERM_WORD = re.compile(r"\w+\*?")


def _accent_map() -> dict[str, str]:
    # Every lower-case letter of the alphabetic scripts (below U+2000: Latin,
    # Greek, Cyrillic ...) whose unaccented form is one other character. Others
    # stay as they are, which keeps folding length-preserving (module docstring);
    # the bound also keeps the character class a fast bitmap in ``re``.
    table: dict[str, str] = {}
    for code in range(0x2000):
        char = chr(code)
        if unicodedata.category(char)[0] != "L" or char.lower() != char:
            continue
        nfd = unicodedata.normalize("NFD", char)
        base = "".join(c for c in nfd if not unicodedata.combining(c))
        if len(base) == 1 and base != char:
            table[char] = base
    return table


_ACCENTS = _accent_map()
_ACCENTED = re.compile("[" + re.escape("".join(_ACCENTS)) + "]")


def _unaccent(match: re.Match[str]) -> str:
    return _ACCENTS[match.group()]


def fold(text: str) -> str:
    """``text`` in lower case without accents, with the same length and character positions."""
    # U+0130 is the one character whose lower case is two characters long.
    lowered = text.replace("\u0130", "I").lower()
    if lowered.isascii():
        return lowered
    return _ACCENTED.sub(_unaccent, lowered)


def words(text: str) -> list[str]:
    """The folded words of ``text``, in order."""
    return WORD.findall(fold(text))


@dataclass(frozen=True, slots=True)
class Term:
    """A parsed term: its folded words, each either exact or a stem (written with ``*``)."""

    text: str  # canonical form, e.g. "no carg* la web"
    parts: tuple[tuple[str, bool], ...]  # (folded word, is_stem)

    def fits(self, found: tuple[str, ...]) -> bool:
        """Whether the words ``found`` in a message are an instance of this term."""
        if len(found) != len(self.parts):
            return False
        return all(
            word.startswith(part) if stem else word == part
            for word, (part, stem) in zip(found, self.parts, strict=True)
        )

    def specificity(self) -> tuple[tuple[int, bool], ...]:
        """Order among terms fitting the same words: longer literal text, then exact, wins."""
        return tuple((len(part), not stem) for part, stem in self.parts)


def parse_term(raw: str) -> Term:
    """Parse a term as written in the rules; raises ``ValueError`` when it has no word."""
    parts: list[tuple[str, bool]] = []
    for piece in _TERM_WORD.findall(fold(raw)):
        parts.append((piece.rstrip("*"), piece.endswith("*")))
    if not parts:
        raise ValueError(f"term {raw!r} has no letters or digits")
    text = " ".join(word + ("*" if stem else "") for word, stem in parts)
    return Term(text, tuple(parts))


# Trie keys besides single characters: the gap between the words of a phrase,
# the open end of a stem, and the end of an exact word.
_SEP, _STAR, _END = "\x00sep", "\x00star", "\x00end"
_Node = dict[str, "_Node"]
_HEADS = {_SEP: r"\W+", _STAR: r"\w*", _END: r"(?!\w)"}


def _keys(term: Term) -> Iterator[str]:
    for index, (word, stem) in enumerate(term.parts):
        if index:
            yield _SEP
        yield from word
        if stem:
            yield _STAR
    if not term.parts[-1][1]:
        yield _END  # an exact term must end at a word boundary


def _emit(node: _Node) -> str:
    # Characters first, then the gap, the stem and the word end: the longest and
    # most specific term wins at a given position (``pago`` before ``pag*``).
    alternatives: list[str] = []
    for key in sorted(node, key=lambda k: (k.startswith("\x00"), k == _STAR, k == _END, k)):
        head = _HEADS.get(key) or re.escape(key)
        child = node[key]
        alternatives.append(head + (_emit(child) if child else ""))
    if len(alternatives) == 1:
        return alternatives[0]
    return "(?:" + "|".join(alternatives) + ")"


_CACHE_LIMIT = 100_000


class TermIndex:
    """Every term of a rule set compiled into one pattern; built once, used for every message."""

    __slots__ = ("_by_shape", "_cache", "_pattern", "terms")

    def __init__(self, terms: Iterable[Term]) -> None:
        self.terms: tuple[Term, ...] = tuple(dict.fromkeys(terms))
        root: _Node = {}
        self._by_shape: dict[tuple[int, str], list[int]] = {}
        for term_id, term in enumerate(self.terms):
            node = root
            for key in _keys(term):
                node = node.setdefault(key, {})
            shape = (len(term.parts), term.parts[0][0][:1])
            self._by_shape.setdefault(shape, []).append(term_id)
        # An empty leaf ends a term; a stem's leaf needs no boundary check because
        # \w* has already run to the end of the word.
        source = r"(?<!\w)" + _emit(root) if root else r"(?!x)x"
        self._pattern = re.compile(source)
        self._cache: dict[str, int] = {}

    def find(self, folded: str) -> Iterator[tuple[int, int, int]]:
        """``(term_id, start, end)`` of each non-overlapping term in folded text."""
        cache = self._cache
        for match in self._pattern.finditer(folded):
            found = match.group()
            term_id = cache.get(found)
            if term_id is None:
                term_id = self._resolve(found)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()  # a bound, not an LRU: refilling costs microseconds
                cache[found] = term_id
            yield term_id, match.start(), match.end()

    def _resolve(self, found: str) -> int:
        # The pattern only matches instances of terms, so at least one fits.
        parts = tuple(WORD.findall(found))
        candidates = self._by_shape.get((len(parts), parts[0][:1]), [])
        fitting = [i for i in candidates if self.terms[i].fits(parts)]
        return max(fitting, key=lambda i: self.terms[i].specificity())
