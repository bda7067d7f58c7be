"""IMAP batches between the fetch and the disk: how UIDs are cut into batches, and the
writer thread that stores fetched batches in order, grouping what queued up.

A batch's checkpoint may move only once it and every batch before it are durable, so
the writer stores in submission order and, after one failure, stores nothing more.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Batch:
    """One batch on its way from the server to a checkpoint."""

    uidvalidity: int
    uids: list[int]
    wanted: list[int] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    items: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    spooled: list[str] = field(default_factory=list)
    lag: float = 0.0
    bytes: int = 0


def cut(sizes: dict[int, int], count: int, budget: int, max_size: int) -> Iterator[list[int]]:
    """Split UIDs (in order) into batches of at most ``count`` UIDs and ``budget`` bytes.

    A message over ``max_size`` is never fetched, so it costs nothing; one that fits
    the size limit but not the budget still makes a batch of its own.
    """
    batch: list[int] = []
    used = 0
    for uid, size in sizes.items():
        cost = size if size <= max_size else 0
        if batch and (len(batch) >= count or used + cost > budget):
            yield batch
            batch, used = [], 0
        batch.append(uid)
        used += cost
    if batch:
        yield batch


class BatchWriter:
    """A thread that stores fetched batches in order; what queued up is stored together.

    Storing costs a file flush and a database commit whatever its size, so when
    the fetch runs ahead, the batches waiting are stored as one (group commit).
    After a failure, nothing later is stored: a checkpoint must never pass a
    batch that is not durable.
    """

    def __init__(self, store: Callable[[list[Batch]], None]) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[tuple[Batch, Future[None]] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="imap-store", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> Future[None]:
        done: Future[None] = Future()
        self._queue.put((batch, done))
        return done

    def close(self) -> None:
        """Store what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                group.append(item)
            self._store_group(group)

    def _store_group(self, group: list[tuple[Batch, Future[None]]]) -> None:
        if self._error is None:
            try:
                self._store([batch for batch, _ in group])
            except BaseException as exc:
                self._error = exc
        for _, done in group:
            if self._error is None:
                done.set_result(None)
            else:
                done.set_exception(self._error)
