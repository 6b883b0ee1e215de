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
carry only data. This module is the API; the engine is in ``mpnb._pool``: ``core``
(parent), ``worker`` (child), ``protocol`` (between them), ``tasks`` (pickling calls),
``results`` (what the methods return), ``feeder`` (lazy ``imap`` input).

Adapted from CPython's ``Lib/multiprocessing/pool.py``: the public signatures, argument
checks and their messages, the default chunk size, and the result classes' methods.
Changed: no task/result handler threads or shared queues (one pipe per worker, see
``_pool.core``); results are one-shot locks instead of ``threading.Event``; a failed
item of ``imap`` raises at its place and the iteration goes on; a non-sized ``imap``
input is read by the consuming thread, a window ahead (``close()`` reads the rest).
"""

from __future__ import annotations

import multiprocessing.pool as _std_pool
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable
from multiprocessing.context import BaseContext
from multiprocessing.pool import ThreadPool
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, TypeVar

from . import _routing
from ._pickle import segments_released_on_error
from ._pool.core import RUN, TERMINATE, PoolCore, cpu_count
from ._pool.feeder import Feeder
from ._pool.initializer import Initializer, check_sendable_at_start
from ._pool.protocol import MAP, STARMAP
from ._pool.results import (
    ApplyResult,
    AsyncResult,
    Callback,
    IMapIterator,
    IMapUnorderedIterator,
    MapResult,
)
from ._pool.tasks import TaskMaker, chunked, map_chunksize
from ._pool.telemetry import Progress, bar_hook, func_name, with_bar
from .errors import RemoteTraceback  # noqa: F401 - re-exported
from .registry import REGISTRY
from .timeline.record import Recorder

if TYPE_CHECKING:
    from .timeline.render import Timeline

__all__ = [
    "Pool",
    "ThreadPool",
    "AsyncResult",
    "ApplyResult",
    "MapResult",
    "IMapIterator",
    "IMapUnorderedIterator",
]

_pool_names = iter(range(1, sys.maxsize))

_It = TypeVar("_It", bound=IMapIterator)


# -- the pool ---------------------------------------------------------------------------


class Pool:
    """``multiprocessing.pool.Pool`` on an mpnb context (see the module docstring)."""

    _core: PoolCore | None = None
    _tasks: TaskMaker

    def __new__(cls, *args: Any, cluster: Any = None, **kwargs: Any) -> Pool:
        """``cluster=`` (a Dask scheduler address, a ``distributed.Client`` or
        ``"local"``): the pool runs its tasks on that cluster (``mpnb.cluster``)."""
        if cluster is None or cls is not Pool:
            return super().__new__(cls)
        from .cluster import pool_class

        pool: Pool = super().__new__(pool_class())
        return pool

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: BaseContext | None = None,
        *,
        cluster: Any = None,
    ) -> None:
        if context is None:
            from .context import _default_context

            context = _default_context.get_context()
        if processes is None:
            processes = cpu_count()
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
            check_sendable_at_start(initializer, initargs, context.get_start_method() == "fork")
            init = Initializer(initializer, initargs)
        self._ctx = context
        self._processes = processes
        self._name = f"Pool-{next(_pool_names)}"
        self._lazy: weakref.WeakSet[Feeder] = weakref.WeakSet()
        REGISTRY.add_pool(self._name, processes, context.get_start_method())
        try:
            self._core = PoolCore(
                context,
                processes,
                init,
                func_name(initializer) if initializer else "",
                maxtasksperchild,
                self._name,
            )
        except BaseException:
            REGISTRY.update_pool(self._name, closed=True)
            raise
        self._tasks = TaskMaker(self._core)

    # -- the standard library's API --

    def apply(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] = {},  # noqa: B006 - the stdlib's signature
    ) -> Any:
        """``func(*args, **kwds)`` in a worker; waits for the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] = {},  # noqa: B006 - the stdlib's signature
        callback: Callback | None = None,
        error_callback: Callback | None = None,
    ) -> ApplyResult:
        """``func(*args, **kwds)`` in a worker; returns at once."""
        core = self._check_running()
        with core.interrupting():
            args, kwds = tuple(args), dict(kwds)
            func_ref = self._tasks.function(func)
            job = ApplyResult(self, callback, error_callback)
            core.submit(job, [self._tasks.apply(job, func, func_ref, args, kwds)])
        return job

    def map(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: bool = False,
    ) -> list[Any]:
        """``[func(x) for x in iterable]``, in the workers; ``progress=True`` shows a bar."""
        return with_bar(
            progress,
            lambda hook: self._map_async(func, iterable, MAP, chunksize, on_progress=hook).get(),
            _length(iterable),
        )

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callback | None = None,
        error_callback: Callback | None = None,
        *,
        progress: bool = False,
    ) -> MapResult:
        return self._map_async(
            func,
            iterable,
            MAP,
            chunksize,
            callback,
            error_callback,
            bar_hook(progress, _length(iterable)),
        )

    def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        progress: bool = False,
    ) -> list[Any]:
        """``[func(*args) for args in iterable]``, in the workers."""
        return with_bar(
            progress,
            lambda hook: self._map_async(
                func, iterable, STARMAP, chunksize, on_progress=hook
            ).get(),
            _length(iterable),
        )

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callback | None = None,
        error_callback: Callback | None = None,
        *,
        progress: bool = False,
    ) -> MapResult:
        return self._map_async(
            func,
            iterable,
            STARMAP,
            chunksize,
            callback,
            error_callback,
            bar_hook(progress, _length(iterable)),
        )

    def imap(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        progress: bool = False,
    ) -> IMapIterator:
        """Results of ``func`` over ``iterable``, in order, as they come."""
        return self._imap(
            func,
            iterable,
            chunksize,
            IMapIterator,
            on_progress=bar_hook(progress, _length(iterable)),
        )

    def imap_unordered(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        progress: bool = False,
    ) -> IMapUnorderedIterator:
        """Results of ``func`` over ``iterable``, in the order they complete."""
        return self._imap(
            func,
            iterable,
            chunksize,
            IMapUnorderedIterator,
            on_progress=bar_hook(progress, _length(iterable)),
        )

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
        with core.interrupting():
            core.join()

    def timeline(self, last_run: bool = False) -> Timeline:
        """Which worker ran which task, when: the tasks this pool ran (the newest
        100,000), or with ``last_run=True`` those since it was last idle. Shows inline
        in Jupyter, as text elsewhere; ``.tasks`` holds the records."""
        return _timeline(self._core.recorder if self._core else None, self._name, last_run)

    def __enter__(self) -> Pool:
        if self._state != RUN:
            raise ValueError("Pool not running")
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise _NotPicklable("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        cls = type(self)
        return (
            f"<{cls.__module__}.{cls.__qualname__} state={self._state} pool_size={len(self._pool)}>"
        )

    def __del__(self, _warn: Any = warnings.warn) -> None:
        core = self._core
        if core is not None and core.state == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)
            core.request_terminate()

    # -- what the standard library's pool exposes, read-only --

    @property
    def _state(self) -> str:
        return self._core.state if self._core is not None else TERMINATE

    @property
    def _pool(self) -> list[BaseProcess]:
        return self._core.workers() if self._core is not None else []

    # -- internals --

    def _check_running(self) -> PoolCore:
        core = self._core
        if core is None:
            raise ValueError("Pool not running")
        core.check()
        return core

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        mode: int,
        chunksize: int | None,
        callback: Callback | None = None,
        error_callback: Callback | None = None,
        on_progress: Progress | None = None,
    ) -> MapResult:
        """``map_async``/``starmap_async``; ``on_progress(n)`` after each n items done."""
        core = self._check_running()
        with core.interrupting():
            items = iterable if isinstance(iterable, list) else list(iterable)
            chunksize = map_chunksize(len(items), self._processes, chunksize)
            func_ref = self._tasks.function(func)
            job = MapResult(self, len(items), callback, error_callback, on_progress)
            if not items:
                return job
            route = _routing.capture()
            name = func_name(func)
            with segments_released_on_error():  # all or nothing
                tasks = [
                    self._tasks.chunk(
                        job, func_ref, mode, name, chunk, start, True, route, "iterable"
                    )
                    for start, chunk in chunked(items, chunksize)
                ]
            core.submit(job, tasks)
        return job

    def _imap(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int,
        kind: type[_It],
        mode: int = MAP,
        on_progress: Progress | None = None,
    ) -> _It:
        core = self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        with core.interrupting():
            func_ref = self._tasks.function(func)
            it = kind(self, on_progress)
            feeder = Feeder(
                self._tasks, self._processes, it, func, func_ref, mode, iterable, chunksize
            )
            if hasattr(iterable, "__len__"):
                feeder.submit_all(list(iterable))
            else:
                it.attach(feeder)
                self._lazy.add(feeder)
                feeder.top_up()
        return it


def _timeline(recorder: Recorder | None, name: str, last_run: bool) -> Timeline:
    """The records of ``recorder`` (all, or the last run's) as a ``Timeline``."""
    from .timeline.render import Timeline  # (drawing code: imported when first asked)

    if not isinstance(last_run, bool):
        raise TypeError(f"timeline(last_run=...) takes True or False, not {last_run!r}")
    if recorder is None:
        return Timeline([], name)
    since = recorder.run_from if last_run else 0
    return Timeline(recorder.records(since), f"{name}, last run" if last_run else name)


class _NotPicklable(NotImplementedError, TypeError):
    """The standard library's error, and a ``TypeError`` so that a function that refers
    to a pool gets a ``SerializationError`` naming it."""


def _length(iterable: Iterable[Any]) -> int | None:
    return len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]


def __getattr__(name: str) -> Any:
    """Every other name of the standard library's module (a drop-in has them all)."""
    return getattr(_std_pool, name)
