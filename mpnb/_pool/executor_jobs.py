"""Jobs whose outcome goes to a ``concurrent.futures.Future``, and what an executor raises.

``FutureJob`` implements ``protocol.Job`` for one future: a submitted call, or a chunk
of a ``map``. ``ExecutorJob`` is the job of ``mpnb.ProcessPoolExecutor``'s futures
(``Future``), which fail as an executor raises: a crashed worker or a failed initializer
is also a ``BrokenProcessPool`` (``BrokenWorkerError``, ``BrokenInitializerError``).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import InitializerError, TaskCancelledError, WorkerCrashedError
from .core import PoolCore
from .protocol import Task

__all__ = [
    "FutureJob",
    "ExecutorJob",
    "Future",
    "BrokenWorkerError",
    "BrokenInitializerError",
    "for_executor",
]


class FutureJob:
    """A job whose outcome goes to one ``concurrent.futures.Future``: a submitted call,
    or a chunk of a ``map`` (its list of results)."""

    __slots__ = (
        "id",
        "future",
        "settled",
        "_whole",
        "_claimed",
        "_lock",
        "_value",
        "_error",
        "on_success",
    )

    def __init__(self, core: PoolCore, future: concurrent.futures.Future[Any], whole: bool) -> None:
        self.id = core.new_job_id()
        self.future = future
        self.settled = False
        self._whole = whole  # the future gets every value (a chunk), not the first
        self._claimed: bool | None = None
        self._lock = threading.Lock()
        self._value: Any = None
        self._error: BaseException | None = None
        self.on_success: Callable[[], object] | None = None  # before the result is set

    def claim(self) -> bool:
        """Before the task is sent: the future runs, unless it was cancelled."""
        with self._lock:
            if self._claimed is None:
                self._claimed = self.future.set_running_or_notify_cancel()
            return self._claimed

    # -- the ``protocol.Job`` interface: told by the engine (its thread) --

    def deliver(
        self, task: Task, values: list[Any], errors: list[tuple[int, BaseException]]
    ) -> bool:
        if errors:
            return self.fail(errors[0][1], task)
        if self.settled:
            return False
        self._value = values if self._whole else values[0]
        self.settled = True
        return True

    def fail(self, exc: BaseException, task: Task | None) -> bool:
        if self.settled:
            return False
        self._error, self.settled = exc, True
        return True

    def fire(self) -> None:
        future, error = self.future, self._error
        if isinstance(error, TaskCancelledError) and future.cancel():
            return  # was pending: cancelled (the executor's done callback follows)
        try:
            if error is None:
                if self.on_success is not None:
                    self.on_success()
                future.set_result(self._value)
            else:
                future.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled by its owner meanwhile


class BrokenWorkerError(WorkerCrashedError, BrokenProcessPool):
    """A worker of a ``ProcessPoolExecutor`` died while it ran this future's call.

    Both mpnb's ``WorkerCrashedError`` (``worker``, ``pid``, ``exitcode``, ``signal``,
    ``task``, ``index``) and the standard library's ``BrokenProcessPool``; the executor
    replaced the worker and goes on.
    """


class BrokenInitializerError(InitializerError, BrokenProcessPool):
    """The executor's initializer failed: the executor runs nothing more."""


class Future(concurrent.futures.Future[Any]):
    """A ``concurrent.futures.Future`` of ``ProcessPoolExecutor``.

    A ``KeyboardInterrupt`` (the kernel's interrupt) while ``result()`` or
    ``exception()`` waits cancels the executor's pending futures and stops the calls
    running, as ``mpnb.Pool`` does, so the executor is free for the next cell.
    """

    def __init__(self, core: PoolCore) -> None:
        super().__init__()
        self._core = core
        self._job: ExecutorJob | None = None

    def result(self, timeout: float | None = None) -> Any:
        with self._core.interrupting():
            return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        with self._core.interrupting():
            return super().exception(timeout)


class ExecutorJob(FutureJob):
    """The job of one of the executor's futures: what fails it, as the executor raises
    it (``for_executor``)."""

    __slots__ = ()
    future: Future

    def __init__(self, core: PoolCore, future: Future, whole: bool) -> None:
        super().__init__(core, future, whole)
        future._job = self

    def fail(self, exc: BaseException, task: Task | None) -> bool:
        return super().fail(for_executor(exc), task)


def for_executor(exc: BaseException) -> BaseException:
    """``exc``, as the executor raises it: a crash or a failed initializer is also a
    ``BrokenProcessPool``."""
    if isinstance(exc, BrokenProcessPool):
        return exc
    if isinstance(exc, WorkerCrashedError):
        new: BaseException = BrokenWorkerError(
            str(exc),
            worker=exc.worker,
            pid=exc.pid,
            exitcode=exc.exitcode,
            task=exc.task,
            index=exc.index,
        )
    elif isinstance(exc, InitializerError):
        new = BrokenInitializerError(*exc.args)
    else:
        return exc
    new.__cause__ = exc.__cause__
    return new
