"""`buzon triage train` end to end: corrected tickets in a SQLite file plus labelled JSONL make
a model on disk, and `buzon triage explain` then lets it overrule the rules where it is surer."""

# ruff: noqa: RUF001 - the Bulgarian corrections are Cyrillic on purpose

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the learned model needs buzon[learn]")

from daemon.config import Config
from daemon.parts import open_parts
from storage import repository as repo
from storage.models import Message, Ticket
from support.daemon import run_cli
from support.mail import message

TUNE = Path(__file__).resolve().parents[1] / "data" / "triage" / "tune.jsonl"
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
# A product the shipped rules have never heard of: only the agents' corrections teach it.
ZORBLAX = [
    "La suscripción Zorblax Quintessa no aparece en mi área, ¿la tenéis activada?",
    "Zorblax Quintessa: quería saber si la renovación Zorblax incluye el módulo extra.",
    "Hello, our Zorblax Quintessa plan shows the wrong seat count this month.",
    "Zorblax Quintessa question: can the Zorblax licence move to another company?",
    "Здравейте, абонаментът Zorblax Quintessa показва грешен брой места.",
    "Zorblax Quintessa: ¿podéis pasar el Zorblax a nombre de la nueva empresa?",
    "Zorblax Quintessa seats: please add two Zorblax seats to our account.",
    "Въпрос за Zorblax Quintessa: може ли Zorblax да се прехвърли на друга фирма?",
    "Zorblax Quintessa: el Zorblax se renovó con un precio distinto, ¿por qué?",
    "Zorblax Quintessa renewal: why did the Zorblax renewal cost change?",
    "Zorblax Quintessa: моля, обяснете новата цена на Zorblax.",
    "We want to cancel one Zorblax Quintessa seat before the next Zorblax period.",
]


def _ticket(session: object, n: int, subject: str, text: str, *, category: str) -> Ticket:
    """A ticket with its first message, written through the storage models directly."""
    raw = f"Subject: {subject}\r\n\r\n{text}\r\n".encode()
    ticket = Ticket(
        ref=f"B-{9000 + n}",
        status="open",
        subject=subject,
        customer=f"cliente{n}.es",
        requester=f"ana{n}@cliente{n}.es",
        channel="email",
        message_count=1,
        created_at=NOW,
        updated_at=NOW,
        category=category,
        priority="low" if category else "",
    )
    msg = Message(
        message_id=f"<train-{n}@cliente.es>",
        raw_sha256=sha256(raw).hexdigest(),
        raw=raw,
        size=len(raw),
        state="done",
        source="test",
        received_at=NOW,
        stored_at=NOW,
        subject=subject,
        from_addr=f"ana{n}@cliente{n}.es",
        text=text,
        ticket=ticket,
    )
    session.add_all([ticket, msg])  # type: ignore[attr-defined]
    return ticket


def _corrected_tickets(cfg: Config) -> None:
    """Twelve Zorblax tickets an agent moved from "other" to billing, and one never classified."""
    with open_parts(cfg, recover=True) as parts, parts.db.transaction() as s:
        for n, text in enumerate(ZORBLAX):
            t = _ticket(s, n, f"Zorblax Quintessa {n}", text, category="billing")
            data = {"field": "category", "from": "other", "to": "billing", "by": "agent@desk"}
            repo.add_event(s, t, "corrected", NOW, data=data)
        unclassified = _ticket(s, 99, "Zorblax", "Zorblax Quintessa.", category="")
        repo.add_event(s, unclassified, "corrected", NOW, data={"field": "priority"})
        _ticket(s, 100, "Zorblax sin corregir", "Zorblax Quintessa.", category="sales")


