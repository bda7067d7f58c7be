"""The thread step: which ticket a message belongs to, who allowed it, or a new ticket.

Email: threading by reply headers, reply tokens and subject tags, each checked
for the sender's authority (``triage.threading``); when nothing threads, a
near-duplicate of the customer's open ticket joins it (``daemon.similar``);
otherwise a new ticket, flagged ``unverified_thread`` when a match was refused.
Voicemail: the caller's open ticket from the last 24 hours, else a new one.
Every join and refusal is a ticket event naming the rule and the reason.
"""

from __future__ import annotations

from datetime import timedelta

from daemon import similar
from daemon.ticketops import join, open_ticket, reply_key
from daemon.work import Work
from parsers import dmarc_fail_for
from storage import contacts
from storage import repository as repo
from storage.models import Ticket, Voicemail
from triage import replytoken
from triage.refs import refs_in_subject
from triage.similarity import fingerprint
from triage.threading import Candidate, ThreadKeys, decide

SAME_CALLER_WINDOW = timedelta(hours=24)


def _voicemail_ticket(work: Work, vm: Voicemail) -> None:
    """A call: the caller is the customer; a repeat call about an open matter joins it."""
    msg = work.message
    assert msg is not None
    caller = f"tel:{vm.caller_number}" if vm.caller_number else ""
    requester = caller or msg.from_addr or "unknown"
    open_ticket_ = (
        repo.open_ticket_for_requester(
            work.session, caller, "voicemail", since=work.now - SAME_CALLER_WINDOW
        )
        if caller
        else None
    )
    if open_ticket_ is not None:
        join(work, open_ticket_, "same-caller", f"{caller} called again within 24 h")
        return
    customer = repo.customer_of(work.session, requester, vm.caller_name, requester, work.now)
    who = " ".join(x for x in (vm.caller_name, vm.caller_number) if x) or "an unknown caller"
    length = (
        f" ({vm.duration_seconds // 60}:{vm.duration_seconds % 60:02d})"
        if vm.duration_seconds is not None
        else ""
    )
    open_ticket(
        work,
        subject=("URGENT " if vm.urgent else "") + f"Voicemail from {who}{length}",
        customer=customer,
        requester=requester,
        channel="voicemail",
        reason="a voicemail opens a ticket at once; its transcript follows",
    )


def sender_keys(work: Work) -> ThreadKeys:
    """Who the sender is for threading: address, whether it parsed cleanly, whose contact."""
    msg, p = work.message, work.parsed
    assert msg is not None and p is not None
    sender = msg.from_addr
    domain = sender.rpartition("@")[2]
    failed = dmarc_fail_for(p.authentication, domain, frozenset(work.matching.trusted_authserv_ids))
    work.distrust = (
        f"{failed.authserv_id or 'the receiving MTA'} says dmarc=fail for {domain}"
        if failed is not None and domain
        else ""
    )
    if not msg.from_verified or not sender:
        work.distrust = work.distrust or "the From address is ambiguous or malformed"
        msg.no_ack_reason = msg.no_ack_reason or "unverified sender"
    elif failed is not None:
        msg.no_ack_reason = msg.no_ack_reason or work.distrust
    found = contacts.authorisation(work.session, sender) if sender else None
    work.sender_customer = found.customer if found is not None else ""
    work.agent = dict(work.desk.agents).get(sender, "") if sender else ""
    return ThreadKeys(
        sender,
        msg.from_verified,
        work.sender_customer,
        work.distrust if failed else "",
        work.agent,
    )


def _candidates(work: Work) -> list[Candidate]:
    """Every open ticket the message points at, and how it points."""
    p = work.parsed
    assert p is not None
    out: list[Candidate] = []

    def add(t: Ticket, rule: str) -> None:
        out.append(Candidate(t.id, t.ref or "", t.requester, rule, t.customer))

    # A customer's reply to a recently closed ticket reopens it (daemon.sla_steps).
    since = work.now - work.desk.sla.reopen_window
    ids = (*p.in_reply_to, *p.references)
    by_id = dict(repo.open_tickets_for_message_ids(work.session, ids, closed_since=since))
    for header, ids in (("in-reply-to", p.in_reply_to), ("references", p.references)):
        for mid in ids:
            if mid in by_id:
                add(by_id[mid], header)
    key = reply_key(work)
    recipients = [
        *(a.addr_spec for a in (*p.to, *p.cc)),
        *(str(r) for r in (work.envelope.get("rcpt_tos") or [])),
    ]
    tokens = [
        *replytoken.find(key, "in-reply-to", list(p.in_reply_to)),
        *replytoken.find(key, "references", list(p.references)),
        *replytoken.find(key, "recipient", recipients),
    ]
    valid = [t.ref for t in tokens if t.valid]
    for t in repo.open_tickets_by_refs(work.session, valid, closed_since=since):
        add(t, "reply-token")
    for token in tokens:
        if not token.valid:
            out.append(Candidate(0, token.ref, "", "reply-token", forged=True))
    for t in repo.open_tickets_by_refs(work.session, refs_in_subject(p.subject)):
        add(t, "subject-tag")
    return out


def thread(work: Work) -> None:
    """Join the open ticket this message answers or repeats, or open a new one."""
    msg, p = work.message, work.parsed
    assert msg is not None and p is not None
    if msg.ticket is not None:
        work.ticket = msg.ticket  # a retry of a message that already has its ticket
        return
    if work.voicemail is not None:
        # The PBX's notice is the same template for every call: its transcript,
        # once there, is what gets compared (daemon.voice).
        _voicemail_ticket(work, work.voicemail)
        return
    work.fingerprint = fingerprint(p.subject, p.text)
    keys = sender_keys(work)
    decision = decide(keys, _candidates(work))
    if decision.ticket_id is not None:
        ticket = work.session.get(Ticket, decision.ticket_id)
        assert ticket is not None
        join(
            work, ticket, decision.rule, decision.reason, {"authorised_as": decision.authorised_as}
        )
        return
    requester = msg.from_addr or (work.envelope.get("mail_from") or "").lower()
    customer = work.sender_customer or (
        repo.customer_of(work.session, requester, msg.from_name, requester, work.now)
        if requester
        else "unknown"
    )
    if not work.distrust and not decision.refused and similar.collapse_duplicate(work, customer):
        return
    flags: list[str] = []
    if decision.refused:
        flags.append("unverified_thread")
    if keys.dmarc_fail:
        flags.append("dmarc_fail")
    elif work.distrust:
        flags.append("unverified_sender")
    ticket = open_ticket(
        work,
        subject=msg.subject,
        customer=customer,
        requester=requester,
        channel="email",
        reason=decision.reason,
        flags=tuple(flags),
    )
    if decision.refused:
        repo.add_event(
            work.session,
            ticket,
            "thread_refused",
            work.now,
            data={"reason": decision.reason, "sender": keys.sender},
            message=msg,
        )
        work.events.append(("thread.refused", {"reason": decision.reason}))
