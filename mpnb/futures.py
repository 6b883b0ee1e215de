"""``concurrent.futures.ProcessPoolExecutor`` on mpnb's pool.

``ProcessPoolExecutor`` has the standard library's interface (``submit``, ``map`` with
``timeout``, ``chunksize`` and ``buffersize``, ``shutdown(wait, cancel_futures)``, the
context manager, ``terminate_workers``/``kill_workers`` of Python 3.14) and returns
``concurrent.futures.Future`` objects, so ``wait`` and ``as_completed`` work as usual.
It runs on mpnb's pool engine (a ``pool.Pool``'s ``_pool.core.PoolCore``, its tasks
made by a ``_pool.tasks.TaskMaker``, each future told by a ``_pool.executor_jobs.ExecutorJob``):
cell-defined code, errors with their own type and the worker's traceback, output in the
cell that submitted the work, and a worker that dies fails its task only (see
``ProcessPoolExecutor``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import multiprocessing.context
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import _routing
from ._pickle import segments_released_on_error
from ._pool.core import PoolCore, cpu_count
from ._pool.executor_jobs import (
    BrokenInitializerError,
    BrokenWorkerError,
    ExecutorJob,
    Future,
    for_executor,
)
from ._pool.protocol import MAP, STARMAP, Task
from ._pool.tasks import TaskMaker
from ._pool.telemetry import BarHook, bar_hook, func_name, report_progress
from .errors import InitializerError, WorkerCrashedError
from .pool import Pool
from .pool import _timeline as _pool_timeline

if TYPE_CHECKING:
    from .timeline.render import Timeline

__all__ = ["ProcessPoolExecutor", "Future", "BrokenWorkerError", "BrokenInitializerError"]

T = TypeVar("T")

# The standard library's limit on Windows (WaitForMultipleObjects).
_MAX_WINDOWS_WORKERS = 61


def _mpnb_context(mp_context: Any) -> Any:
    from .context import BaseContext, _default_context

    if mp_context is None:
        return _default_context.get_context()
    if isinstance(mp_context, BaseContext):
        return mp_context.get_context()
    if isinstance(mp_context, multiprocessing.context.BaseContext):
        return _default_context.get_context(mp_context.get_start_method())
    raise TypeError(
        f"mp_context must be a multiprocessing context, such as "
        f"mpnb.get_context('spawn'), or None; not {type(mp_context).__name__}"
    )


class ProcessPoolExecutor(concurrent.futures.Executor):
    """``concurrent.futures.ProcessPoolExecutor`` on mpnb's pool.

    Same arguments and methods as the standard library's (``mp_context`` may be an
    mpnb context or a standard library one, taken by its start method; the default is
    mpnb's default context). What differs:

    - A worker that dies (``os._exit``, a segfault, the out-of-memory killer) fails
      only the future it was running, with ``BrokenWorkerError``, which is both a
      ``concurrent.futures.process.BrokenProcessPool`` and an ``mpnb.WorkerCrashedError``
      (which worker, exit code or signal, which call). Unlike the standard library's,
      the executor is *not* broken: the worker is replaced, other futures complete and
      new submits work. Only a failing initializer breaks it
      (``BrokenInitializerError``, also an ``mpnb.InitializerError``).
    - An argument that cannot be sent raises ``SerializationError`` at ``submit`` or
      ``map``, naming it, instead of failing the future later.
    - A ``KeyboardInterrupt`` while waiting (``Future.result``, iterating ``map``,
      ``shutdown``, leaving the ``with`` block) cancels the pending futures and stops
      the running calls (their futures raise ``mpnb.TaskCancelledError``, a
      ``CancelledError``), as ``mpnb.Pool`` does.
    - ``map`` takes ``progress=True`` for a progress bar; ``max_tasks_per_child``
      works with the fork start method too.
    - ``terminate_workers()`` and ``kill_workers()`` (Python 3.14's) wait until the
      workers are gone; the futures they ran raise ``TaskCancelledError``.
    """

    def __new__(cls, *args: Any, cluster: Any = None, **kwargs: Any) -> ProcessPoolExecutor:
        """``cluster=`` (a Dask scheduler address, a ``distributed.Client`` or
        ``"local"``): the calls run on that cluster (``mpnb.cluster``)."""
        if cluster is None or cls is not ProcessPoolExecutor:
            return super().__new__(cls)
        from .cluster import executor_class

        executor: ProcessPoolExecutor = super().__new__(executor_class())
        return executor

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: multiprocessing.context.BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        cluster: Any = None,
    ) -> None:
        if max_workers is None:
            max_workers = cpu_count()
            if sys.platform == "win32":
                max_workers = min(max_workers, _MAX_WINDOWS_WORKERS)
        elif not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise TypeError(f"max_workers must be an int or None, not {type(max_workers).__name__}")
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        elif sys.platform == "win32" and max_workers > _MAX_WINDOWS_WORKERS:
            raise ValueError(f"max_workers must be <= {_MAX_WINDOWS_WORKERS}")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int) or isinstance(max_tasks_per_child, bool):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        context = _mpnb_context(mp_context)
        self._max_workers = max_workers
        self._mp_context = context
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._max_tasks_per_child = max_tasks_per_child
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        self._futures: dict[int, Future] = {}  # by job id, until done
        self._pool = Pool(
            max_workers, initializer, self._initargs, max_tasks_per_child, context=context
        )
        self._core: PoolCore = self._pool._core  # type: ignore[assignment]
        self._tasks = TaskMaker(self._core)

    # -- the standard library's API --

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` in a worker; returns its ``Future`` at once."""
        with self._shutdown_lock:
            core = self._check()
            with core.interrupting():
                func_ref = self._tasks.function(fn)
                future = Future(core)
                job = ExecutorJob(core, future, whole=False)
                task = self._tasks.apply(job, fn, func_ref, args, kwargs, job.claim)
                self._track(future)
                core.submit(job, [task])
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        progress: bool = False,
    ) -> Iterator[T]:
        """``fn`` over the items of ``iterables`` (zipped), results in order.

        The items are read and sent now, in chunks of ``chunksize`` (at most
        ``buffersize`` chunks ahead of the results read, if given); ``timeout`` counts
        from this call. A call's exception is raised where its chunk's results would
        come (as in the standard library, a failed chunk gives no results), and the
        calls not started yet are cancelled. ``progress=True`` shows a progress bar.
        """
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None:
            if not isinstance(buffersize, int) or isinstance(buffersize, bool):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        if len(iterables) == 1:
            items: Iterator[Any] = iter(iterables[0])
            mode, root = MAP, "iterables[0]"
        else:
            items, mode, root = zip(*iterables), STARMAP, "zip(*iterables)"
        total = None
        if buffersize is None:
            listed = list(items)
            items, total = iter(listed), len(listed)
        elif len(iterables) == 1 and hasattr(iterables[0], "__len__"):
            total = len(iterables[0])  # type: ignore[arg-type]
        batches = _batches(items, chunksize)
        hook = bar_hook(progress, total)
        submit = _ChunkSubmitter(self, fn, mode, root, hook)
        try:
            futures = deque(submit(batches, buffersize))
        except BaseException:
            if hook is not None:
                hook.close(failed=True)
            raise
        more = None if buffersize is None else (lambda: submit(batches, 1))
        return _results(futures, deadline, hook, more)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; ``cancel_futures`` cancels the ones not started yet;
        ``wait`` waits until the others are done and the workers exited."""
        with self._shutdown_lock:
            self._shutdown = True
        if cancel_futures:
            for future in list(self._futures.values()):
                future.cancel()
            self._core.drop_done()
        self._pool.close()
        if wait:
            self._pool.join()

    def timeline(self, last_run: bool = False) -> Timeline:
        """Which worker ran which call, when: the calls this executor ran (the newest
        100,000), or with ``last_run=True`` those since it was last idle. Shows inline
        in Jupyter, as text elsewhere; ``.tasks`` holds the records."""
        return _pool_timeline(
            self._core.recorder if self._core else None, "ProcessPoolExecutor", last_run
        )

    def terminate_workers(self) -> None:
        """Stop every worker now (SIGTERM, then SIGKILL after a grace period) and shut
        the executor down: pending futures are cancelled, running ones raise
        ``TaskCancelledError``. Returns once the workers are gone."""
        self._stop_workers(kill=False)

    def kill_workers(self) -> None:
        """``terminate_workers``, with SIGKILL at once."""
        self._stop_workers(kill=True)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._core.interrupt()
        self.shutdown(wait=True)

    def __del__(self) -> None:
        # Like the standard library's: work submitted goes on, then the workers exit.
        pool = getattr(self, "_pool", None)
        if pool is not None and not self._shutdown:
            pool.close()

    def __repr__(self) -> str:
        state = "shutdown" if self._shutdown else self._core.state
        return (
            f"<{type(self).__module__}.{type(self).__qualname__} "
            f"max_workers={self._max_workers} "
            f"start_method={self._mp_context.get_start_method()!r} state={state}>"
        )

    # -- internals --

    def _check(self) -> PoolCore:
        """The core, if it takes new calls (shutdown lock held)."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        try:
            self._core.check()
        except (WorkerCrashedError, InitializerError) as exc:
            raise for_executor(exc) from None
        return self._core

    def _track(self, future: Future) -> None:
        self._futures[future._job.id] = future  # type: ignore[union-attr]
        future.add_done_callback(self._settled)

    def _settled(self, future: concurrent.futures.Future[Any]) -> None:
        job = cast(Future, future)._job
        if job is None:  # never: a tracked future has its job
            return
        self._futures.pop(job.id, None)
        if future.cancelled():  # never sent: the core drops its task
            job.settled = True
            job.claim()  # tells wait() and as_completed()
            self._core.finish_job(job)

    def _stop_workers(self, kill: bool) -> None:
        with self._shutdown_lock:
            self._shutdown = True
        self._core.terminate(kill=kill)
        self._pool.terminate()  # done by now; marks the pool closed
        self._pool.join()


