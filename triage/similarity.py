"""How alike two tickets' matters are: fingerprints and scores for duplicates and incidents.

A fingerprint is the matter reduced to its content words: the subject without
``Re:``/``RV:``/``Отг:`` prefixes and ticket tags, plus the customer's own text
(quoted history cut off), folded like the rules fold text (lower case, no
accents), stop words dropped, each word cut to a stem of six letters so
``caída``/``caidas`` and ``correos``/``correo`` meet. It is stored on the ticket,
so matching never reloads a message.

Two scores, both 0..1 from rapidfuzz (C++, microseconds per pair; ``incident_matches``
scores one fingerprint against a window's candidates in one call):
``duplicate_score`` is order-insensitive edit similarity of the two stem
sequences: high only when the same person wrote nearly the same thing.
``incident_score`` compares the sets of stems, forgiving one report being longer
than another: different customers describe one outage in their own words. A
fingerprint shorter than ``MIN_STEMS`` says too little to match anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources

from rapidfuzz import fuzz, process

from triage.evidence import quote_start
from triage.matching import fold

MIN_STEMS = 3
MAX_STEMS = 80
STEM = 6
_PREFIX = re.compile(
    r"^\s*(?:(?:re|rv|fw|fwd|aw|sv|tr|r|ref|res|отг|отн|пре|fwd?)\s*(?:\[\d+\])?\s*:\s*)+",
    re.IGNORECASE,
)
_TAG = re.compile(r"\[#[^\]]{1,40}\]")
_WORD = re.compile(r"\w+")


def _stop_words() -> frozenset[str]:
    text = resources.files("triage").joinpath("rules/stopwords.txt").read_text(encoding="utf-8")
    lines = (line.partition("#")[0] for line in text.splitlines())
    return frozenset(fold(word) for line in lines for word in line.split())


STOP_WORDS = _stop_words()


def fingerprint(subject: str, text: str) -> str:
    """The content stems of a message, each once, sorted, space-separated.

    The first ``MAX_STEMS`` in the order they are written, then sorted: both scores
    compare stems regardless of their order (``tests/triage``), and rapidfuzz, which
    sorts each of up to 500 candidates a message, sorts a sorted list faster: the
    incident scan costs 10-20 % less (bench/incident_scan.py). Fingerprints stored
    unsorted by earlier versions score the same.
    """
    subject = _TAG.sub(" ", _PREFIX.sub("", subject))
    own = text[: quote_start(text)]
    seen: dict[str, None] = {}
    for word in _WORD.findall(fold(f"{subject}\n{own[:20_000]}")):
        if len(word) < 3 and not word.isdigit():
            continue
        if word in STOP_WORDS:
            continue
        seen.setdefault(word[:STEM], None)
        if len(seen) >= MAX_STEMS:
            break
    return " ".join(sorted(seen))


def informative(fp: str) -> bool:
    """Whether a fingerprint has enough words to be compared at all."""
    return fp.count(" ") + 1 >= MIN_STEMS if fp else False


def duplicate_score(a: str, b: str) -> float:
    """0..1: how nearly the same text two fingerprints are (order of words ignored)."""
    if not (informative(a) and informative(b)):
        return 0.0
    return float(fuzz.token_sort_ratio(a, b)) / 100.0


def incident_score(a: str, b: str) -> float:
    """0..1: how much of the shorter report's words the longer one shares."""
    if not (informative(a) and informative(b)):
        return 0.0
    return float(fuzz.token_set_ratio(a, b)) / 100.0


def incident_matches(
    fp: str, others: Sequence[str | None], least: float
) -> list[tuple[int, float]]:
    """``(index, incident_score(fp, others[index]))`` for each of ``others`` scoring at least
    ``least`` (above 0), in index order; a None in ``others`` is skipped.

    The scores are ``incident_score``'s, from one call into rapidfuzz instead of one per
    pair: ``fp`` is split and sorted once, and the loop over a window's candidates (500
    per message on a busy desk, 10-35 µs a pair for long texts) runs in C++.
    """
    if not 0 < least <= 1:
        raise ValueError(f"least must be a fraction above 0 and at most 1, got {least}")
    if not informative(fp):
        return []
    found = process.extract(
        fp,
        others,
        scorer=fuzz.token_set_ratio,
        processor=None,
        limit=None,
        # A little below: the exact test is the one ``incident_score``'s callers make.
        score_cutoff=least * 100 - 1e-6,
    )
    out = []
    for _, ratio, index in found:
        score = float(ratio) / 100.0
        other = others[index]
        if score >= least and other is not None and informative(other):
            out.append((index, score))
    out.sort()
    return out
