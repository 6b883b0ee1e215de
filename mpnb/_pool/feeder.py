"""The input of an ``imap``: read, pickled in chunks and submitted by the caller's thread.

A sized input is read whole at the call (an item that cannot be sent raises there);
any other iterator lazily, by the thread that takes the results, keeping
``IMAP_WINDOW_PER_WORKER`` chunks per worker in flight, so an endless generator works
and a slow one does not hold the pool; ``Pool.close()`` reads the rest. An item it
cannot send, or an error of the iterator itself, becomes the result at the place of the
chunk it spoiled, as in the standard library.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import _routing
from .._pickle import PICKLING_ERRORS
from .protocol import Task
from .results import IMapIterator
from .tasks import FuncRef, TaskMaker, chunked
from .telemetry import func_name

__all__ = ["Feeder", "IMAP_WINDOW_PER_WORKER"]

# Chunks of a lazily read ``imap`` input kept in flight, per worker.
IMAP_WINDOW_PER_WORKER = 4


class Feeder:
    """Reads one ``imap`` input for its iterator ``it`` (a ``results.Feed``)."""

    def __init__(
        self,
        tasks: TaskMaker,
        processes: int,
        it: IMapIterator,
        func: Callable[..., Any],
        func_ref: FuncRef,
        mode: int,
        iterable: Iterable[Any],
        chunksize: int,
    ) -> None:
        self.tasks, self.it = tasks, it
        self.name = func_name(func)
        self.func_ref, self.mode, self.chunksize = func_ref, mode, chunksize
        self.route = _routing.capture()
        self.source: Iterator[Any] | None = iter(iterable)
        self.submitted = 0
        self.window = IMAP_WINDOW_PER_WORKER * processes * chunksize
        self._lock = threading.Lock()

    def submit_all(self, items: list[Any]) -> None:
        """Submit a sized input now, whole."""
        self.source = None
        tasks = [self._task(chunk, start) for start, chunk in chunked(items, self.chunksize)]
        if tasks:
            self.tasks.core.submit(self.it, tasks)
        self.it.set_length(len(items))

    def _task(self, chunk: list[Any], start: int) -> Task:
        """One chunk of this ``imap``, pickled (errors keep going: the iterator's way)."""
        return self.tasks.chunk(
            self.it,
            self.func_ref,
            self.mode,
            self.name,
            chunk,
            start,
            False,
            self.route,
            "iterable",
        )

    def wants_more(self) -> bool:
        return self.source is not None and self.submitted - self.it.position < self.window

    def stop(self) -> None:
        self.source = None

    def top_up(self, everything: bool = False) -> None:
        if not self._lock.acquire(blocking=False):
            return
        try:
            while self.source is not None and (everything or self.wants_more()):
                if not self._feed_one():
                    break
        finally:
            self._lock.release()

    def _feed_one(self) -> bool:
        chunk: list[Any] = []
        error: BaseException | None = None
        try:
            for _ in range(self.chunksize):
                chunk.append(next(self.source))  # type: ignore[arg-type]
        except StopIteration:
            pass
        except Exception as exc:
            # As in the standard library: the chunk it interrupted is dropped, and the
            # error takes that chunk's place.
            error, chunk = exc, []
        start = self.submitted
        if chunk:
            try:
                task = self._task(chunk, start)
            except PICKLING_ERRORS as exc:
                error, chunk = exc, []
            else:
                self.tasks.core.submit(self.it, [task], internal=True)
                self.submitted += len(chunk)
        if error is None and len(chunk) == self.chunksize:
            return True
        self.source = None
        if error is not None:
            self.it.input_failed(self.submitted, error)
        else:
            self.it.set_length(self.submitted)
        return False