def test_train_on_corrections_then_explain_uses_the_model(
    config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    """Corrected tickets and tune.jsonl train a model beside the spool; explain then takes
    the category from the model, with the rules' view in the explanation."""
    cfg = config_factory()
    _corrected_tickets(cfg)
    eml = tmp_path / "zorblax.eml"
    eml.write_bytes(message("Zorblax Quintessa", body="Zorblax Quintessa: una duda del Zorblax.\n"))
    before = json.loads(
        run_cli("--config", cfg.source, "triage", "explain", "--json", str(eml)).stdout
    )
    assert before["decisions"]["category"]["rule"] != "model"

    out = run_cli(
        "--config", cfg.source, "triage", "train", "--from-jsonl", str(TUNE), "--json"
    ).stdout
    report = json.loads(out)
    tune_rows = sum(1 for line in TUNE.read_text(encoding="utf-8").splitlines() if line.strip())
    assert report["corrected_tickets"] == len(ZORBLAX)
    assert report["skipped_tickets"] == 1  # corrected, but never classified
    assert report["from_jsonl"] == tune_rows
    assert report["examples"] == len(ZORBLAX) + tune_rows
    model_path = Path(cfg.storage.spool).parent / "triage-model.npz"
    assert report["output"] == str(model_path) and model_path.is_file()
    assert report["fields"]["category"]["counts"]["billing"] >= len(ZORBLAX)
    assert 0.5 < report["fields"]["priority"]["cv_accuracy"] <= 1.0
    assert not list(model_path.parent.glob(".triage-model.npz.*.tmp"))

    after = json.loads(
        run_cli("--config", cfg.source, "triage", "explain", "--json", str(eml)).stdout
    )
    category = after["decisions"]["category"]
    assert after["category"] == "billing" and category["rule"] == "model"
    assert category["explanation"].startswith("category billing: learned model 0.")
    assert f"rules said {before['category']}" in category["explanation"]
    assert after["flags"] == before["flags"]  # flags are never the model's


def test_train_refuses_below_min_examples_with_the_fix(
    config_factory: Callable[..., Config],
) -> None:
    """Twelve corrections are not 50 examples: exit 2, saying how to get more."""
    cfg = config_factory()
    _corrected_tickets(cfg)
    result = run_cli("--config", cfg.source, "triage", "train", check=False)
    assert result.returncode == 2
    assert "12 labelled examples, fewer than the 50 needed" in result.stderr
    assert "--from-jsonl" in result.stderr
    assert not (Path(cfg.storage.spool).parent / "triage-model.npz").exists()


def test_human_report_names_counts_accuracy_and_the_file(
    config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    """Without --json the report is a few readable lines; --output puts the model elsewhere,
    and [triage] model makes the daemon's explain use that file."""
    out_path = tmp_path / "models" / "m.npz"
    cfg = config_factory(f'[triage]\nmodel = "{out_path}"\n')
    some = tmp_path / "some.jsonl"  # every fourth tune message: enough, and quick to fit
    some.write_text("\n".join(TUNE.read_text(encoding="utf-8").splitlines()[::4]), "utf-8")
    result = run_cli(
        "--config",
        cfg.source,
        "triage",
        "train",
        "--from-jsonl",
        str(some),
        "--output",
        str(out_path),
        "--min-probability",
        "0.9",
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("trained on ") and "0 corrected tickets" in lines[0]
    assert lines[1].startswith("  category  cross-validated accuracy 0.")
    assert lines[2].startswith("  priority  cross-validated accuracy 0.")
    assert lines[
        -1
    ] == f"wrote {out_path}; it overrules the rules only when at least 0.90 sure " + (
        "and surer than they are"
    )
    assert out_path.is_file()
    eml = tmp_path / "m.eml"
    eml.write_bytes(message("Factura", body="Una duda sobre la factura de octubre.\n"))
    run_cli("--config", cfg.source, "triage", "explain", str(eml))  # loads [triage] model


def test_a_named_model_that_is_not_there_is_a_config_error(
    config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    """[triage] model pointing at nothing stops explain (and the daemon) with the fix."""
    cfg = config_factory(f'[triage]\nmodel = "{tmp_path / "missing.npz"}"\n')
    eml = tmp_path / "m.eml"
    eml.write_bytes(message("Hola", body="Hola.\n"))
    result = run_cli("--config", cfg.source, "triage", "explain", str(eml), check=False)
    assert result.returncode != 0
    assert "[triage] model" in result.stderr and "buzon triage train" in result.stderr


def test_without_scikit_learn_the_model_is_ignored_with_one_warning(
    config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    """An interpreter where scikit-learn cannot be imported runs on the rules, warns once
    about the model file, and `triage train` says to install buzon[learn]."""
    cfg = config_factory()
    model_path = Path(cfg.storage.spool).parent / "triage-model.npz"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(b"a model file the daemon cannot use without scikit-learn")
    # A package named sklearn that fails to import: what a missing install looks like.
    blocker = tmp_path / "no-sklearn" / "sklearn"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'sklearn'\", name='sklearn')\n"
    )
    env = {"PYTHONPATH": str(blocker.parent)}
    eml = tmp_path / "m.eml"
    eml.write_bytes(message("Web caída", body="La web no carga desde ningún sitio.\n"))
    explained = run_cli("--config", cfg.source, "triage", "explain", "--json", str(eml), env=env)
    assert json.loads(explained.stdout)["priority"] == "high"  # the rules, as shipped
    warnings = [line for line in explained.stderr.splitlines() if "triage.model_ignored" in line]
    assert len(warnings) == 1 and "install buzon[learn]" in warnings[0]

    trained = run_cli("--config", cfg.source, "triage", "train", env=env, check=False)
    assert trained.returncode == 2
    assert "install buzon[learn]" in trained.stderr
