"""Decide whether a message joins an existing ticket, who allowed it, and say why.

Rules, strongest first: a reply naming one of an open ticket's messages
(In-Reply-To, then References); a reply token Buzón issued (in those headers or
in the Reply-To plus-address the customer wrote to); the subject tag
``[#B-42]``. A match joins only when the sender may act on the ticket (seed
002: only authorised contacts request work): the ticket's requester, or an
authorised contact of the ticket's customer. It never joins when the sender's
address was ambiguous (SEC-02) or the receiving MTA found DMARC failing for
the From domain: anyone can write that From. A refused match opens a new
ticket flagged ``unverified_thread``, and the reason names every refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Rule = Literal["in-reply-to", "references", "reply-token", "subject-tag"]
RULES: tuple[Rule, ...] = ("in-reply-to", "references", "reply-token", "subject-tag")


@dataclass(frozen=True, slots=True)
class Candidate:
    """An open ticket the message might belong to, and what pointed at it."""

    ticket_id: int
    ref: str
    requester: str
    matched_by: str  # one of RULES
    customer: str = ""
    forged: bool = False  # a reply token whose signature does not verify


@dataclass(frozen=True, slots=True)
class ThreadKeys:
    """What a message offers for threading."""

    sender: str  # lower-cased addr-spec; "" when unknown
    sender_verified: bool
    # The customer whose authorised contact the sender is ("" = none): by address or domain.
    sender_customer: str = ""
    # Why the From domain cannot be trusted ("" = it can): DMARC fail at our MTA.
    dmarc_fail: str = ""
    # The desk's name for the sender when they are one of its agents ("" = a customer):
    # an agent answering on a thread acts on the ticket, whoever its customer is.
    agent: str = ""


@dataclass(frozen=True, slots=True)
class ThreadDecision:
    ticket_id: int | None
    rule: str  # the matched_by of the winning candidate, or "new"
    reason: str
    authorised_as: str = ""  # "requester" | "authorised contact of CUSTOMER"; "" when new
    refused: bool = False  # a ticket matched but the sender may not join it


_ORDER: dict[str, int] = {rule: index for index, rule in enumerate(RULES)}


def _refusal(keys: ThreadKeys, cand: Candidate) -> str:
    """Why the sender may not join ``cand`` ("" when they may)."""
    if cand.forged:
        return "the reply token's signature does not verify (not issued by Buzón)"
    if keys.dmarc_fail:
        return f"DMARC fails for the sender's domain ({keys.dmarc_fail})"
    if not keys.sender_verified or not keys.sender:
        return "sender address is unverified (ambiguous or malformed From)"
    if cand.requester.lower() == keys.sender or keys.agent:
        return ""
    if keys.sender_customer and keys.sender_customer == cand.customer:
        return ""
    return (
        f"sender {keys.sender} is not the requester nor an authorised contact of "
        f"customer {cand.customer or cand.requester}"
    )


def decide(keys: ThreadKeys, candidates: Sequence[Candidate]) -> ThreadDecision:
    """Pick the ticket to join, or none; refusals are explained in ``reason``."""
    refusals: list[str] = []
    seen: set[tuple[int, str]] = set()
    for cand in sorted(candidates, key=lambda c: (_ORDER.get(c.matched_by, 9), -c.ticket_id)):
        if (cand.ticket_id, cand.matched_by) in seen:
            continue
        seen.add((cand.ticket_id, cand.matched_by))
        why = _refusal(keys, cand)
        if why:
            refusals.append(f"{cand.ref} via {cand.matched_by}: {why}")
            continue
        if cand.requester.lower() == keys.sender:
            authorised = "requester"
        elif keys.agent:
            authorised = f"agent {keys.agent}"
        else:
            authorised = f"authorised contact of {cand.customer}"
        return ThreadDecision(
            cand.ticket_id, cand.matched_by, f"joined {cand.ref} as {authorised}", authorised
        )
    if refusals:
        return ThreadDecision(None, "new", "; ".join(refusals), refused=True)
    return ThreadDecision(None, "new", "no open ticket matched")
