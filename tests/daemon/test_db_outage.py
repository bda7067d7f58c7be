"""DUR-10: the database goes away mid-load; intake keeps answering and nothing is lost.

The daemon runs on a scratch PostgreSQL database reached through a loopback TCP proxy
(``support.tcpproxy``) that the test takes down and brings back. The machine's server
itself is never stopped: other test runs share it. A client thread sends mail the whole
time and keeps an oracle of what each message was told; afterwards every Message-ID
answered 250 must be in the database exactly once, and nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import smtplib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from support.daemon import Daemon, wait_until
from support.invariants import assert_invariants
from support.mail import message
from support.tcpproxy import TcpProxy

pytestmark = pytest.mark.postgres

CLIENT_TIMEOUT = 10.0  # what a patient MTA waits for one reply; a hang is anything longer
SEND_PAUSE = 0.15  # between messages: a steady load the daemon can drain after the outage
# An outage is a partition (connects hang: "blackhole") that turns into a stopped server
# (connects refused, the held ones reset): both ways a database goes away, in one run.
# The partition part is long enough for the daemon's 5 s connect timeout to expire.
BLACKHOLED = 0.7


@dataclass
class Oracle:
    """What each SMTP attempt was told: per Message-ID, and in order with timings."""

    replies: dict[str, str] = field(default_factory=dict)
    # (monotonic start, seconds taken, reply: an SMTP code or an exception's type name)
    attempts: list[tuple[float, float, str]] = field(default_factory=list)

    def accepted(self) -> set[str]:
        return {mid for mid, reply in self.replies.items() if reply == "250"}


class Sender:
    """One client sending mail back to back from a thread until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.oracle = Oracle()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dur10-sender")

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(CLIENT_TIMEOUT * 3)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            mid = f"dur10-{n}-{uuid.uuid4().hex[:12]}@cliente.es"
            # A customer of its own each: the load is many tickets, not one ever-growing one.
            sender = f"cliente{n}@empresa{n % 7}.es"
            raw = message(
                f"Pedido {n}: la factura no llega",
                sender=sender,
                body=f"Hola,\nla factura del pedido {n} no ha llegado.\n",
                message_id=f"<{mid}>",
            )
            started = time.monotonic()
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT) as smtp:
                    smtp.ehlo()
                    smtp.mail(sender)
                    smtp.rcpt("support@example.com")
                    code, _ = smtp.data(raw)
                reply = str(code)
            except (OSError, smtplib.SMTPException) as exc:
                reply = type(exc).__name__  # SMTPResponseException carries a 4xx/5xx code
                if isinstance(exc, smtplib.SMTPResponseException):
                    reply = str(exc.smtp_code)
            self.oracle.replies[mid] = reply
            self.oracle.attempts.append((started, time.monotonic() - started, reply))
            self._stop.wait(SEND_PAUSE)


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[TcpProxy]:
    """A proxy in front of the PostgreSQL server that holds the scratch database."""
    url = make_url(pg_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432, max_connections=256) as proxy:
        yield proxy


def through(pg_url: str, proxy: TcpProxy) -> str:
    """The scratch database's URL, reached through ``proxy``."""
    url = make_url(pg_url).set(host=proxy.host, port=proxy.port)
    return url.render_as_string(hide_password=False)


def libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq conninfo URL for a bare psycopg connection."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def stored(pg_url: str) -> dict[str, int]:
    """Message rows per Message-ID, read straight from the server (never via the proxy)."""
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT message_id, count(*) FROM messages GROUP BY 1"))
            return {str(mid): int(count) for mid, count in rows}
    finally:
        engine.dispose()


def spool_empty(d: Daemon) -> bool:
    root = d.config.parent / "spool"
    return not any(
        p.suffix in (".msg", ".bundle") for sub in ("new", "cur") for p in (root / sub).iterdir()
    )


def drained(d: Daemon, pg_url: str, accepted: set[str]) -> bool:
    return spool_empty(d) and accepted <= set(stored(pg_url))


def assert_nothing_lost(d: Daemon, pg_url: str, oracle: Oracle, drain_timeout: float) -> None:
    """Every reply was 250 or 4xx in time; every 250 is stored once, nothing else is."""
    replies = {reply for _, _, reply in oracle.attempts}
    assert replies <= {"250", "421", "451", "452"}, f"replies other than 250/4xx: {replies}"
    slowest = max(took for _, took, _ in oracle.attempts)
    assert slowest < CLIENT_TIMEOUT, f"an SMTP transaction took {slowest:.1f} s"
    accepted = oracle.accepted()
    with contextlib.suppress(AssertionError):  # on a timeout, the checks below say what
        wait_until(lambda: drained(d, pg_url, accepted), drain_timeout, interval=0.25)
    counts = stored(pg_url)
    missing = sorted(accepted - set(counts))
    assert missing == [], f"{len(missing)} messages answered 250 are not stored: {missing[:5]}"
    twice = {mid: n for mid, n in counts.items() if n != 1}
    assert twice == {}, f"messages stored more than once: {twice}"
    unasked = sorted(set(counts) - accepted)
    assert unasked == [], f"messages stored that were never answered 250: {unasked[:5]}"
    assert list((d.config.parent / "spool" / "bad").iterdir()) == [], "mail quarantined"
    assert spool_empty(d), f"the spool did not drain in {drain_timeout:g} s"


def stored_more_than(d: Daemon, n: int) -> bool:
    return d.count("message.stored") > n


def errors_without_fix(d: Daemon) -> list[dict[str, Any]]:
    return [e for e in d.events if e.get("level") == "error" and not e.get("fix")]


