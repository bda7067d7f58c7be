"""The IMAP bench's mailbox: the private Dovecot's account, the seeded messages, and
INBOX filled with them (straight into its Maildir, or by APPEND) and warmed up.

The Dovecot itself is ``tests/support/dovecot.py``'s, started by ``bench/imap_fetch.py``.
"""

from __future__ import annotations

import base64
import os
import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imap_fetch.py puts tests/ on sys.path for the running bench
    from support.dovecot import Dovecot

USER, PASSWORD = "support", "secret"  # the private test Dovecot's account
PASSWORD_ENV = "BUZON_BENCH_IMAP_PASSWORD"  # noqa: S105 — a variable name
TEXT = (
    "hola buenos días tengo un problema con mi pedido la factura no llega desde el martes "
    "hello my order has not arrived yet could you please check the tracking number again "
    "gracias saludos thanks regards printer invoice refund password reset account locked "
    "delivery address warranty ticket señora atención urgente"
)
WORDS = tuple(TEXT.split(" "))


def make_message(rng: random.Random, seq: int, size: int, extra_headers: str = "") -> bytes:
    """One LF-terminated message of about ``size`` bytes; a third carry a base64 attachment."""
    customer = rng.randrange(500)
    head = (
        f"From: Customer {customer} <c{customer}@example.org>\n"
        "To: support@desk.example.com\n"
        f"Subject: bench {seq} {' '.join(rng.choices(WORDS, k=4))}\n"
        "Date: Sun, 22 Nov 2026 10:00:00 +0000\n"
        f"Message-ID: <imap-bench.{seq}.{rng.getrandbits(32):08x}@example.org>\n"
        f"X-Bench-Seq: {seq}\n{extra_headers}MIME-Version: 1.0\n"
    )
    attach = rng.random() < 0.33
    budget = size - len(head) - 200
    text_budget = max(budget // 3 if attach else budget, 100)
    lines: list[str] = []
    length = 0
    while length < text_budget:
        line = " ".join(rng.choices(WORDS, k=10))
        lines.append(line)
        length += len(line) + 1
    text = "\n".join(lines) + "\n"
    if not attach:
        body = head + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        return (body + text).encode()
    blob = rng.randbytes(max(0, (budget - text_budget) * 3 // 4))
    b64 = base64.encodebytes(blob).decode()
    body = (
        head
        + 'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\n'
        + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        + text
        + '--b1\nContent-Type: application/pdf; name="doc.pdf"\n'
        + "Content-Transfer-Encoding: base64\n\n"
        + b64
        + "--b1--\n"
    )
    return body.encode()


def make_corpus(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [make_message(rng, i, rng.randint(2 * 1024, 20 * 1024)) for i in range(n)]


def fill_maildir(server: Dovecot, raws: list[bytes]) -> None:
    """Write the messages into INBOX's Maildir as Dovecot's mail user (it indexes on SELECT)."""
    mail = server.root / "mail"
    st = mail.stat()  # tests/support/dovecot.py chowns mail/ to the mail user
    box = mail / USER
    for d in (box, box / "cur", box / "new", box / "tmp"):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chown(d, st.st_uid, st.st_gid)
    stamp = int(time.time())
    for i, raw in enumerate(raws):
        # Dovecot's own naming: <time>.M<usecs>P<pid>.<host>,S=<size>,W=<CRLF size>:2,<flags>
        name = f"{stamp}.M{i}P{os.getpid()}.bench,S={len(raw)},W={len(raw) + raw.count(10)}:2,"
        path = box / "cur" / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, raw)
        finally:
            os.close(fd)
        os.chown(path, st.st_uid, st.st_gid)


def fill_append(server: Dovecot, raws: list[bytes]) -> None:
    with server.session() as c:
        for raw in raws:
            c.append("INBOX", raw.replace(b"\n", b"\r\n"))


def warm_up(server: Dovecot, expected: int) -> list[int]:
    """SELECT (Dovecot syncs and indexes the Maildir) and read every size once; the UIDs."""
    with server.session(timeout=120) as c:
        c.select_folder("INBOX", readonly=True)
        uids = sorted(int(u) for u in c.search("ALL"))
        for start in range(0, len(uids), 500):
            c.fetch(uids[start : start + 500], ["RFC822.SIZE", "INTERNALDATE"])
    if len(uids) != expected:
        raise RuntimeError(f"Dovecot sees {len(uids)} messages in INBOX, {expected} written")
    return uids
