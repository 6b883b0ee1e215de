"""Process pools: the standard library's ``Pool`` API on a core that watches its workers.

``Pool`` keeps ``multiprocessing.pool.Pool``'s API: ``map``, ``imap``, ``starmap``,
``apply`` and their ``_async``/unordered forms, callbacks, ``initializer``,
``maxtasksperchild``, ``close``/``join``/``terminate``, the context manager, results
with ``get``/``wait``/``ready``/``successful`` and ``multiprocessing.TimeoutError``.
What differs is what the standard library gets wrong in a notebook:

- a worker that dies fails the task it ran with ``WorkerCrashedError`` (which worker,
  exit code or signal, which task and item) and is replaced; nothing hangs;
- an initializer that raises makes ``InitializerError``, not endless respawns;
- a result or exception that cannot be pickled fails its task, naming the type;
- an exception raised in a task comes back with its own type and the worker's
  traceback (``errors.RemoteTraceback``) as its cause; a failing map names the item;
- a ``KeyboardInterrupt`` (the kernel's interrupt) while waiting on the pool cancels
  the queued tasks and stops the running ones, so the pool is free for the next cell.

A ``KeyboardInterrupt`` cancels every job of the pool submitted before it, from any
thread: in a notebook, the interrupt button means "stop what runs".

Tasks are pickled in the caller's thread, so an argument that cannot be sent raises
``SerializationError`` at the call, naming it (``args[0]``, ``iterable[3]``), and nothing
is half-submitted. A function is pickled once per call and sent once per worker; chunks
carry only data. The machinery is in ``_pool_core`` (parent) and ``_worker`` (child).

Adapted from CPython's ``Lib/multiprocessing/pool.py``: the public signatures, argument
checks and their messages, the default chunk size, and the result classes' methods.
Changed: no task/result handler threads or shared queues (one pipe per worker, see
``_pool_core``); results are one-shot locks instead of ``threading.Event``; a failed
item of ``imap`` raises at its place and the iteration goes on; a non-sized ``imap``
input is read by the consuming thread, a window ahead (``close()`` reads the rest).
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time
import types
import warnings
import weakref
from collections import deque
import multiprocessing.pool as _std_pool
from multiprocessing import TimeoutError
from multiprocessing.context import get_spawning_popen, set_spawning_popen
from multiprocessing.pool import ThreadPool  # noqa: F401 - re-exported
from typing import Any, Callable, Iterable, Iterator

from . import _routing
from ._pool.core import RUN, TERMINATE, PoolCore, Task
from ._pickle import (PICKLING_ERRORS, fails, checked_dumps, describe_unpicklable, dumps,
                         by_reference, in_band, segments_released_on_error)
from ._pool.worker import APPLY, MAP, STARMAP, TASK, Initializer
from .errors import RemoteTraceback, short_repr  # noqa: F401 - RemoteTraceback re-exported
from .registry import REGISTRY

__all__ = ["Pool", "ThreadPool", "AsyncResult", "ApplyResult", "MapResult",
           "IMapIterator", "IMapUnorderedIterator"]

# Chunks of a lazily read ``imap`` input kept in flight, per worker.
IMAP_WINDOW_PER_WORKER = 4

_pool_names = iter(range(1, sys.maxsize))
_NOTHING = object()

Callback = Callable[[Any], object]
Progress = Callable[[int], object]


def _cpu_count() -> int:
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return count or 1


def _func_name(func: Any) -> str:
    if isinstance(func, functools.partial):
        return f"partial({_func_name(func.func)})"
    name = (getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
            or type(func).__qualname__)
    return str(name).rpartition("<locals>.")[2]


class _Label:
    """A task's short description (``square(3)``), made when first needed."""

    __slots__ = ("name", "mode", "first", "count", "args", "kwds")

    def __init__(self, name: str, mode: int, first: Any = None, count: int = 1,
                 args: tuple[Any, ...] = (), kwds: dict[str, Any] | None = None) -> None:
        self.name, self.mode, self.first, self.count = name, mode, first, count
        self.args, self.kwds = args, kwds or {}

    def __str__(self) -> str:
        if self.mode == APPLY:
            parts = [short_repr(a) for a in self.args]
            parts += [f"{k}={short_repr(v)}" for k, v in self.kwds.items()]
        elif self.mode == STARMAP and isinstance(self.first, (tuple, list)):
            parts = [short_repr(a) for a in self.first]
        else:
            parts = [short_repr(self.first)]
        text = f"{self.name}({', '.join(parts)})"
        if len(text) > 80:
            text = text[:77] + "..."
        return text + (f" and {self.count - 1} more" if self.count > 1 else "")


