"""The outbox sender: deliver due ``outbox`` rows through the relay and settle each by its reply.

RFC 5321 decides. 2xx: sent. 4xx, or no connection: retried with doubling
back-off, failed after ``max_attempts``. 5xx to MAIL, RCPT or DATA: failed at
once (no retry storm). A connection lost once DATA began is ambiguous (the relay
may have queued it): retried with the same bytes, so the receiver drops the copy
by its Message-ID. Trouble before any mail is offered (greeting, EHLO, STARTTLS,
AUTH) is the relay's, not the mail's: deferred like a 4xx even on a 5xx, so a
wrong password cannot fail the whole queue in one batch. A row queued as a spec
is composed at its first claim, in the claiming transaction, and keeps those bytes
for every attempt; one that cannot be composed fails with the reason. Rows are claimed and
settled in short transactions on worker threads: the event loop never waits on
the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeGuard

import aiosmtplib
from aiosmtplib.typing import Default
from sqlalchemy.orm import Session

from daemon.config_desk import OutboundConfig
from daemon.logging import get_logger
from daemon.outbound import Outbound, threads
from daemon.outmail import TemplateError
from storage import outbox as box
from storage.engine import Database
from storage.models import OutboxMail

RETRY_COMMAND = "buzon outbox retry"
Stage = Literal["connect", "envelope", "data"]


@dataclass(slots=True)
class OutboxStats:
    """Counters since start: mails sent, attempts deferred for a retry, mails given up on."""

    sent: int = 0
    retried: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class _Job:
    """What a claimed row needs outside the transaction that claimed it."""

    id: int
    kind: str
    ticket_id: int | None
    recipient: str
    envelope_from: str
    message_id: str
    raw: bytes
    claimed_until: datetime
    reclaimed_from: str  # the holder whose lease expired ("" for a pending row)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one attempt did not deliver, and whether another attempt could."""

    error: str
    code: int = 0
    permanent: bool = False
    stage: Stage = "envelope"
    ambiguous: bool = False


def classify(exc: BaseException, stage: Stage) -> Failure:
    """Map an aiosmtplib (or socket) exception raised at ``stage`` to a retry decision."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]  # one recipient per row: its reply is the answer
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        permanent = 500 <= exc.code < 600 and stage != "connect"
        return Failure(f"{exc.code} {exc.message}", exc.code, permanent, stage)
    if isinstance(exc, aiosmtplib.SMTPNotSupported | ValueError):
        # An address that cannot go on a command line (or needs SMTPUTF8 the relay
        # lacks) fails every time; a missing STARTTLS is the relay's setup.
        return Failure(str(exc), 0, stage != "connect", stage)
    ambiguous = stage == "data" and isinstance(exc, ConnectionError | TimeoutError)
    return Failure(f"{type(exc).__name__}: {exc}", 0, False, stage, ambiguous)


class _SMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, noting when DATA began: a lost connection after that is ambiguous.

    Set at the DATA command, a little before the final dot: calling a loss before
    the 354 ambiguous too costs nothing, as the retry sends the same bytes anyway.
    """

    in_data = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> aiosmtplib.SMTPResponse:
        self.in_data = True
        return await super().data(message, timeout=timeout)


class _Relay:
    """One connection for a batch; a failed connect defers the rest of the batch unredialled."""

    def __init__(self, cfg: OutboundConfig, password: str, budget: float) -> None:
        self.cfg, self.password, self.budget = cfg, password, budget
        self.smtp: _SMTP | None = None
        self.down: Failure | None = None

    async def send(self, job: _Job) -> Failure | None:
        if self.down is not None:
            return self.down
        stage: Stage = "connect"
        smtp = self.smtp
        try:
            # One deadline for the whole attempt keeps it well inside the row's lease.
            async with asyncio.timeout(self.budget):
                if smtp is None or not smtp.is_connected:  # first row, or the relay hung up
                    if smtp is not None:
                        smtp.close()
                    self.smtp, smtp = None, self._client()
                    await smtp.connect()
                    self.smtp = smtp
                stage = "envelope"
                smtp.in_data = False
                sender = job.envelope_from or ""  # "" is the null reverse-path MAIL FROM:<>
                utf8 = not (sender + job.recipient).isascii()
                await smtp.sendmail(
                    sender, [job.recipient], job.raw, mail_options=["SMTPUTF8"] if utf8 else []
                )
        except Exception as exc:  # every failure settles the row; none may leave it leased
            if smtp is not None and smtp.in_data:
                stage = "data"
            failure = classify(exc, stage)
            if stage == "connect":
                self.down = failure
            if smtp is not None and not (
                isinstance(exc, aiosmtplib.SMTPResponseException) and smtp.is_connected
            ):
                smtp.close()  # state unknown after a timeout or loss: redial for the next row
                self.smtp = None
            return failure
        return None

    def _client(self) -> _SMTP:
        return _SMTP(
            hostname=self.cfg.host,
            port=self.cfg.port,
            timeout=self.cfg.timeout,
            use_tls=self.cfg.tls == "tls",
            start_tls=self.cfg.tls == "starttls",  # never opportunistic: "none" means none
            username=self.cfg.username or None,
            password=self.password or None,
        )

    async def close(self) -> None:
        if self.smtp is None:
            return
        with contextlib.suppress(Exception):  # the mail is settled; a rude QUIT changes nothing
            await self.smtp.quit(timeout=min(self.cfg.timeout, 10.0))
        self.smtp.close()
        self.smtp = None


