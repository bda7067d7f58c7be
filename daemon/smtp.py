"""The SMTP receiver: accept mail for our addresses, make it durable, then answer.

Receivers hold no business logic: they check the envelope, hand the raw
bytes to the spool and answer. ``250`` is sent only after the spool flush
returned; every internal failure answers ``451 4.3.0`` so the sender retries
(aiosmtpd's default would be a permanent ``500`` that bounces the customer and
leaks internals).
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session

from daemon.config import SmtpConfig
from daemon.errors import SpoolFullError
from daemon.logging import get_logger
from daemon.spool import Spool
from daemon.spool_writer import GroupCommitWriter


class Reply:
    """The replies Buzón gives, in one place (RFC 5321 / RFC 3463 codes)."""

    OK_SENDER = "250 2.1.0 Sender OK"
    OK_RCPT = "250 2.1.5 Recipient OK"
    NO_SUCH_USER = "550 5.1.1 <{}>: no such recipient here"
    TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
    NO_STORAGE = "452 4.3.1 Insufficient system storage; try again later"
    TEMP_FAILURE = "451 4.3.0 Temporary local problem; try again later"
    SHUTTING_DOWN = "421 4.3.2 Service shutting down; try again later"
    TIMEOUT = "421 4.4.2 {} Error: timeout exceeded"
    QUEUED = "250 2.0.0 OK queued as {}"


# aiosmtpd refuses an oversize message itself, with no handler hook: at MAIL FROM when the
# client declares SIZE=, or after the data. IntakeSMTP counts those replies on their way out.
PROTOCOL_REFUSALS = ("552",)
# The path nearly every MAIL FROM and RCPT TO carries: <local@domain>, both dot-atoms,
# then nothing or a space and parameters. aiosmtpd reads each address with the email
# package's RFC 5322 header parser and defines a class per call: ~35 µs twice a message.
# For these paths the answer is the text between the brackets; any other (quotes,
# comments, literals, UTF-8, the null path) goes to aiosmtpd's parser as before, and so
# does one holding "=?", which that parser decodes as an RFC 2047 word (RFC 5321 never
# would; kept as it was, not changed in passing).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"<(?!.*=\?)({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+(?=[^\s(])|$)"
)


def recipient_accepted(address: str, cfg: SmtpConfig) -> bool:
    """True for a configured exact address, its ``+detail`` form, or any address at a
    configured domain. Replies to our mail go to ``support+b-42.token@``: the Reply-To that
    carries the ticket's reply token must never bounce."""
    addr = address.strip().lower()
    if addr.count("@") != 1:
        return False
    local, domain = addr.rsplit("@", 1)
    if not local or not domain:
        return False
    base = f"{local.split('+', 1)[0]}@{domain}"
    return addr in cfg.addresses or base in cfg.addresses or domain.rstrip(".") in cfg.domains


@dataclass
class IntakeStats:
    accepted: int = 0
    refused: int = 0
    failed: int = 0