# -- results ----------------------------------------------------------------------------

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

    def __init__(self, pool: Pool, callback: Callback | None = None,
                 error_callback: Callback | None = None) -> None:
        core = pool._check_running()
        self.id = core.new_job_id()
        self._pool: Pool | None = pool   # kept alive until the result is in, as stdlib's
        self._core = core
        self._event = _Done()
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None
        self._done = False

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        try:
            self._event.wait(timeout)
        except KeyboardInterrupt:
            self._core.interrupt()
            raise

    def get(self, timeout: float | None = None) -> Any:
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        if self._success:
            return self._value
        raise self._value

    __class_getitem__ = classmethod(types.GenericAlias)

    # -- told by the pool core (manager thread) --

    def _deliver(self, task: Task, values: list[Any], errors: list[Any]) -> bool:
        if errors:
            return self._fail(errors[0][1], task)
        self._success, self._value, self._done = True, values[0], True
        return True

    def _fail(self, exc: BaseException, task: Task | None) -> bool:
        if self._done:
            return False
        self._success, self._value, self._done = False, exc, True
        return True

    def _fire(self) -> None:
        self._pool = None
        callback = self._callback if self._success else self._error_callback
        if callback is not None:
            try:
                callback(self._value)
            except Exception:  # noqa: BLE001 - a callback's bug must not stop the pool
                _report_callback_error(callback)
        self._event.set()


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """The result of ``map_async``/``starmap_async``: a list, or the first error."""

    def __init__(self, pool: Pool, length: int, callback: Callback | None = None,
                 error_callback: Callback | None = None,
                 on_progress: Progress | None = None) -> None:
        super().__init__(pool, callback, error_callback)
        self._value = [None] * length
        self._left = length
        self._on_progress = on_progress
        if length == 0:
            self._success = self._done = True
            self._pool = None
            self._event.set()

    def _deliver(self, task: Task, values: list[Any], errors: list[Any]) -> bool:
        if errors:
            return self._fail(errors[0][1], task)
        self._value[task.start:task.start + len(values)] = values
        self._left -= len(values)
        if self._on_progress is not None:
            _progress(self._on_progress, len(values))
        if self._left <= 0:
            self._success = self._done = True
            return True
        return False


class IMapIterator:
    """The iterator ``imap`` returns: results in order, each as soon as it is there.

    An item whose task failed raises its exception at its turn; iteration can go on.
    """

    def __init__(self, pool: Pool, on_progress: Progress | None = None) -> None:
        core = pool._check_running()
        self.id = core.new_job_id()
        self._pool: Pool | None = pool   # kept alive until every result is in
        self._core = core
        self._cond = threading.Condition(threading.Lock())
        self._items: dict[int, tuple[bool, Any]] = {}
        self._index = 0          # next position to yield
        self._received = 0
        self._length: int | None = None
        self._error: BaseException | None = None   # ends the iteration (cancelled...)
        self._over = False
        self._done = False
        self._feeder: _Feeder | None = None
        self._on_progress = on_progress

    def __iter__(self) -> Iterator[Any]:
        return self

    def next(self, timeout: float | None = None) -> Any:
        try:
            return self._next(timeout)
        except KeyboardInterrupt:
            self._core.interrupt()
            raise

    __next__ = next

    __class_getitem__ = classmethod(types.GenericAlias)

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
                        raise TimeoutError
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

    def _set_length(self, length: int) -> None:
        if isinstance(self._on_progress, _BarHook):
            self._on_progress.set_total(length)
        with self._cond:
            self._length = length
            finished = not self._done and self._received >= length
            if finished:
                self._done = True
            self._cond.notify_all()
        if finished:
            self._pool = None
            self._core.finish_job(self)

    # -- told by the pool core (manager thread) --

    def _store(self, index: int, item: tuple[bool, Any]) -> None:
        self._items[index] = item

    def _deliver(self, task: Task, values: list[Any], errors: list[Any]) -> bool:
        failed = dict(errors)
        last = errors[-1][1] if errors else None
        with self._cond:
            for offset in range(task.count):
                if offset in failed:
                    item = (False, failed[offset])
                elif offset < len(values):
                    item = (True, values[offset])
                else:   # not run: the chunk failed as a whole
                    item = (False, last)
                self._store(task.start + offset, item)
            self._received += task.count
            finished = self._length is not None and self._received >= self._length
            if finished:
                self._done = True
            self._cond.notify_all()
        if self._on_progress is not None:
            _progress(self._on_progress, task.count)
        return finished

    def _fail(self, exc: BaseException, task: Task | None) -> bool:
        if task is not None:
            return self._deliver(task, [], [(offset, exc) for offset in range(task.count)])
        with self._cond:
            if self._done:
                return False
            self._error = exc
            self._done = True
            self._cond.notify_all()
        if self._feeder is not None:
            self._feeder.stop()
        return True

    def _fire(self) -> None:
        self._pool = None
        with self._cond:
            self._cond.notify_all()


