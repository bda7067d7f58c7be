"""Triage in the pipeline: a new ticket takes its message's classification; replies are
checked for chases; [routing] decides the department; the CLI explains without storing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.config import Config
from daemon.errors import ConfigError
from daemon.parts import open_parts
from daemon.triager import Triager
from storage import repository as repo
from support.daemon import run_cli
from support.ingest import ingest_raw
from support.mail import message


def test_a_new_ticket_is_classified_and_explained(
    config_factory: Callable[..., Config],
) -> None:
    """The first message's category, priority, severity, language and flags land on the
    ticket; the `classified` event keeps every decision with its rule and words."""
    cfg = config_factory()
    with open_parts(cfg, recover=True) as parts:
        out = ingest_raw(
            parts,
            message(
                "URGENTE: no carga mi web",
                body="Hola,\nno puedo acceder a mi web desde dos ordenadores distintos.\n",
            ),
        )
        with parts.db.transaction() as s:
            t = repo.ticket(s, out.ticket_ref or "")
            assert t is not None
            assert (t.category, t.priority, t.severity, t.language) == ("hosting", "high", 1, "es")
            assert "declared_priority" in t.flags
            (event,) = [e for e in t.events if e.kind == "classified"]
            priority = event.data["decisions"]["priority"]
            assert priority["rule"] and "no carga" in priority["matched"]
            assert "seed 001" in priority["explanation"]
    listed = json.loads(run_cli("--config", cfg.source, "tickets", "list", "--json").stdout)
    assert listed[0]["category"] == "hosting" and listed[0]["priority"] == "high"
    shown = run_cli("--config", cfg.source, "tickets", "show", out.ticket_ref or "").stdout
    assert "triage:   hosting / priority high / severity 1 / es" in shown


def test_a_chase_joins_its_ticket_flagged_and_changes_nothing(
    config_factory: Callable[..., Config],
) -> None:
    """Seed 001: "¿alguna novedad?" minutes after the customer's message is a chase: it
    joins the ticket, is flagged with its reason, and the ticket keeps its values."""
    cfg = config_factory()
    with open_parts(cfg, recover=True) as parts:
        first = ingest_raw(
            parts,
            message(
                "No llegan los correos",
                body="Desde esta mañana no recibimos correos nuevos en info@.\n",
                message_id="<first@cliente.es>",
            ),
        )
        chase = ingest_raw(
            parts,
            message(
                "Re: No llegan los correos",
                body="¿Alguna novedad?\n",
                headers="In-Reply-To: <first@cliente.es>\r\n",
            ),
        )
        assert chase.ticket_ref == first.ticket_ref
        with parts.db.transaction() as s:
            t = repo.ticket(s, first.ticket_ref or "")
            assert t is not None
            flagged = [e for e in t.events if e.kind == "message_flagged"]
            assert flagged and "chase" in flagged[0].data
            assert "40" in flagged[0].data["chase"]["explanation"]
            assert "chase" not in t.flags  # the ticket's own values stay the first message's


def test_routing_decides_the_department_and_says_so(
    config_factory: Callable[..., Config],
) -> None:
    cfg = config_factory('[routing]\n"help@desk.example.org" = "billing"\n')
    triager = Triager.from_config(cfg)
    with open_parts(cfg, recover=True) as parts:
        out = ingest_raw(
            parts,
            message("Mi web no carga"),
            envelope={"mail_from": "ana@cliente.es", "rcpt_tos": ["help@desk.example.org"]},
        )
        with parts.db.transaction() as s:
            t = repo.ticket(s, out.ticket_ref or "")
            assert t is not None and t.category == "billing"
            assert repo.triage_of(s, t)["decisions"]["category"]["rule"] == "routing"
    assert triager.routing == {"help@desk.example.org": "billing"}


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('[routing]\n"x@example.com" = "plumbing"\n', "no such category"),
        ('[routing]\n"not-an-address" = "billing"\n', "expected recipient address"),
    ],
)
def test_bad_routing_is_refused_with_the_fix(
    config_factory: Callable[..., Config], extra: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        Triager.from_config(config_factory(extra))
    assert problem in str(err.value)


def test_admin_rules_file_layers_over_the_shipped_rules(
    config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    """[triage] rules adds words without code; a mistake in it names the file and key."""
    extra = tmp_path / "rules.toml"
    extra.write_text('[category.billing]\nstrong = ["zorblax"]\n')
    cfg = config_factory(f'[triage]\nrules = "{extra}"\n')
    raw = tmp_path / "m.eml"
    raw.write_bytes(message("Consulta", body="Una duda sobre zorblax zorblax.\n"))
    out = json.loads(
        run_cli("--config", cfg.source, "triage", "explain", "--json", str(raw)).stdout
    )
    assert out["category"] == "billing"
    extra.write_text('[category.billing]\nwords = "zorblax"\n')
    with pytest.raises(ConfigError) as err:
        Triager.from_config(cfg)
    assert str(extra) in str(err.value) and "words" in str(err.value)
