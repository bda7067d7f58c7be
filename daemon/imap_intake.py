"""The IMAP role: one FolderWorker thread for every configured account and folder."""

from __future__ import annotations

import threading
import time

from daemon.config import ImapAccount
from daemon.imap import FolderWorker, instance_id
from daemon.spool import Spool
from storage.engine import Database


class ImapIntake:
    """Starts one FolderWorker thread per configured account and folder."""

    def __init__(
        self,
        accounts: tuple[ImapAccount, ...],
        *,
        spool: Spool,
        db: Database,
        max_size: int,
        holder: str = "",
    ) -> None:
        self.stop_event = threading.Event()
        # The instance's name (``daemon.instance``), so a restart takes its folders back.
        self.holder = holder or instance_id()
        self.workers = [
            FolderWorker(
                a,
                folder,
                spool=spool,
                db=db,
                holder=self.holder,
                max_size=max_size,
                stop=self.stop_event,
            )
            for a in accounts
            for folder in a.folders
        ]
        self.threads = [
            threading.Thread(target=w.run, name=f"imap-{w.account.name}-{w.folder}", daemon=True)
            for w in self.workers
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