class IMapUnorderedIterator(IMapIterator):
    """The iterator ``imap_unordered`` returns: results as they come."""

    def __init__(self, pool: Pool, on_progress: Progress | None = None) -> None:
        super().__init__(pool, on_progress)
        self._queue: deque[tuple[bool, Any]] = deque()

    def _store(self, index: int, item: tuple[bool, Any]) -> None:
        self._queue.append(item)

    def _take(self) -> Any:
        if self._queue:
            self._index += 1
            return self._queue.popleft()
        return self._end()


class _Feeder:
    """Reads an ``imap`` input, pickles it in chunks and submits them.

    A sized input is read whole at the call (an item that cannot be sent raises there);
    any other iterator lazily, by the consuming thread, keeping a window of chunks in
    flight; an item it cannot send, or an error of the iterator itself, becomes the
    result at the place of the chunk it spoiled, as in the standard library.
    """

    def __init__(self, pool: Pool, it: IMapIterator, func: Any, func_ref: tuple[int, bytes],
                 mode: int, iterable: Iterable[Any], chunksize: int) -> None:
        self.pool, self.it = pool, it
        self.name = _func_name(func)
        self.func_ref, self.mode, self.chunksize = func_ref, mode, chunksize
        self.route = _routing.capture()
        self.source: Iterator[Any] | None = iter(iterable)
        self.submitted = 0
        self.window = IMAP_WINDOW_PER_WORKER * pool._processes * chunksize
        self._lock = threading.Lock()

    def submit_all(self, items: list[Any]) -> None:
        self.source = None
        tasks = [self.pool._task(self.it, self.func_ref, self.mode, self.name, chunk, start,
                                 False, self.route, "iterable")
                 for start, chunk in _chunked(items, self.chunksize)]
        if tasks:
            self.pool._core.submit(self.it, tasks)
        self.it._set_length(len(items))

    def wants_more(self) -> bool:
        return self.source is not None and \
            self.submitted - self.it._index < self.window

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
        except Exception as exc:  # noqa: BLE001 - the input's own error, at its place
            # As in the standard library: the chunk it interrupted is dropped, and the
            # error takes that chunk's place.
            error, chunk = exc, []
        start = self.submitted
        if chunk:
            try:
                task = self.pool._task(self.it, self.func_ref, self.mode, self.name, chunk,
                                       start, False, self.route, "iterable")
            except PICKLING_ERRORS as exc:
                error, chunk = exc, []
            else:
                self.pool._core.submit(self.it, [task], internal=True)
                self.submitted += len(chunk)
        if error is None and len(chunk) == self.chunksize:
            return True
        self.source = None
        length = self.submitted
        if error is not None:
            with self.it._cond:
                self.it._store(length, (False, error))
                self.it._received += 1
            length += 1
        self.it._set_length(length)
        return False


