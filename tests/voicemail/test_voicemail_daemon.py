"""Voicemail through the real daemon: SMTP in, ticket at once, transcript later, email first."""

from __future__ import annotations

import os
import signal
import smtplib
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from support.audio import VoicemailAudio, long_speech_wav
from support.daemon import Daemon, wait_until
from support.mail import message, send
from support.voicemail import asterisk_mail


def _stored_at(d: Daemon, subject: str) -> float:
    event = d.wait_event("message.stored", 60, where=lambda e: e.get("subject") == subject)
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def _email_latencies(d: Daemon, tag: str, n: int, every: float = 0.0) -> list[float]:
    """Send ``n`` emails, each once the previous is stored (and ``every`` seconds apart);
    seconds from send to stored, for each."""
    out = []
    for i in range(n):
        subject = f"{tag} {i}: la web no carga"
        sent = time.time()
        # A customer each: one customer's same words again would collapse as a duplicate.
        send(d.port, message(subject, sender=f"{tag}-{i}@cliente.es"))
        out.append(_stored_at(d, subject) - sent)
        time.sleep(max(0.0, sent + every - time.time()))
    return out


def test_vm05_a_hundred_queued_voicemails_do_not_delay_email(
    daemon_factory: Callable[..., Daemon], model_dir: Path, audio: VoicemailAudio
) -> None:
    """VM-05: 100 voicemails waiting for the recogniser; emails sent meanwhile are stored
    and ticketed while the voicemails are still queued (email never waits behind a
    recording), with latencies printed next to the same daemon's unloaded ones."""
    d = daemon_factory(extra=f'[transcription]\nmodel = "{model_dir}"\nworkers = 1\n')
    _email_latencies(d, "warm-up", 3)
    before = _email_latencies(d, "before", 10)
    wav = audio.read("wav")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as smtp:
        for i in range(100):
            raw = asterisk_mail(wav, caller=f"+3460000{i:04d}", number=i + 1)
            smtp.sendmail("asterisk@pbx.example.com", ["support@example.com"], raw)
    # Their own ingest comes first (spool order); then the recogniser has 100 to do.
    wait_until(lambda: d.count("voicemail.detected") == 100, 60, what="voicemails stored")
    d.wait_event("transcription.started", 60)
    done_before = d.count("transcription.done")
    during = _email_latencies(d, "during", 20, every=0.4)  # 8 s while the recogniser works
    transcribed = d.count("transcription.done") - done_before
    tickets_open = d.count("ticket.created")
    print(
        f"\nVM-05 email send->stored seconds: unloaded p50 {statistics.median(before):.3f} "
        f"max {max(before):.3f}; with 100 voicemails queued p50 {statistics.median(during):.3f} "
        f"max {max(during):.3f}; voicemails transcribed meanwhile: {transcribed}"
    )
    assert 0 < transcribed < 90, "the recogniser idled, or the emails waited for it"
    assert tickets_open >= 123  # every voicemail has its ticket already, text or not
    done = d.wait_event("transcription.done", 1)
    assert done["words"] > 0 and done["model"].endswith("model")
    assert d.stop() == 0


def test_without_a_model_the_daemon_runs_and_voicemails_wait_as_tickets(
    daemon_factory: Callable[..., Daemon], audio: VoicemailAudio
) -> None:
    """No [transcription] model: the daemon starts, says so once with the fix, and a
    voicemail still becomes a voicemail ticket whose transcription waits."""
    d = daemon_factory()
    disabled = d.wait_event("transcription.disabled", 30)
    assert "[transcription] model" in disabled["fix"]
    send(d.port, asterisk_mail(audio.read("wav")), sender="asterisk@pbx.example.com")
    created = d.wait_event("ticket.created", 30)
    assert created["channel"] == "voicemail"
    shown = d.cli("tickets", "show", created["ticket"]).stdout
    assert "transcription pending" in shown
    status = d.cli("status").stdout
    assert "transcription off (no model), 1 pending" in status
    assert d.stop() == 0


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc), recursively."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [*_children(int(child)), int(child)]
    return found


def test_kill9_mid_transcription_the_restarted_instance_transcribes_it_at_once(
    daemon_factory: Callable[..., Daemon], model_dir: Path, tmp_path: Path
) -> None:
    """The whole service is SIGKILLed while a minute-long recording is being transcribed
    (the OOM killer, systemd's SIGKILL of the cgroup): its claim stays in the database,
    leased for 30 minutes. The restarted instance is the same holder, takes the claim
    back at start, counts the attempt and transcribes the recording now, once."""
    wav = long_speech_wav(tmp_path / "speech", 60).read_bytes()
    d = daemon_factory(
        extra=f'[transcription]\nmodel = "{model_dir}"\nworkers = 1\nretry_delay = 0.5\n'
    )
    ingest_pid = d.wait_event("ingest.started", 60)["pid"]
    # CRLF, as the PBX's MTA relays it: smtplib sends bytes as they are, and a megabyte
    # with bare LFs is one line longer than [smtp] max_line_length.
    raw = asterisk_mail(wav, length="1:00").replace(b"\n", b"\r\n")
    send(d.port, raw, sender="asterisk@pbx.example.com")
    d.wait_event("transcription.started", 60)
    # As systemd kills the cgroup: every process at once. The ingest process before its
    # parent (told by its parent, it would hand the recording back), its recogniser and
    # parser processes with it.
    for pid in (*_children(ingest_pid), ingest_pid):
        os.kill(pid, signal.SIGKILL)
    d.kill()
    d.start()
    back = d.wait_event("transcription.taken_back", 60)
    assert back["voicemails"] == 1
    retry = d.wait_event("transcription.retry", 30)
    assert retry["attempts"] == 1 and "service stopped" in retry["reason"]
    done = d.wait_event("transcription.done", 180)
    assert done["words"] > 0
    assert d.count("transcription.started") == 1  # this life: the one recording, once
    assert d.stop() == 0
