"""One ticket per matter: a customer's repeat collapses as a duplicate (seed 001 rule 5),
split and merge undo each other, and many customers reporting one failure form an incident."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from daemon.config import Config
from daemon.parts import Parts, open_parts
from storage import repository as repo
from support.daemon import run_cli
from support.ingest import ingest_raw
from support.mail import message
from triage.similarity import incident_score

OUTAGE = (
    "No podemos enviar ni recibir correos desde esta mañana, el servidor de correo rechaza "
    "la conexión con un error de autenticación en Outlook y en el webmail.\n"
)


def _send(parts: Parts, sender: str, subject: str, body: str, **kw: Any) -> str:
    out = ingest_raw(
        parts,
        message(subject, sender=sender, body=body, **kw),
        envelope={"mail_from": sender, "rcpt_tos": ["support@example.com"]},
    )
    assert out.ticket_ref, out
    return out.ticket_ref


def _added(parts: Parts, ref: str) -> list[dict[str, Any]]:
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref)
        assert t is not None
        return [e.data for e in t.events if e.kind == "message_added"]


def test_the_same_customer_repeating_a_matter_is_collapsed(parts: Parts) -> None:
    """A second, nearly identical mail (new Message-ID, no reply headers) joins the open
    ticket as a duplicate; another customer's identical text does not."""
    first = _send(parts, "ana@cliente.es", "No funciona el correo", OUTAGE)
    again = _send(
        parts, "ana@cliente.es", "No funciona el correo!!", OUTAGE.replace("mañana", "mañana.")
    )
    assert again == first
    (dup,) = _added(parts, first)
    assert dup["rule"] == "duplicate" and dup["score"] >= 0.85
    assert "seed 001 rule 5" in dup["reason"]
    other = _send(parts, "pablo@otro.es", "No funciona el correo", OUTAGE)
    assert other != first


def test_a_different_matter_from_the_same_customer_is_its_own_ticket(parts: Parts) -> None:
    first = _send(parts, "ana@cliente.es", "No funciona el correo", OUTAGE)
    second = _send(
        parts,
        "ana@cliente.es",
        "Factura duplicada",
        "Nos han cobrado dos veces la factura de noviembre, por favor devuelvan un cargo.\n",
    )
    assert second != first


def test_split_undoes_a_collapse_and_merge_undoes_the_split(
    config_factory: Callable[..., Config],
) -> None:
    cfg = config_factory()
    with open_parts(cfg, recover=True) as parts:
        first = _send(parts, "ana@cliente.es", "No funciona el correo", OUTAGE)
        assert _send(parts, "ana@cliente.es", "No funciona el correo", OUTAGE + "Gracias.\n") == (
            first
        )
    cli = ("--config", cfg.source, "tickets")
    out = run_cli(*cli, "split", first, "--by", "agente1").stdout
    new_ref = out.split()[-1]
    assert new_ref != first and f"from {first} to {new_ref}" in out
    shown = json.loads(run_cli(*cli, "show", new_ref, "--json").stdout)
    assert shown["message_count"] == 1 and shown["status"] == "open"
    # The new ticket keeps the source's classification, and its reasons.
    source = json.loads(run_cli(*cli, "show", first, "--json").stdout)
    assert source["triage"]["decisions"]["category"]["value"] == source["category"]
    assert shown["triage"] == source["triage"] and shown["category"] == source["category"]
    assert any(e["kind"] == "split" and e["data"]["by"] == "agente1" for e in shown["events"])

    run_cli(*cli, "merge", new_ref, first)
    merged = json.loads(run_cli(*cli, "show", new_ref, "--json").stdout)
    target = json.loads(run_cli(*cli, "show", first, "--json").stdout)
    assert merged["status"] == "merged" and merged["message_count"] == 0
    assert target["message_count"] == 2

    # A reply to the merged ticket's message finds the ticket it was merged into.
    moved_mid = target["messages"][1]["message_id"]
    with open_parts(cfg, recover=True) as parts:
        reply = ingest_raw(parts, message("Re: x", headers=f"In-Reply-To: <{moved_mid}>\r\n"))
        assert reply.ticket_ref == first
    # And the merge is reversible: the message goes back into the merged ticket, reopened.
    pk = target["messages"][1]["id"]
    run_cli(*cli, "split", first, "--message", str(pk), "--into", new_ref)
    back = json.loads(run_cli(*cli, "show", new_ref, "--json").stdout)
    assert back["status"] == "open" and back["message_count"] == 1


