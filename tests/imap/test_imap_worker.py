"""IMAP folder workers against a real Dovecot: exactly once, whatever the server does."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from sqlalchemy import func, select

from daemon import imap as imap_mod
from daemon.errors import SpoolFullError
from daemon.imap_batches import cut
from daemon.parts import Parts
from storage import imapstate
from storage.models import Message
from support.daemon import wait_until
from support.dovecot import Dovecot
from support.imaptest import WorkerRun, account, spooled_nonces
from support.mail import message
from support.tcpproxy import TcpProxy


def nonce_message(size: int = 0) -> tuple[str, bytes]:
    nonce = uuid.uuid4().hex
    return nonce, message(f"imap {nonce[:8]}", nonce=nonce, body="Hola\n" + "x" * size + "\n")


def append_many(server: Dovecot, n: int, size: int = 0, flags: tuple[str, ...] = ()) -> list[str]:
    nonces = []
    for _ in range(n):
        nonce, raw = nonce_message(size)
        server.append("support", "INBOX", raw, flags=flags)
        nonces.append(nonce)
    return nonces


def checkpoint(parts: Parts, folder: str = "INBOX") -> tuple[int | None, int]:
    with parts.db.transaction() as s:
        for row in imapstate.folders(s):
            if row.folder == folder:
                return row.uidvalidity, row.last_uid
    return None, 0


def test_fetches_existing_and_new_mail_byte_exact_without_flagging(
    dovecot: Dovecot, parts: Parts, worker_factory: Callable[..., WorkerRun]
) -> None:
    """Existing mail (even already \\Seen by another client: IMAP-04) and mail arriving
    while idle are spooled once, byte-exact, and nothing changes on the server."""
    seen = append_many(dovecot, 2, flags=("\\Seen",))
    unseen = append_many(dovecot, 3)
    run = worker_factory(account(dovecot.port))
    wait_until(lambda: len(spooled_nonces(parts)) == 5, 20, what="existing mail spooled")
    later = append_many(dovecot, 2)  # arrives while the worker idles
    wait_until(lambda: len(spooled_nonces(parts)) == 7, 20, what="new mail via IDLE")
    run.stop()
    assert spooled_nonces(parts) == dict.fromkeys(seen + unseen + later, 1)
    uids = dovecot.uids("support", "INBOX")
    for uid in uids:
        raw = dovecot.fetch("support", "INBOX", uid)
        entries = [parts.spool.get(i) for i in parts.spool.pending()]
        assert raw in [e.read() for e in entries if e is not None]
    assert [dovecot.flags("support", "INBOX", u) for u in uids] == (
        [frozenset({"\\Seen"})] * 2 + [frozenset()] * 5
    )
    assert checkpoint(parts) == (dovecot.uidvalidity("support", "INBOX"), max(uids))


def test_after_seen_and_move_happen_only_after_spooling(
    dovecot: Dovecot, parts: Parts, worker_factory: Callable[..., WorkerRun]
) -> None:
    """after = "move:Archive" moves exactly the spooled messages out of INBOX."""
    dovecot.create_folder("support", "Archive")
    nonces = append_many(dovecot, 4)
    run = worker_factory(account(dovecot.port, after="move:Archive"))
    wait_until(lambda: not dovecot.uids("support", "INBOX"), 20, what="INBOX emptied")
    run.stop()
    assert spooled_nonces(parts) == dict.fromkeys(nonces, 1)
    assert len(dovecot.uids("support", "Archive")) == 4


def test_imap01_connection_cut_mid_fetch_100_times(
    dovecot: Dovecot, parts: Parts, worker_factory: Callable[..., WorkerRun]
) -> None:
    """IMAP-01: 100 connections cut in the middle of FETCH answers; no UID is skipped and
    none is spooled twice, and the checkpoint never passes an unspooled UID."""
    nonces = append_many(dovecot, 40, size=10_000)
    proxy = TcpProxy("127.0.0.1", dovecot.port).start()
    rng = random.Random(7)
    try:
        run = worker_factory(account(proxy.port, batch_size=5))
        while proxy.cuts < 100:
            if len(spooled_nonces(parts)) == len(nonces):
                nonces += append_many(dovecot, 10, size=10_000)  # keep it fetching
            before = proxy.cuts
            proxy.cut_after_bytes(rng.randint(300, 40_000))
            wait_until(
                lambda before=before: proxy.cuts > before or not proxy.cut_pending,
                20,
                interval=0.005,
                what="a cut",
            )
        wait_until(lambda: len(spooled_nonces(parts)) == len(nonces), 60, what="all spooled")
        run.stop()
    finally:
        proxy.stop()
    assert proxy.cuts >= 100
    assert spooled_nonces(parts) == dict.fromkeys(nonces, 1)
    assert checkpoint(parts)[1] == max(dovecot.uids("support", "INBOX"))


def test_imap02_hung_server_times_out_and_recovers(
    dovecot: Dovecot, parts: Parts, worker_factory: Callable[..., WorkerRun]
) -> None:
    """IMAP-02: the server frozen (SIGSTOP) longer than the timeout: the worker gives up
    the connection, reconnects after SIGCONT, and ingests what arrived."""
    first = append_many(dovecot, 2)
    run = worker_factory(account(dovecot.port, timeout=1.0))
    wait_until(lambda: len(spooled_nonces(parts)) == 2, 20, what="first mail")
    proxy_free_pause = dovecot.pause
    proxy_free_pause()
    try:
        # While frozen, a re-IDLE or fetch times out; force the worker to talk to it.
        run.worker.stop.wait(3.0)
    finally:
        dovecot.resume()
    later = append_many(dovecot, 3)
    wait_until(lambda: len(spooled_nonces(parts)) == 5, 30, what="mail after the freeze")
    run.stop()
    assert spooled_nonces(parts) == dict.fromkeys(first + later, 1)


def drain(parts: Parts) -> None:
    for entry_id in parts.spool.pending():
        entry = parts.spool.claim(entry_id)
        assert entry is not None
        assert parts.processor.process(entry).outcome in ("stored", "duplicate")


def test_imap03_uidvalidity_change_resyncs_without_duplicates(
    dovecot: Dovecot, parts: Parts, worker_factory: Callable[..., WorkerRun]
) -> None:
    """IMAP-03: after a UIDVALIDITY change everything is fetched again; old mail is
    recognised as duplicates and new mail is stored once."""
    old = append_many(dovecot, 3)
    run = worker_factory(account(dovecot.port))
    wait_until(lambda: len(spooled_nonces(parts)) == 3, 20, what="first sync")
    run.stop()
    drain(parts)
    old_validity = dovecot.uidvalidity("support", "INBOX")
    dovecot.reset_uidvalidity("support", "INBOX", renumber=True)
    assert dovecot.uidvalidity("support", "INBOX") != old_validity
    new = append_many(dovecot, 2)
    run2 = worker_factory(account(dovecot.port))
    wait_until(lambda: len(spooled_nonces(parts)) == 5, 20, what="resync spooled")
    run2.stop()
    drain(parts)
    with parts.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == len(old) + len(new)
    assert checkpoint(parts)[0] == dovecot.uidvalidity("support", "INBOX")


def test_imap06_oversize_message_never_stalls_the_folder(
    dovecot: Dovecot, parts: Parts, worker_factory: Callable[..., WorkerRun]
) -> None:
    """IMAP-06: a message over the size limit is reported and skipped; mail after it
    flows, and the checkpoint moves past it."""
    before = append_many(dovecot, 2)
    _, huge = nonce_message(300_000)
    dovecot.append("support", "INBOX", huge)
    after = append_many(dovecot, 2)
    with structlog.testing.capture_logs() as logs:
        run = worker_factory(account(dovecot.port), max_size=100_000)
        wait_until(lambda: len(spooled_nonces(parts)) == 4, 20, what="the others spooled")
        run.stop()
    assert spooled_nonces(parts) == dict.fromkeys(before + after, 1)
    assert checkpoint(parts)[1] == max(dovecot.uids("support", "INBOX"))
    (oversize,) = [e for e in logs if e["event"] == "imap.oversize"]
    assert oversize["limit"] == 100_000 and oversize["size"] > 300_000
    with parts.db.transaction() as s:
        (row,) = imapstate.folders(s)
        assert [e["uid"] for e in row.skipped] == [oversize["uid"]]  # recorded for the admin


def test_imap08_two_instances_on_one_mailbox_fetch_once(
    dovecot: Dovecot, parts: Parts, worker_factory: Callable[..., WorkerRun]
) -> None:
    """IMAP-08: two workers with different instance ids on one folder: the lease lets
    one fetch at a time, so every message is spooled once."""
    nonces = append_many(dovecot, 20)
    a = worker_factory(account(dovecot.port), holder="instance-a")
    b = worker_factory(account(dovecot.port), holder="instance-b")
    wait_until(lambda: len(spooled_nonces(parts)) == 20, 30, what="all spooled")
    more = append_many(dovecot, 10)
    wait_until(lambda: len(spooled_nonces(parts)) == 30, 30, what="new mail spooled")
    a.stop()
    b.stop()
    assert spooled_nonces(parts) == dict.fromkeys(nonces + more, 1)


def test_imap11_bad_password_backs_off_and_recovers(
    dovecot: Dovecot,
    parts: Parts,
    worker_factory: Callable[..., WorkerRun],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IMAP-11: a wrong password is logged clearly, retried with back-off (not hammered),
    and fetching resumes by itself once the password file is fixed."""
    monkeypatch.setattr(imap_mod, "AUTH_BACKOFF", 0.4)
    pw = tmp_path / "pw"
    pw.write_text("wrong\n")
    nonces = append_many(dovecot, 2)
    with structlog.testing.capture_logs() as logs:
        run = worker_factory(account(dovecot.port, password_env="", password_file=str(pw)))
        run.worker.stop.wait(2.0)
        failures = [e for e in logs if e["event"] == "imap.error"]
        assert spooled_nonces(parts) == {}
        pw.write_text("secret\n")
        wait_until(lambda: len(spooled_nonces(parts)) == 2, 20, what="recovery after the fix")
        run.stop()
    # Back-off: at most a handful of tries in 2 s (0.2-0.4 s apart), each naming the cause.
    assert 1 <= len(failures) <= 8, f"{len(failures)} login attempts in 2 s"
    assert all(e["kind"] == "auth" and e["fix"] for e in failures)
    assert spooled_nonces(parts) == dict.fromkeys(nonces, 1)


