"""The SMTP bench's load: the same messages to either server, from Postfix's
``smtp-source`` when installed or from aiosmtplib clients; what was accepted, how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from dataclasses import dataclass

HOST = "127.0.0.1"
HELO_NAME = "bench.buzon.invalid"
SENDER = "sender@example.org"
RECIPIENT = "rcpt@example.com"


@dataclass
class LoadResult:
    accepted: int
    failed: int
    seconds: float
    detail: str = ""

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


def run_smtp_source(
    exe: str, port: int, *, messages: int, clients: int, size: int, keep: bool, timeout: float
) -> LoadResult:
    argv = [exe, "-c", "-l", str(size), "-m", str(messages), "-s", str(clients)]
    argv += ["-t", RECIPIENT, "-f", SENDER, "-M", HELO_NAME]
    if keep:
        argv.append("-d")
    argv.append(f"{HOST}:{port}")
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        done = _last_counter(out)
        return LoadResult(done, messages - done, time.perf_counter() - started, "timed out")
    seconds = time.perf_counter() - started
    done = _last_counter(proc.stdout)
    # Without -A, smtp-source stops at the first non-2xx reply: rc 0 means all accepted.
    if proc.returncode == 0:
        return LoadResult(messages, 0, seconds)
    return LoadResult(done, messages - done, seconds, proc.stderr.strip()[-300:])


def _last_counter(out: str) -> int:
    numbers = [int(tok) for tok in out.replace("\r", "\n").split() if tok.isdigit()]
    return max(numbers, default=0)


def make_messages(messages: int, size: int) -> list[bytes]:
    """4 KiB-ish bodies like smtp-source's, each with a unique Message-ID."""
    line = b"X" * 78 + b"\r\n"
    body = (line * (size // len(line) + 1))[:size]
    out = []
    for i in range(messages):
        head = (
            f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\n"
            f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <bench.{i}@example.org>\r\nSubject: bench message {i}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


async def _aiosmtplib_load(port: int, raws: list[bytes], clients: int) -> tuple[int, int, str]:
    import aiosmtplib

    todo = iter(raws)
    accepted = failed = 0
    errors: list[str] = []

    async def client() -> None:
        nonlocal accepted, failed
        smtp = aiosmtplib.SMTP(hostname=HOST, port=port, timeout=60, local_hostname=HELO_NAME)
        await smtp.connect()
        try:
            for raw in todo:
                try:
                    await smtp.sendmail(SENDER, [RECIPIENT], raw)
                    accepted += 1
                except aiosmtplib.SMTPException as exc:
                    failed += 1
                    errors.append(repr(exc)[:200])
                await smtp.rset()
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException):
                await smtp.quit()

    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted, failed, "; ".join(errors[:3])


def run_aiosmtplib(port: int, raws: list[bytes], clients: int, timeout: float) -> LoadResult:
    started = time.perf_counter()
    try:
        accepted, failed, detail = asyncio.run(
            asyncio.wait_for(_aiosmtplib_load(port, raws, clients), timeout)
        )
    except TimeoutError:
        return LoadResult(0, len(raws), time.perf_counter() - started, "timed out")
    return LoadResult(accepted, failed, time.perf_counter() - started, detail)
