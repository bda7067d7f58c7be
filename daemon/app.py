"""The supervisor: build every part from the config, run them, stop them in order.

Start order matters for durability: the database schema is current and the
spool recovered before the SMTP listener accepts anything or an IMAP worker
fetches. Stop order is the reverse: stop fetching, stop accepting (``421``),
let in-flight sessions finish, flush the spool writer, let the ingest process
finish its current message.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from daemon.config import Config
from daemon.imap import ImapIntake
from daemon.ingest_process import IngestProcess
from daemon.logging import get_logger
from daemon.outbox import OutboxSender
from daemon.parts import open_parts
from daemon.scheduler import Scheduler
from daemon.smtp import IntakeHandler, SmtpServer
from daemon.spool_writer import GroupCommitWriter
from daemon.voicedir import VoicemailFolders

STOP_GRACE = 5.0  # SMTP sessions get this long to finish; the whole stop stays under 10 s


@contextmanager
def signal_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    """Route SIGTERM and SIGINT to ``stop`` while running; restore the old handlers after."""
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def serve(cfg: Config) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 when a part died."""
    log = get_logger(component="daemon")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    exit_code = 0
    with open_parts(cfg, recover=True) as parts:
        ingest = IngestProcess(cfg)
        writer = GroupCommitWriter(parts.spool)
        parts.spool.on_new(ingest.notify)
        handler = IntakeHandler(cfg.smtp, parts.spool, writer)
        server = SmtpServer(cfg.smtp, handler)
        # Ingest starts (and loads its parsers) before READY: the first message after
        # a restart, often the one a crash interrupted, is processed at once.
        if not await asyncio.to_thread(ingest.start):
            log.error(
                "daemon.failed",
                error=f"the ingest process did not start (exit code {ingest.exitcode})",
                fix="see the ingest.crashed line before this one",
            )
            await asyncio.to_thread(ingest.stop)
            return 1
        writer.start(loop)
        with signal_handlers(loop, stop):
            try:
                host, port = await server.start()
            except OSError as exc:
                log.error(
                    "daemon.failed",
                    error=f"cannot listen on {cfg.smtp.listen}: {exc}",
                    fix="choose a free port in [smtp] listen or stop the other process",
                )
                await asyncio.to_thread(ingest.stop)
                writer.stop()
                return 1
            imap = ImapIntake(
                cfg.imap, spool=parts.spool, db=parts.db, max_size=cfg.smtp.max_message_size
            )
            imap.start()
            voicemail_dirs = VoicemailFolders(
                cfg.voicemail_dir, parts.spool, hostname=cfg.smtp.hostname
            )
            voicemail_dirs.start()
            # Deadlines and mail run in this process: the scheduler's passes are short
            # database transactions in a thread, the sender is asyncio (aiosmtplib).
            sender = OutboxSender(parts.db, cfg.desk.outbound)
            scheduler = Scheduler(parts.db, cfg.desk.sla, parts.outbound)
            background = [
                asyncio.create_task(sender.run(stop), name="outbox"),
                asyncio.create_task(scheduler.run(stop, on_mail=sender.wake), name="scheduler"),
            ]
            log.info(
                "daemon.ready",
                smtp=f"{host}:{port}",
                database=parts.db.backend,
                spool=cfg.storage.spool,
                config=cfg.source,
                imap_folders=len(imap.workers),
                voicemail_dirs=len(voicemail_dirs.watchers),
            )
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                for task in background:
                    if task.done() and not stop.is_set():
                        log.error(
                            "daemon.failed",
                            error=f"the {task.get_name()} task ended: {task.exception()!r}",
                            fix="see the log lines before this one; restart the daemon",
                        )
                        exit_code = 1
                        stop.set()
                if not ingest.alive():
                    log.error(
                        "daemon.failed",
                        error=f"the ingest process died (exit code {ingest.exitcode}); stopping",
                        fix="see the log lines before this one; the spool keeps every message",
                    )
                    exit_code = 1
                    break
            log.info("daemon.stopping")
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            await asyncio.to_thread(imap.stop)
            await asyncio.to_thread(voicemail_dirs.stop)
            await server.stop(STOP_GRACE)
            await asyncio.to_thread(writer.stop)
            await asyncio.to_thread(ingest.stop)
    log.info("daemon.stopped", exit_code=exit_code, accepted=handler.stats.accepted)
    return exit_code