def _batches(items: Iterator[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    """``(start, chunk)`` pairs over ``items``."""
    start = 0
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk:
            return
        yield start, chunk
        start += len(chunk)


class _ChunkSubmitter:
    """Sends chunks of one ``map`` call: the function pickled once, each chunk a future."""

    def __init__(
        self,
        executor: ProcessPoolExecutor,
        fn: Callable[..., Any],
        mode: int,
        root: str,
        hook: BarHook | None,
    ) -> None:
        self.executor, self.mode, self.root, self.hook = executor, mode, root, hook
        self.name = func_name(fn)
        self.route = _routing.capture()
        self.count = 0  # items read so far
        self.over = False  # the input ran out
        with executor._shutdown_lock:
            executor._check()
            self.func_ref = executor._tasks.function(fn)

    def __call__(self, batches: Iterator[tuple[int, list[Any]]], limit: int | None) -> list[Future]:
        """Send the next ``limit`` chunks (all if ``None``), all or none."""
        if self.over:
            return []
        executor = self.executor
        tasks = executor._tasks
        with executor._shutdown_lock:
            core = executor._check()
            made: list[tuple[ExecutorJob, Task]] = []
            with core.interrupting():
                with segments_released_on_error():
                    for start, chunk in itertools.islice(batches, limit):
                        job = ExecutorJob(core, Future(core), whole=True)
                        made.append(
                            (
                                job,
                                tasks.chunk(
                                    job,
                                    self.func_ref,
                                    self.mode,
                                    self.name,
                                    chunk,
                                    start,
                                    True,
                                    self.route,
                                    self.root,
                                    job.claim,
                                ),
                            )
                        )
                        self.count += len(chunk)
                if limit is None or len(made) < limit:
                    self.over = True
                for job, task in made:
                    executor._track(job.future)
                    if self.hook is not None:  # counted before the result shows
                        job.on_success = functools.partial(report_progress, self.hook, task.count)
                    core.submit(job, [task])
        if self.over and isinstance(self.hook, BarHook) and self.hook.bar.total is None:
            self.hook.set_total(self.count)
        return [job.future for job, _ in made]


def _results(
    futures: deque[Future],
    deadline: float | None,
    hook: BarHook | None,
    more: Callable[[], list[Future]] | None,
) -> Iterator[Any]:
    """The values of ``map``'s chunk futures, in order (a generator)."""
    try:
        while futures:
            if more is not None:
                futures.extend(more())
            future = futures.popleft()
            try:
                values = future.result(
                    None if deadline is None else max(deadline - time.monotonic(), 0)
                )
            finally:
                future.cancel()  # a timeout: it will not be read
            yield from values
        if hook is not None:
            hook.close()  # an empty input never counted
    except BaseException:
        if hook is not None:
            hook.close(failed=True)
        raise
    finally:
        for future in futures:
            future.cancel()
