"""The admin's commands as subprocesses: `status`, `doctor`, `db upgrade`, `backup`, `logs`.

Real parts only: a real daemon taking real SMTP mail, a real relay (aiosmtpd) and a real
Dovecot on loopback, closed ports for the unreachable cases, SQLite files on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from alembic import command
from sqlalchemy import select

from daemon import instance, status_command
from daemon.parts import Parts
from storage import repository as repo
from storage.engine import Database, alembic_config, current_revision, head_revision
from storage.models import OutboxMail, Ticket
from support.daemon import Daemon, free_port, run_cli, wait_until, write_config
from support.dovecot import dovecot_binary, running_dovecot
from support.ingest import ingest_raw
from support.mail import message

PASSWORD_ENV = "BUZON_TEST_ADMIN_IMAP_PASSWORD"  # noqa: S105 — a variable name


def buzon(cfg: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return run_cli("--config", str(cfg), *args, check=check, env={"TZ": "UTC"})


def lines_of(text: str) -> dict[str, str]:
    """Doctor output as {check: its first line}; checks print "VERDICT  check  finding"."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        verdict, _, rest = line.partition("  ")
        if verdict in ("PASS", "WARN", "FAIL"):
            check = rest.strip().split("  ")[0].strip()
            out.setdefault(check, line)
    return out


@dataclass
class Sink:
    """A relay that keeps every mail it is given (doctor must give it none)."""

    got: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.got.append(bytes(envelope.content))
        return "250 2.0.0 Ok: queued"


def _only_ana(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"ana", b"right")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@pytest.fixture
def relay() -> Iterator[tuple[Sink, int]]:
    sink, port = Sink(), free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        authenticator=_only_ana,
        auth_require_tls=False,  # loopback test relay; the doctor's AUTH path is what counts
    )
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


# -- status and doctor ---------------------------------------------------------------------