def test_polling_when_the_server_has_no_idle(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    parts: Parts,
    worker_factory: Callable[..., WorkerRun],
) -> None:
    """A server without IDLE is polled every poll_interval; new mail still arrives."""
    from support.dovecot import running_dovecot
    from support.imaptest import PASSWORD_ENV

    monkeypatch.setenv(PASSWORD_ENV, "secret")
    extra = "protocol imap {\n  imap_capability = IMAP4rev1 LITERAL+ UIDPLUS MOVE\n}\n"
    with running_dovecot(tmp_path, extra=extra) as server:
        with server.session("support") as c:
            assert b"IDLE" not in c.capabilities()
        run = worker_factory(account(server.port, poll_interval=0.3))
        nonces = append_many(server, 2)
        wait_until(lambda: len(spooled_nonces(parts)) == 2, 20, what="polled mail")
        nonces += append_many(server, 1)
        wait_until(lambda: len(spooled_nonces(parts)) == 3, 20, what="mail after a poll")
        run.stop()
    assert spooled_nonces(parts) == dict.fromkeys(nonces, 1)


def test_mail_announced_during_a_fetch_is_not_left_waiting(
    dovecot: Dovecot, parts: Parts, worker_factory: Callable[..., WorkerRun]
) -> None:
    """A message that arrives while the worker is fetching (announced inside the FETCH
    reply, not in IDLE) is fetched at once, not after the next mail or the IDLE refresh."""
    first = append_many(dovecot, 1)
    run = worker_factory(account(dovecot.port), start=False)
    original = run.worker._fetch_batch
    late: list[str] = []

    def fetch_and_race(*args: object, **kwargs: object) -> int:
        if not late:  # a second client delivers right after our SEARCH
            late.extend(append_many(dovecot, 1))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    run.worker._fetch_batch = fetch_and_race  # type: ignore[method-assign]
    run.start()
    wait_until(lambda: len(spooled_nonces(parts)) == 2, 8, what="the racing message")
    run.stop()
    assert spooled_nonces(parts) == dict.fromkeys(first + late, 1)


