"""The supervisor: build every part from the config, run them, stop them in order.

Start order matters for durability: the database schema is current and the
spool recovered before the SMTP listener accepts anything. Stop order is the
reverse: stop accepting (``421``), let in-flight sessions finish, flush the
spool writer, let the ingest workers finish their current message.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from daemon.config import Config
from daemon.ingest import IngestProcessor, IngestRunner
from daemon.logging import get_logger
from daemon.parsepool import ParserPool
from daemon.smtp import IntakeHandler, SmtpServer
from daemon.spool import Spool
from daemon.spool_writer import GroupCommitWriter
from storage.blobs import BlobStore
from storage.engine import Database

STOP_GRACE = 5.0  # SMTP sessions get this long to finish; the whole stop stays under 10 s


@dataclass
class Parts:
    db: Database
    spool: Spool
    parsers: ParserPool
    blobs: BlobStore
    processor: IngestProcessor


@contextmanager
def open_parts(cfg: Config, *, recover: bool) -> Iterator[Parts]:
    """Database (migrated), spool (recovered when asked), parser pool; closed on exit."""
    log = get_logger(component="daemon")
    sqlite_path = cfg.sqlite_path()
    if sqlite_path is not None:
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    db = Database(cfg.storage.database)
    parsers: ParserPool | None = None
    try:
        db.upgrade()
        spool = Spool(
            cfg.storage.spool,
            max_attempts=cfg.pipeline.max_attempts,
            max_interruptions=cfg.pipeline.max_interruptions,
        )
        if recover:
            report = spool.recover()
            log.info(
                "spool.recovered",
                recovered=len(report.recovered),
                quarantined=len(report.quarantined),
                removed_tmp=report.removed_tmp,
                removed_orphans=report.removed_orphans,
                pending=len(spool.pending()),
            )
            for entry_id in report.quarantined:
                log.error(
                    "message.quarantined",
                    spool_id=entry_id,
                    where="spool/bad",
                    reason="crashed the ingest worker too many times",
                )
        parsers = ParserPool(cfg.pipeline.parse_workers, cfg.pipeline.parse_timeout)
        blobs = BlobStore(cfg.storage.attachments)
        yield Parts(db, spool, parsers, blobs, IngestProcessor(spool, db, parsers, blobs))
    finally:
        if parsers is not None:
            parsers.close()
        db.dispose()


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
        # Parser processes start before READY: the first message after a restart
        # (often the one interrupted) is parsed at once, not after a cold start.
        await asyncio.to_thread(parts.parsers.start)
        runner = IngestRunner(parts.processor, cfg.pipeline)
        writer = GroupCommitWriter(parts.spool)
        handler = IntakeHandler(cfg.smtp, parts.spool, writer)
        server = SmtpServer(cfg.smtp, handler)
        runner.start()
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
                runner.stop(5)
                writer.stop()
                return 1
            log.info(
                "daemon.ready",
                smtp=f"{host}:{port}",
                database=parts.db.backend,
                spool=cfg.storage.spool,
                config=cfg.source,
            )
            while not stop.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                if not runner.alive():
                    log.error("daemon.failed", error="an ingest thread died; stopping")
                    exit_code = 1
                    break
            log.info("daemon.stopping")
            await server.stop(STOP_GRACE)
            await asyncio.to_thread(writer.stop)
            await asyncio.to_thread(runner.stop, 3.0)
    log.info(
        "daemon.stopped",
        exit_code=exit_code,
        accepted=handler.stats.accepted,
        processed=runner.processed,
    )
    return exit_code