def test_status_and_doctor_on_a_fresh_config(tmp_path: Path) -> None:
    """Before the first run: status says the listener is silent and the database not yet
    created (exit 0, old JSON keys kept); doctor only WARNs (exit 0) and creates nothing."""
    cfg = write_config(tmp_path / "fresh", free_port())
    text = buzon(cfg, "status")
    assert text.returncode == 0, text.stderr
    assert "not answering" in text.stdout and "not created yet" in text.stdout
    data = json.loads(buzon(cfg, "status", "--json").stdout)
    for key in ("spool", "imap", "database", "transcription"):  # what earlier tests read
        assert key in data
    assert data["listeners"]["smtp"]["state"] == "not answering"
    assert data["schema"]["state"] == "missing" and data["tickets"] is None
    started = time.monotonic()
    doctor = buzon(cfg, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    found = lines_of(doctor.stdout)
    assert found["config"].startswith("PASS")
    assert found["database"].startswith("WARN") and "buzon db upgrade" in doctor.stdout
    assert found["spool"].startswith("PASS") and found["templates"].startswith("PASS")
    assert found["relay"].startswith("WARN") and found["transcription"].startswith("WARN")
    assert "0 FAIL" in doctor.stdout
    assert time.monotonic() - started < 15
    assert not (tmp_path / "fresh" / "buzon.db").exists()  # doctor and status only read
    checks = json.loads(buzon(cfg, "doctor", "--json").stdout)
    assert checks["ok"] is True
    assert {c["verdict"] for c in checks["checks"]} == {"PASS", "WARN"}


def test_status_of_a_running_daemon(daemon_factory: Callable[..., Daemon]) -> None:
    """With the daemon up, status reads the listener's 220 greeting, the schema at head,
    and the ticket the mail opened."""
    d = daemon_factory("live")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as smtp:
        smtp.sendmail("ana@cliente.es", ["support@example.com"], message("Web caída"))
    d.wait_event("ticket.created")
    data = json.loads(d.cli("status", "--json").stdout)
    smtp_state = data["listeners"]["smtp"]
    assert smtp_state["state"] == "listening" and smtp_state["detail"].startswith("220")
    assert data["schema"]["state"] == "current"
    assert data["schema"]["revision"] == data["schema"]["head"]
    assert data["tickets"]["open"] == 1
    assert data["tickets"]["breached"] == []
    text = d.cli("status").stdout
    assert "listening (220" in text and "1 open" in text


def test_doctor_fails_a_closed_relay_and_passes_a_real_one(
    tmp_path: Path, relay: tuple[Sink, int]
) -> None:
    """A relay port nobody listens on FAILs with a fix; a real relay passes EHLO and AUTH
    and receives no mail; a wrong relay password FAILs as a refused login."""
    sink, port = relay
    secret = tmp_path / "relay.secret"
    secret.write_text("right\n")
    outbound = f'username = "ana"\npassword_file = "{secret}"\n'
    closed = write_config(
        tmp_path / "closed",
        free_port(),
        extra=f'[outbound]\nrelay = "127.0.0.1:{free_port()}"\n{outbound}',
    )
    result = buzon(closed, "doctor")
    assert result.returncode == 1
    line = lines_of(result.stdout)["relay"]
    assert line.startswith("FAIL") and "127.0.0.1" in line
    assert "fix:" in result.stdout
    good = write_config(
        tmp_path / "good", free_port(), extra=f'[outbound]\nrelay = "127.0.0.1:{port}"\n{outbound}'
    )
    result = buzon(good, "doctor")
    line = lines_of(result.stdout)["relay"]
    assert line.startswith("PASS") and "login as ana accepted" in line, result.stdout
    assert result.returncode == 0, result.stdout
    secret.write_text("wrong\n")
    result = buzon(good, "doctor")
    assert result.returncode == 1
    line = lines_of(result.stdout)["relay"]
    assert line.startswith("FAIL") and "login as ana refused: 535" in line
    assert "wrong" not in result.stdout and "right" not in result.stdout
    assert sink.got == []  # doctor never sends mail


def test_doctor_fails_an_imap_account_at_a_closed_port_in_time(tmp_path: Path) -> None:
    """An IMAP account nobody answers for FAILs as a connection failure, and doctor still
    finishes well inside 15 s."""
    cfg = write_config(
        tmp_path / "imap",
        free_port(),
        extra=(
            f'[[imap]]\nname = "support"\nhost = "127.0.0.1"\nport = {free_port()}\n'
            f'security = "none"\nusername = "support"\npassword_env = "{PASSWORD_ENV}"\n'
        ),
    )
    started = time.monotonic()
    result = run_cli("--config", str(cfg), "doctor", check=False, env={PASSWORD_ENV: "secret"})
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    line = lines_of(result.stdout)["imap support"]
    assert line.startswith("FAIL") and "connection failed" in line and "secret" not in line
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    unset = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(cfg), "doctor"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    line = lines_of(unset.stdout)["imap support"]
    assert line.startswith("FAIL") and f"${PASSWORD_ENV} is not set" in line


def test_doctor_logs_in_to_a_real_dovecot(tmp_path: Path) -> None:
    """A real Dovecot login PASSes; a wrong password FAILs as authentication, not as a
    connection problem, and the password is never printed."""
    if dovecot_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("dovecot must be installed in CI (Debian package dovecot-imapd)")
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    with running_dovecot(tmp_path) as server:
        cfg = write_config(
            tmp_path / "dove",
            free_port(),
            extra=(
                f'[[imap]]\nname = "support"\nhost = "127.0.0.1"\nport = {server.port}\n'
                f'security = "none"\nusername = "support"\npassword_env = "{PASSWORD_ENV}"\n'
            ),
        )
        good = run_cli("--config", str(cfg), "doctor", check=False, env={PASSWORD_ENV: "secret"})
        line = lines_of(good.stdout)["imap support"]
        assert line.startswith("PASS") and "logged in" in line, good.stdout
        bad = run_cli(
            "--config", str(cfg), "doctor", check=False, env={PASSWORD_ENV: "n0t-the-password"}
        )
        line = lines_of(bad.stdout)["imap support"]
        assert bad.returncode == 1
        assert line.startswith("FAIL") and "login refused (authentication)" in line
        assert "n0t-the-password" not in bad.stdout + bad.stderr
        # status shows the folder once it was fetched (the keys earlier tests read stay).
        server.append("support", "INBOX", message("Hola"))
        env = {PASSWORD_ENV: "secret", "TZ": "UTC"}
        run_cli("--config", str(cfg), "ingest", "--imap", "support", "--once", env=env)
        (folder,) = json.loads(run_cli("--config", str(cfg), "status", "--json", env=env).stdout)[
            "imap"
        ]
        assert (folder["account"], folder["folder"], folder["state"]) == ("support", "INBOX", "ok")
        assert folder["last_uid"] == max(server.uids("support", "INBOX"))
        text = run_cli("--config", str(cfg), "status", env=env).stdout
        assert "support/INBOX: ok" in text


# -- db upgrade ----------------------------------------------------------------------------


def test_db_upgrade_twice(tmp_path: Path) -> None:
    """The first upgrade says from none to head, the second that there is nothing to do."""
    cfg = write_config(tmp_path / "db", free_port())
    first = buzon(cfg, "db", "upgrade", check=True).stdout
    head = first.strip().rsplit(" ", 1)[-1]
    assert "schema none -> " in first and head.isdigit()
    second = buzon(cfg, "db", "upgrade", check=True).stdout
    assert f"schema {head} is current; nothing to do" in second
    with sqlite3.connect(tmp_path / "db" / "buzon.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (head,)


def test_db_upgrade_waits_for_the_daemon_to_stop_before_migrating(tmp_path: Path) -> None:
    """A migration may drop what the running version writes (0008 dropped tickets.triage):
    with one pending while this machine's daemon holds the spool, ``db upgrade`` says to
    stop it first and changes nothing. Stopped, it migrates; with the schema current it
    says so, daemon or not."""
    cfg = write_config(tmp_path / "db", free_port())
    db = Database(f"sqlite:///{tmp_path / 'db' / 'buzon.db'}")
    command.upgrade(alembic_config(db.engine), "0007")
    spool = tmp_path / "db" / "spool"
    try:
        with instance.hold(spool):  # what `buzon run` holds for its whole life
            refused = buzon(cfg, "db", "upgrade")
            assert refused.returncode == 1
            assert f"the daemon (pid {os.getpid()}) is running on {spool}" in refused.stderr
            assert "systemctl stop buzon" in refused.stderr and "0007" in refused.stderr
            assert current_revision(db.engine) == "0007"
        upgraded = buzon(cfg, "db", "upgrade", check=True).stdout
        assert f"schema 0007 -> {head_revision()}" in upgraded
        with instance.hold(spool):
            assert "nothing to do" in buzon(cfg, "db", "upgrade", check=True).stdout
    finally:
        db.dispose()


# -- backup --------------------------------------------------------------------------------


@dataclass
class Sender:
    """Sends mail to the daemon in a thread, keeping each acknowledged spool id in order."""

    port: int
    acked: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
                smtp.ehlo()
                n = 0
                while not self.stop.is_set():
                    n += 1
                    smtp.mail("ana@cliente.es")
                    smtp.rcpt("support@example.com")
                    code, reply = smtp.data(message(f"Caso {n}", body=f"Consulta número {n}.\n"))
                    assert code == 250, reply
                    self.acked.append(reply.decode().rsplit(" ", 1)[-1])
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_backup_while_the_daemon_takes_mail(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """A backup taken while mail streams in opens, passes integrity_check, matches its
    manifest, and holds every message acknowledged before it began (spool or database)."""
    d = daemon_factory("busy")
    sender = Sender(d.port)
    thread = threading.Thread(target=sender.run, daemon=True)
    thread.start()
    try:
        # Some mail in the database and more in the spool: both halves are exercised.
        wait_until(lambda: d.count("message.stored") >= 10 or sender.errors, what="stored mail")
        wait_until(lambda: len(sender.acked) >= 30 or sender.errors, what="30 messages")
        before = list(sender.acked)
        dest = tmp_path / "backup"
        result = d.cli("backup", str(dest), "--json")
        during = len(sender.acked) - len(before)
    finally:
        sender.stop.set()
        thread.join(30)
    assert not sender.errors, sender.errors
    assert during > 0, "mail kept arriving during the backup"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert json.loads(result.stdout) == manifest
    db = dest / "buzon.db"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == manifest["database"]["sha256"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rev = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        assert rev == manifest["database"]["schema_revision"]
        for table, n in manifest["database"]["rows"].items():
            assert conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] == n  # noqa: S608
        stored = {r[0] for r in conn.execute("SELECT spool_id FROM deliveries")}
    spooled = {
        p.name.split(".")[0] for s in ("new", "cur", "bad") for p in (dest / "spool" / s).iterdir()
    }
    for state in ("new", "cur", "bad"):
        assert len(list((dest / "spool" / state).glob("*.msg"))) == manifest["spool"][state]
    assert len(_files(dest / "attachments")) == manifest["attachments"]["files"]
    missing = [i for i in before if i not in stored and i not in spooled]
    assert missing == []
    assert manifest["database"]["rows"]["deliveries"] == len(stored) > 0


def test_backup_refuses_a_non_empty_directory_and_overlaps(tmp_path: Path) -> None:
    """A directory with files is refused (exit 2) unless --force, which keeps foreign
    files; a destination inside the live data is refused even with --force."""
    cfg = write_config(tmp_path / "data", free_port())
    (tmp_path / "m.eml").write_bytes(message("Hola"))
    buzon(cfg, "ingest", str(tmp_path / "m.eml"), check=True)
    dest = tmp_path / "bk"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    refused = buzon(cfg, "backup", str(dest))
    assert refused.returncode == 2 and "not empty" in refused.stderr
    assert not (dest / "buzon.db").exists()
    forced = buzon(cfg, "backup", str(dest), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (dest / "notes.txt").read_text() == "mine" and (dest / "buzon.db").is_file()
    again = buzon(cfg, "backup", str(dest), "--force")  # over an earlier backup
    assert again.returncode == 0, again.stderr
    inside = buzon(cfg, "backup", str(tmp_path / "data" / "spool" / "x"), "--force")
    assert inside.returncode == 2 and "is inside the live" in inside.stderr
    over = buzon(cfg, "backup", str(tmp_path / "data"), "--force")  # would replace spool/
    assert over.returncode == 2 and "is the live" in over.stderr
    assert (tmp_path / "data" / "buzon.db").is_file() and (tmp_path / "data" / "spool").is_dir()
    help_text = buzon(cfg, "backup", "--help").stdout
    assert "Restore:" in help_text and "buzon.db-wal" in help_text


def test_backup_refuses_postgresql_with_the_pg_dump_command(tmp_path: Path) -> None:
    """PostgreSQL is not copied: the refusal names pg_dump with the URL's database."""
    cfg = write_config(
        tmp_path / "pg", free_port(), database="postgresql://buzon:s3cret@db.example:5433/desk"
    )
    result = buzon(cfg, "backup", str(tmp_path / "bk"))
    assert result.returncode == 2
    assert "pg_dump --format=custom" in result.stderr and "--host=db.example" in result.stderr
    assert "--port=5433" in result.stderr and result.stderr.rstrip().endswith("desk`")
    assert "s3cret" not in result.stderr
    files = buzon(cfg, "backup", str(tmp_path / "bk"), "--files-only")
    assert files.returncode == 0, files.stderr
    assert "now run pg_dump" in files.stdout
    assert (
        json.loads((tmp_path / "bk" / "manifest.json").read_text())["database"]["copied"] is False
    )


# -- logs ----------------------------------------------------------------------------------

SAMPLE: list[dict[str, Any]] = [
    {"event": "smtp.accepted", "level": "info", "component": "smtp", "spool_id": "S1", "size": 9},
    {
        "event": "message.stored",
        "level": "info",
        "component": "ingest",
        "spool_id": "S1",
        "message_id": "<m1@cliente.es>",
        "ticket": "B-7",
        "subject": "hola\x1b[2J\x1b]0;pwned\x07\r\nfake line",
    },
    {
        "event": "message.stored",
        "level": "info",
        "component": "ingest",
        "ticket": "B-8",
        "spool_id": "S2",
        "message_id": "<m2@cliente.es>",
    },
    {
        "event": "outbox.retry",
        "level": "warning",
        "component": "outbox",
        "message_id": "<m1@cliente.es>",
        "error": "451 later",
    },
    {"event": "sla.breached", "level": "warning", "component": "scheduler", "ticket": "b-7"},
]


@pytest.fixture
def logfile(tmp_path: Path) -> Path:
    path = tmp_path / "buzon.log"
    lines = [json.dumps({"timestamp": "2026-12-01T10:20:30.5Z", **r}) for r in SAMPLE]
    lines.insert(2, "Traceback (most recent call last): not JSON")
    path.write_text("\n".join(lines) + "\n")
    return path


def logs(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("logs", str(path), *args, check=True, env={"TZ": "UTC"})


def test_logs_filters_by_ticket_message_and_spool_id(logfile: Path) -> None:
    """--ticket keeps its lines and the later ones of its message, --json re-emits them
    as they were; --spool-id and --message-id (brackets optional) match exactly."""
    raw = logfile.read_text().splitlines()
    out = logs(logfile, "--ticket", "B-7", "--json").stdout.splitlines()
    assert out == [raw[1], raw[4], raw[5]]  # stored, its message's retry, the breach
    assert logs(logfile, "--spool-id", "S1", "--json").stdout.splitlines() == [raw[0], raw[1]]
    by_mid = logs(logfile, "--message-id", "m1@cliente.es", "--json").stdout.splitlines()
    assert by_mid == [raw[1], raw[4]]
    assert logs(logfile, "--spool-id", "nope").stdout == ""


def test_logs_pretty_print_escapes_control_characters(logfile: Path) -> None:
    """Pretty lines are `HH:MM:SS level component event key=value`; a hostile value's
    escape sequences and CR/LF arrive as visible text, never as control characters."""
    out = logs(logfile, "--ticket", "B-7").stdout
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("10:20:30 info    ingest      message.stored spool_id=S1")
    assert "\\x1b[2J" in lines[0] and "\\x07" in lines[0] and "\\x0d\\x0afake line" in lines[0]
    assert not any(ord(c) < 0x20 for c in out.replace("\n", ""))
    assert lines[1].startswith("10:20:30 warning outbox      outbox.retry")
    assert 'error="451 later"' in lines[1]


def test_logs_passes_other_lines_and_filters_levels(logfile: Path) -> None:
    """Without an id filter a non-JSON line passes unchanged; --level keeps warnings up."""
    everything = logs(logfile).stdout.splitlines()
    assert len(everything) == 6
    assert everything[2] == "Traceback (most recent call last): not JSON"
    warnings = logs(logfile, "--level", "warning").stdout.splitlines()
    assert [w.split()[3] for w in warnings if w[:2].isdigit()] == ["outbox.retry", "sla.breached"]
    assert "Traceback (most recent call last): not JSON" in warnings


def test_logs_quiet_on_a_closed_pipe_and_follows_a_growing_file(tmp_path: Path) -> None:
    """`buzon logs | head -1` ends without a traceback; --follow prints lines appended later."""
    big = tmp_path / "big.log"
    line = json.dumps({"event": "smtp.accepted", "level": "info", "spool_id": "x" * 100})
    big.write_text((line + "\n") * 5000)
    with subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "logs", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert b"smtp.accepted" in proc.stdout.readline()
        proc.stdout.close()  # as `head -1` does
        assert proc.wait(30) == 0
        assert proc.stderr.read() == b""
    grow = tmp_path / "grow.log"
    grow.write_text("")
    with subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "logs", str(grow), "--follow", "--json"],
        stdout=subprocess.PIPE,
    ) as follower:
        try:
            assert follower.stdout is not None
            with grow.open("a") as f:
                f.write(line + "\n")
            assert follower.stdout.readline().decode().strip() == line
        finally:
            follower.terminate()


def test_status_reports_sla_and_last_errors(tmp_path: Path) -> None:
    """A ticket past its assign_by is breached, one 90 % into its window is at risk, and a
    relay's refusal is among the last errors, newest first, its escape bytes made visible."""
    cfg = write_config(tmp_path / "sla", free_port())
    for n, sender in enumerate(("ana@cliente.es", "luis@otro.es")):
        (tmp_path / f"{n}.eml").write_bytes(message(f"Asunto {n}", sender=sender))
    files = [str(tmp_path / "0.eml"), str(tmp_path / "1.eml")]
    buzon(cfg, "ingest", "--acknowledge", *files, check=True)
    now = datetime.now(UTC)
    db = Database(f"sqlite:///{tmp_path / 'sla' / 'buzon.db'}")
    try:
        with db.transaction() as s:
            late, soon = s.scalars(select(Ticket).order_by(Ticket.id))
            late.assign_by = now - timedelta(minutes=1)
            soon.created_at, soon.assign_by = (
                now - timedelta(minutes=54),
                now + timedelta(minutes=6),
            )
            first, second = s.scalars(select(OutboxMail).order_by(OutboxMail.id))
            first.state, first.last_error = "failed", "550 5.1.1 <ana@cliente.es>: no\x1b[2J"
            first.due_at = now - timedelta(minutes=5)
            second.last_error, second.due_at = "451 4.3.0 try later", now - timedelta(minutes=1)
    finally:
        db.dispose()
    data = json.loads(buzon(cfg, "status", "--json", check=True).stdout)
    assert [(i["ticket"], i["clock"]) for i in data["tickets"]["breached"]] == [("B-1", "assign")]
    assert [(i["ticket"], i["clock"]) for i in data["tickets"]["at_risk"]] == [("B-2", "assign")]
    assert data["queues"]["outbox"] == {"pending": 1, "sending": 0, "failed": 1}
    errors = [e["error"] for e in data["last_errors"]]
    assert errors == ["451 4.3.0 try later", "550 5.1.1 <ana@cliente.es>: no\\x1b[2J"]
    text = buzon(cfg, "status", check=True).stdout
    assert "1 breached (B-1 assign due" in text and "1 at risk (B-2 assign due" in text
    assert "\x1b" not in text


def test_status_at_risk_is_the_schedulers_own_moment_on_business_time(parts: Parts) -> None:
    """A Saturday voicemail is due Monday 10:00 Madrid (1 business hour): on Monday at 08:00,
    96 % of the window in wall-clock time but none of the desk's hours, it is not at risk;
    at 09:50, 50 of its 60 business minutes gone, it is, exactly when the scheduler warns."""
    saturday = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    out = ingest_raw(parts, message("Mensaje de voz"), received_at=saturday)
    cfg = parts.processor.desk.sla
    with parts.db.transaction() as s:
        t = repo.ticket(s, out.ticket_ref or "")
        assert t is not None and t.assign_by == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

        def at_risk(now: datetime) -> list[str]:
            return [i["clock"] for i in status_command._sla(s, now, cfg)["at_risk"]]

        assert at_risk(datetime(2026, 12, 7, 7, 0, tzinfo=UTC)) == []  # Monday 08:00 Madrid
        assert at_risk(datetime(2026, 12, 7, 8, 50, tzinfo=UTC)) == ["assign"]  # 09:50
