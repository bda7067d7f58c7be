"""Voicemail end to end in process: PBX email or spool pair -> ticket at once -> transcript.

Real recordings (espeak-ng + sox), the real Korean Vosk model, the real recogniser pool.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from daemon.config import Config, VoicemailDir
from daemon.parts import Parts
from daemon.voice import LEASE, TranscriptionRunner, make_pool
from daemon.voicedir import VoicemailFolder, find_pairs
from storage import repository as repo
from storage import voicemails as vm_repo
from storage.models import Voicemail
from support.audio import PCM, VoicemailAudio, sox
from support.daemon import run_cli, wait_until
from support.ingest import ingest_raw
from support.mail import message
from support.voicemail import asterisk_mail, asterisk_pair
from transcription import Recognizer, TranscriberPool, Transcript

# (format in support.audio, file name Asterisk gives it, sox options to read it back)
EMAILED = [
    ("wav", "msg0000.wav", ()),
    ("wav49", "msg0000.WAV", ()),
    ("gsm", "msg0000.gsm", ("-t", "gsm", "-r", "8000", "-c", "1")),
    ("mp3", "msg0000.mp3", ()),
    ("ogg", "msg0000.ogg", ()),
]


@pytest.fixture
def runner(vm_parts: tuple[Config, Parts]) -> Iterator[TranscriptionRunner]:
    """A transcription runner on the test's database with a real one-process pool.

    Jobs are run with ``run_once`` from the test thread, so the test decides when.
    """
    cfg, parts = vm_parts
    r = TranscriptionRunner(
        cfg.transcription, parts.db, parts.blobs, holder="test", triager=parts.triager
    )
    r.pool = make_pool(cfg.transcription)
    yield r
    r.pool.close()


def voicemail_row(parts: Parts, ticket_ref: str) -> Voicemail:
    with parts.db.transaction() as s:
        t = repo.ticket(s, ticket_ref)
        assert t is not None
        vm = vm_repo.for_message(s, t.messages[0].id)
        assert vm is not None
        s.expunge(vm)
        return vm


@pytest.fixture(scope="module")
def recognizer(model_dir: Path) -> Recognizer:
    return Recognizer(model_dir)


def sox_reference(src: Path, read_opts: tuple[str, ...], out: Path) -> bytes:
    """sox's own 16 kHz conversion of ``src``, dither off (the issue's reference)."""
    sox("-D", *read_opts, src, "-r", "16000", "-c", "1", *PCM, "-L", "-t", "raw", out)
    return out.read_bytes()


@pytest.mark.parametrize(("fmt", "filename", "read_opts"), EMAILED)
def test_vm01_asterisk_email_becomes_a_ticket_then_gets_vosks_transcript(
    vm_parts: tuple[Config, Parts],
    runner: TranscriptionRunner,
    audio: VoicemailAudio,
    recognizer: Recognizer,
    tmp_path: Path,
    fmt: str,
    filename: str,
    read_opts: tuple[str, ...],
) -> None:
    """VM-01: the ticket exists before any transcription (channel voicemail, the caller as
    customer, the length in the subject); the stored transcript is exactly what Vosk says
    on sox's 16 kHz conversion of the same file, i.e. Buzón decoded it right."""
    _, parts = vm_parts
    recording = audio.files[fmt]
    with structlog.testing.capture_logs() as logs:
        out = ingest_raw(parts, asterisk_mail(recording.read_bytes(), filename))
    assert out.outcome == "stored"
    detected = [e for e in logs if e["event"] == "voicemail.detected"]
    assert detected and detected[0]["caller"] == "+34600111222"
    with parts.db.transaction() as s:
        t = repo.ticket(s, out.ticket_ref or "")
        assert t is not None
        assert (t.channel, t.requester, t.customer) == (
            "voicemail",
            "tel:+34600111222",
            "tel:+34600111222",
        )
        assert t.subject == "Voicemail from Ana Pérez +34600111222 (0:04)"
        assert t.assign_by is not None  # the SLA clock runs from the call, not the transcript
    vm = voicemail_row(parts, out.ticket_ref or "")
    assert (vm.state, vm.duration_seconds, vm.mailbox, vm.audio_format) == (
        "pending",
        4,
        "6001",
        "gsm" if fmt == "gsm" else fmt,
    )

    with structlog.testing.capture_logs() as logs:
        assert runner.run_once()
    done = [e for e in logs if e["event"] == "transcription.done"]
    assert done and done[0]["real_time_factor"] > 0
    vm = voicemail_row(parts, out.ticket_ref or "")
    expected = recognizer.transcribe(sox_reference(recording, read_opts, tmp_path / "ref.raw"))
    assert vm.state == "done" and vm.text
    if fmt == "ogg":
        # Two Vorbis decoders (sox: libvorbis, PyAV: FFmpeg's) agree to within float
        # rounding, which is enough to move a word of espeak's Korean: compare the signal.
        assert vm.transcript is not None and vm.transcript["duration"] == pytest.approx(
            expected.duration, abs=0.05
        )
    else:
        assert vm.text == expected.text
    assert vm.transcript is not None and vm.transcript["words"]
    with parts.db.transaction() as s:
        t = repo.ticket(s, out.ticket_ref or "")
        assert t is not None
        # The transcript, not the PBX's notice, is what gets classified.
        assert [e.kind for e in t.events][-2:] == ["classified", "transcribed"]
        assert t.category and t.priority and t.language
        assert t.subject.startswith("Voicemail from Ana Pérez +34600111222 (0:04): ")


