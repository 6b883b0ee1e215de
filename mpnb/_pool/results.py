"""What ``Pool`` returns, and the job of an executor's future: the engine's jobs.

``ApplyResult`` (``apply_async``), ``MapResult`` (``map_async``, ``starmap_async``) and
the iterators of ``imap``/``imap_unordered`` keep the standard library's methods
(``get``/``wait``/``ready``/``successful``; ``next(timeout)``) and implement
``protocol.Job``: the engine's thread ``deliver``s each task's results, ``fail``s what
could not run, then ``fire``s, which runs the callbacks and wakes the waiters.
``executor_jobs.FutureJob`` does the same for one ``concurrent.futures.Future``.

A wait is interruptible: a ``KeyboardInterrupt`` there interrupts the engine
(``PoolCore.interrupting``), which cancels every job submitted so far.

Adapted from CPython's ``Lib/multiprocessing/pool.py`` (the result classes' methods).
Changed: results are one-shot locks instead of ``threading.Event`` (cheaper to make);
a failed item of ``imap`` raises at its place and the iteration goes on.
"""

from __future__ import annotations

import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..errors import PoolTimeoutError
from .core import PoolCore
from .protocol import Task
from .telemetry import BarHook, Progress, report_callback_error, report_progress

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "MapResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "Owner",
    "Feed",
    "Callback",
]

Callback = Callable[[Any], object]

_NOTHING = object()


class Owner(Protocol):
    """What a result needs of its pool (``mpnb.pool.Pool``): the engine, if it takes new
    work, else it raises (the standard library's ``Pool._check_running``)."""

    def _check_running(self) -> PoolCore: ...


class Feed(Protocol):
    """What an ``imap`` iterator needs of the feeder reading a lazy input
    (``feeder.Feeder``)."""

    def top_up(self, everything: bool = False) -> None:
        """Read and submit the input up to a window ahead of the results taken."""
        ...

    def wants_more(self) -> bool:
        """Whether the window is not full yet."""
        ...

    def stop(self) -> None:
        """Read no more."""
        ...


class _Done:
    """A one-shot event on a bare lock: cheaper to make than ``threading.Event``, as
    interruptible to wait on."""

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            self._lock.release()
        return self._set


class ApplyResult:
    """The result of ``apply_async``; ``MapResult`` for the map family."""

    def __init__(
        self, pool: Owner, callback: Callback | None = None, error_callback: Callback | None = None
    ) -> None:
        core = pool._check_running()
        self.id = core.new_job_id()
        self._pool: Owner | None = pool  # kept alive until the result is in, as stdlib's
        self._core = core
        self._event = _Done()
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None
        self.settled = False

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        with self._core.interrupting():
            self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        self.wait(timeout)
        if not self.ready():
            raise PoolTimeoutError
        if self._success:
            return self._value
        raise self._value

    def __class_getitem__(cls, item: Any) -> types.GenericAlias:
        return types.GenericAlias(cls, item)

    # -- the ``protocol.Job`` interface: told by the engine (its thread) --

    def deliver(
        self, task: Task, values: list[Any], errors: list[tuple[int, BaseException]]
    ) -> bool:
        if errors:
            return self.fail(errors[0][1], task)
        self._success, self._value, self.settled = True, values[0], True
        return True

    def fail(self, exc: BaseException, task: Task | None) -> bool:
        if self.settled:
            return False
        self._success, self._value, self.settled = False, exc, True
        return True

    def fire(self) -> None:
        self._pool = None
        callback = self._callback if self._success else self._error_callback
        if callback is not None:
            try:
                callback(self._value)
            except Exception:
                report_callback_error(callback)
        self._event.set()


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """The result of ``map_async``/``starmap_async``: a list, or the first error."""

    def __init__(
        self,
        pool: Owner,
        length: int,
        callback: Callback | None = None,
        error_callback: Callback | None = None,
        on_progress: Progress | None = None,
    ) -> None:
        super().__init__(pool, callback, error_callback)
        self._value = [None] * length
        self._left = length
        self._on_progress = on_progress
        if length == 0:
            self._success = self.settled = True
            self._pool = None
            self._event.set()

    def deliver(
        self, task: Task, values: list[Any], errors: list[tuple[int, BaseException]]
    ) -> bool:
        if errors:
            return self.fail(errors[0][1], task)
        self._value[task.start : task.start + len(values)] = values
        self._left -= len(values)
        if self._on_progress is not None:
            report_progress(self._on_progress, len(values))
        if self._left <= 0:
            self._success = self.settled = True
            return True
        return False


