"""Composing outbound mail: one mail's cost, and its RFC 2047 words against the stdlib's.

The outbox sender composes every queued mail (``daemon.outmail.compose``) at its first
claim, in the daemon's main process: an acknowledgement a message. This script measures,
in one process pinned to one CPU, over ``--mails`` mails of every kind in es, bg and en
with customer names and subjects of the kinds real mail carries (accented, Cyrillic,
plain ASCII, long):

* **compose**: µs per mail, end to end (templates, headers, body, bytes, read-back), and
  the **baseline** the same compose with the stdlib's encoded words (below) in its place;
* **words**: the RFC 2047 encoded words of every header those mails encode (subjects
  after their template, names), written by ``mailwire.encoded_words`` against the
  **baseline** ``email.header.Header(text, "utf-8", header_name=name).encode()`` on the
  same texts, with a check that every one decodes to the same text from both.

Printed: µs per mail, µs per header for both encoders and their ratio, the share of a
mail's compose the stdlib's encoder would take. The last line is one JSON object.

Run from the repository root::

    .venv/bin/python bench/compose.py
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.header import Header, decode_header, make_header

from benchlib import pin_cpu
from daemon import mailwire
from daemon.outmail import KINDS, Outgoing, Sender, Templates, compose

NAMES = ["Ana Pérez", "José Ñúñez Gómez", "Мария Иванова", "John Smith", "Łukasz Wróbel"]
SUBJECTS = [
    "Mi web no carga desde esta mañana",
    "Проблем с фактурата за ноември",  # noqa: RUF001  (Cyrillic is the point)
    "Invoice question",
    "No podemos enviar correos desde Outlook: error 0x800CCC0E en todos los equipos",
    "Сървърът не отговаря, клиентите не могат да влязат в профилите си от сутринта",
]
VALUES = {
    "ack": {"respond_by": "09/12/2026 10:00 (Europe/Madrid)", "calendar_note": ""},
    "followup": {"followup_number": "1", "waiting_since": "01/12/2026", "close_on": "15/12/2026"},
    "last_notice": {"close_on": "15/12/2026", "reopen_within": "7 días"},
    "reply": {"body": "Hola,\nya está resuelto.\nUn saludo", "agent": "Marta"},
    "breach": {"count": "2", "team": "soporte", "breaches": "B-1 respond_by 10:00"},
}


def mails(n: int, rnd: random.Random) -> list[Outgoing]:
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        out.append(
            Outgoing(
                kind,
                to=f"cliente{i}@example.org",
                to_name=rnd.choice(NAMES),
                language=rnd.choice(["es", "bg", "en"]),
                ref=f"B-{1000 + i}",
                subject=rnd.choice(SUBJECTS),
                in_reply_to=f"m{i}@mail.example.org",
                references=(f"m{i}@mail.example.org",),
                values=VALUES[kind],
            )
        )
    return out


def _stdlib(text: str, taken: int) -> str:
    """The words ``email.header`` writes for a header whose name and ": " take ``taken``."""
    return Header(text, "utf-8", header_name="x" * (taken - 2)).encode(linesep="\n")


def median_us(fn: Callable[[], object], per: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.process_time()
        fn()
        times.append((time.process_time() - started) / per * 1e6)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--mails", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--cpu", type=int, default=-1)
    args = p.parse_args()
    cpu = pin_cpu(args.cpu)
    rnd = random.Random(20261208)
    batch = mails(args.mails, rnd)
    sender = Sender("soporte@example.com", "Soporte Ñandú", "")
    templates, now = Templates.load(), datetime.now(UTC)

    def compose_all() -> None:
        for i, out in enumerate(batch):
            compose(out, sender=sender, message_id=f"b-{i}.x@example.com", templates=templates,
                    now=now)  # fmt: skip

    # The texts compose encodes (a subject after its template, names), as it calls for them.
    texts: list[tuple[str, int]] = []
    real = mailwire.encoded_words

    def recording(text: str, taken: int) -> str:
        texts.append((text, taken))
        return real(text, taken)

    mailwire.encoded_words = recording
    compose_all()
    mailwire.encoded_words = real
    ours = [real(t, taken) for t, taken in texts]
    stdlib = [_stdlib(t, taken) for t, taken in texts]
    decode = [str(make_header(decode_header(w))) for w in (*ours, *stdlib)]
    differ = sum(d != t for d, (t, _) in zip(decode, texts + texts, strict=True))
    compose_all()  # warm: templates, caches
    per_mail = median_us(compose_all, len(batch), args.rounds)
    mailwire.encoded_words = _stdlib  # the same compose, with the stdlib's words
    per_mail_stdlib = median_us(compose_all, len(batch), args.rounds)
    mailwire.encoded_words = real
    base = median_us(
        lambda: [_stdlib(t, taken) for t, taken in texts],
        len(texts), args.rounds,
    )  # fmt: skip
    buzon = median_us(lambda: [real(t, taken) for t, taken in texts], len(texts),
                      args.rounds)  # fmt: skip
    per_header = len(texts) / len(batch)
    print(f"{len(batch):,} mails ({per_header:.1f} encoded headers a mail), "
          f"median of {args.rounds}, CPU {cpu}")  # fmt: skip
    print(f"  compose, email.header's words {per_mail_stdlib:8.1f} µs a mail")
    print(f"  compose, buzon's words        {per_mail:8.1f} µs a mail   "
          f"ratio {per_mail_stdlib / per_mail:.2f}x")  # fmt: skip
    print(f"  words, email.header       {base:8.1f} µs a header")
    print(f"  words, buzon              {buzon:8.1f} µs a header   ratio {base / buzon:.1f}x")
    print(f"  headers that decode to other text: {differ}")
    print(json.dumps({"bench": "compose", "mails": len(batch), "compose_us": round(per_mail, 1),
                      "compose_stdlib_words_us": round(per_mail_stdlib, 1),
                      "words_baseline_us": round(base, 2), "words_buzon_us": round(buzon, 2),
                      "ratio": round(base / buzon, 2), "differ": differ}))  # fmt: skip
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