class IntakeHandler:
    """aiosmtpd hooks; each returns the reply for its command.

    ``on_reply`` hears the code of every final reply to a transaction: a refused MAIL or
    RCPT, and the answer to the end of DATA (the metrics count what clients were told).
    """

    def __init__(
        self,
        cfg: SmtpConfig,
        spool: Spool,
        writer: GroupCommitWriter,
        *,
        on_reply: Callable[[int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.writer = writer
        self.on_reply = on_reply
        self.stats = IntakeStats()
        self.accepting = True
        self.log = get_logger(component="smtp")
        self._room: tuple[float, bool] = (0.0, True)

    def has_room(self) -> bool:
        """The spool's free-space verdict, refreshed at most every 0.5 s.

        statvfs on the local spool filesystem takes microseconds, so it runs on
        the loop; a thread hop per MAIL FROM cost more than the check itself.
        """
        checked_at, ok = self._room
        now = time.monotonic()
        if now - checked_at > 0.5:
            ok = self.spool.has_room_for(self.cfg.max_message_size)
            self._room = (now, ok)
        return ok

    def _final(self, reply: str) -> str:
        """``reply``, after telling ``on_reply`` its code."""
        if self.on_reply is not None:
            self.on_reply(int(reply[:3]))
        return reply

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if not self.accepting:
            return self._final(Reply.SHUTTING_DOWN)
        if not self.has_room():
            self.stats.refused += 1
            self.log.warning("smtp.refused", reason="spool disk nearly full", code=452)
            return self._final(Reply.NO_STORAGE)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return Reply.OK_SENDER

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not recipient_accepted(address, self.cfg):
            self.log.info("smtp.rcpt_refused", rcpt=address, peer=_peer(session), code=550)
            return self._final(
                Reply.NO_SUCH_USER.format(address.replace("\r", "").replace("\n", ""))
            )
        if len(envelope.rcpt_tos) >= self.cfg.max_recipients:
            return self._final(Reply.TOO_MANY_RCPTS)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return Reply.OK_RCPT

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        meta = {
            "source": "smtp",
            "received_at": datetime.now(UTC).isoformat(),
            "envelope": {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "mail_options": list(envelope.mail_options),
                "peer": _peer(session),
                "helo": session.host_name,
                "tls": session.ssl is not None,
            },
        }
        started = time.monotonic()
        try:
            entry = await self.writer.put(raw, meta)
        except SpoolFullError as exc:
            self.stats.refused += 1
            self.log.warning("smtp.refused", reason=str(exc), code=452, size=len(raw))
            return self._final(Reply.NO_STORAGE)
        except Exception as exc:
            self.stats.failed += 1
            self.log.error("smtp.spool_failed", error=repr(exc), code=451, size=len(raw))
            return self._final(Reply.TEMP_FAILURE)
        self.stats.accepted += 1
        self.log.info(
            "smtp.accepted",
            spool_id=entry.id,
            size=len(raw),
            peer=_peer(session),
            rcpt_count=len(envelope.rcpt_tos),
            spool_ms=round((time.monotonic() - started) * 1000, 2),
        )
        return self._final(Reply.QUEUED.format(entry.id))

    async def handle_exception(self, error: Exception) -> str:
        self.stats.failed += 1
        self.log.error("smtp.error", error=repr(error), code=451)
        return self._final(Reply.TEMP_FAILURE)


def _peer(session: Session) -> str:
    peer: Any = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class IntakeSMTP(SMTP):
    """aiosmtpd's protocol with limits fit for real mail."""

    def __init__(
        self,
        handler: IntakeHandler,
        cfg: SmtpConfig,
        on_close: Callable[[IntakeSMTP], None] = lambda _: None,
        **kwargs: Any,
    ) -> None:
        self._on_close = on_close
        # The class attribute sizes the stream reader; it must be set before __init__.
        self.line_length_limit = cfg.max_line_length
        super().__init__(
            handler,
            data_size_limit=cfg.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=cfg.hostname,
            ident="Buzón ESMTP",
            timeout=cfg.timeout,
            **kwargs,
        )

    def _timeout_cb(self) -> None:
        """``[smtp] timeout`` passed without a complete command: say so before aiosmtpd
        closes the connection (RFC 5321 4.5.3.2; Postfix's wording), so the client logs
        a reason and not a dropped connection."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(Reply.TIMEOUT.format(self.hostname).encode() + b"\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_PATH.match(arg)
        if plain is None:
            try:
                return super()._getaddr(arg)
            except Exception:  # CPython's parser crashes on some text
                # ("<" IndexError, "<a@[" AttributeError): the client's malformed path,
                # answered 553 like any other, not a 451 and an error in the admin's log.
                return None, None
        address = plain.group(1)
        if self.local_part_limit and address.index("@") > self.local_part_limit:
            return None, None
        return address, arg[plain.end() :]

    def connection_lost(self, error: Exception | None) -> None:
        self._on_close(self)
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        handler = self.event_handler
        if isinstance(handler, IntakeHandler) and handler.on_reply is not None:
            code = status[:3].decode() if isinstance(status, bytes) else status[:3]
            if code in PROTOCOL_REFUSALS:
                handler.on_reply(int(code))
        await super().push(status)


class SmtpServer:
    """Owns the listening socket and the live sessions, for a graceful stop."""

    def __init__(self, cfg: SmtpConfig, handler: IntakeHandler) -> None:
        self.cfg = cfg
        self.handler = handler
        self.sessions: set[IntakeSMTP] = set()
        self._server: asyncio.AbstractServer | None = None
        self.log = get_logger(component="smtp")

    def _factory(self) -> IntakeSMTP:
        proto = IntakeSMTP(self.handler, self.cfg, on_close=self.sessions.discard)
        self.sessions.add(proto)
        return proto

    async def start(self, sock: socket.socket | None = None) -> tuple[str, int]:
        """Listen on ``[smtp] listen``, or on ``sock`` when systemd passed one (buzon.socket)."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(self._factory, sock=sock)
        else:
            self._server = await loop.create_server(
                self._factory, host=self.cfg.host, port=self.cfg.port, reuse_address=True
            )
        name = self._server.sockets[0].getsockname()
        self.log.info(
            "smtp.listening",
            host=name[0],
            port=name[1],
            source="systemd" if sock is not None else "config",
        )
        return name[0], name[1]

    async def stop(self, grace: float) -> None:
        """Stop accepting; give sessions ``grace`` seconds; then 421 and close the rest."""
        self.handler.accepting = False
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        while self.sessions and time.monotonic() < deadline:
            if all(_idle(p) for p in self.sessions):
                break
            await asyncio.sleep(0.05)
        for proto in list(self.sessions):
            transport = proto.transport
            if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
                transport.write(Reply.SHUTTING_DOWN.encode() + b"\r\n")
                transport.close()
        if self._server is not None:
            await self._server.wait_closed()
        self.log.info("smtp.stopped")


def _idle(proto: IntakeSMTP) -> bool:
    """True when a session is between transactions (no MAIL FROM pending)."""
    envelope = proto.envelope
    return envelope is None or envelope.mail_from is None