def _chunked(items: list[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


def _length(iterable: Iterable[Any]) -> int | None:
    return len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]


class _BarHook:
    """``on_progress`` that drives a progress bar (``progress=True``)."""

    def __init__(self, total: int | None) -> None:
        from .progress import ProgressBar
        self.bar = ProgressBar(total, "mpnb.Pool")
        self.closed = False

    def __call__(self, count: int) -> None:
        self.bar.update(count)
        if self.bar.total is not None and self.bar.done >= self.bar.total:
            self.close()

    def set_total(self, total: int) -> None:
        """The input's length, learnt once a lazy iterable ran out."""
        self.bar.total = total
        if self.bar.done >= total:
            self.close()

    def close(self, failed: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.bar.close(failed=failed)


def _bar_hook(progress: bool, total: int | None) -> _BarHook | None:
    return _BarHook(total) if progress else None


def _with_bar(progress: bool, run: Callable[[Any], Any], total: int | None) -> Any:
    hook = _bar_hook(progress, total)
    try:
        return run(hook)
    except BaseException:
        if hook is not None:
            hook.close(failed=True)
        raise


def _progress(hook: Progress, count: int) -> None:
    try:
        hook(count)
    except Exception:  # noqa: BLE001 - a display problem must not stop the pool
        _report_callback_error(hook)


def _report_callback_error(callback: Any) -> None:
    import traceback
    print(f"mpnb: the callback {_func_name(callback)} raised:", file=sys.stderr)
    traceback.print_exc()


# -- the pool ---------------------------------------------------------------------------

class Pool:
    """``multiprocessing.pool.Pool`` on an mpnb context (see the module docstring)."""

    _core: PoolCore | None = None

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., object] | None = None,
                 initargs: Iterable[Any] = (), maxtasksperchild: int | None = None,
                 context: Any = None) -> None:
        if context is None:
            from .context import _default_context
            context = _default_context.get_context()
        if processes is None:
            processes = _cpu_count()
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        init = None
        if initializer is not None:
            initargs = tuple(initargs)
            _check_sendable_at_start(initializer, initargs,
                                     context.get_start_method() == "fork")
            init = Initializer(initializer, initargs)
        self._ctx = context
        self._processes = processes
        self._name = f"Pool-{next(_pool_names)}"
        self._lazy: weakref.WeakSet[_Feeder] = weakref.WeakSet()
        self._func_cache: dict[int, tuple[Any, tuple[int, bytes]]] = {}
        REGISTRY.add_pool(self._name, processes, context.get_start_method())
        try:
            self._core = PoolCore(context, processes, init,
                                  _func_name(initializer) if initializer else "",
                                  maxtasksperchild, self._name)
        except BaseException:
            REGISTRY.update_pool(self._name, closed=True)
            raise

    # -- the standard library's API --

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: dict[str, Any] = {}) -> Any:  # noqa: B006 - the stdlib's signature
        """``func(*args, **kwds)`` in a worker; waits for the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: dict[str, Any] = {},  # noqa: B006 - the stdlib's signature
                    callback: Callback | None = None,
                    error_callback: Callback | None = None) -> ApplyResult:
        """``func(*args, **kwds)`` in a worker; returns at once."""
        core = self._check_running()
        try:
            args, kwds = tuple(args), dict(kwds)
            func_ref = self._function(func)
            job = ApplyResult(self, callback, error_callback)
            core.submit(job, [self._apply_task(job, func, func_ref, args, kwds)])
        except KeyboardInterrupt:
            core.interrupt()
            raise
        return job

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: int | None = None, *, progress: bool = False) -> list[Any]:
        """``[func(x) for x in iterable]``, in the workers; ``progress=True`` shows a bar."""
        return _with_bar(progress, lambda hook: self._map_async(
            func, iterable, MAP, chunksize, on_progress=hook).get(), _length(iterable))

    def map_async(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                  chunksize: int | None = None, callback: Callback | None = None,
                  error_callback: Callback | None = None, *,
                  progress: bool = False) -> MapResult:
        return self._map_async(func, iterable, MAP, chunksize, callback, error_callback,
                               _bar_hook(progress, _length(iterable)))

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, progress: bool = False) -> list[Any]:
        """``[func(*args) for args in iterable]``, in the workers."""
        return _with_bar(progress, lambda hook: self._map_async(
            func, iterable, STARMAP, chunksize, on_progress=hook).get(), _length(iterable))

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None, callback: Callback | None = None,
                      error_callback: Callback | None = None, *,
                      progress: bool = False) -> MapResult:
        return self._map_async(func, iterable, STARMAP, chunksize, callback, error_callback,
                               _bar_hook(progress, _length(iterable)))

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any],
             chunksize: int = 1, *, progress: bool = False) -> IMapIterator:
        """Results of ``func`` over ``iterable``, in order, as they come."""
        return self._imap(func, iterable, chunksize, IMapIterator,
                          on_progress=_bar_hook(progress, _length(iterable)))

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: int = 1, *, progress: bool = False) -> IMapUnorderedIterator:
        """Results of ``func`` over ``iterable``, in the order they complete."""
        return self._imap(func, iterable, chunksize, IMapUnorderedIterator,
                          on_progress=_bar_hook(progress, _length(iterable)))

    def close(self) -> None:
        """Take no more tasks; the workers exit once the queued ones are done."""
        core = self._core
        if core is not None and core.state == RUN:
            for feeder in list(self._lazy):
                feeder.top_up(everything=True)
            core.close()
            REGISTRY.update_pool(self._name, closed=True)

    def terminate(self) -> None:
        """Cancel the queued and running tasks and stop every worker now."""
        if self._core is not None:
            self._core.terminate()
            REGISTRY.update_pool(self._name, closed=True)

    def join(self) -> None:
        """Wait for the workers to exit, after ``close()`` or ``terminate()``."""
        core = self._core
        if core is None:
            return
        if core.state == RUN:
            raise ValueError("Pool is still running")
        try:
            core.join()
        except KeyboardInterrupt:
            core.interrupt()
            raise

    def __enter__(self) -> Pool:
        if self._state != RUN:
            raise ValueError("Pool not running")
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise _NotPicklable(
            "pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        cls = type(self)
        return (f"<{cls.__module__}.{cls.__qualname__} state={self._state} "
                f"pool_size={len(self._pool)}>")

    def __del__(self, _warn: Any = warnings.warn) -> None:
        core = self._core
        if core is not None and core.state == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning,
                  source=self)
            core.request_terminate()

    # -- what the standard library's pool exposes, read-only --

    @property
    def _state(self) -> str:
        return self._core.state if self._core is not None else TERMINATE

    @property
    def _pool(self) -> list[Any]:
        return self._core.workers() if self._core is not None else []

    # -- internals --

    def _check_running(self) -> PoolCore:
        core = self._core
        if core is None:
            raise ValueError("Pool not running")
        core.check()
        return core

    def _function(self, func: Any) -> tuple[int, bytes]:
        """``(func_id, FUNC message)``: ``func`` pickled now (its globals as they are)."""
        cached = self._func_cache.get(id(func))
        if cached is not None and cached[0] is func:
            return cached[1]
        with in_band():  # loaded by each worker that runs it, maybe more than once
            ref = self._core.function(bytes(checked_dumps(func, "func")))  # type: ignore[union-attr]
        if by_reference(func):
            if len(self._func_cache) >= 64:
                self._func_cache.clear()
            self._func_cache[id(func)] = (func, ref)
        return ref

    def _apply_task(self, job: Any, func: Any, func_ref: tuple[int, bytes],
                    args: tuple[Any, ...], kwds: dict[str, Any],
                    claim: Callable[[], bool] | None = None) -> Task:
        """The task ``func(*args, **kwds)`` of ``job``, pickled now."""
        task_id = self._core.new_task_id()  # type: ignore[union-attr]
        route = _routing.capture()
        try:
            with segments_released_on_error():
                data = dumps((TASK, task_id, func_ref[0], APPLY, 0, True, route,
                              (args, kwds)))
        except PICKLING_ERRORS as exc:
            raise _explain_args(args, kwds, exc) from exc
        name = _func_name(func)
        return Task(job, task_id, func_ref[0], func_ref[1], data, APPLY, 0, 1,
                    _Label(name, APPLY, args=args, kwds=kwds), name, claim)

    def _task(self, job: Any, func_ref: tuple[int, bytes], mode: int, name: str,
              chunk: list[Any], start: int, stop_on_error: bool, route: Any,
              root: str, claim: Callable[[], bool] | None = None) -> Task:
        core = self._core
        task_id = core.new_task_id()  # type: ignore[union-attr]
        try:
            with segments_released_on_error():
                data = dumps((TASK, task_id, func_ref[0], mode, start, stop_on_error,
                              route, chunk))
        except PICKLING_ERRORS as exc:
            for offset, item in enumerate(chunk):
                if fails(item) is not None:
                    raise describe_unpicklable(item, f"{root}[{start + offset}]") from exc
            raise describe_unpicklable(route, "the output route") from exc
        return Task(job, task_id, func_ref[0], func_ref[1], data, mode, start, len(chunk),
                    _Label(name, mode, chunk[0], len(chunk)), name, claim)

    def _map_async(self, func: Any, iterable: Iterable[Any], mode: int,
                   chunksize: int | None, callback: Callback | None = None,
                   error_callback: Callback | None = None,
                   on_progress: Progress | None = None) -> MapResult:
        """``map_async``/``starmap_async``; ``on_progress(n)`` after each n items done."""
        core = self._check_running()
        try:
            items = iterable if isinstance(iterable, list) else list(iterable)
            if chunksize is None:
                chunksize, extra = divmod(len(items), self._processes * 4)
                chunksize += bool(extra)
            elif chunksize < 1:
                raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
            func_ref = self._function(func)
            job = MapResult(self, len(items), callback, error_callback, on_progress)
            if not items:
                return job
            route = _routing.capture()
            name = _func_name(func)
            with segments_released_on_error():  # all or nothing
                tasks = [self._task(job, func_ref, mode, name, chunk, start, True, route,
                                    "iterable")
                         for start, chunk in _chunked(items, chunksize)]
            core.submit(job, tasks)
        except KeyboardInterrupt:
            core.interrupt()
            raise
        return job

    def _imap(self, func: Any, iterable: Iterable[Any], chunksize: int,
              kind: type[IMapIterator], mode: int = MAP,
              on_progress: Progress | None = None) -> Any:
        core = self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        try:
            func_ref = self._function(func)
            it = kind(self, on_progress)
            feeder = _Feeder(self, it, func, func_ref, mode, iterable, chunksize)
            if hasattr(iterable, "__len__"):
                feeder.submit_all(list(iterable))
            else:
                it._feeder = feeder
                self._lazy.add(feeder)
                feeder.top_up()
        except KeyboardInterrupt:
            core.interrupt()
            raise
        return it


class _ProbePopen:
    """Stands in for the ``Popen`` of a process being started while ``initargs`` are
    probed: what may only travel at process start (queues, locks, shared ctypes,
    connections) pickles as it would then; no descriptor is duplicated."""

    @staticmethod
    def duplicate_for_child(fd: int) -> int:
        return fd

    @staticmethod
    def DupFd(fd: int) -> int:  # noqa: N802 - the standard library's name
        return fd


def _check_sendable_at_start(initializer: Callable[..., object], initargs: tuple[Any, ...],
                             fork: bool) -> None:
    """Raise ``SerializationError`` (naming ``initializer`` or ``initargs[i]``) now if
    they could not be sent to a worker when it starts.

    Each worker gets them as process arguments (``_worker.Initializer``), pickled while
    it starts, so the probe pickles them inside a spawning context as the start would.
    Under fork they are inherited, not pickled: an argument that only refuses to go to
    a spawned process (a lock made in a fork context: ``RuntimeError``) is accepted there.
    """
    outer = get_spawning_popen()
    set_spawning_popen(_ProbePopen())
    try:
        with in_band():  # a probe, never loaded: no shared-memory segments
            checked_dumps(initializer, "initializer")
            for index, arg in enumerate(initargs):
                try:
                    checked_dumps(arg, f"initargs[{index}]")
                except RuntimeError:
                    if not fork:
                        raise
    finally:
        set_spawning_popen(outer)


class _NotPicklable(NotImplementedError, TypeError):
    """The standard library's error, and a ``TypeError`` so that a function that refers
    to a pool gets a ``SerializationError`` naming it."""


def _explain_args(args: tuple[Any, ...], kwds: dict[str, Any],
                  exc: BaseException) -> BaseException:
    if fails(args) is not None:
        return describe_unpicklable(args, "args", exc)
    if fails(kwds) is not None:
        return describe_unpicklable(kwds, "kwds", exc)
    return describe_unpicklable((args, kwds), "the task", exc)


def __getattr__(name: str) -> Any:
    """Every other name of the standard library's module (a drop-in has them all)."""
    return getattr(_std_pool, name)