def test_same_recording_twice_gives_the_same_transcript(
    vm_parts: tuple[Config, Parts], runner: TranscriptionRunner, audio: VoicemailAudio
) -> None:
    """Determinism: a second call from another number with the same audio reads the same."""
    _, parts = vm_parts
    wav = audio.read("wav")
    a = ingest_raw(parts, asterisk_mail(wav, caller="+34600000001"))
    b = ingest_raw(parts, asterisk_mail(wav, caller="+34600000002"))
    assert a.ticket_ref != b.ticket_ref
    assert runner.run_once() and runner.run_once() and not runner.run_once()
    assert voicemail_row(parts, a.ticket_ref or "").text == (
        voicemail_row(parts, b.ticket_ref or "").text
    )


def test_repeat_call_from_the_same_caller_joins_the_open_ticket(
    vm_parts: tuple[Config, Parts], audio: VoicemailAudio
) -> None:
    """One ticket per matter: a second voicemail from the same number while its ticket is
    open joins it; another number opens its own; an email from the PBX address never joins."""
    _, parts = vm_parts
    wav = audio.read("wav")
    first = ingest_raw(parts, asterisk_mail(wav, number=1))
    again = ingest_raw(parts, asterisk_mail(wav + b"\0\0", number=2))
    other = ingest_raw(parts, asterisk_mail(wav, caller="+34911222333", number=3))
    assert again.ticket_ref == first.ticket_ref != other.ticket_ref
    with parts.db.transaction() as s:
        t = repo.ticket(s, first.ticket_ref or "")
        assert t is not None and t.message_count == 2
        (added,) = [e for e in t.events if e.kind == "message_added"]
        assert added.data["rule"] == "same-caller"


def test_email_is_not_held_up_while_a_recording_is_transcribed(
    vm_parts: tuple[Config, Parts], runner: TranscriptionRunner, audio: VoicemailAudio
) -> None:
    """The stage runs beside ingest: an email ingested while the recogniser works on a
    voicemail gets its ticket before the transcript exists."""
    _, parts = vm_parts
    vm = ingest_raw(parts, asterisk_mail(audio.read("wav")))
    worker = threading.Thread(target=runner.run_once)
    worker.start()
    try:
        wait_until(
            lambda: voicemail_row(parts, vm.ticket_ref or "").state == "running",
            10,
            what="the recording claimed",
        )
        mail = ingest_raw(parts, message("La web no carga"))
        assert mail.outcome == "stored" and mail.ticket_ref
        assert voicemail_row(parts, vm.ticket_ref or "").state == "running"
    finally:
        worker.join(60)
    assert voicemail_row(parts, vm.ticket_ref or "").state == "done"


