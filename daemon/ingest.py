"""The ingest runner: spool entry -> parse (worker process) -> one transaction -> spool cleared.

The spool file is removed only after the transaction committed, so a crash
anywhere leaves the entry to be processed again, and the pipeline's dedupe
step makes that harmless. Transient failures (database down or locked) put
the entry back without counting; anything else counts an attempt, and after
``max_attempts`` the entry moves to the spool's bad/ folder and, when the
database allows, is recorded as a quarantined message so it stays visible.
A database that cannot be reached is said once as an error with its fix, and
its return once, however many entries wait meanwhile (DUR-10).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from daemon import pipeline
from daemon.config import MatchingConfig, PipelineConfig
from daemon.config_desk import DeskConfig
from daemon.errors import DatabaseUnavailableError, ParseTimeoutError, TransientError
from daemon.logging import get_logger
from daemon.ordering import Turn, Turns, order_keys
from daemon.outbound import Outbound, reply_token_key
from daemon.parsepool import ParserPool
from daemon.spool import Spool, SpoolEntry
from daemon.triager import Triager
from daemon.work import Work
from storage import eventlog
from storage import repository as repo
from storage.blobs import BlobStore
from storage.engine import Database

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Outcome:
    spool_id: str
    outcome: str  # stored | duplicate | quarantined | already_stored | retry | bad
    message_pk: int | None = None
    ticket_ref: str | None = None
    reason: str = ""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, IntegrityError):
        return True  # a concurrent insert of the same message: retry and dedupe finds it
    if isinstance(exc, OperationalError):
        return True  # locked, connection refused, server gone
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _unreachable(exc: BaseException) -> bool:
    """The database itself is the problem: down, unreachable, shut down, or locked."""
    if isinstance(exc, DatabaseUnavailableError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    # psycopg: no SQLSTATE when no server answered; 08 connection exception, 57P
    # operator intervention (shut down, terminated, starting up). A deadlock (40P01)
    # is an OperationalError too, but the database is there. SQLite has no SQLSTATE:
    # its OperationalError is a locked or unopenable file.
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is None or str(sqlstate).startswith(("08", "57P"))


class DatabaseWatch:
    """Say ``database.unavailable`` (an error, with the fix) once the database has given
    no answer for ``DOWN_AFTER`` seconds, counted from the start of the first failed
    transaction, and ``database.available`` when a commit next succeeds: an admin
    tailing the log during an outage needs one clear line, not only a warning per
    waiting entry. A killed session (``pg_terminate_backend``) fails a transaction that
    had only just begun, is replaced on the next try, and is not an outage; a connect
    that timed out has waited long enough to say so at once."""

    DOWN_AFTER = 1.0

    def __init__(self, db: Database) -> None:
        self.url = make_url(db.url)
        self.failing_since: float | None = None
        self.announced = False
        self._lock = threading.Lock()  # every ingest worker thread reports here
        self._began = threading.local()  # when this thread's current transaction began
        self.log = get_logger(component="ingest")

    def begin(self) -> None:
        self._began.at = time.monotonic()

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        began = float(getattr(self._began, "at", now))
        with self._lock:
            if self.failing_since is None or began < self.failing_since:
                self.failing_since = began
            if self.announced or now - self.failing_since < self.DOWN_AFTER:
                return
            self.announced = True
            since = self.failing_since
        orig = getattr(exc, "orig", None)  # SQLAlchemy's wrapper only adds a docs link
        self.log.error(
            "database.unavailable",
            error=f"{type(orig or exc).__name__}: {orig or exc}"[:500],
            database=self.url.render_as_string(hide_password=True),
            failing_s=round(now - since, 1),
            fix=self._fix(),
        )

    def ok(self) -> None:
        if self.failing_since is None:  # the usual case, without taking the lock
            return
        with self._lock:
            since, announced = self.failing_since, self.announced
            self.failing_since, self.announced = None, False
        if since is not None and announced:
            self.log.info("database.available", down_s=round(time.monotonic() - since, 1))

    def _fix(self) -> str:
        waiting = "mail is still accepted into the spool and stored when the database is back"
        if self.url.get_backend_name() == "sqlite":
            return (
                f"another process holds a long write lock on {self.url.database} "
                f"(find it with `fuser {self.url.database}`); {waiting}"
            )
        host, port = self.url.host or "localhost", self.url.port or 5432
        return (
            f"start the database server or restore the network to it, and check "
            f"[storage] database (`pg_isready -h {host} -p {port}` must say "
            f'"accepting connections"); {waiting}'
        )


class IngestProcessor:
    """Processes one claimed spool entry; shared by the runner and ``buzon ingest``."""

    def __init__(
        self,
        spool: Spool,
        db: Database,
        parsers: ParserPool,
        blobs: BlobStore,
        *,
        clock: Clock = utcnow,
        triager: Callable[[], Triager | None] = lambda: None,
        matching: MatchingConfig | None = None,
        desk: DeskConfig | None = None,
        outbound: Outbound | None = None,
    ) -> None:
        self.spool = spool
        self.db = db
        self.parsers = parsers
        self.blobs = blobs
        self.clock = clock
        self._triager = triager  # built on first use: one-shot commands never need it
        self.matching = matching or MatchingConfig()
        self.desk = desk or DeskConfig()
        self.outbound = outbound  # None: no acknowledgements (``buzon ingest`` of old mail)
        self.reply_keys = reply_token_key()  # read once per process, not once per message
        self.log = get_logger(component="ingest")
        self.database = DatabaseWatch(db)

    def process(self, entry: SpoolEntry, turn: Turn | None = None) -> Outcome:
        """Run the pipeline for ``entry`` and clear it; never raises. ``turn`` orders it
        after the earlier entries of its conversation (daemon/ordering.py)."""
        source = str(entry.meta.get("source", "unknown"))
        with structlog.contextvars.bound_contextvars(spool_id=entry.id, source=source):
            try:
                return self._process(entry, source, turn)
            except Exception as exc:
                return self._failed(entry, exc)

    def _process(self, entry: SpoolEntry, source: str, turn: Turn | None) -> Outcome:
        raw = entry.read()
        sha = hashlib.sha256(raw).hexdigest()
        if entry.meta.get("sha256") not in (None, sha):
            self.log.error("spool.corrupt", expected=entry.meta.get("sha256"), actual=sha)
        outcome = self._execute(
            pipeline.INGEST,
            spool_id=entry.id,
            raw=raw,
            sha256=sha,
            source=source,
            envelope=dict(entry.meta.get("envelope") or {}),
            received_at=_received_at(entry, self.clock),
            turn=turn,
        )
        # Committed: only now is it safe to forget the spool copy.
        self.spool.complete(entry)
        self.database.ok()
        return outcome

    def retry_message(self, pk: int) -> Outcome:
        """Parse a quarantined message's raw bytes again and, if it parses now, ticket it."""
        with self.db.transaction() as session:
            msg = repo.message(session, pk)
            if msg is None or msg.state != "quarantined":
                raise LookupError(f"message {pk} is not quarantined")
            raw, sha, source, received = msg.raw, msg.raw_sha256, msg.source, msg.received_at
        return self._execute(
            pipeline.RETRY,
            spool_id=f"retry:{pk}",
            raw=raw,
            sha256=sha,
            source=source,
            envelope={},
            received_at=received,
            message_pk=pk,
        )

    def _execute(
        self,
        steps: tuple[str, ...],
        *,
        spool_id: str,
        raw: bytes,
        sha256: str,
        source: str,
        envelope: dict[str, Any],
        received_at: datetime,
        message_pk: int | None = None,
        turn: Turn | None = None,
    ) -> Outcome:
        """Parse outside any transaction, run ``steps`` in one, then log what committed."""
        reason = ""
        if turn is not None:
            turn.name(order_keys(raw, envelope))  # never raises: any bytes give keys
        try:
            parsed = self.parsers.parse(raw)
        except ParseTimeoutError as exc:
            parsed, reason = None, str(exc)
        if turn is not None:
            turn.wait()
        self.database.begin()
        with self.db.transaction() as session:
            # Its events go in at the commit in one statement, past the unit of work.
            eventlog.defer(session)
            work = Work(
                spool_id=spool_id,
                raw=raw,
                sha256=sha256,
                source=source,
                envelope=envelope,
                received_at=received_at,
                parsed=parsed,
                quarantine_reason=reason,
                session=session,
                blobs=self.blobs,
                now=self.clock(),
                log=self.log,
                message=repo.message(session, message_pk) if message_pk else None,
                triager=self._triager(),
                matching=self.matching,
                desk=self.desk,
                outbound=self.outbound,
                reply_keys=self.reply_keys,
            )
            # The steps flush where they need ids; autoflush before each of their ~15
            # queries made 7 flushes a message, each a unit-of-work pass (bench/ingest.py).
            with session.no_autoflush:
                pipeline.run(work, steps)
            session.flush()  # the commit's own flush, early: the outcome names the row ids
            outcome = Outcome(
                spool_id,
                work.outcome,
                work.message.id if work.message else None,
                work.ticket.ref if work.ticket else None,
                work.message.state_reason if work.message else "",
            )
        ids = {
            "message_id": parsed.message_id if parsed else None,
            "message": outcome.message_pk,
            "ticket": outcome.ticket_ref,
        }
        for event, fields in work.events:
            self.log.info(event, **ids, **fields)
        return outcome

    def _failed(self, entry: SpoolEntry, exc: Exception) -> Outcome:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        if _transient(exc):
            if _unreachable(exc):
                self.database.failed(exc)
            self.log.warning("ingest.retry", error=reason)
            self.spool.release(entry, count_attempt=False)
            return Outcome(entry.id, "retry", reason=reason)
        self.log.error("ingest.failed", error=reason, attempt=entry.attempts + 1)
        if self.spool.release(entry, count_attempt=True, reason=reason):
            return Outcome(entry.id, "retry", reason=reason)
        self.log.error("message.quarantined", reason=reason, where="spool/bad")
        return Outcome(entry.id, "bad", reason=reason)