def names_the_database(event: dict[str, Any]) -> bool:
    said = f"{event.get('error', '')} {event.get('fix', '')}".lower()
    return event.get("level") == "error" and bool(event.get("fix")) and "database" in said


@pytest.mark.parametrize(
    "outage",
    [
        pytest.param(10.0, id="10s"),
        pytest.param(60.0, id="60s", marks=[pytest.mark.soak, pytest.mark.timeout(600)]),
    ],
)
def test_dur10_database_outage_mid_load_loses_nothing(
    pg_url: str, pg_proxy: TcpProxy, daemon_factory: Callable[..., Daemon], outage: float
) -> None:
    """DUR-10: PostgreSQL unreachable for ``outage`` s while mail arrives: SMTP answers
    250 (spooled) or 4xx in time throughout, the daemon says what is wrong and how to fix
    it, and once the database is back every 250 is stored exactly once."""
    d = daemon_factory("dur10", database=through(pg_url, pg_proxy))
    with Sender(d.port) as sender:
        wait_until(lambda: d.count("message.stored") >= 10, 30, what="mail flowing into the db")
        pg_proxy.down("blackhole")
        went_down = time.monotonic()
        time.sleep(1.0)  # commits that beat the cut have been logged by now
        stored_at_cut = d.count("message.stored")
        # Said while connects still hang: a partition must not leave the daemon silent.
        partition_ends = went_down + outage * BLACKHOLED
        said = d.wait_event(
            "database.unavailable",
            timeout=partition_ends - time.monotonic(),
            where=names_the_database,
        )
        time.sleep(max(0.0, partition_ends - time.monotonic()))
        pg_proxy.down("refuse")
        time.sleep(max(0.0, went_down + outage - time.monotonic()))
        stored_in_outage = d.count("message.stored") - stored_at_cut
        pg_proxy.up()
        came_back = time.monotonic()
        d.wait_event("database.available", timeout=30)
        time.sleep(1.0)  # mail keeps coming while the backlog drains
    oracle = sender.oracle
    during = [a for a in oracle.attempts if went_down <= a[0] < came_back]
    assert len(during) >= 2 * outage, f"intake answered only {len(during)} times in the outage"
    assert stored_in_outage == 0, f"{stored_in_outage} messages stored with the database down"
    assert_nothing_lost(d, pg_url, oracle, drain_timeout=30 + outage)
    assert d.stop() == 0
    assert f"127.0.0.1:{pg_proxy.port}" in said["database"]
    assert f"pg_isready -h 127.0.0.1 -p {pg_proxy.port}" in said["fix"]
    assert d.count("database.unavailable") == 1, "one outage, one error line"
    assert errors_without_fix(d) == []
    assert_invariants(d.config)


def test_dur10_terminated_backends_mid_load_lose_nothing(
    pg_url: str, pg_proxy: TcpProxy, daemon_factory: Callable[..., Daemon]
) -> None:
    """DUR-10: the daemon's PostgreSQL sessions killed with pg_terminate_backend five
    times while mail arrives: SMTP never falters and every 250 is stored exactly once."""
    d = daemon_factory("dur10-term", database=through(pg_url, pg_proxy))
    scratch = make_url(pg_url).database
    killed: list[int] = []
    with (
        Sender(d.port) as sender,
        psycopg.connect(libpq(pg_url), autocommit=True) as admin,
    ):
        wait_until(lambda: d.count("message.stored") >= 10, 30, what="mail flowing into the db")
        for _ in range(5):
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (scratch,),
            ).fetchall()
            killed.append(sum(1 for (ok,) in rows if ok))
            wait_until(
                functools.partial(stored_more_than, d, d.count("message.stored")),
                15,
                what="ingest to resume",
            )
            time.sleep(0.5)
    assert all(killed), f"backends terminated per round: {killed}"
    assert d.count("database.unavailable") == 0, "a killed session is not an outage"
    assert_nothing_lost(d, pg_url, sender.oracle, drain_timeout=30)
    assert d.stop() == 0
    assert errors_without_fix(d) == []
    assert_invariants(d.config)


def test_proxy_refuses_blackholes_and_comes_back(pg_url: str, pg_proxy: TcpProxy) -> None:
    """The harness itself: down() cuts live sessions; "refuse" fails connects at once;
    "blackhole" holds them until up() lets them through, or "refuse" resets them."""
    conninfo = libpq(through(pg_url, pg_proxy))
    with psycopg.connect(conninfo, autocommit=True) as live:
        assert live.execute("SELECT 1").fetchone() == (1,)
        pg_proxy.down("refuse")
        with pytest.raises(psycopg.OperationalError):
            live.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(conninfo, connect_timeout=10)
    pg_proxy.up()
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    def held_connect(then: Callable[[], None]) -> tuple[object, float]:
        """Connect while blackholed, call ``then`` once the proxy holds it; the outcome."""
        outcome: list[object] = []

        def connect() -> None:
            try:
                with psycopg.connect(conninfo, connect_timeout=10) as conn:
                    outcome.append(conn.execute("SELECT 2").fetchone())
            except psycopg.OperationalError as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=connect)
        waiter.start()
        wait_until(lambda: pg_proxy.held == 1, 5, what="a held connection")
        time.sleep(0.3)
        assert outcome == [], "a blackholed connect got an answer"
        started = time.monotonic()
        then()
        waiter.join(15)
        return outcome[0], time.monotonic() - started

    pg_proxy.down("blackhole")
    result, took = held_connect(pg_proxy.up)
    assert result == (2,) and took < 2
    pg_proxy.down("blackhole")
    result, took = held_connect(lambda: pg_proxy.down("refuse"))
    assert isinstance(result, psycopg.OperationalError) and took < 2
    assert pg_proxy.held == 0
    pg_proxy.up()
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)