def test_vm04_killed_recogniser_is_retried_then_the_ticket_says_it_failed(
    vm_parts: tuple[Config, Parts], runner: TranscriptionRunner, audio: VoicemailAudio
) -> None:
    """VM-04: the recogniser process SIGKILLed mid-job: the attempt is counted and retried;
    at max_attempts (2 here) the ticket carries "transcription failed" with the reason.
    A fresh process takes the next job."""
    _, parts = vm_parts
    out = ingest_raw(parts, asterisk_mail(audio.read("wav")))
    assert runner.pool is not None
    for attempt in (1, 2):
        worker = threading.Thread(target=runner.run_once)
        worker.start()
        wait_until(
            lambda: voicemail_row(parts, out.ticket_ref or "").state == "running", 10, what="claim"
        )
        pool = runner.pool
        assert isinstance(pool, TranscriberPool)
        # The recogniser busy with the job, not only the claim in the database: one killed
        # before the pool hands it the job is replaced unseen and the job succeeds.
        pid = wait_until(
            lambda p=pool: next((w.pid for w in p.stats().workers if w.busy and w.pid), None),
            10,
            what="the recogniser busy with the job",
        )
        os.kill(pid, 9)
        worker.join(60)
        vm = voicemail_row(parts, out.ticket_ref or "")
        assert vm.attempts == attempt
        assert "process" in vm.last_error  # says the recogniser died, not the recording
    assert vm.state == "failed"
    with parts.db.transaction() as s:
        t = repo.ticket(s, out.ticket_ref or "")
        assert t is not None
        failed = [e for e in t.events if e.kind == "transcription_failed"]
        assert failed and failed[0].data["attempts"] == 2
    # A fresh recogniser process does the next job.
    ok = ingest_raw(parts, asterisk_mail(audio.read("wav"), caller="+34699999999"))
    assert runner.run_once()
    assert voicemail_row(parts, ok.ticket_ref or "").state == "done"


def test_vm04_missing_model_keeps_the_ticket_and_says_how_to_fix_it(
    vm_parts: tuple[Config, Parts], audio: VoicemailAudio, tmp_path: Path
) -> None:
    """VM-04, model missing: the ticket exists, the transcription is retried, then marked
    failed with a reason naming the directory and the setting; an admin's
    `buzon transcribe --retry-failed` (storage.voicemails.retry_failed) queues it again."""
    cfg, parts = vm_parts
    gone = replace(cfg.transcription, model=str(tmp_path / "no-such-model"))
    runner = TranscriptionRunner(gone, parts.db, parts.blobs, holder="test")
    runner.pool = make_pool(gone)
    try:
        out = ingest_raw(parts, asterisk_mail(audio.read("wav")))
        assert runner.run_once() and runner.run_once()
    finally:
        runner.pool.close()
    vm = voicemail_row(parts, out.ticket_ref or "")
    assert vm.state == "failed" and vm.attempts == 2
    assert "no-such-model" in vm.last_error and "[transcription] model" in vm.last_error
    with parts.db.transaction() as s:
        assert vm_repo.retry_failed(s, datetime.now(UTC)) == 1
    assert voicemail_row(parts, out.ticket_ref or "").state == "pending"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("truncated_header", "UndecodableAudio"),
        ("random", "UndecodableAudio"),
        ("too_long", "AudioTooLong"),
        ("too_large", "AudioTooLarge"),
    ],
)
def test_sec07_hostile_audio_gives_a_ticket_saying_transcription_failed(
    config_factory: Callable[..., Config],
    model_dir: Path,
    audio: VoicemailAudio,
    tmp_path: Path,
    case: str,
    error: str,
) -> None:
    """SEC-07: cut inside its header, random, too long (two minutes of silence against a
    one-minute cap) and too large recordings:
    the ticket exists, the recording is kept, and the ticket says why it has no text."""
    from daemon.parts import open_parts

    cfg = config_factory(
        f'[transcription]\nmodel = "{model_dir}"\nworkers = 1\nmax_audio_seconds = 60.0\n'
        "max_audio_bytes = 2000000\ntime_limit = 30.0\n"
    )
    wav = audio.read("wav")
    if case == "truncated_header":
        recording = wav[:30]
    elif case == "random":
        recording = b"RIFF" + os.urandom(5000)
    elif case == "too_long":
        silence = tmp_path / "silence.wav"
        sox("-n", "-r", "8000", "-c", "1", *PCM, silence, "trim", "0", "120")
        recording = silence.read_bytes()  # 1.9 MB: under the byte cap, over the 60 s cap
    else:
        recording = wav * 300
    with open_parts(cfg, recover=True) as parts:
        out = ingest_raw(parts, asterisk_mail(recording))
        assert out.outcome == "stored" and out.ticket_ref
        runner = TranscriptionRunner(cfg.transcription, parts.db, parts.blobs, holder="test")
        runner.pool = make_pool(cfg.transcription)
        try:
            assert runner.run_once()
        finally:
            runner.pool.close()
        vm = voicemail_row(parts, out.ticket_ref)
        assert vm.state == "failed" and vm.attempts == 1  # permanent: never retried
        with parts.db.transaction() as s:
            t = repo.ticket(s, out.ticket_ref)
            assert t is not None
            (failed,) = [e for e in t.events if e.kind == "transcription_failed"]
            assert failed.data["error"] == error
            assert parts.blobs.get(t.messages[0].attachments[0].sha256) == recording


