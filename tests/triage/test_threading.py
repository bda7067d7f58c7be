"""Threading joins a ticket only for its requester, by the strongest rule, and says why."""

from __future__ import annotations

import pytest

from triage.refs import ref_for, refs_in_subject, tag_for
from triage.threading import Candidate, ThreadKeys, decide

ANA = ThreadKeys("ana@cliente.es", True)


def test_subject_tags_are_found_and_normalised() -> None:
    """Tags are found anywhere in a subject, case-insensitively, once each."""
    assert refs_in_subject("Re: [#B-1042] web caída [#b-7] [#B-1042]") == ("B-1042", "B-7")
    assert refs_in_subject("B-1042 without brackets, [B-1] without hash") == ()
    assert tag_for(ref_for(42)) == "[#B-42]"


def test_in_reply_to_beats_references_and_subject_tag() -> None:
    """When rules disagree, In-Reply-To wins over References, which wins over the tag."""
    cands = [
        Candidate(3, "B-3", "ana@cliente.es", "subject-tag"),
        Candidate(2, "B-2", "ana@cliente.es", "references"),
        Candidate(1, "B-1", "ana@cliente.es", "in-reply-to"),
    ]
    decision = decide(ANA, cands)
    assert (decision.ticket_id, decision.rule) == (1, "in-reply-to")


@pytest.mark.parametrize("rule", ["in-reply-to", "references", "subject-tag"])
def test_each_rule_joins_for_the_requester(rule: str) -> None:
    """Every rule on its own joins the requester's ticket."""
    decision = decide(ANA, [Candidate(9, "B-9", "ana@cliente.es", rule)])
    assert decision.ticket_id == 9 and decision.reason == "joined B-9 as requester"
    assert decision.authorised_as == "requester" and not decision.refused


def test_other_sender_quoting_a_ticket_opens_own_ticket_with_reason() -> None:
    """SEC-04: a stranger quoting a ticket's number does not get into it; the reason is kept."""
    decision = decide(
        ThreadKeys("mallory@evil.example", True),
        [Candidate(9, "B-9", "ana@cliente.es", "subject-tag")],
    )
    assert decision.ticket_id is None and decision.refused
    assert "mallory@evil.example is not the requester" in decision.reason


def test_unverified_sender_never_threads() -> None:
    """SEC-02: an ambiguous From never joins a ticket, even the one it claims to be."""
    decision = decide(
        ThreadKeys("ana@cliente.es", False), [Candidate(9, "B-9", "ana@cliente.es", "in-reply-to")]
    )
    assert decision.ticket_id is None and "unverified" in decision.reason


def test_requester_comparison_ignores_case() -> None:
    """Ana@Cliente.ES and ana@cliente.es are the same requester."""
    decision = decide(ANA, [Candidate(9, "B-9", "Ana@Cliente.ES", "references")])
    assert decision.ticket_id == 9


def test_an_authorised_contact_of_the_same_customer_joins() -> None:
    """Seed 002: a colleague authorised for the customer may add to its tickets."""
    luis = ThreadKeys("luis@cliente.es", True, sender_customer="Cliente SL")
    cand = Candidate(9, "B-9", "ana@cliente.es", "subject-tag", customer="Cliente SL")
    decision = decide(luis, [cand])
    assert decision.ticket_id == 9 and decision.authorised_as == "authorised contact of Cliente SL"
    other = ThreadKeys("luis@cliente.es", True, sender_customer="Otro SA")
    assert decide(other, [cand]).ticket_id is None


def test_dmarc_fail_refuses_even_the_requester() -> None:
    keys = ThreadKeys("ana@cliente.es", True, dmarc_fail="mx: dmarc=fail")
    decision = decide(keys, [Candidate(9, "B-9", "ana@cliente.es", "in-reply-to")])
    assert decision.ticket_id is None and decision.refused and "DMARC" in decision.reason


def test_a_forged_token_is_refused_and_a_weaker_valid_rule_still_joins() -> None:
    """Rules are tried in order; a refusal of one does not stop a valid weaker one."""
    decision = decide(
        ANA,
        [
            Candidate(0, "B-7", "", "reply-token", forged=True),
            Candidate(9, "B-9", "ana@cliente.es", "subject-tag"),
        ],
    )
    assert decision.ticket_id == 9 and decision.rule == "subject-tag"


def test_reply_token_order_sits_between_references_and_subject_tag() -> None:
    cands = [
        Candidate(3, "B-3", "ana@cliente.es", "subject-tag"),
        Candidate(2, "B-2", "ana@cliente.es", "reply-token"),
        Candidate(1, "B-1", "ana@cliente.es", "references"),
    ]
    assert decide(ANA, cands).rule == "references"
    assert decide(ANA, cands[:2]).rule == "reply-token"


def test_an_agent_joins_any_ticket_unless_their_mail_is_forged() -> None:
    """An agent answering a thread acts on it; DMARC fail or an unverified From still refuse."""
    cand = [Candidate(7, "B-7", "ana@cliente.es", "in-reply-to", "cliente.es")]
    agent = ThreadKeys("luis@desk.es", True, agent="Luis")
    decision = decide(agent, cand)
    assert (decision.ticket_id, decision.authorised_as) == (7, "agent Luis")
    assert decide(ThreadKeys("luis@desk.es", True), cand).refused
    forged = ThreadKeys("luis@desk.es", True, dmarc_fail="mx says dmarc=fail", agent="Luis")
    assert decide(forged, cand).refused
    assert decide(ThreadKeys("luis@desk.es", False, agent="Luis"), cand).refused
