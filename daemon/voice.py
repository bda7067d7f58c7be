"""The transcription stage: claim voicemails from the database, transcribe, record the result.

It runs in the ingest process next to the spool runner, on its own threads, and
hands the audio to a pool of recogniser processes (``transcription``): email
never waits behind a recording. The ticket already exists; a transcript updates
it, a failure is retried with back-off and then written on the ticket with its
reason. Without a configured model the stage does not start: voicemails stay
``pending`` (tickets without text) and the daemon says so at start.

With ``[roles]`` the stage may run on another instance than the one that stored the
voicemail, whose attachment store is on its own disk: a recording missing here is
taken from the raw message in the shared database (attachments are derivable from it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from daemon import sla as sla_ops
from daemon.config import TranscriptionConfig
from daemon.config_desk import SlaConfig
from daemon.logging import get_logger
from daemon.pipeline import apply_classification
from daemon.triager import Triager
from parsers import parse_message
from storage import repository as repo
from storage import voicemails as vm_repo
from storage.blobs import BlobStore
from storage.engine import Database
from storage.models import Message, Ticket, Voicemail
from transcription import (
    DecodeLimits,
    ModelUnavailable,
    PoolClosed,
    RecognizerCrashed,
    TranscriberPool,
    Transcript,
    TranscriptionError,
    UndecodableAudio,
    check_model_dir,
)
from triage.classify import MessageFacts
from triage.similarity import fingerprint

_UNREADABLE = "the recording could not be read from the attachment store; check [storage]"
LEASE = timedelta(minutes=30)  # longer than any time_limit: only a dead runner's claim expires
SUBJECT_WORDS = 12


class Transcriber(Protocol):
    def transcribe(self, audio: bytes, model_dir: Path, format_hint: str = "") -> Transcript: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Job:
    """What a claimed row needs outside the transaction that claimed it."""

    id: int
    message_pk: int
    audio_sha256: str
    audio_format: str
    model_dir: str
    attempts: int
    lease: datetime | None  # the claim's end as written: a later claim of the row changes it


def make_pool(cfg: TranscriptionConfig) -> TranscriberPool:
    return TranscriberPool(
        cfg.pool_size(),
        limits=DecodeLimits(
            max_bytes=cfg.max_audio_bytes,
            max_seconds=cfg.max_audio_seconds,
            time_limit=cfg.time_limit,
        ),
        memory_limit_bytes=cfg.memory_limit or None,
        threshold=cfg.confidence_threshold,
    )


class TranscriptionRunner:
    """N threads (one per recogniser process), each claiming one voicemail at a time."""

    def __init__(
        self,
        cfg: TranscriptionConfig,
        db: Database,
        blobs: BlobStore,
        *,
        holder: str,
        pool_factory: Callable[[TranscriptionConfig], Transcriber] = make_pool,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll_interval: float = 1.0,
        triager: Callable[[], Triager] | None = None,
        sla: SlaConfig | None = None,
        take_back: bool = False,  # holder is the instance's name: take its old claims back
    ) -> None:
        self.triager, self.take_back = triager, take_back
        self.sla = sla  # None: the ticket keeps the policy it was stamped with
        self.cfg, self.db, self.blobs, self.holder = cfg, db, blobs, holder
        self.clock, self.poll_interval = clock, poll_interval
        self._pool_factory = pool_factory
        self.pool: Transcriber | None = None
        self.stop_event = threading.Event()
        self.wakeup = threading.Event()
        self._threads: list[threading.Thread] = []
        self.log = get_logger(component="transcription")

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.model or self.cfg.models)

    def start(self) -> bool:
        """Start the pool and the threads; False (and a warning) when no model is set."""
        if not self.enabled:
            with self.db.transaction() as s:
                waiting = vm_repo.states(s).get("pending", 0)
            self.log.warning(
                "transcription.disabled",
                reason="no [transcription] model is configured",
                waiting_voicemails=waiting,
                fix="download a Vosk model, set [transcription] model to its directory, "
                "restart; waiting voicemails are transcribed then",
            )
            return False
        for model in {self.cfg.model, *(path for _, path in self.cfg.models)} - {""}:
            try:
                check_model_dir(Path(model))
            except TranscriptionError as exc:  # start anyway: the admin may be installing it
                self.log.warning("transcription.model_missing", model=model, error=str(exc))
        if self.take_back:
            self._take_back()
        self.pool = self._pool_factory(self.cfg)
        workers = self.cfg.pool_size()
        for i in range(workers):
            t = threading.Thread(target=self._loop, name=f"transcription-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self.log.info("transcription.started_pool", workers=workers, model=self.cfg.model)
        return True

    def _take_back(self) -> None:
        """End the claims this instance held before its restart, before any claim: only a
        holder that survives restarts (``daemon.instance``) asks for it.

        Each counts as a failed attempt, as a recogniser's death does (VM-04): a recording
        that brings the whole service down is retried ``max_attempts`` times, then failed
        with a reason on its ticket, instead of crashing every restart.
        """
        try:
            with self.db.transaction() as s:
                held = [self._job(row) for row in vm_repo.held_by(s, self.holder)]
        except Exception as exc:  # the database is away: the leases expire anyway
            self.log.warning(
                "transcription.take_back_failed",
                error=f"{type(exc).__name__}: {exc}",
                fix="nothing to do: the recordings are transcribed when their leases end",
            )
            return
        if not held:
            return
        self.log.warning(
            "transcription.taken_back",
            voicemails=len(held),
            reason="being transcribed when this instance stopped; each is an attempt, retried",
        )
        for job in held:
            self._failed(
                job,
                RecognizerCrashed(
                    "the service stopped while transcribing it (killed, out of memory or a "
                    "power cut); retried"
                ),
                self.log.bind(voicemail_id=job.id, message_pk=job.message_pk),
            )

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.wakeup.set()
        if self.pool is not None:
            self.pool.close()  # fails the jobs in flight: they are retried after a restart
        for t in self._threads:
            t.join(timeout)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                worked = self.run_once()
            except Exception as exc:  # the database went away: keep the thread, retry
                self.log.error(
                    "transcription.runner_error",
                    error=f"{type(exc).__name__}: {exc}",
                    fix="the recogniser retries on its next poll; voicemail waits as pending; "
                    "check the database's availability",
                )
                worked = False
            if not worked:
                self.wakeup.wait(self.poll_interval)
                self.wakeup.clear()

    def run_once(self) -> bool:
        """Claim and transcribe one voicemail; False when none was due."""
        assert self.pool is not None, "start() the runner first"
        job = self._claim()
        if job is None:
            return False
        log = self.log.bind(voicemail_id=job.id, message_pk=job.message_pk)
        log.info("transcription.started", format=job.audio_format, model=Path(job.model_dir).name)
        try:
            if not job.model_dir:
                raise ModelUnavailable(
                    "no model for this mailbox: set [transcription] model "
                    "(or a [transcription.models] entry)"
                )
            audio = self._audio(job)
            transcript = self.pool.transcribe(audio, Path(job.model_dir), job.audio_format)
        except PoolClosed:
            self._requeue(job)  # the daemon is stopping: not the recording's fault
        except TranscriptionError as exc:
            self._failed(job, exc, log)
        except OSError as exc:  # the attachment store lost the file: nothing to retry
            self._failed(job, UndecodableAudio(f"{_UNREADABLE} ({exc})"), log)
        else:
            self._done(job, transcript, log)
        return True

    def _audio(self, job: _Job) -> bytes:
        """The recording's bytes: from the attachment store, else from the raw message."""
        try:
            return self.blobs.get(job.audio_sha256)
        except FileNotFoundError:
            pass
        # Stored by an instance with another attachment store (a transcription-only
        # instance beside intake ones): every attachment is in the message's raw bytes.
        with self.db.transaction() as s:
            msg = s.get(Message, job.message_pk)
            raw = msg.raw if msg is not None else None
        if raw is None:
            raise FileNotFoundError(f"no blob {job.audio_sha256} and no raw message")
        for att in parse_message(raw).attachments:
            if att.sha256 == job.audio_sha256:
                self.blobs.put(att.content)  # kept here: a retry reads it at once
                return att.content
        raise FileNotFoundError(f"no attachment {job.audio_sha256} in message {job.message_pk}")

    def _claim(self) -> _Job | None:
        with self.db.transaction() as s:
            row = vm_repo.claim(s, self.holder, self.clock(), LEASE)
            if row is None:
                return None
            keys = (row.mailbox, *row.message.to_addrs)
            row.model_dir = self.cfg.model_for(keys)
            return self._job(row)

    @staticmethod
    def _job(row: Voicemail) -> _Job:
        return _Job(
            row.id,
            row.message_pk,
            row.attachment.sha256,
            row.audio_format,
            row.model_dir,
            row.attempts,
            row.claimed_until,
        )

    def _held(self, s: Session, job: _Job, log: Any) -> Voicemail | None:
        """The job's row, locked, if this claim still holds it; None (and a warning) if not.

        A claim can end under a live runner: its lease ran out, or this instance was
        restarted while an orphaned run of it was still finishing and took the claim back.
        Whoever holds the row now records the outcome, so it is recorded once.
        """
        row = s.get(Voicemail, job.id, with_for_update=True)
        if (
            row is not None
            and row.state == "running"
            and row.claimed_by == self.holder
            and row.claimed_until == job.lease
        ):
            return row
        log.warning(
            "transcription.claim_lost",
            reason="the recording was claimed again since this run took it (lease ended, or "
            "the instance restarted); its outcome here is dropped, the new claim records its own",
        )
        return None

    def _done(self, job: _Job, t: Transcript, log: Any) -> None:
        now = self.clock()
        with self.db.transaction() as s:
            row = self._held(s, job, log)
            if row is None:
                return
            row.state, row.last_error = "done", ""
            row.claimed_until = None
            row.transcript = t.to_json()
            row.text = t.text
            row.confidence = t.confidence
            row.needs_listening = t.needs_listening
            row.transcribed_at = now
            ticket = row.message.ticket
            if ticket is not None and self.triager is not None and not ticket.category:
                # What the caller said is what the ticket is about: classify that.
                facts = MessageFacts(
                    subject=ticket.subject,
                    text=t.text,
                    channel="voicemail",
                    recipients=tuple(row.message.to_addrs),
                )
                c = self.triager().classify(facts)
                apply_classification(s, ticket, row.message, c, now)
                if self.sla is not None and ticket.sla_policy:
                    # Stamped at intake with what was known (a voicemail); the transcript
                    # may put it in a team with other clocks.
                    sla_ops.reselect(s, ticket, self.sla, now, "classified from the transcript")
            if ticket is not None:
                _title(ticket, t.text)
                if ticket.message_count <= 1 and not ticket.match_text:
                    ticket.match_text = fingerprint("", t.text)
                ticket.updated_at = now
                repo.add_event(
                    s,
                    ticket,
                    "transcribed",
                    now,
                    data={
                        "model": t.model,
                        "confidence": round(t.confidence, 3),
                        "needs_listening": t.needs_listening,
                        "duration_s": round(t.duration, 2),
                        "words": len(t.words),
                    },
                    message=row.message,
                )
        log.info(
            "transcription.done",
            duration_s=round(t.duration, 2),
            elapsed_s=round(t.elapsed, 3),
            real_time_factor=round(t.real_time_factor, 3),
            confidence=round(t.confidence, 3),
            needs_listening=t.needs_listening,
            words=len(t.words),
            model=t.model,
        )

    def _requeue(self, job: _Job) -> None:
        with self.db.transaction() as s:
            row = self._held(s, job, self.log.bind(voicemail_id=job.id))
            if row is None:
                return
            row.state, row.claimed_until, row.due_at = "pending", None, self.clock()

    def _failed(self, job: _Job, exc: TranscriptionError, log: Any) -> None:
        now = self.clock()
        attempts = job.attempts + 1
        final = exc.permanent or attempts >= self.cfg.max_attempts
        reason = str(exc)
        with self.db.transaction() as s:
            row = self._held(s, job, log)
            if row is None:
                return
            row.attempts = attempts
            row.last_error = reason
            row.claimed_until = None
            if final:
                row.state = "failed"
                ticket = row.message.ticket
                if ticket is not None:
                    repo.add_event(
                        s,
                        ticket,
                        "transcription_failed",
                        now,
                        data={"reason": reason, "attempts": attempts, "error": type(exc).__name__},
                        message=row.message,
                    )
            else:
                row.state = "pending"
                row.due_at = now + timedelta(seconds=self.cfg.retry_delay * 2 ** (attempts - 1))
        event = "transcription.failed" if final else "transcription.retry"
        (log.error if final else log.warning)(
            event,
            error=type(exc).__name__,
            reason=reason,
            attempts=attempts,
            max_attempts=self.cfg.max_attempts,
            recording_kept=True,
        )


def _title(ticket: Ticket, text: str) -> None:
    """Give a voicemail ticket the first words of what was said, once."""
    words = text.split()
    if not words or ": " in ticket.subject:
        return
    gist = " ".join(words[:SUBJECT_WORDS]) + ("…" if len(words) > SUBJECT_WORDS else "")
    ticket.subject = f"{ticket.subject}: {gist}"
