"""The parts every command shares: database (migrated), spool, parser pool, processor.

Opened and closed together so that a one-shot command and the daemon build
them the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from daemon.config import Config
from daemon.ingest import IngestProcessor
from daemon.logging import get_logger
from daemon.outbound import Outbound
from daemon.parsepool import ParserPool
from daemon.spool import Spool
from daemon.triager import LazyTriager
from storage.blobs import BlobStore
from storage.engine import Database


@dataclass
class Parts:
    db: Database
    spool: Spool
    parsers: ParserPool
    blobs: BlobStore
    processor: IngestProcessor
    triager: LazyTriager
    outbound: Outbound


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
        triager = LazyTriager(cfg)
        outbound = Outbound(cfg.desk.outbound)
        processor = IngestProcessor(
            spool,
            db,
            parsers,
            blobs,
            triager=triager,
            matching=cfg.matching,
            desk=cfg.desk,
            outbound=outbound,
        )
        yield Parts(db, spool, parsers, blobs, processor, triager, outbound)
    finally:
        if parsers is not None:
            parsers.close()
        db.dispose()
