"""Calls turned into ``Task``s for the engine, in the caller's thread.

Everything is pickled before it is submitted, so an argument that cannot be sent raises
``SerializationError`` at the call, naming it (``args[0]``, ``iterable[3]``), and nothing
is half-submitted (callers pickle a map's chunks inside
``segments_released_on_error``). A function is pickled once per call (``function``),
with its globals as they are then, and the engine sends it once per worker; chunks
carry only data. ``Pool`` and ``ProcessPoolExecutor`` each have a ``TaskMaker``.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

from .. import _routing, _world
from .._pickle import (
    PICKLING_ERRORS,
    buffers,
    by_reference,
    checked_dumps,
    describe_unpicklable,
    fails,
    in_band,
    segments_released_on_error,
)
from .core import PoolCore
from .protocol import APPLY, Job, Task, plain_task_message, task_message
from .telemetry import Label, func_name

__all__ = ["TaskMaker", "FuncRef", "chunked", "map_chunksize", "REFERENCE_CACHE"]

# Functions imported by reference whose pickle a ``TaskMaker`` keeps, by identity: a
# pool mapping the same module function again does not pickle it again. Cleared when
# full (cell-defined functions are pickled at each call: their globals may change).
REFERENCE_CACHE = 64

# ``(func_id, FUNC message)`` of a pickled function (``PoolCore.function``).
FuncRef = tuple[int, bytes]

# Seconds a cached function's module file is taken as unchanged without a new ``stat``
# (a reload is seen at once: the module's spec changes): a loop submitting many tasks
# makes no system call per task.
STAMP_RECHECK = 0.05


class _Cached:
    """A function imported by reference, pickled: with its module's stamp (``None``: not
    a user module), the module and its spec then, and when the stamp was last checked."""

    __slots__ = ("func", "stamp", "ref", "module", "spec", "checked")

    def __init__(self, func: Callable[..., Any], stamp: _world.Stamp | None, ref: FuncRef) -> None:
        self.func, self.stamp, self.ref = func, stamp, ref
        self.module = sys.modules.get(getattr(func, "__module__", None) or "")
        self.spec = getattr(self.module, "__spec__", None)
        self.checked = time.monotonic()

    def current(self, func: Callable[..., Any]) -> bool:
        """Whether this is ``func`` and its module has not changed since it was pickled."""
        if self.func is not func:
            return False
        if self.stamp is None:
            return True
        module = sys.modules.get(func.__module__)
        now = time.monotonic()
        if (
            module is not None
            and module is self.module
            and module.__spec__ is self.spec
            and now < self.checked + STAMP_RECHECK
        ):
            return True
        if self.stamp != _world.module_stamp(func.__module__):
            return False
        self.checked = now
        return True


def _module_builtin(func: Any) -> bool:
    """Whether ``func`` is a C function of a module (``abs``, ``math.sqrt``): pickled by
    name and never changed, so its pickle can be kept. A builtin method bound to an
    object (``a_list.copy``) is not: its object is pickled by value and can change."""
    return isinstance(func, types.BuiltinFunctionType) and isinstance(
        getattr(func, "__self__", None), (types.ModuleType, type(None))
    )


class TaskMaker:
    """Makes the tasks of one engine (see the module docstring)."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        self._func_cache: dict[int, _Cached] = {}

    def function(self, func: Callable[..., Any]) -> FuncRef:
        """``func`` pickled now (its globals as they are), known to the engine. A function
        of a user module travels with the module's stamp: a worker holding an older
        version of the module re-imports it first (``mpnb._world``)."""
        cached = self._func_cache.get(id(func))
        if cached is not None and cached.current(func):
            return cached.ref
        reference = by_reference(func) or _module_builtin(func)
        sent, stamp = _world.fresh_reference(func) if reference else (func, None)
        with in_band():  # loaded by each worker that runs it, maybe more than once
            ref = self.core.function(bytes(checked_dumps(sent, "func")))
        if reference:
            if len(self._func_cache) >= REFERENCE_CACHE:
                self._func_cache.clear()
            self._func_cache[id(func)] = _Cached(func, stamp, ref)
        return ref

    def apply(
        self,
        job: Job,
        func: Callable[..., Any],
        func_ref: FuncRef,
        args: tuple[Any, ...],
        kwds: dict[str, Any],
        claim: Callable[[], bool] | None = None,
    ) -> Task:
        """The task ``func(*args, **kwds)`` of ``job``, pickled now."""
        task_id = self.core.new_task_id()
        route = _routing.capture()
        # Plain data (the usual case) has no buffers to lease and no segments to undo.
        data = plain_task_message(task_id, func_ref[0], APPLY, 0, True, route, (args, kwds))
        if data is None:
            try:
                with segments_released_on_error(), buffers.leasing(_holder(job)):
                    data = task_message(task_id, func_ref[0], APPLY, 0, True, route, (args, kwds))
            except PICKLING_ERRORS as exc:
                raise _explain_args(args, kwds, exc) from exc
        name = func_name(func)
        return Task(
            job,
            task_id,
            func_ref[0],
            func_ref[1],
            data,
            APPLY,
            0,
            1,
            Label(name, APPLY, args=args, kwds=kwds),
            name,
            claim,
        )

    def chunk(
        self,
        job: Job,
        func_ref: FuncRef,
        mode: int,
        name: str,
        chunk: list[Any],
        start: int,
        stop_on_error: bool,
        route: Any,
        root: str,
        claim: Callable[[], bool] | None = None,
    ) -> Task:
        """The task running ``func_ref``'s function (named ``name``) over ``chunk``,
        items ``start`` on of the input ``root`` (named in errors), pickled now."""
        task_id = self.core.new_task_id()
        try:
            with segments_released_on_error(), buffers.leasing(_holder(job)):
                data = task_message(task_id, func_ref[0], mode, start, stop_on_error, route, chunk)
        except PICKLING_ERRORS as exc:
            for offset, item in enumerate(chunk):
                if fails(item) is not None:
                    raise describe_unpicklable(item, f"{root}[{start + offset}]") from exc
            raise describe_unpicklable(route, "the output route") from exc
        return Task(
            job,
            task_id,
            func_ref[0],
            func_ref[1],
            data,
            mode,
            start,
            len(chunk),
            Label(name, mode, chunk[0], len(chunk)),
            name,
            claim,
        )


def _holder(job: Job) -> Any:
    """What keeps a task's reusable segments: its job, or the future it settles; both
    live until the result is in."""
    return getattr(job, "future", job)


def map_chunksize(count: int, processes: int, chunksize: int | None) -> int:
    """The chunk size of a map of ``count`` items, as the standard library picks it: about
    four chunks per process unless ``chunksize`` is given (1 or more)."""
    if chunksize is None:
        size, extra = divmod(count, processes * 4)
        return size + bool(extra)
    if chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
    return chunksize


def chunked(items: list[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    """``(start, chunk)`` pairs over ``items``."""
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def _explain_args(args: tuple[Any, ...], kwds: dict[str, Any], exc: BaseException) -> BaseException:
    if fails(args) is not None:
        return describe_unpicklable(args, "args", exc)
    if fails(kwds) is not None:
        return describe_unpicklable(kwds, "kwds", exc)
    return describe_unpicklable((args, kwds), "the task", exc)
