"""IMAP intake: pull mail from configured mailboxes into the spool, exactly once.

One thread per account and folder (imapclient blocks; threads keep it off the event
loop; ``daemon.imap_intake`` starts them). A worker fetches only while it holds the
folder's lease. It reads UIDs above its durable checkpoint in batches with
``BODY.PEEK[]`` (it never sets or relies on ``\\Seen``), checks ``RFC822.SIZE`` before
fetching a body, writes the batch to the spool as one durable file, and only then
advances the checkpoint and applies the ``after`` action; a writer thread
(``daemon.imap_batches``) does that for one batch while the next is fetched. A missing
or short FETCH answer stops the batch before the checkpoint moves, so a UID is never
skipped. It then waits with IDLE (re-issued every few minutes, well inside RFC 2177's
29) or polls, and reconnects with exponential back-off and jitter; a login failure backs
off to one attempt a minute and recovers by itself once the credentials are fixed.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from daemon.config import ImapAccount
from daemon.imap_batches import Batch, BatchWriter, cut
from daemon.logging import get_logger
from daemon.spool import Spool
from storage import imapstate
from storage.engine import Database

IDLE_REFRESH = 300.0  # seconds; RFC 2177 asks for at most 29 minutes
MAX_BACKOFF = 300.0
AUTH_BACKOFF = 60.0


PROBE_WINDOW = 10  # batches whose sizes one RFC822.SIZE FETCH asks for
BATCH_BYTES = 16 * 1024 * 1024  # a body FETCH stops short of this many bytes
MAX_IN_FLIGHT = 4  # fetched batches waiting for the disk: bounds memory


class LeaseLostError(Exception):
    """Raised when another instance took the folder over; stop fetching at once."""


class ShortFetchError(IMAPClientError):  # type: ignore[misc]
    """Raised when the server answered FETCH without some of the asked-for bodies."""


@dataclass(slots=True)
class FetchReport:
    uids: int = 0
    bytes: int = 0
    oversize: int = 0


def instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Backoff:
    """Exponential back-off with full jitter, capped."""

    def __init__(self, cap: float = MAX_BACKOFF, base: float = 1.0) -> None:
        self.cap, self.base, self.failures = cap, base, 0

    def next(self, cap: float | None = None) -> float:
        self.failures += 1
        ceiling = min(cap or self.cap, self.base * 2 ** min(self.failures, 16))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 — jitter, not crypto

    def reset(self) -> None:
        self.failures = 0


class FolderWorker:
    """Keeps one folder of one account fetched into the spool until stopped."""

    def __init__(
        self,
        account: ImapAccount,
        folder: str,
        *,
        spool: Spool,
        db: Database,
        holder: str,
        max_size: int,
        stop: threading.Event,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        backfill: bool = False,
        on_spooled: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.account, self.folder = account, folder
        self.spool, self.db, self.holder = spool, db, holder
        self.max_size, self.stop, self.clock = max_size, stop, clock
        self.source = f"imap:{account.name}/{folder}"
        self.log = get_logger(component="imap", account=account.name, folder=folder)
        self.backoff = Backoff()
        self._renewed = 0.0
        self.lease = timedelta(seconds=account.lease)
        self.backfill = backfill  # history import: later stages send no acknowledgement
        self.on_spooled = on_spooled

    # --- lifecycle -----------------------------------------------------------------

    def run(self) -> None:
        """Thread target: connect, fetch, wait, repeat; never raises."""
        while not self.stop.is_set():
            try:
                if not self._acquire():
                    self.stop.wait(self.lease.total_seconds() / 3)
                    continue
                with self.connect() as client:
                    self.backoff.reset()
                    self.session(client, idle=True)
            except LoginError as exc:
                self._failed("auth", exc, self.backoff.next(cap=AUTH_BACKOFF))
            except LeaseLostError:
                self.log.warning("imap.lease_lost", holder=self.holder)
            except Exception as exc:
                self._failed("connection", exc, self.backoff.next())
        self._release()

    def _failed(self, kind: str, exc: BaseException, delay: float) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        self.log.error(
            "imap.error",
            kind=kind,
            error=reason,
            retry_in=round(delay, 1),
            fix="check the password file or token" if kind == "auth" else None,
        )
        try:
            with self.db.transaction() as s:
                imapstate.set_status(s, self.account.name, self.folder, f"{kind}_failed", reason)
        except Exception as db_exc:
            self.log.warning("imap.status_failed", error=repr(db_exc))
        self.stop.wait(delay)

    @contextmanager
    def connect(self) -> Iterator[IMAPClient]:
        a = self.account
        context = ssl.create_default_context()
        client = IMAPClient(
            a.host, port=a.port, ssl=a.security == "tls", ssl_context=context, timeout=a.timeout
        )
        try:
            if a.security == "starttls":
                client.starttls(context)
            if a.auth == "xoauth2":
                client.oauth2_login(a.username, a.secret())
            else:
                client.login(a.username, a.secret())
            self.log.info("imap.connected", host=a.host, port=a.port, security=a.security)
            yield client
        finally:
            try:
                client.logout()
            except Exception:
                with contextlib.suppress(Exception):
                    client.shutdown()

    def acquire(self) -> bool:
        """Take the folder's lease (False when another instance holds it)."""
        return self._acquire()

    def release(self) -> None:
        self._release()

    def _acquire(self) -> bool:
        return self._lease() is not None

    def _lease(self) -> tuple[int | None, int] | None:
        """Take or renew the lease; (stored UIDVALIDITY, checkpoint UID) while we hold it."""
        with self.db.transaction() as s:
            row = imapstate.acquire(
                s,
                self.account.name,
                self.folder,
                holder=self.holder,
                now=self.clock(),
                ttl=self.lease,
            )
            state = None if row is None else (row.uidvalidity, row.last_uid)
        self._renewed = time.monotonic()
        return state

    def _renew(self) -> None:
        if time.monotonic() - self._renewed < self.lease.total_seconds() / 3:
            return
        if not self._acquire():
            raise LeaseLostError(self.source)

    def _release(self) -> None:
        try:
            with self.db.transaction() as s:
                imapstate.release(s, self.account.name, self.folder, self.holder)
        except Exception as exc:
            self.log.warning("imap.release_failed", error=repr(exc))

    # --- one connected session ---------------------------------------------------------

    def session(
        self,
        client: IMAPClient,
        *,
        idle: bool,
        since: datetime | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> FetchReport:
        """Fetch everything new; with ``idle``, keep waiting and fetching until stopped."""
        readonly = self.account.after == "keep"
        info = client.select_folder(self.folder, readonly=readonly)
        uidvalidity = int(info[b"UIDVALIDITY"])
        lease = self._lease()
        if lease is None:
            raise LeaseLostError(self.source)
        stored_validity, last_uid = lease
        if stored_validity is not None and stored_validity != uidvalidity:
            # The server renumbered the folder: fetch it all again; dedupe recognises
            # what was already stored, so nothing is duplicated.
            self.log.warning("imap.uidvalidity_changed", old=stored_validity, new=uidvalidity)
            last_uid = 0
        self._catch_up_after_action(client, last_uid)
        total = FetchReport()
        while True:
            report, last_uid = self.fetch_new(client, uidvalidity, last_uid, since, on_batch)
            total.uids += report.uids
            total.bytes += report.bytes
            total.oversize += report.oversize
            if not idle or self.stop.is_set():
                return total
            self._wait_for_mail(client)
            if self.stop.is_set():
                return total

    def _wait_for_mail(self, client: IMAPClient) -> None:
        if b"IDLE" not in client.capabilities():
            deadline = time.monotonic() + self.account.poll_interval
            while not self.stop.is_set() and time.monotonic() < deadline:
                self._renew()
                self.stop.wait(min(1.0, self.account.poll_interval))
            client.noop()
            return
        if self._mail_announced(client):
            return  # fetch again instead of idling past mail we were already told about
        client.idle()
        self.log.debug("imap.idle")
        deadline = time.monotonic() + IDLE_REFRESH
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self._renew()
                responses = client.idle_check(timeout=1)
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    return
        finally:
            client.idle_done()

    @staticmethod
    def _mail_announced(client: IMAPClient) -> bool:
        """True when the server already announced new mail outside IDLE.

        Mail that arrives while we fetch is announced inside the FETCH (or STORE,
        MOVE) reply; imaplib files that EXISTS in ``untagged_responses``, where
        nothing reads it, and the server will not repeat it once we IDLE, so the
        message would wait for the next one or for the IDLE refresh. imapclient
        reads the same dict itself. A NOOP collects anything still in flight.
        """
        untagged = client._imap.untagged_responses
        announced = bool(untagged.pop("EXISTS", None)) | bool(untagged.pop("RECENT", None))
        _, responses = client.noop()
        return announced or any(
            isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT")
            for r in responses
        )

    def fetch_new(
        self,
        client: IMAPClient,
        uidvalidity: int,
        last_uid: int,
        since: datetime | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> tuple[FetchReport, int]:
        """Spool every message above ``last_uid``; returns what was done and the new mark.

        This thread owns the connection and only fetches; a writer thread makes
        batches durable and checkpoints them meanwhile (several at once when they
        queue up). The ``after`` action of a batch runs here once its checkpoint
        is committed, in UID order.
        """
        criteria: list[Any] = ["UID", f"{last_uid + 1}:*"]
        if since is not None:
            criteria += ["SINCE", since.date()]
        # "n:*" always matches the highest UID, even below n: filter.
        uids = sorted(u for u in client.search(criteria) if u > last_uid)
        report = FetchReport()
        writer = BatchWriter(self._store)
        in_flight: deque[tuple[Future[None], Batch]] = deque()
        try:
            window = self.account.batch_size * PROBE_WINDOW
            for start in range(0, len(uids), window):
                sizes = self._probe(client, uids[start : start + window])
                for chunk in cut(sizes, self.account.batch_size, BATCH_BYTES, self.max_size):
                    self._renew()
                    batch = self._fetch_batch(client, uidvalidity, chunk, sizes)
                    in_flight.append((writer.submit(batch), batch))
                    # Bounded memory: at most MAX_IN_FLIGHT fetched batches wait for the disk.
                    while in_flight and (in_flight[0][0].done() or len(in_flight) > MAX_IN_FLIGHT):
                        self._finish(client, *in_flight.popleft(), report, on_batch)
            while in_flight:
                self._finish(client, *in_flight.popleft(), report, on_batch)
        finally:
            # On a failed fetch, batches already fetched are still stored and
            # checkpointed; the next session starts after them.
            writer.close()
        return report, uids[-1] if uids else last_uid

    def _probe(self, client: IMAPClient, uids: list[int]) -> dict[int, int]:
        """RFC822.SIZE of every UID, so that no body is fetched blind."""
        answer = client.fetch(uids, ["RFC822.SIZE"])
        sizes: dict[int, int] = {}
        for uid in uids:
            if uid not in answer:
                raise ShortFetchError(f"no FETCH answer for UID {uid}; retrying the batch")
            sizes[uid] = int(answer[uid].get(b"RFC822.SIZE", 0))
        return sizes

    def _fetch_batch(
        self, client: IMAPClient, uidvalidity: int, uids: list[int], sizes: dict[int, int]
    ) -> Batch:
        """Fetch the bodies that fit the size limit; nothing is stored yet."""
        batch = Batch(uidvalidity=uidvalidity, uids=uids)
        for uid in uids:
            size = sizes[uid]
            if size > self.max_size:
                batch.skipped.append(
                    {
                        "uid": uid,
                        "size": size,
                        "uidvalidity": uidvalidity,
                        "at": self.clock().isoformat(),
                    }
                )
                self.log.error(
                    "imap.oversize",
                    uid=uid,
                    size=size,
                    limit=self.max_size,
                    fix="raise [smtp] max_message_size or fetch it by hand",
                )
                continue
            batch.wanted.append(uid)
        if not batch.wanted:
            return batch
        bodies = client.fetch(batch.wanted, ["BODY.PEEK[]"])
        now = self.clock()
        batch.lag = self._lag(client, batch.wanted[0], now)
        for uid in batch.wanted:
            raw = bodies.get(uid, {}).get(b"BODY[]")
            if not isinstance(raw, bytes):
                raise ShortFetchError(f"FETCH returned no body for UID {uid}; retrying")
            batch.bytes += len(raw)
            batch.items.append(
                (
                    raw,
                    {
                        "source": self.source,
                        "received_at": now.isoformat(),
                        "envelope": {
                            "imap": {
                                "account": self.account.name,
                                "folder": self.folder,
                                "uid": uid,
                                "uidvalidity": uidvalidity,
                            },
                            # History import: kept with the delivery so that no
                            # acknowledgement is ever sent for it.
                            "backfill": self.backfill,
                        },
                    },
                )
            )
        return batch

    @staticmethod
    def _lag(client: IMAPClient, oldest: int, now: datetime) -> float:
        """Seconds the batch's oldest message waited on the server.

        Asked for that one UID only: imapclient turns every INTERNALDATE into a
        datetime, which cost a quarter of the fetch time when asked for all of them.
        """
        arrived = client.fetch([oldest], ["INTERNALDATE"]).get(oldest, {}).get(b"INTERNALDATE")
        if not isinstance(arrived, datetime):
            return 0.0
        arrived_utc = arrived if arrived.tzinfo else arrived.astimezone()
        return max(0.0, (now - arrived_utc).total_seconds())

    def _store(self, group: list[Batch]) -> None:
        """Writer thread: make batches durable (one spool file), then checkpoint the last."""
        # Nothing is checkpointed when this raises: the batches are fetched again.
        items = [item for batch in group for item in batch.items]
        entries = iter(self.spool.put_bundle(items))
        for batch in group:
            batch.spooled = [next(entries).id for _ in batch.items]
        skipped = [s for batch in group for s in batch.skipped]
        now = self.clock()
        with self.db.transaction() as s:
            if skipped:
                imapstate.record_skipped(s, self.account.name, self.folder, skipped)
            if not imapstate.checkpoint(
                s,
                self.account.name,
                self.folder,
                self.holder,
                uidvalidity=group[-1].uidvalidity,
                last_uid=group[-1].uids[-1],
                fetched=len(items),
                lag=max(batch.lag for batch in group),
                now=now,
                ttl=self.lease,
            ):
                raise LeaseLostError(self.source)
        self._renewed = time.monotonic()

    def _finish(
        self,
        client: IMAPClient,
        stored: Future[None],
        batch: Batch,
        report: FetchReport,
        on_batch: Callable[[int], None] | None,
    ) -> None:
        """Wait for a batch's checkpoint, then flag or move it on the server."""
        stored.result()
        self.log.debug("imap.checkpoint", uidvalidity=batch.uidvalidity, last_uid=batch.uids[-1])
        if self.on_spooled is not None:
            self.on_spooled(batch.spooled)
        self._after_action(client, batch.wanted)
        report.uids += len(batch.uids)
        report.bytes += batch.bytes
        report.oversize += len(batch.skipped)
        self.log.info(
            "imap.fetched",
            count=len(batch.items),
            first_uid=batch.uids[0],
            last_uid=batch.uids[-1],
            bytes=batch.bytes,
            lag_s=round(batch.lag, 1),
        )
        if on_batch is not None:
            on_batch(len(batch.uids))

    def _after_action(self, client: IMAPClient, uids: list[int]) -> None:
        """Mark or move messages that are durably spooled (never before)."""
        after = self.account.after
        if not uids or after == "keep":
            return
        if after == "seen":
            client.add_flags(uids, [b"\\Seen"], silent=True)
            return
        target = after.split(":", 1)[1]
        if b"MOVE" in client.capabilities():
            client.move(uids, target)
        else:
            client.copy(uids, target)
            client.delete_messages(uids, silent=True)
            client.uid_expunge(uids) if b"UIDPLUS" in client.capabilities() else client.expunge()

    def _catch_up_after_action(self, client: IMAPClient, last_uid: int) -> None:
        """Re-apply ``after`` to stored mail a crash left behind between checkpoint and action."""
        if self.account.after == "keep" or last_uid == 0:
            return
        criteria: list[Any] = ["UID", f"1:{last_uid}"]
        if self.account.after == "seen":
            criteria.append("UNSEEN")
        left = [u for u in client.search(criteria) if u <= last_uid]
        self._after_action(client, left)