def test_voicemail_folder_pair_is_spooled_moved_and_ticketed(
    vm_parts: tuple[Config, Parts],
    runner: TranscriptionRunner,
    audio: VoicemailAudio,
    tmp_path: Path,
) -> None:
    """The folder receiver: a complete msg0000.txt + msg0000.wav pair becomes a durable
    spool entry, then both files move to `processed`; the ticket has the caller ID and
    duration from the .txt and the transcript of the recording."""
    _, parts = vm_parts
    inbox, done = tmp_path / "INBOX", tmp_path / "processed"
    info, rec = asterisk_pair(inbox, audio.files["wav"], duration=4)
    partial = inbox / "msg0001.txt"
    partial.write_text("[message]\ncallerid=<+34611>\n")  # still recording: no duration=
    shutil.copy(audio.files["wav"], inbox / "msg0001.wav")
    folder_cfg = _dir_cfg(inbox, done)
    watcher = VoicemailFolder(
        folder_cfg, parts.spool, hostname="buzon.test", stop=threading.Event()
    )
    assert watcher.scan() == 1
    assert sorted(p.name for p in inbox.iterdir()) == ["msg0001.txt", "msg0001.wav"]
    moved = sorted(p.name.split("-", 1)[1] for p in done.iterdir())
    assert moved == ["msg0000.txt", "msg0000.wav"]
    (entry_id,) = parts.spool.pending()
    claimed = parts.spool.claim(entry_id)
    assert claimed is not None
    out = parts.processor.process(claimed)
    vm = voicemail_row(parts, out.ticket_ref or "")
    assert (vm.caller_number, vm.caller_name, vm.duration_seconds, vm.mailbox) == (
        "+34600111222",
        "Ana Pérez",
        4,
        "6001",
    )
    assert runner.run_once()
    assert voicemail_row(parts, out.ticket_ref or "").state == "done"
    with parts.db.transaction() as s:
        t = repo.ticket(s, out.ticket_ref or "")
        assert t is not None
        names = sorted(a.filename for a in t.messages[0].attachments)
        assert names == ["msg0000.txt", "msg0000.wav"]
        stored = {a.filename: parts.blobs.get(a.sha256) for a in t.messages[0].attachments}
    assert stored["msg0000.wav"] == audio.files["wav"].read_bytes()
    (kept_txt,) = done.glob("*-msg0000.txt")
    assert stored["msg0000.txt"] == kept_txt.read_bytes()
    del info, rec


