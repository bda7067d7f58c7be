"""Decide whether a message joins an existing ticket, and say why.

Rules, in order: a reply naming (In-Reply-To, then References) a message of an
open ticket; then a subject tag naming an open ticket. Either joins only when
the sender is the ticket's requester and the sender's address was parsed
unambiguously; otherwise the message opens its own ticket and the decision
records the refusal, so an agent can see it. Authorised contacts of the same
customer widen "same sender" in the triage issue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    """An open ticket the message might belong to, and what pointed at it."""

    ticket_id: int
    ref: str
    requester: str
    matched_by: str  # "in-reply-to" | "references" | "subject-tag"


@dataclass(frozen=True, slots=True)
class ThreadKeys:
    """What a message offers for threading."""

    sender: str  # lower-cased addr-spec; "" when unknown
    sender_verified: bool


@dataclass(frozen=True, slots=True)
class ThreadDecision:
    ticket_id: int | None
    rule: str  # the matched_by of the winning candidate, or "new"
    reason: str


_ORDER = {"in-reply-to": 0, "references": 1, "subject-tag": 2}


def decide(keys: ThreadKeys, candidates: Sequence[Candidate]) -> ThreadDecision:
    """Pick the ticket to join, or none; refusals are explained in ``reason``."""
    refusals: list[str] = []
    for cand in sorted(candidates, key=lambda c: (_ORDER.get(c.matched_by, 9), -c.ticket_id)):
        if not keys.sender_verified or not keys.sender:
            refusals.append(f"{cand.ref} via {cand.matched_by}: sender address is unverified")
            continue
        if cand.requester.lower() != keys.sender:
            refusals.append(
                f"{cand.ref} via {cand.matched_by}: sender {keys.sender} is not the requester"
            )
            continue
        return ThreadDecision(cand.ticket_id, cand.matched_by, f"joined {cand.ref}")
    if refusals:
        return ThreadDecision(None, "new", "; ".join(refusals))
    return ThreadDecision(None, "new", "no open ticket matched")
