"""``ProcessPoolExecutor(cluster=...)``: ``concurrent.futures`` on a Dask cluster.

``ClusterExecutor`` is an ``mpnb.ProcessPoolExecutor`` whose calls run on a
``pool.ClusterPool``: each ``submit`` is one ``apply_async`` whose callbacks settle a
``concurrent.futures.Future`` (so ``wait`` and ``as_completed`` work as usual);
``map`` is ``concurrent.futures.Executor.map`` over ``submit``. ``max_workers`` is
``processes`` of the pool (tasks at once; by default the cluster's threads).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..futures import ProcessPoolExecutor
from ..timeline.render import Timeline
from .pool import ClusterPool

__all__ = ["ClusterExecutor"]


class ClusterExecutor(ProcessPoolExecutor):
    """``mpnb.ProcessPoolExecutor`` on a Dask cluster (see the module docstring)."""

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        cluster: Any,
    ) -> None:
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers <= 0):
            raise ValueError("max_workers must be a positive int or None")
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        self._max_workers = max_workers or 0
        self._cluster_pool = ClusterPool(
            max_workers, initializer, initargs, max_tasks_per_child, cluster=cluster
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_running_or_notify_cancel()

            def fail(exc: BaseException) -> None:
                if not future.done():
                    future.set_exception(exc)

            def done(value: Any) -> None:
                if not future.done():
                    future.set_result(value)

            self._cluster_pool.apply_async(fn, args, kwargs, done, fail)
            return future

    def map(  # type: ignore[override]
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        return concurrent.futures.Executor.map(self, fn, *iterables, timeout=timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._shutdown_lock:
            self._shutdown = True
        if cancel_futures:
            self._cluster_pool.terminate()
            return
        self._cluster_pool.close()
        if wait:
            self._cluster_pool.join()

    def timeline(self, last_run: bool = False) -> Timeline:
        """Which worker process ran which call, when (see ``Pool.timeline``)."""
        return self._cluster_pool.timeline(last_run)

    def terminate_workers(self) -> None:
        """Cancel every call on the cluster and shut down (the workers are the
        cluster's: they go on)."""
        self.shutdown(cancel_futures=True)

    kill_workers = terminate_workers

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._cluster_pool.terminate()
        self.shutdown(wait=True)

    def __del__(self) -> None:
        pool = getattr(self, "_cluster_pool", None)
        if pool is not None and not self._shutdown:
            pool.terminate()

    def __repr__(self) -> str:
        state = "shutdown" if self._shutdown else self._cluster_pool._state
        return (
            f"<{type(self).__module__}.{type(self).__qualname__} "
            f"max_workers={self._cluster_pool._processes} state={state}>"
        )
