"""Authorised threading in the daemon: each rule joins for the requester or an authorised
contact; strangers (SEC-04), ambiguous senders (SEC-02), forged tokens and DMARC failures
open their own ticket, flagged, with the refusal in an event."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from daemon.config import Config
from daemon.parts import Parts, open_parts
from storage import repository as repo
from storage import settings
from support.daemon import run_cli
from support.ingest import ingest_raw
from support.mail import message
from triage import replytoken

ENV = {"mail_from": "ana@cliente.es", "rcpt_tos": ["support@example.com"]}


def _ticket(parts: Parts, ref: str | None) -> Any:
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref or "")
        assert t is not None
        s.expunge_all()
        return t


def _events(parts: Parts, ref: str | None, kind: str) -> list[dict[str, Any]]:
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref or "")
        assert t is not None
        return [e.data for e in t.events if e.kind == kind]


def _key(parts: Parts) -> str:
    """The database's reply-token key (the daemon made it when it first needed it)."""
    with parts.db.transaction() as s:
        return settings.get_or_create(
            s, settings.REPLY_TOKEN_KEY, replytoken.new_key, datetime.now(UTC)
        )


def _open(parts: Parts, sender: str = "ana@cliente.es", mid: str = "<m1@cliente.es>") -> str:
    out = ingest_raw(
        parts,
        message("La web no carga", sender=sender, message_id=mid),
        envelope={**ENV, "mail_from": sender},
    )
    assert out.outcome == "stored" and out.ticket_ref
    return out.ticket_ref


def test_reply_headers_join_for_the_requester(parts: Parts) -> None:
    """In-Reply-To and References each join the requester's open ticket, and say so."""
    ref = _open(parts)
    a = ingest_raw(parts, message("Re: x", headers="In-Reply-To: <m1@cliente.es>\r\n"))
    b = ingest_raw(parts, message("otra cosa", headers="References: <zz@x> <m1@cliente.es>\r\n"))
    assert a.ticket_ref == b.ticket_ref == ref
    rules = [d["rule"] for d in _events(parts, ref, "message_added")]
    assert rules == ["in-reply-to", "references"]
    assert all(d["authorised_as"] == "requester" for d in _events(parts, ref, "message_added"))


def test_reply_token_in_message_id_or_plus_address_joins(parts: Parts) -> None:
    """A reply to Buzón's own mail finds the ticket by the signed token, even without a
    subject tag: in References (our Message-ID) or in the plus-address it was sent to."""
    ref = _open(parts)
    key = _key(parts)
    ours = replytoken.message_id_for(ref, key, "abc123", "desk.example.com")
    a = ingest_raw(parts, message("Re: tu consulta", headers=f"In-Reply-To: <{ours}>\r\n"))
    plus = replytoken.plus_address("support@example.com", ref, key)
    b = ingest_raw(
        parts,
        message("Más datos", body="Adjunto más datos del problema de la web.\n"),
        envelope={**ENV, "rcpt_tos": [plus]},
    )
    assert a.ticket_ref == b.ticket_ref == ref
    rules = [d["rule"] for d in _events(parts, ref, "message_added")]
    assert rules == ["reply-token", "reply-token"]


def test_a_forged_token_opens_its_own_ticket(parts: Parts) -> None:
    """Changing the number in a token breaks its signature: no way into another ticket."""
    ref = _open(parts)
    token = replytoken.token_for(ref, "not-our-key")
    out = ingest_raw(
        parts,
        message("Re: datos", headers=f"In-Reply-To: <{token}.x.buzon@desk.example.com>\r\n"),
    )
    assert out.ticket_ref != ref
    t = _ticket(parts, out.ticket_ref)
    assert "unverified_thread" in t.flags
    (refusal,) = _events(parts, out.ticket_ref, "thread_refused")
    assert "signature does not verify" in refusal["reason"]


def test_subject_tag_joins_for_the_requester(parts: Parts) -> None:
    ref = _open(parts)
    out = ingest_raw(parts, message(f"Re: [#{ref}] sigue igual"))
    assert out.ticket_ref == ref
    assert _events(parts, ref, "message_added")[0]["rule"] == "subject-tag"


def test_sec04_a_stranger_quoting_the_number_opens_own_ticket(parts: Parts) -> None:
    """SEC-04: quoting a ticket's number and Message-ID does not get a stranger into it."""
    ref = _open(parts)
    out = ingest_raw(
        parts,
        message(
            f"Re: [#{ref}] cambien el correo de contacto",
            sender="mallory@evil.example",
            headers="In-Reply-To: <m1@cliente.es>\r\n",
        ),
        envelope={**ENV, "mail_from": "mallory@evil.example"},
    )
    assert out.ticket_ref != ref
    assert _ticket(parts, ref).message_count == 1
    stranger = _ticket(parts, out.ticket_ref)
    assert stranger.requester == "mallory@evil.example" and "unverified_thread" in stranger.flags
    (refusal,) = _events(parts, out.ticket_ref, "thread_refused")
    assert f"{ref} via in-reply-to" in refusal["reason"]
    assert "not the requester nor an authorised contact" in refusal["reason"]