def test_split_refuses_what_would_empty_a_ticket(config_factory: Callable[..., Config]) -> None:
    cfg = config_factory()
    with open_parts(cfg, recover=True) as parts:
        ref = _send(parts, "ana@cliente.es", "No funciona el correo", OUTAGE)
    r = run_cli("--config", cfg.source, "tickets", "split", ref, check=False)
    assert r.returncode == 2 and "nothing to split off" in r.stderr


REPORTS = [
    "El correo no funciona: Outlook no puede enviar ni recibir, error de conexión al servidor.",
    "Desde hace un rato el correo no funciona, Outlook da error de conexión con el servidor.",
    "No funciona el correo, ni enviar ni recibir. Outlook error conexión servidor de correo.",
    "Outlook dice error de conexión al servidor y el correo no funciona para nadie.",
    "Nos falla el correo: error de conexión al servidor desde Outlook, no podemos enviar.",
]


def test_many_customers_reporting_one_failure_form_an_incident(
    config_factory: Callable[..., Config],
) -> None:
    """Five customers within the window with similar reports: one incident links them all,
    is logged and listed; the tickets carry it."""
    cfg = config_factory()
    with open_parts(cfg, recover=True) as parts:
        refs = [
            _send(parts, f"user{i}@empresa{i}.es", "Problema con el correo", body)
            for i, body in enumerate(REPORTS)
        ]
        late = _send(parts, "x@empresa9.es", "Correo caído", REPORTS[0] + " Urgente.")
    incidents = json.loads(run_cli("--config", cfg.source, "incidents", "list", "--json").stdout)
    (inc,) = incidents
    assert inc["customers"] == 6 and sorted(inc["ticket_refs"]) == sorted([*refs, late])
    assert "5 customers within 30 min" in inc["detection"]["rule"]
    listed = json.loads(run_cli("--config", cfg.source, "tickets", "list", "--json").stdout)
    assert {t["incident"] for t in listed} == {inc["ref"]}


def test_four_customers_are_below_the_threshold(parts: Parts) -> None:
    for i, body in enumerate(REPORTS[:4]):
        _send(parts, f"user{i}@empresa{i}.es", "Problema con el correo", body)
    with parts.db.transaction() as s:
        assert all(t.incident_id is None for t in repo.list_tickets(s))


def test_one_customer_writing_five_times_is_no_incident(parts: Parts) -> None:
    for body in REPORTS:
        _send(parts, "solo@unico.es", "Problema con el correo", body)
    with parts.db.transaction() as s:
        tickets = repo.list_tickets(s)
        assert len(tickets) >= 2 and all(t.incident_id is None for t in tickets)


def test_unrelated_reports_do_not_form_an_incident(parts: Parts) -> None:
    bodies = [
        "Necesito cambiar los datos de facturación de mi empresa, el CIF ha cambiado.",
        "¿Cuánto cuesta ampliar el plan de hosting a 50 GB de disco?",
        "El certificado SSL de mi web caduca la semana que viene, ¿se renueva solo?",
        "No puedo entrar en cPanel, me dice que la contraseña es incorrecta.",
        "Quiero transferir mi dominio a vuestra empresa, ¿qué código necesito?",
    ]
    for i, body in enumerate(bodies):
        _send(parts, f"user{i}@empresa{i}.es", "Consulta", body)
    with parts.db.transaction() as s:
        assert all(t.incident_id is None for t in repo.list_tickets(s))


def test_a_ticket_joining_takes_along_only_strays_like_the_incidents_own(
    config_factory: Callable[..., Config],
) -> None:
    """Similarity is not transitive: a ticket that reports the outage *and* asks for a new
    mailbox is like both the outage's tickets and an earlier mailbox request, which is
    not like any of the outage's. It joins the incident; the mailbox request stays out."""
    cfg = config_factory()
    request = "Quiero añadir una cuenta de email para el nuevo comercial, buzón de 5 GB y alias."
    with open_parts(cfg, recover=True) as parts:
        for i, body in enumerate(REPORTS):
            _send(parts, f"user{i}@empresa{i}.es", "Problema con el correo", body)
        stray = _send(parts, "otra@nueva.es", "Problema con el correo", request)
        both = _send(parts, "x@empresa9.es", "Problema con el correo", f"{REPORTS[0]} {request}")
        with parts.db.transaction() as s:
            a, b = repo.ticket(s, stray), repo.ticket(s, both)
            assert a is not None and b is not None
            # The stray is in the joining ticket's scan: same category, alike enough.
            assert a.category == b.category
            assert incident_score(a.match_text, b.match_text) >= cfg.matching.incident_similarity
            assert b.incident_id is not None
            assert a.incident_id is None