def test_voicemail_folder_pair_spooled_twice_after_a_crash_is_one_message(
    vm_parts: tuple[Config, Parts], audio: VoicemailAudio, tmp_path: Path
) -> None:
    """A crash after the spool write but before the move spools the pair again at the next
    scan: the message is built from the files alone, so dedupe keeps one message."""
    _, parts = vm_parts
    inbox = tmp_path / "INBOX"
    asterisk_pair(inbox, audio.files["wav"])
    folder_cfg = _dir_cfg(inbox, tmp_path / "processed")
    watcher = VoicemailFolder(
        folder_cfg, parts.spool, hostname="buzon.test", stop=threading.Event()
    )
    watcher._move = lambda pair, tag: None  # type: ignore[method-assign]  # the crash
    assert watcher.scan() == 1 and watcher.scan() == 1
    outcomes = []
    for entry_id in parts.spool.pending():
        claimed = parts.spool.claim(entry_id)
        assert claimed is not None
        outcomes.append(parts.processor.process(claimed).outcome)
    assert outcomes == ["stored", "duplicate"]


def test_unsettled_pair_waits(tmp_path: Path, audio: VoicemailAudio) -> None:
    """A pair written less than `settle` seconds ago is not taken yet."""
    info, _ = asterisk_pair(tmp_path, audio.files["wav"])
    now = info.stat().st_mtime
    assert find_pairs(tmp_path, settle=2.0, now=now + 0.5) == []
    assert len(find_pairs(tmp_path, settle=2.0, now=now + 2.5)) == 1


def _dir_cfg(inbox: Path, done: Path) -> VoicemailDir:
    return VoicemailDir(path=str(inbox), processed=str(done), mailbox="6001", settle=0.0)