def _received_at(entry: SpoolEntry, clock: Clock) -> datetime:
    value = entry.meta.get("received_at")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
        except ValueError:
            pass
    return clock()


RETRIES_IN_TURN = 3


class IngestRunner:
    """A dispatcher thread feeding worker threads; each worker claims before it works."""

    def __init__(self, processor: IngestProcessor, cfg: PipelineConfig) -> None:
        self.processor = processor
        self.spool = processor.spool
        self.cfg = cfg
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self._queue: queue.Queue[tuple[int, str] | None] = queue.Queue(
            maxsize=cfg.parse_workers * 4
        )
        self.turns = Turns()
        self._ordered = cfg.parse_workers > 1
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.processed = 0
        self.last_progress = 0.0
        self._busy: dict[str, tuple[float, str]] = {}  # thread -> (monotonic start, entry)
        self.spool.on_new(self.wakeup.set)
        self.log = get_logger(component="ingest")

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._dispatch, name="ingest-dispatch", daemon=True)
        ]
        self._threads += [
            threading.Thread(target=self._work, name=f"ingest-{i}", daemon=True)
            for i in range(self.cfg.parse_workers)
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float) -> None:
        """Finish the items being processed, then stop; queued ids stay in the spool."""
        self.stopping.set()
        self.wakeup.set()
        for t in self._threads:
            t.join(timeout)

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def stuck(self, limit: float) -> str:
        """Which worker has been on one entry longer than ``limit`` seconds ("" = none)."""
        now = time.monotonic()
        for thread, (since, entry_id) in list(self._busy.items()):
            if now - since > limit:
                return f"{thread} on spool entry {entry_id} for {now - since:.0f} s"
        return ""

    def _dispatch(self) -> None:
        while not self.stopping.is_set():
            self.wakeup.clear()
            for entry_id in self.spool.pending():
                if self.stopping.is_set():
                    break
                with self._lock:
                    if entry_id in self._in_flight:
                        continue
                    self._in_flight.add(entry_id)
                turn = self.turns.take()
                while not self.stopping.is_set():
                    try:
                        self._queue.put((turn, entry_id), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                else:
                    self.turns.done(turn)
            self.wakeup.wait(self.cfg.poll_interval)
        for _ in range(self.cfg.parse_workers):
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            number, entry_id = item
            try:
                # One worker stores in spool order by itself: no keys to read.
                self._settle(entry_id, self.turns.turn(number) if self._ordered else None)
            finally:
                self.turns.done(number)  # also when never claimed or worked on
                with self._lock:
                    self._in_flight.discard(entry_id)

    def _settle(self, entry_id: str, turn: Turn | None) -> None:
        """Process an entry; with a turn, a retry is tried again here a few times: were it
        dispatched again, it would come after the later mail of its conversation that is
        waiting for it now (a deadlock, a killed session or a unique-key race clears in a
        try or two). Then it goes back to the spool, so no entry keeps a worker for ever."""
        for _ in range(RETRIES_IN_TURN + 1):
            if self.stopping.is_set():
                return
            entry = self.spool.claim(entry_id)
            if entry is None:
                return  # another process has it
            me = threading.current_thread().name
            self._busy[me] = (time.monotonic(), entry_id)
            try:
                outcome = self.processor.process(entry, turn)
            finally:
                self._busy.pop(me, None)  # not stuck while it backs off
            self.processed += 1
            if outcome.outcome != "retry":
                return
            # Back off briefly so a down database is not hammered.
            self.stopping.wait(min(5.0, self.cfg.poll_interval))
            if turn is None:
                return