def test_authorised_contacts_by_domain_join_until_removed(
    config_factory: Callable[..., Config],
) -> None:
    """A colleague at an authorised domain may add to the customer's ticket; after the
    domain is withdrawn, the next colleague is refused (seed 002)."""
    cfg = config_factory()
    base = ("--config", cfg.source, "contacts")
    run_cli(*base, "add", "@cliente.es", "--customer", "Cliente SL", "--by", "test")
    listed = run_cli(*base, "list", "--json").stdout
    assert '"pattern": "@cliente.es"' in listed and "Cliente SL" in listed
    with open_parts(cfg, recover=True) as parts:
        ref = _open(parts)
        assert _ticket(parts, ref).customer == "Cliente SL"
        out = ingest_raw(
            parts,
            message(f"Re: [#{ref}]", sender="luis@cliente.es"),
            envelope={**ENV, "mail_from": "luis@cliente.es"},
        )
        assert out.ticket_ref == ref
        (added,) = _events(parts, ref, "message_added")
        assert added["authorised_as"] == "authorised contact of Cliente SL"
    run_cli(*base, "remove", "@cliente.es")
    with open_parts(cfg, recover=True) as parts:
        out = ingest_raw(
            parts,
            message(f"Re: [#{ref}]", sender="eva@cliente.es"),
            envelope={**ENV, "mail_from": "eva@cliente.es"},
        )
        assert out.ticket_ref != ref


def test_free_mail_domains_are_refused_without_force(config_factory: Callable[..., Config]) -> None:
    cfg = config_factory()
    r = run_cli(
        "--config", cfg.source, "contacts", "add", "@gmail.com", "--customer", "X", check=False
    )
    assert r.returncode == 2 and "free-mail provider" in r.stderr
    r = run_cli(
        "--config", cfg.source, "contacts", "add", "not an address", "--customer", "X", check=False
    )
    assert r.returncode == 2 and "write an address" in r.stderr


def test_sec02_an_ambiguous_sender_never_threads_and_gets_no_reply(parts: Parts) -> None:
    """SEC-02: two From addresses (which one wrote it?) never join a ticket, even the one
    it replies to, and the message is marked so no acknowledgement ever answers it."""
    ref = _open(parts)
    raw = message("Re: x", headers="In-Reply-To: <m1@cliente.es>\r\n").replace(
        b"From: Ana <ana@cliente.es>", b"From: ana@cliente.es, mallory@evil.example"
    )
    out = ingest_raw(parts, raw)
    assert out.ticket_ref != ref
    t = _ticket(parts, out.ticket_ref)
    assert "unverified_thread" in t.flags
    assert t.messages[0].no_ack_reason == "unverified sender"


AR_FAIL = (
    "Authentication-Results: mx.example.com; spf=fail smtp.mailfrom=cliente.es;\r\n"
    " dmarc=fail (p=reject dis=none) header.from=cliente.es\r\n"
)


def test_dmarc_fail_never_threads_and_is_never_acknowledged(parts: Parts) -> None:
    """The MTA says the From domain's DMARC failed: anyone could have written that From."""
    ref = _open(parts)
    out = ingest_raw(parts, message("Re: x", headers=AR_FAIL + "In-Reply-To: <m1@cliente.es>\r\n"))
    assert out.ticket_ref != ref
    t = _ticket(parts, out.ticket_ref)
    assert "dmarc_fail" in t.flags and "unverified_thread" in t.flags
    assert "dmarc=fail for cliente.es" in t.messages[0].no_ack_reason
    (refusal,) = _events(parts, out.ticket_ref, "thread_refused")
    assert "DMARC fails" in refusal["reason"]


def test_dmarc_verdicts_count_only_from_trusted_authserv_ids(
    config_factory: Callable[..., Config],
) -> None:
    """With trusted ids set, a fail written by somebody else's server does not count."""
    cfg = config_factory('[matching]\ntrusted_authserv_ids = ["mx.buzon.test"]\n')
    with open_parts(cfg, recover=True) as parts:
        ref = _open(parts)
        out = ingest_raw(
            parts, message("Re: x", headers=AR_FAIL + "In-Reply-To: <m1@cliente.es>\r\n")
        )
        assert out.ticket_ref == ref
        trusted = AR_FAIL.replace("mx.example.com", "mx.buzon.test")
        out = ingest_raw(
            parts, message("Re: y", headers=trusted + "In-Reply-To: <m1@cliente.es>\r\n")
        )
        assert out.ticket_ref != ref