class IMapIterator:
    """The iterator ``imap`` returns: results in order, each as soon as it is there.

    An item whose task failed raises its exception at its turn; iteration can go on.
    """

    def __init__(self, pool: Owner, on_progress: Progress | None = None) -> None:
        core = pool._check_running()
        self.id = core.new_job_id()
        self._pool: Owner | None = pool  # kept alive until every result is in
        self._core = core
        self._cond = threading.Condition(threading.Lock())
        self._items: dict[int, tuple[bool, Any]] = {}
        self._index = 0  # next position to yield
        self._received = 0
        self._length: int | None = None
        self._error: BaseException | None = None  # ends the iteration (cancelled...)
        self._over = False
        self.settled = False
        self._feeder: Feed | None = None
        self._on_progress = on_progress

    def __iter__(self) -> Iterator[Any]:
        return self

    def next(self, timeout: float | None = None) -> Any:
        with self._core.interrupting():
            return self._next(timeout)

    __next__ = next

    def __class_getitem__(cls, item: Any) -> types.GenericAlias:
        return types.GenericAlias(cls, item)

    def _next(self, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            feeder = self._feeder
            if feeder is not None:
                feeder.top_up()
            with self._cond:
                while True:
                    got = self._take()
                    if got is not _NOTHING:
                        break
                    if feeder is not None and feeder.wants_more():
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise PoolTimeoutError
                    self._cond.wait(remaining)
            if got is _NOTHING:
                continue
            ok, value = got
            if ok:
                return value
            raise value

    def _take(self) -> Any:
        """The next ``(ok, value)``, or ``_NOTHING``; raises ``StopIteration`` at the end."""
        item = self._items.pop(self._index, None)
        if item is not None:
            self._index += 1
            return item
        return self._end()

    def _end(self) -> Any:
        if self._over or (self._length is not None and self._index >= self._length):
            self._over = True
            raise StopIteration
        if self._error is not None:
            self._over = True
            return (False, self._error)
        return _NOTHING

    # -- told by the pool and its feeder (the caller's threads) --

    def attach(self, feed: Feed) -> None:
        """Read the input through ``feed`` (a lazy one) as results are taken."""
        self._feeder = feed

    @property
    def position(self) -> int:
        """How many results were taken so far."""
        return self._index

    def set_length(self, length: int) -> None:
        """The input had ``length`` items (known at the call, or once it ran out)."""
        if isinstance(self._on_progress, BarHook):
            self._on_progress.set_total(length)
        with self._cond:
            self._length = length
            finished = not self.settled and self._received >= length
            if finished:
                self.settled = True
            self._cond.notify_all()
        if finished:
            self._pool = None
            self._core.finish_job(self)

    def input_failed(self, index: int, error: BaseException) -> None:
        """Reading the input raised ``error`` after ``index`` items: it takes the place
        of item ``index``, the last."""
        with self._cond:
            self._store(index, (False, error))
            self._received += 1
        self.set_length(index + 1)

    def _store(self, index: int, item: tuple[bool, Any]) -> None:
        self._items[index] = item

    # -- the ``protocol.Job`` interface: told by the engine (its thread) --

    def deliver(
        self, task: Task, values: list[Any], errors: list[tuple[int, BaseException]]
    ) -> bool:
        failed = dict(errors)
        last = errors[-1][1] if errors else None
        with self._cond:
            for offset in range(task.count):
                item: tuple[bool, Any]
                if offset in failed:
                    item = (False, failed[offset])
                elif offset < len(values):
                    item = (True, values[offset])
                else:  # not run: the chunk failed as a whole
                    item = (False, last)
                self._store(task.start + offset, item)
            self._received += task.count
            finished = self._length is not None and self._received >= self._length
            if finished:
                self.settled = True
            self._cond.notify_all()
        if self._on_progress is not None:
            report_progress(self._on_progress, task.count)
        return finished

    def fail(self, exc: BaseException, task: Task | None) -> bool:
        if task is not None:
            return self.deliver(task, [], [(offset, exc) for offset in range(task.count)])
        with self._cond:
            if self.settled:
                return False
            self._error = exc
            self.settled = True
            self._cond.notify_all()
        if self._feeder is not None:
            self._feeder.stop()
        return True

    def fire(self) -> None:
        self._pool = None
        with self._cond:
            self._cond.notify_all()


class IMapUnorderedIterator(IMapIterator):
    """The iterator ``imap_unordered`` returns: results as they come."""

    def __init__(self, pool: Owner, on_progress: Progress | None = None) -> None:
        super().__init__(pool, on_progress)
        self._queue: deque[tuple[bool, Any]] = deque()

    def _store(self, index: int, item: tuple[bool, Any]) -> None:
        self._queue.append(item)

    def _take(self) -> Any:
        if self._queue:
            self._index += 1
            return self._queue.popleft()
        return self._end()