class OutboxSender:
    """Claims due outbox rows, sends each through ``[outbound] relay``, settles each."""

    def __init__(
        self,
        db: Database,
        cfg: OutboundConfig,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        holder: str = "",  # "" = host:pid, read when built (a forked process gets its own)
        lease: timedelta | None = None,  # None = [outbound] lease, re-read after a reload
        batch: int = 20,
        take_back: bool = False,  # holder is the instance's name: take its old rows back
    ) -> None:
        self.db, self.cfg, self.clock = db, cfg, clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.take_back = take_back
        self._lease, self.batch = lease, batch
        self.stats = OutboxStats()
        self.log = get_logger(component="outbox")
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned_no_relay = False
        self._config_problem = ""
        self._outbound: Outbound | None = None

    async def run(self, stop: asyncio.Event, poll: float = 1.0) -> None:
        """Send until ``stop`` is set, waking every ``poll`` seconds or on ``wake()``."""
        self._wakeup = asyncio.Event()  # made here: an Event belongs to the loop that waits on it
        self._loop = asyncio.get_running_loop()
        if self.take_back:
            with contextlib.suppress(Exception):  # the database is away: leases expire anyway
                await asyncio.to_thread(self._take_back)
        while not stop.is_set():
            self._wakeup.clear()  # before the pass: a wake during it is not lost
            try:
                attempted = await self.run_once()
            except Exception as exc:  # the database went away: keep the runner, retry
                self.log.error(
                    "outbox.runner_error",
                    error=f"{type(exc).__name__}: {exc}",
                    fix="the sender retries on its next poll; mail waits in the outbox meanwhile; "
                    "check the database's availability",
                )
                attempted = 0
            if attempted < self.batch:  # a full batch means more may be due: go on at once
                await _first_of(stop, self._wakeup, poll)

    def _take_back(self) -> None:
        """Expire the leases this instance held before its restart, once, before any claim:
        only a holder that survives restarts (``daemon.instance``) asks for it."""
        with self.db.transaction() as s:
            held = box.expire_claims(s, self.holder, self.clock())
        if held:
            self.log.warning(
                "outbox.taken_back",
                rows=held,
                reason="claimed before this instance restarted; each is sent again now",
            )

    @property
    def lease(self) -> timedelta:
        """How long a claim holds its rows (``[outbound] lease``)."""
        return self._lease or timedelta(seconds=self.cfg.lease)

    @property
    def _budget(self) -> float:
        """Seconds one attempt may take: half the lease, so it ends well inside it."""
        return self.lease.total_seconds() / 2

    def wake(self) -> None:
        """Start the next pass now (new mail was enqueued); safe from any thread."""
        loop = self._loop
        if loop is None:
            return  # not running yet: run() begins with a pass anyway
        with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to wake
            loop.call_soon_threadsafe(self._wakeup.set)

    async def run_once(self) -> int:
        """Claim due rows, attempt each once, settle each; how many were attempted."""
        if not self.cfg.relay:
            if not self._warned_no_relay:
                self._warned_no_relay = True
                self.log.warning(
                    "outbox.no_relay",
                    reason="no [outbound] relay is configured; mail waits in the outbox",
                    fix='set [outbound] relay = "host:port"',
                )
            return 0
        password = self._password()
        if password is None:
            return 0
        jobs = await asyncio.to_thread(self._claim)
        relay = _Relay(self.cfg, password, self._budget)
        try:
            for i, job in enumerate(jobs):
                if self.clock() + timedelta(seconds=self._budget) > job.claimed_until:
                    # A slow relay ate the lease: hand the rest back rather than race
                    # another sender that may claim them the moment it expires.
                    await asyncio.to_thread(self._release, jobs[i:])
                    return i
                await self._attempt(relay, job)
        finally:
            await relay.close()
        return len(jobs)

    async def _attempt(self, relay: _Relay, job: _Job) -> None:
        log = self.log.bind(
            outbox_id=job.id,
            kind=job.kind,
            ticket_id=job.ticket_id,
            recipient=job.recipient,
            message_id=job.message_id,
        )
        if job.reclaimed_from:
            log.warning("outbox.reclaimed", previous_holder=job.reclaimed_from)
        failure = await relay.send(job)
        settled = await asyncio.to_thread(self._settle, job, failure)
        if settled is None:
            log.warning("outbox.lease_lost", reason="another sender holds the row now")
            return
        state, attempts, retry_in = settled
        if failure is None:
            self.stats.sent += 1
            log.info("outbox.sent", attempts=attempts)
            return
        log = log.bind(attempts=attempts, max_attempts=self.cfg.max_attempts, **asdict(failure))
        if state == box.PENDING:
            self.stats.retried += 1
            if failure.stage == "connect":
                log = log.bind(fix="check that [outbound] relay is up, and its tls and login")
            log.warning("outbox.retry", retry_in=retry_in)
            return
        self.stats.failed += 1
        if failure.permanent:
            fix = f"the relay refused the mail: {failure.error}; fix the recipient or relay"
        else:
            fix = f"the relay kept deferring the mail ({failure.error}); check the relay"
        log.error("outbox.failed", fix=f"{fix}, then `{RETRY_COMMAND}`")

    def _password(self) -> str | None:
        """The relay password ("" without a username); None, logged once, when unreadable."""
        problem, password = "", ""
        if self.cfg.username and not self.cfg.password_file:
            problem = "[outbound] username is set but password_file is not"
        elif self.cfg.username:
            try:
                password = Path(self.cfg.password_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                problem = f"cannot read [outbound] password_file: {exc}"
        if problem and problem != self._config_problem:
            self.log.error(
                "outbox.config_error",
                error=problem,
                fix="make [outbound] password_file a file readable by buzon holding the "
                "relay password; mail waits in the outbox until then",
            )
        self._config_problem = problem
        return None if problem else password

    def _composer(self) -> Outbound:
        # Built from the live settings: a reload that replaced ``cfg`` (new templates,
        # new from address) composes the rows claimed after it.
        if self._outbound is None or self._outbound.cfg is not self.cfg:
            self._outbound = Outbound(self.cfg)
        return self._outbound

    def _claim(self) -> list[_Job]:
        now = self.clock()
        with self.db.transaction() as s:
            rows = box.claim_due(s, self.holder, now, self.lease, self.batch)
            jobs = []
            # Composing reads each row's thread; with autoflush, every read first flushed
            # the rows claimed and composed so far (an UPDATE and a unit-of-work pass a
            # mail). They are written together at the commit instead.
            with s.no_autoflush:
                # The threads of every row to compose in one query, not one a row.
                fresh = {r.ticket_id for r, _ in rows if r.raw is None and r.ticket_id is not None}
                known = threads(s, fresh)
                for row, before in rows:
                    thread = known.get(row.ticket_id) if row.ticket_id is not None else None
                    if row.raw is None and not self._compose(s, row, now, thread):
                        continue
                    assert row.claimed_until is not None and row.raw is not None
                    jobs.append(
                        _Job(
                            row.id,
                            row.kind,
                            row.ticket_id,
                            row.recipient,
                            row.envelope_from,
                            row.message_id,
                            row.raw,
                            row.claimed_until,
                            before,
                        )
                    )
            return jobs

    def _compose(
        self, s: Session, row: OutboxMail, now: datetime, thread: list[str] | None
    ) -> bool:
        """Build a queued row's bytes once; a mail that cannot be built fails, said why."""
        try:
            self._composer().compose_row(s, row, now, thread=thread)
        except (ValueError, KeyError, TemplateError) as exc:
            row.state, row.claimed_by, row.claimed_until = box.FAILED, "", None
            row.last_error = f"cannot compose: {exc}"
            self.stats.failed += 1
            self.log.error(
                "outbox.failed",
                outbox_id=row.id,
                kind=row.kind,
                ticket_id=row.ticket_id,
                recipient=row.recipient,
                error=row.last_error,
                fix="fix the template or the recipient, then `buzon outbox retry`",
            )
            return False
        return True

    def _ours(self, row: OutboxMail | None) -> TypeGuard[OutboxMail]:
        return row is not None and row.state == box.SENDING and row.claimed_by == self.holder

    def _release(self, jobs: list[_Job]) -> None:
        with self.db.transaction() as s:
            for job in jobs:
                row = s.get(OutboxMail, job.id, with_for_update=True)
                if self._ours(row):
                    row.state, row.claimed_by, row.claimed_until = box.PENDING, "", None

    def _settle(self, job: _Job, failure: Failure | None) -> tuple[str, int, float] | None:
        """Record the attempt's outcome; (state, attempts, retry_in), None if the lease was lost."""
        now = self.clock()
        if failure is None:  # the common case, in one statement
            with self.db.connection() as conn:
                attempts = box.mark_sent(conn, job.id, self.holder, now)
            return None if attempts is None else (box.SENT, attempts, 0.0)
        with self.db.transaction() as s:
            row = s.get(OutboxMail, job.id, with_for_update=True)
            if not self._ours(row):
                return None
            row.attempts += 1
            row.claimed_by, row.claimed_until = "", None
            row.last_error = failure.error
            if failure.permanent or row.attempts >= self.cfg.max_attempts:
                row.state = box.FAILED
                return box.FAILED, row.attempts, 0.0
            delay = min(self.cfg.retry_first * 2 ** (row.attempts - 1), self.cfg.retry_max)
            row.state, row.due_at = box.PENDING, now + timedelta(seconds=delay)
            return box.PENDING, row.attempts, delay


async def _first_of(stop: asyncio.Event, wakeup: asyncio.Event, timeout: float) -> None:
    """Return when either event is set or ``timeout`` seconds have passed."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wakeup.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
