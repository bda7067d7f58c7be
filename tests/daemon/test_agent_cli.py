"""The agent commands and `buzon sla explain`, as an agent runs them: one process each."""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select

from daemon import agent_commands
from daemon import config as config_mod
from daemon.outbound import Outbound
from storage.engine import Database
from storage.models import OutboxMail
from support.daemon import run_cli, write_config
from support.mail import message


def setup(tmp_path: Path) -> tuple[Path, str]:
    cfg = write_config(tmp_path / "cfg", 2599)
    eml = tmp_path / "in.eml"
    eml.write_bytes(message("No puedo acceder al panel", message_id="<p1@cliente.es>"))
    out = run_cli("--config", str(cfg), "ingest", "--json", "--acknowledge", str(eml))
    assert json.loads(out.stdout)["ingested"] == 1
    return cfg, "B-1"


def cli(cfg: Path, *argv: str, check: bool = True) -> tuple[int, str, str]:
    r = run_cli("--config", str(cfg), *argv, check=check)
    return r.returncode, r.stdout, r.stderr


def outbox(cfg: Path) -> list[dict[str, object]]:
    _, out, _ = cli(cfg, "outbox", "list", "--json")
    return [json.loads(line) for line in out.splitlines() if not line.startswith("#")]


def composed(cfg: Path, kind: str) -> bytes:
    """The bytes the sender would send for the ``kind`` row (composed at its first claim)."""
    conf = config_mod.load(str(cfg))
    db = Database(conf.storage.database)
    try:
        with db.transaction() as s:
            row = s.scalars(select(OutboxMail).where(OutboxMail.kind == kind)).one()
            Outbound(conf.desk.outbound).compose_row(s, row, row.created_at)
            assert row.raw is not None
            return row.raw
    finally:
        db.dispose()


def test_assign_reply_wait_close_and_explain(tmp_path: Path) -> None:
    cfg, ref = setup(tmp_path)
    assert [m["kind"] for m in outbox(cfg)] == ["ack"]
    _, said, _ = cli(cfg, "tickets", "assign", ref, "--agent", "luis")
    assert "assigned to luis" in said and "respond_by" in said
    body = tmp_path / "reply.txt"
    body.write_text("Hola Ana,\nya puede acceder de nuevo.\nBcc: nadie@x\n", encoding="utf-8")
    _, said, _ = cli(cfg, "tickets", "reply", ref, "--body-file", str(body), "--wait")
    assert "reply queued to ana@cliente.es" in said
    mails = outbox(cfg)
    assert [m["kind"] for m in mails] == ["reply", "ack"] and mails[0]["state"] == "pending"
    m = email.message_from_bytes(composed(cfg, "reply"), policy=email.policy.default)
    assert m["Bcc"] is None and m["In-Reply-To"] == "<p1@cliente.es>"
    assert "ya puede acceder" in m.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    code, text, _ = cli(cfg, "sla", "explain", ref)
    assert code == 0 and "policy support on calendar office" in text
    assert "assigned to luis" in text and "waiting on the customer" in text
    assert "stored deadlines agree" in text
    _, said, _ = cli(cfg, "tickets", "close", ref)
    assert "closed" in said
    code, out, _ = cli(cfg, "sla", "explain", ref, "--json")
    report = json.loads(out)
    assert code == 0 and report["stored_agrees"] and report["deadlines"]["state"] == "closed"
    assert report["steps"][0]["event"] == "opened"
    code, _, err = cli(cfg, "tickets", "close", ref, check=False)
    assert code == 2 and "already closed" in err


def test_explain_finds_stored_deadlines_that_disagree_with_the_events(tmp_path: Path) -> None:
    cfg, ref = setup(tmp_path)
    con = sqlite3.connect(tmp_path / "cfg" / "buzon.db")
    with con:
        con.execute("UPDATE tickets SET assign_by = '2030-01-01 00:00:00.000000'")
    code, text, _ = cli(cfg, "sla", "explain", ref, check=False)
    assert code == 1 and "STORED DEADLINES DIFFER" in text and "assign_by" in text


def test_errors_name_the_ticket_and_the_fix(tmp_path: Path) -> None:
    cfg, _ = setup(tmp_path)
    code, _, err = cli(cfg, "tickets", "assign", "B-99", "--agent", "x", check=False)
    assert code == 2 and "no ticket 'B-99'" in err and "buzon tickets list" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    code, _, err = cli(cfg, "tickets", "reply", "B-1", "--body-file", str(empty), check=False)
    assert code == 2 and "is empty" in err


def test_files_are_history_unless_acknowledged(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", 2598)
    eml = tmp_path / "old.eml"
    eml.write_bytes(message("Pedido antiguo"))
    cli(cfg, "ingest", str(eml))
    assert outbox(cfg) == []


def test_an_action_on_a_long_ticket_reads_none_of_its_mail(tmp_path: Path) -> None:
    """Assign, respond, wait and close touch the ticket's row and clocks only: before, each
    loaded every message of the ticket with its raw bytes and attachments."""
    cfg, ref = setup(tmp_path)
    replies = [tmp_path / f"re{n}.eml" for n in range(3)]  # the ticket holds four mails
    for n, eml in enumerate(replies):
        eml.write_bytes(
            message(
                "Re: No puedo acceder al panel",
                message_id=f"<r{n}@cliente.es>",
                headers="In-Reply-To: <p1@cliente.es>\r\n",
            )
        )
    run_cli("--config", str(cfg), "ingest", *map(str, replies))
    conf = config_mod.load(str(cfg))
    db = sqlite3.connect(conf.storage.database.removeprefix("sqlite:///"))
    try:
        (count,) = db.execute("SELECT message_count FROM tickets WHERE ref = ?", (ref,)).fetchone()
    finally:
        db.close()
    assert count == 4
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        for action, argv in (
            (agent_commands.assign, {"agent": "luis", "by": None}),
            (agent_commands.respond, {"agent": "luis"}),
            (agent_commands.wait, {"by": None}),
            (agent_commands.close, {"reason": "solved", "by": None}),
        ):
            assert action(conf, argparse.Namespace(ticket=ref, **argv)) == 0
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert reads and not [s for s in reads if "FROM messages" in s or "FROM attachments" in s]
    code, text, _ = cli(cfg, "sla", "explain", ref)
    assert code == 0 and "stored deadlines agree" in text
