"""``[roles]``: one desk split over instances sharing a database, each running some parts.

Validation runs in this process; the split itself runs real ``buzon run`` subprocesses on
one SQLite file or one PostgreSQL database, each with its own spool and attachments.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import missing
from daemon import config as config_mod
from daemon.config_roles import RolesConfig
from daemon.errors import ConfigError
from daemon.reload import plan, restart_reason
from daemon.status_command import status_data
from support.daemon import Daemon, free_port, run_cli, serving, wait_until, write_config
from support.mail import message, send

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "voicemail"
ROLES = ("smtp", "imap", "pipeline", "transcription", "scheduler", "outbox")


def roles(*on: str) -> str:
    """A ``[roles]`` table with exactly ``on`` true."""
    return "[roles]\n" + "".join(f"{r} = {'true' if r in on else 'false'}\n" for r in ROLES)


def parse(text: str, base: Path) -> config_mod.Config:
    return config_mod.parse(text, base=base, source="test.toml")


# -- configuration --------------------------------------------------------------------------


def test_every_role_is_on_by_default(tmp_path: Path) -> None:
    """No [roles] table: one instance runs every part, as before roles existed."""
    cfg = parse("", tmp_path)
    assert cfg.roles == RolesConfig() and cfg.roles.enabled == ROLES
    assert cfg.redacted()["roles"] == dict.fromkeys(ROLES, True)


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ("[roles]\nsmpt = false\n", ["[roles] smpt: unknown key", "did you mean 'smtp'?"]),
        ('[roles]\nscheduler = "no"\n', ["[roles] scheduler: expected true or false"]),
        (roles(), ["[roles]: every role is false", "set at least one of smtp, imap"]),
        (
            roles("smtp", "scheduler"),
            ["[roles] smtp = true needs pipeline = true", "or smtp = false"],
        ),
        (
            roles("imap", "outbox")
            + '[[imap]]\nname = "s"\nhost = "127.0.0.1"\nsecurity = "none"\n'
            'username = "u"\npassword_env = "P"\n',
            ["[roles] imap = true needs pipeline = true", "or imap = false"],
        ),
        (
            roles("transcription") + '[[voicemail_dir]]\npath = "vm"\nprocessed = "done"\n',
            ["[[voicemail_dir]] needs [roles] pipeline = true", "set pipeline = true"],
        ),
    ],
    ids=["unknown-key", "not-a-bool", "none-on", "smtp-without-pipeline", "imap", "voicemail-dir"],
)
def test_invalid_roles_name_the_key_and_the_fix(
    tmp_path: Path, table: str, said: list[str]
) -> None:
    """A typo, a non-boolean, no role at all, or mail spooled where no pipeline drains it
    is refused at load, naming the key and the fix."""
    with pytest.raises(ConfigError) as err:
        parse(table, tmp_path)
    for text in said:
        assert text in str(err.value)


def test_imap_role_without_accounts_needs_no_pipeline(tmp_path: Path) -> None:
    """imap = true with no [[imap]] account fetches nothing, so a scheduler box may keep it."""
    cfg = parse("[roles]\nsmtp = false\npipeline = false\ntranscription = false\n", tmp_path)
    assert cfg.roles.enabled == ("imap", "scheduler", "outbox")
    assert not cfg.roles.ingest_process


def test_check_config_exits_2_on_bad_roles_and_reload_needs_a_restart(tmp_path: Path) -> None:
    """The CLI refuses a bad [roles] with exit 2; a reload reports a roles change as
    needing a restart (the running parts stay)."""
    path = write_config(tmp_path / "bad", free_port(), extra=roles("smtp", "outbox"))
    result = run_cli("--config", str(path), "check-config", check=False)
    assert result.returncode == 2 and "needs pipeline = true" in result.stderr
    old = parse("", tmp_path)
    new = parse(roles("pipeline", "transcription"), tmp_path)
    p = plan(old, new)
    assert p.restart == ("roles",) and not p.live
    assert "chosen at start" in restart_reason("roles")


# -- instances sharing a database -----------------------------------------------------------


class Sink:
    """A relay that keeps every mail it is given."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.got.append(bytes(envelope.original_content or envelope.content))
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def relay() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    with serving(sink) as port:
        yield sink, port


# The same desk for both instances: a 1-minute policy, at risk after 1 % of it (0.6 s),
# and passes every 0.3 s, so the scheduler has something to do within a second.
def desk(relay_port: int) -> str:
    return f"""
[sla]
at_risk = 0.01
interval = 0.3
[[sla.policies]]
name = "fast"
assign_within = "1m"
respond_within = "1m"
followup_response_within = "1m"

[outbound]
relay = "127.0.0.1:{relay_port}"
"""


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def started(*daemons: Daemon) -> None:
    """Start the instances side by side (each migrates and loads its parts at once)."""
    first, *others = daemons
    first.start(wait_ready=False)
    # The first one migrates a fresh database before the others look at it.
    first.wait_event("spool.recovered", timeout=60)
    for d in others:
        d.start(wait_ready=False)
    for d in daemons:
        d.wait_event("daemon.ready", timeout=60)