def test_a_failed_spool_write_never_lets_the_checkpoint_pass_it(
    dovecot: Dovecot, parts: Parts, worker_factory: Callable[..., WorkerRun]
) -> None:
    """Batches are stored by a writer thread while the next ones are fetched. When one
    batch cannot be written (disk full), the batches queued behind it must not be
    stored and checkpointed past it: the worker reconnects, fetches from the last
    durable batch, and every message ends up spooled exactly once, in UID order."""
    nonces = append_many(dovecot, 60)
    real = parts.spool.put_bundle
    calls: list[int] = []
    checkpoints: list[int] = []

    def flaky(items: list[tuple[bytes, dict[str, object]]]) -> list[object]:
        calls.append(len(items))
        checkpoints.append(checkpoint(parts)[1])
        if len(calls) == 2:
            time.sleep(0.5)  # the fetch thread queues more batches behind this one
            raise SpoolFullError("spool filesystem is full (test)")
        return real(items)  # type: ignore[arg-type,return-value]

    parts.spool.put_bundle = flaky  # type: ignore[assignment,method-assign]
    with structlog.testing.capture_logs() as logs:
        run = worker_factory(account(dovecot.port, batch_size=5))
        wait_until(lambda: len(spooled_nonces(parts)) == 60, 30, what="all spooled")
        run.stop()
    assert spooled_nonces(parts) == dict.fromkeys(nonces, 1)
    uids = [
        int(parts.spool.get(i).meta["envelope"]["imap"]["uid"])  # type: ignore[union-attr]
        for i in parts.spool.pending()
    ]
    assert uids == sorted(uids) == dovecot.uids("support", "INBOX")
    # The write after the failure started from the last durable batch, not past it.
    assert checkpoints[2] == checkpoints[1]
    assert any(e["event"] == "imap.error" and "SpoolFullError" in e["error"] for e in logs)


def test_batches_are_cut_by_count_and_by_bytes() -> None:
    """A body FETCH asks for at most batch_size messages and stops short of the byte
    budget; a message over the size limit is never fetched so it costs nothing, and a
    message bigger than the budget still gets a batch of its own."""
    sizes = {1: 10, 2: 10, 3: 10, 4: 10, 5: 10}
    assert list(cut(sizes, 2, 1000, 100)) == [[1, 2], [3, 4], [5]]
    sizes = {1: 60, 2: 60, 3: 500, 4: 30, 5: 120, 6: 10}
    assert list(cut(sizes, 10, 100, 150)) == [[1], [2, 3, 4], [5], [6]]
    assert list(cut({7: 120}, 10, 100, 150)) == [[7]]
