"""The admin's view: `buzon ingest`, `tickets`, `quarantine` as subprocesses, exit codes."""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from support.daemon import free_port, run_cli, write_config
from support.mail import message


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path / "cli", free_port())


def buzon(cfg: Path, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return run_cli("--config", str(cfg), *args, check=check)


def test_ingest_eml_mbox_and_maildir_with_summary(cfg: Path, tmp_path: Path) -> None:
    """One command takes .eml files, an mbox and a Maildir, and counts what happened."""
    eml = tmp_path / "one.eml"
    eml.write_bytes(message("uno", message_id="<uno@cliente.es>"))
    mbox = mailbox.mbox(tmp_path / "box.mbox")
    for subject in ("dos", "tres"):
        mbox.add(message(subject))
    mbox.flush()
    mbox.close()
    md = mailbox.Maildir(tmp_path / "Maildir")
    md.add(message("cuatro"))
    md.add(message("uno", message_id="<uno@cliente.es>"))  # same matter as one.eml
    result = buzon(
        cfg, "ingest", "--json", str(eml), str(tmp_path / "box.mbox"), str(tmp_path / "Maildir")
    )
    summary = json.loads(result.stdout)
    assert summary == {
        "ingested": 4,
        "duplicate": 1,
        "automatic": 0,
        "quarantined": 0,
        "handed_to_daemon": 0,
        "failed": 0,
    }


def test_ingest_missing_path_is_usage_error(cfg: Path, tmp_path: Path) -> None:
    """A path that does not exist exits 2 and says which."""
    result = buzon(cfg, "ingest", str(tmp_path / "nope.eml"), check=False)
    assert result.returncode == 2 and "nope.eml: no such file" in result.stderr


def test_tickets_list_json_contract(cfg: Path, tmp_path: Path) -> None:
    """`tickets list --json` is an array with the documented fields, times with offsets."""
    (tmp_path / "a.eml").write_bytes(message("Web caída", message_id="<a@cliente.es>"))
    (tmp_path / "b.eml").write_bytes(
        message("Re: Web caída", headers="In-Reply-To: <a@cliente.es>\r\n")
    )
    buzon(cfg, "ingest", str(tmp_path / "a.eml"), str(tmp_path / "b.eml"))
    rows = json.loads(buzon(cfg, "tickets", "list", "--json").stdout)
    assert len(rows) == 1
    row = rows[0]
    for key in (
        "id",
        "ref",
        "status",
        "subject",
        "customer",
        "channel",
        "message_count",
        "created_at",
        "assign_by",
        "respond_by",
    ):
        assert key in row
    assert (row["ref"], row["status"], row["message_count"], row["channel"]) == (
        "B-1",
        "open",
        2,
        "email",
    )
    for key in ("created_at", "assign_by", "respond_by"):
        assert datetime.fromisoformat(row[key]).utcoffset() is not None
    text = buzon(cfg, "tickets", "list").stdout
    assert "B-1" in text and "Web caída" in text


def test_tickets_show_includes_messages_and_events(cfg: Path, tmp_path: Path) -> None:
    """`tickets show` gives each message with its text and the ticket's audit events."""
    (tmp_path / "a.eml").write_bytes(message("Correo no llega", body="No recibo correo.\n"))
    buzon(cfg, "ingest", str(tmp_path / "a.eml"))
    data = json.loads(buzon(cfg, "tickets", "show", "B-1", "--json").stdout)
    assert data["messages"][0]["text"].startswith("No recibo correo.")
    assert data["messages"][0]["deliveries"][0]["source"] == "file"
    kinds = [e["kind"] for e in data["events"]]
    assert kinds == ["created", "classified", "stamped", "ack_suppressed"]  # a file: history
    assert "No recibo correo." in buzon(cfg, "tickets", "show", "1").stdout
    missing = buzon(cfg, "tickets", "show", "B-999", check=False)
    assert missing.returncode == 2 and "no ticket" in missing.stderr


def test_quarantine_list_and_retry(cfg: Path, tmp_path: Path) -> None:
    """A quarantined message is listed with its reason; retry of what still fails says so."""
    (tmp_path / "junk.eml").write_bytes(b"\x00\x01\x02\xff")
    summary = json.loads(buzon(cfg, "ingest", "--json", str(tmp_path / "junk.eml")).stdout)
    assert summary["quarantined"] == 1
    rows = json.loads(buzon(cfg, "quarantine", "list", "--json").stdout)
    assert len(rows) == 1 and rows[0]["where"] == "database" and rows[0]["reason"]
    retry = buzon(cfg, "quarantine", "retry", rows[0]["id"], check=False)
    assert retry.returncode == 1 and json.loads(retry.stdout)["outcome"] == "quarantined"
    bad = buzon(cfg, "quarantine", "retry", "12345", check=False)
    assert bad.returncode == 2 and "not quarantined" in bad.stderr


def test_unknown_subcommand_exits_2(cfg: Path) -> None:
    """Bad usage is exit code 2, as documented."""
    assert buzon(cfg, "frobnicate", check=False).returncode == 2


def test_run_takes_the_config_after_the_subcommand_too() -> None:
    """systemd units write `buzon run --config PATH`; the top-level form still works."""
    from daemon.cli_args import parser

    assert parser().parse_args(["run", "--config", "/etc/b.toml"]).config == "/etc/b.toml"
    assert parser().parse_args(["--config", "/etc/a.toml", "run"]).config == "/etc/a.toml"


def test_every_command_has_a_handler_and_every_handler_a_command() -> None:
    """The parser and the table of handlers agree: each (command, action) the parser
    accepts names a function that exists, and no handler is left without its command."""
    import argparse

    from daemon.cli import handler_for
    from daemon.cli_args import HANDLERS, parser

    def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    accepted = {
        (command, action)
        for command, sub in subparsers(parser()).items()
        for action in (subparsers(sub) or {None: sub})
    }
    assert accepted - set(HANDLERS) == {("run", None), ("check-config", None), ("logs", None)}
    assert set(HANDLERS) <= accepted
    for command, action in HANDLERS:
        assert callable(handler_for(command, action)), (command, action)


HEAVY = ("sqlalchemy", "alembic", "daemon.pipeline", "daemon.parts", "lingua")


def _imported_by(*args: str) -> str:
    """``buzon ARGS`` in a fresh interpreter: its exit code and which HEAVY modules it loaded."""
    probe = (
        "import sys; from daemon import cli; code = cli.main(sys.argv[1:]); "
        f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], check=False, capture_output=True, text=True
    )
    return done.stdout.splitlines()[-1] if done.stdout else done.stderr


def test_a_command_imports_only_what_it_needs(tmp_path: Path) -> None:
    """`buzon logs` reads a file without importing the database layer or the daemon's
    parts; `buzon sla due` without the ingest pipeline: the CLI starts in the time its
    one command needs, not every command's."""
    log = tmp_path / "buzon.log"
    log.write_text('{"event": "daemon.ready", "level": "info", "timestamp": "2026-12-07"}\n')
    assert _imported_by("logs", str(log)) == "0 []"
    cfg = write_config(tmp_path / "cfg", free_port())
    due = _imported_by(
        "--config", str(cfg), "sla", "due", "--start", "2026-12-24T16:30+01:00", "--add", "1h"
    )
    assert due.startswith("0 [") and "daemon.pipeline" not in due and "daemon.parts" not in due


def test_verify_help_names_the_sample_it_replays(cfg: Path) -> None:
    """The help's default is the one the check uses (the number lives with the check)."""
    from daemon.verify import SLA_SAMPLE

    assert f"(default {SLA_SAMPLE})" in buzon(cfg, "verify", "--help").stdout