def test_cli_transcribe_prints_what_the_daemon_stores(
    vm_parts: tuple[Config, Parts],
    runner: TranscriptionRunner,
    audio: VoicemailAudio,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    """`buzon transcribe FILE` (a recording, or the whole voicemail email) prints the same
    transcript the daemon stores; `tickets show` shows it next to the caller."""
    cfg, parts = vm_parts
    raw = asterisk_mail(audio.read("wav"))
    eml = tmp_path / "vm.eml"
    eml.write_bytes(raw)
    out = ingest_raw(parts, raw)
    assert runner.run_once()
    stored = voicemail_row(parts, out.ticket_ref or "").text
    env = {"BUZON_CONFIG": cfg.source}
    for target in (audio.files["wav"], eml):
        done = run_cli("transcribe", "--json", str(target), env=env)
        assert json.loads(done.stdout.splitlines()[0])["text"] == stored
    shown = run_cli("tickets", "show", out.ticket_ref or "", env=env).stdout
    assert "voicemail: from Ana Pérez +34600111222, 0:04, mailbox 6001" in shown
    assert "confidence" in shown and stored in shown


def test_sec07_recording_cut_short_is_transcribed_as_far_as_it_goes(
    vm_parts: tuple[Config, Parts], runner: TranscriptionRunner, audio: VoicemailAudio
) -> None:
    """A WAV whose data stops early (a PBX killed mid-call) still decodes: the ticket gets
    whatever words are there instead of a failure."""
    _, parts = vm_parts
    wav = audio.read("wav")
    out = ingest_raw(parts, asterisk_mail(wav[: 44 + 800]))  # header + 0.05 s
    assert runner.run_once()
    vm = voicemail_row(parts, out.ticket_ref or "")
    assert vm.state == "done"
    assert vm.transcript is not None and vm.transcript["duration"] == pytest.approx(0.05, abs=0.01)


@pytest.mark.postgres
def test_two_runners_on_postgresql_transcribe_each_voicemail_once(
    config_factory: Callable[..., Config],
    pg_url: str,
    model_dir: Path,
    audio: VoicemailAudio,
) -> None:
    """The stage's claim uses FOR UPDATE SKIP LOCKED: two runners (two instances) sharing
    one PostgreSQL database never take the same recording, and together do them all."""
    from daemon.parts import open_parts

    cfg = config_factory(f'[transcription]\nmodel = "{model_dir}"\nworkers = 1\n', database=pg_url)
    with open_parts(cfg, recover=True) as parts:
        refs = [
            ingest_raw(parts, asterisk_mail(audio.read("wav"), caller=f"+3461100000{i}")).ticket_ref
            for i in range(4)
        ]
        runners = [
            TranscriptionRunner(cfg.transcription, parts.db, parts.blobs, holder=f"instance-{i}")
            for i in range(2)
        ]
        did: dict[str, int] = {}

        def drain(r: TranscriptionRunner) -> None:
            r.pool = make_pool(cfg.transcription)
            try:
                while r.run_once():
                    did[r.holder] = did.get(r.holder, 0) + 1
            finally:
                r.pool.close()

        threads = [threading.Thread(target=drain, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert sum(did.values()) == 4
        for ref in refs:
            assert voicemail_row(parts, ref or "").state == "done"
            with parts.db.transaction() as s:
                t = repo.ticket(s, ref or "")
                assert t is not None
                assert [e.kind for e in t.events].count("transcribed") == 1


def test_a_model_per_mailbox(
    config_factory: Callable[..., Config],
    model_dir: Path,
    audio: VoicemailAudio,
    tmp_path: Path,
) -> None:
    """[transcription.models] picks the model by PBX mailbox: mailbox 6001 is mapped to the
    installed model, everything else to a default that is not installed."""
    from daemon.parts import open_parts

    cfg = config_factory(
        f'[transcription]\nmodel = "{tmp_path / "absent"}"\nworkers = 1\nmax_attempts = 1\n'
        f'[transcription.models]\n"6001" = "{model_dir}"\n'
    )
    with open_parts(cfg, recover=True) as parts:
        mapped = ingest_raw(parts, asterisk_mail(audio.read("wav"), mailbox="6001"))
        other = ingest_raw(
            parts, asterisk_mail(audio.read("wav"), mailbox="7000", caller="+34911000000")
        )
        runner = TranscriptionRunner(cfg.transcription, parts.db, parts.blobs, holder="test")
        runner.pool = make_pool(cfg.transcription)
        try:
            assert runner.run_once() and runner.run_once()
        finally:
            runner.pool.close()
        assert voicemail_row(parts, mapped.ticket_ref or "").state == "done"
        failed = voicemail_row(parts, other.ticket_ref or "")
        assert failed.state == "failed" and "absent" in failed.last_error


def _events(parts: Parts, ref: str, kind: str) -> list[dict[str, Any]]:
    with parts.db.transaction() as s:
        t = repo.ticket(s, ref)
        assert t is not None
        return [e.data for e in t.events if e.kind == kind]


def test_a_restarted_instance_takes_back_the_recording_it_was_transcribing(
    vm_parts: tuple[Config, Parts], audio: VoicemailAudio
) -> None:
    """The instance died mid-transcription (its claim is in the database, leased for 30
    minutes). Another instance leaves the claim alone until the lease ends; restarted
    under the same name, the instance counts the attempt and transcribes it at once."""
    cfg, parts = vm_parts
    out = ingest_raw(parts, asterisk_mail(audio.read("wav")))
    ref = out.ticket_ref or ""
    with parts.db.transaction() as s:
        assert vm_repo.claim(s, "host:abc123", datetime.now(UTC), LEASE) is not None
    other = TranscriptionRunner(
        cfg.transcription, parts.db, parts.blobs, holder="host:other", take_back=True
    )
    assert other.start()
    try:
        assert not other.run_once()  # the dead instance's lease holds for anyone else
    finally:
        other.stop()
    assert voicemail_row(parts, ref).claimed_by == "host:abc123"
    again = TranscriptionRunner(
        cfg.transcription, parts.db, parts.blobs, holder="host:abc123", take_back=True
    )
    assert again.start()
    try:
        wait_until(
            lambda: voicemail_row(parts, ref).state == "done",
            60,
            what="the recording transcribed after the restart",
        )
    finally:
        again.stop()
    assert voicemail_row(parts, ref).attempts == 1
    assert len(_events(parts, ref, "transcribed")) == 1


def test_a_recording_that_keeps_killing_the_service_is_failed_not_retried_forever(
    vm_parts: tuple[Config, Parts], audio: VoicemailAudio
) -> None:
    """Every take-back is an attempt: at max_attempts (2 here) the recording is failed
    with the reason on its ticket, instead of bringing the service down at each restart."""
    cfg, parts = vm_parts
    out = ingest_raw(parts, asterisk_mail(audio.read("wav")))
    ref = out.ticket_ref or ""
    # Retried in an hour: the restarted runner's own threads find nothing to claim.
    slow = replace(cfg.transcription, retry_delay=3600.0)
    for restart in range(2):
        later = datetime.now(UTC) + timedelta(hours=2 * restart)
        with parts.db.transaction() as s:
            assert vm_repo.claim(s, "host:abc123", later, LEASE) is not None
        runner = TranscriptionRunner(
            slow,
            parts.db,
            parts.blobs,
            holder="host:abc123",
            take_back=True,
            pool_factory=lambda _cfg: _NeverCalled(),
        )
        runner.start()
        runner.stop()
    vm = voicemail_row(parts, ref)
    assert (vm.state, vm.attempts) == ("failed", 2)
    (failed,) = _events(parts, ref, "transcription_failed")
    assert "service stopped while transcribing" in failed["reason"]


class _NeverCalled:
    def transcribe(self, audio: bytes, model_dir: Path, format_hint: str = "") -> Transcript:
        raise AssertionError("nothing may be claimed in this test")

    def close(self) -> None:
        pass


class _Held:
    """The real pool, holding each job until ``release`` (a recogniser still working)."""

    def __init__(self, cfg: Config) -> None:
        self.pool = make_pool(cfg.transcription)
        self.working, self.release = threading.Event(), threading.Event()

    def transcribe(self, audio: bytes, model_dir: Path, format_hint: str = "") -> Transcript:
        self.working.set()
        assert self.release.wait(60)
        return self.pool.transcribe(audio, model_dir, format_hint)

    def close(self) -> None:
        self.pool.close()


def test_an_orphaned_run_finishing_after_the_take_back_records_nothing(
    vm_parts: tuple[Config, Parts], audio: VoicemailAudio
) -> None:
    """The parent was killed; its ingest process is still finishing a recording when the
    restarted instance (the same name) takes the claim back and transcribes it. The
    orphan's result comes second and is dropped: one transcript, one event."""
    cfg, parts = vm_parts
    out = ingest_raw(parts, asterisk_mail(audio.read("wav")))
    ref = out.ticket_ref or ""
    held = _Held(cfg)
    orphan = TranscriptionRunner(cfg.transcription, parts.db, parts.blobs, holder="host:abc123")
    orphan.pool = held
    finishing = threading.Thread(target=orphan.run_once)
    finishing.start()
    try:
        assert held.working.wait(30)
        restarted = TranscriptionRunner(
            cfg.transcription, parts.db, parts.blobs, holder="host:abc123", take_back=True
        )
        assert restarted.start()
        try:
            wait_until(lambda: voicemail_row(parts, ref).state == "done", 60, what="transcript")
        finally:
            restarted.stop()
        done = voicemail_row(parts, ref)
    finally:
        held.release.set()
        finishing.join(60)
        held.close()
    assert not finishing.is_alive()
    after = voicemail_row(parts, ref)
    assert (after.state, after.transcribed_at, after.attempts) == (
        "done",
        done.transcribed_at,
        1,
    )
    assert len(_events(parts, ref, "transcribed")) == 1
