"""Ticket references as customers see them: ``B-1042`` in a subject tag ``[#B-1042]``."""

from __future__ import annotations

import re

PREFIX = "B-"
_TAG = re.compile(r"\[#\s*(B-\d{1,18})\s*\]", re.IGNORECASE)


def ref_for(ticket_id: int) -> str:
    """The customer-visible reference of a ticket."""
    return f"{PREFIX}{ticket_id}"


def tag_for(ref: str) -> str:
    """The subject tag that lets a reply find its ticket, e.g. ``[#B-1042]``."""
    return f"[#{ref}]"


def refs_in_subject(subject: str) -> tuple[str, ...]:
    """Every ticket reference tagged in ``subject``, normalised to upper case, in order."""
    seen: dict[str, None] = {}
    for match in _TAG.finditer(subject):
        seen.setdefault(match.group(1).upper(), None)
    return tuple(seen)