def stopped(*daemons: Daemon) -> list[int]:
    """Stop the instances side by side; their exit codes."""
    for d in daemons:
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
    return [d.wait() for d in daemons]


def names(d: Daemon, component: str) -> set[str]:
    return {str(e["event"]) for e in list(d.events) if e.get("component") == component}


def test_intake_and_desk_instances_split_the_work(
    pg_url: str, daemon_factory: Callable[..., Daemon], relay: tuple[Sink, int]
) -> None:
    """On one PostgreSQL database, instance A (smtp + pipeline) turns mail into a ticket;
    instance B (scheduler + outbox) listens on nothing, runs the SLA passes and sends A's
    acknowledgement; A's log has no scheduler or outbox line. (Two instances on one
    SQLite file: the voicemail test below.)"""
    sink, relay_port = relay
    a = daemon_factory(
        "a", database=pg_url, extra=roles("smtp", "pipeline") + desk(relay_port), start=False
    )
    b = daemon_factory(
        "b", database=pg_url, extra=roles("scheduler", "outbox") + desk(relay_port), start=False
    )
    started(a, b)
    # The CLI's start-up is slow: let it read B's status while the mail goes through.
    status = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "--config", str(b.config), "status"],
        stdout=subprocess.PIPE,
        text=True,
    )
    said = b.wait_event("daemon.roles")
    assert said["roles"] == ["scheduler", "outbox"] and "smtp" in said["off"]
    assert b.wait_event("daemon.ready")["smtp"] is None
    assert refused(b.port)  # no listener without the smtp role
    assert a.wait_event("daemon.roles")["roles"] == ["smtp", "pipeline"]
    ingest = a.wait_event("ingest.started")
    assert ingest["pipeline"] and not ingest["transcription"]

    assert send(a.port, message("La web no carga", sender="ana@cliente.es")) == {}
    ref = a.wait_event("ticket.created")["ticket"]
    assert b.wait_event("sla.at_risk", 20)["ticket"] == ref
    b.wait_event("scheduler.pass")
    b.wait_event("outbox.sent", 20)
    wait_until(lambda: sink.got, 10, what="the acknowledgement at the relay")
    assert f"[{ref}]".encode() in sink.got[0]
    assert not names(a, "scheduler") and not names(a, "outbox")
    assert not names(b, "ingest") and not names(b, "smtp")
    shown, _ = status.communicate(timeout=60)
    assert "roles        scheduler, outbox; not here: smtp, imap" in shown
    assert "smtp         off" in shown
    assert stopped(a, b) == [0, 0]


def test_a_transcription_instance_transcribes_what_an_intake_instance_stored(
    tmp_path: Path, daemon_factory: Callable[..., Daemon], model_dir: Path
) -> None:
    """With transcription = false the intake instance tickets a voicemail and leaves it
    pending; a transcription-only instance, whose attachment store lacks the recording,
    reads it from the raw message in the database and transcribes it."""
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    model = f'[transcription]\nmodel = "{model_dir}"\nworkers = 1\n'
    a = daemon_factory(
        "a", database=database, extra=roles("smtp", "pipeline", "scheduler", "outbox") + model
    )
    send(a.port, (FIXTURES / "asterisk_wav.eml").read_bytes(), sender="asterisk@pbx.example.com")
    created = a.wait_event("ticket.created")
    assert created["channel"] == "voicemail"
    waiting = status_data(config_mod.load(str(a.config)))
    assert waiting["roles"]["transcription"] is False
    assert waiting["queues"]["transcription"]["pending"] == 1

    b = daemon_factory("b", database=database, extra=roles("transcription") + model)
    assert refused(b.port)
    done = b.wait_event("transcription.done", 60)
    assert done["model"].endswith(model_dir.name)
    assert not names(a, "transcription")
    stored = list((tmp_path / "b" / "attachments").rglob("*"))
    assert any(p.is_file() for p in stored)  # the copy taken from the raw message
    assert a.stop() == 0 and b.stop() == 0


def test_an_instance_without_smtp_refuses_a_socket_from_systemd(tmp_path: Path) -> None:
    """buzon.socket left enabled on an instance with smtp = false: the daemon exits 1 with
    the fix instead of leaving clients waiting in the backlog."""
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        missing("systemd-socket-activate (Debian package systemd)")
    assert activate is not None
    passed = free_port()
    cfg = write_config(tmp_path / "cfg", free_port(), extra=roles("scheduler"))
    proc = subprocess.Popen(
        [activate, "-l", f"127.0.0.1:{passed}", "--fdname=smtp",
         sys.executable, "-m", "daemon.cli", "--config", str(cfg), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # The tool starts the service on the first connection, like systemd.
        wait_until(lambda: not refused(passed), 30, what="the tool to bind the port")
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1
    assert b"[roles] smtp = false" in out and b"buzon.socket" in out
