"""Group commit: many concurrent SMTP sessions share one spool flush.

Sessions call ``await writer.put(raw, meta)`` on the event loop; one writer
thread takes everything queued since its last flush, writes it with a single
durability barrier, and resolves each session's future. Under load the batch
grows by itself while the previous flush runs, so throughput rises with
concurrency instead of being capped by one fsync per message.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from daemon.spool import Spool, SpoolEntry

_Item = tuple[bytes, dict[str, Any], "asyncio.Future[SpoolEntry]"]


class GroupCommitWriter:
    def __init__(self, spool: Spool, *, max_batch: int = 128) -> None:
        self._spool = spool
        self._max_batch = max_batch
        self._queue: list[_Item] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    async def put(self, raw: bytes, meta: dict[str, Any]) -> SpoolEntry:
        """Return once ``raw`` is durable in the spool; raises what the write raised."""
        if self._loop is None or self._stopping:
            raise RuntimeError("spool writer is not running")
        fut: asyncio.Future[SpoolEntry] = self._loop.create_future()
        with self._cond:
            self._queue.append((raw, meta, fut))
            self._cond.notify()
        return await fut

    def stop(self, timeout: float = 10.0) -> None:
        """Flush what is queued, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue and self._stopping:
                    return
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            self._flush(batch)

    def _flush(self, batch: Sequence[_Item]) -> None:
        try:
            results = self._spool.put_many([(raw, meta) for raw, meta, _ in batch])
        except BaseException as exc:
            results = [exc] * len(batch)
        assert self._loop is not None
        for (_, _, fut), result in zip(batch, results, strict=True):
            self._loop.call_soon_threadsafe(_resolve, fut, result)


def _resolve(fut: asyncio.Future[SpoolEntry], result: SpoolEntry | BaseException) -> None:
    if fut.done():  # the session went away while we flushed
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)
