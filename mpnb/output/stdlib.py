"""The standard library's children route their output too, while the extension is loaded.

``%load_ext mpnb`` (``patch``) makes what a child of the standard library writes land
in the cell that started the work, exactly as for mpnb's own children (``mpnb.output``:
same relay, same tags, whole lines, stdout and stderr apart):

- ``multiprocessing.process.BaseProcess`` (every ``multiprocessing.Process``, any start
  method, and the workers of ``multiprocessing.Pool`` and
  ``concurrent.futures.ProcessPoolExecutor``): ``start`` runs mpnb's start hooks
  (``process.child_setups``) and keeps their child set-ups on the object;
  ``_bootstrap`` runs them in the child before the target; ``join`` publishes the
  process's output before it returns. A forked child inherits the patched
  ``_bootstrap``; a spawned or forkserver child gets the set-ups inside its pickled
  process object (mpnb's pickler sends it while the extension is loaded), and loading
  them patches ``_bootstrap`` in that child (``_arm``).
- ``multiprocessing.pool.Pool`` (not ``ThreadPool``): ``apply_async``, ``imap``,
  ``imap_unordered`` and ``_map_async`` (``map``, ``starmap`` and their ``_async``)
  capture the submitting cell's route and wrap what the pool sends (the function, or
  ``mapstar`` for a chunk: once per task, never per item) in ``Routed``, which enters
  that route in the worker, calls, and leaves it (flushing). The route is captured
  there because the pool pickles tasks later, in its own thread. Results are handed on
  after the output written before them was published (``_setup_queues``).
- ``concurrent.futures.ProcessPoolExecutor.submit`` (``map`` goes through it) does the
  same per submitted call, and the executor's manager thread publishes a task's output
  before its result (``process_result_item``).

``unpatch`` (``%unload_ext mpnb``) puts every attribute back; processes started
meanwhile keep routing until they end. Nothing here runs unless the extension is
loaded. It reaches the rest of mpnb only through the seam ``mpnb._routing`` and the
start hooks of ``mpnb.process``.
"""

from __future__ import annotations

import multiprocessing.pool as _std_pool
import multiprocessing.process as _std_process
import threading
from collections.abc import Callable
from typing import Any

from .. import _routing
from .. import process as _process

__all__ = ["patch", "unpatch", "patched", "Routed"]

# ``multiprocessing.pool``'s private helpers used here (``Pool._get_tasks``, ``mapstar``),
# which typeshed leaves out.
_POOL_INTERNALS: Any = _std_pool

# The instance attribute that holds a started standard library process's set-ups.
_SETUPS = "_mpnb_stdlib_setups"

_lock = threading.Lock()
# name -> the standard library's own attribute (the names are unique among the targets);
# kept after ``unpatch`` for a call that started before it.
_ORIGINALS: dict[str, Any] = {}
# The (owner, name) pairs replaced now.
_patched: list[tuple[Any, str]] = []


class Routed:
    """A callable sent to a worker: runs ``func`` under ``route`` (the submitting cell)."""

    __slots__ = ("route", "func")

    def __init__(self, route: Any, func: Callable[..., Any]) -> None:
        self.route, self.func = route, func

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Routed, (self.route, self.func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _routing.enter(self.route)
        try:
            return self.func(*args, **kwargs)
        finally:
            _routing.leave()


def _routed(func: Any) -> Any:
    route = _routing.capture()
    return func if route is None else Routed(route, func)


# -- processes ----------------------------------------------------------------------------


class _Setups(tuple):
    """A process's child set-ups; loading them in a spawned child arms ``_bootstrap``."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _arm, (tuple(self),)


def _arm(setups: tuple[Any, ...]) -> _Setups:
    """In a spawned or forkserver child, while its process object loads."""
    owner = _std_process.BaseProcess
    if owner.__dict__["_bootstrap"] is not _bootstrap:
        _ORIGINALS["_bootstrap"] = owner.__dict__["_bootstrap"]
        setattr(owner, "_bootstrap", _bootstrap)  # noqa: B010 - typeshed has no _bootstrap
    return _Setups(setups)


def _start(self: Any) -> None:
    if not _process.is_mpnb_process(self):  # mpnb's own run the hooks themselves
        setups = _process.child_setups(self)
        if setups:
            setattr(self, _SETUPS, _Setups(setups))
    _ORIGINALS["start"](self)


def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
    for setup in self.__dict__.pop(_SETUPS, ()):
        setup()
    return _ORIGINALS["_bootstrap"](self, *args, **kwargs)


def _join(self: Any, timeout: float | None = None) -> None:
    _ORIGINALS["join"](self, timeout)
    if _SETUPS in self.__dict__ and self.exitcode is not None:
        _routing.drain(self)  # its output first, then what the caller does next


# -- multiprocessing.pool.Pool ------------------------------------------------------------


def _is_threads(pool: Any) -> bool:
    return isinstance(pool, _std_pool.ThreadPool)


def _apply_async(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_threads(self):
        func = _routed(func)
    return _ORIGINALS["apply_async"](self, func, *args, **kwargs)


def _map_async(self: Any, func: Any, iterable: Any, mapper: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_threads(self):
        mapper = _routed(mapper)  # once per chunk
    return _ORIGINALS["_map_async"](self, func, iterable, mapper, *args, **kwargs)


def _imap(self: Any, func: Any, iterable: Any, chunksize: int = 1) -> Any:
    return _imap_routed(self, "imap", func, iterable, chunksize)


def _imap_unordered(self: Any, func: Any, iterable: Any, chunksize: int = 1) -> Any:
    return _imap_routed(self, "imap_unordered", func, iterable, chunksize)


def _imap_routed(pool: Any, name: str, func: Any, iterable: Any, chunksize: int) -> Any:
    original = _ORIGINALS[name]
    route = None if _is_threads(pool) or chunksize < 1 else _routing.capture()
    if route is None:
        return original(pool, func, iterable, chunksize)
    if chunksize == 1:
        return original(pool, Routed(route, func), iterable, 1)
    # As the standard library does it (one task per chunk, through ``mapstar``), with
    # the route entered once per chunk rather than once per item.
    chunks = _POOL_INTERNALS.Pool._get_tasks(func, iterable, chunksize)
    return _ItemsOfChunks(original(pool, Routed(route, _POOL_INTERNALS.mapstar), chunks, 1))


class _ItemsOfChunks:
    """An ``imap`` iterator over per-chunk results, item by item, ``next(timeout)`` too."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks
        self._items: Any = iter(())

    def __iter__(self) -> _ItemsOfChunks:
        return self

    def next(self, timeout: float | None = None) -> Any:
        for item in self._items:
            return item
        while True:  # StopIteration of the chunks ends this iterator too
            self._items = iter(self._chunks.next(timeout))
            for item in self._items:
                return item

    __next__ = next


def _setup_queues(self: Any) -> None:
    _ORIGINALS["_setup_queues"](self)
    get = self._quick_get

    def get_after_output() -> Any:
        # A worker writes a task's output before its result: it is in the sockets now.
        item = get()
        _routing.drain()
        return item

    self._quick_get = get_after_output


# -- concurrent.futures.ProcessPoolExecutor ----------------------------------------------


def _submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    return _ORIGINALS["submit"](self, _routed(fn), *args, **kwargs)


def _process_result_item(self: Any, result_item: Any) -> Any:
    _routing.drain()
    return _ORIGINALS["process_result_item"](self, result_item)


def _targets() -> list[tuple[Any, str, Any]]:
    import concurrent.futures.process as cf_process

    base, pool = _std_process.BaseProcess, _std_pool.Pool
    targets = [
        (base, "start", _start),
        (base, "_bootstrap", _bootstrap),
        (base, "join", _join),
        (pool, "apply_async", _apply_async),
        (pool, "_map_async", _map_async),
        (pool, "imap", _imap),
        (pool, "imap_unordered", _imap_unordered),
        (pool, "_setup_queues", _setup_queues),
        (cf_process.ProcessPoolExecutor, "submit", _submit),
    ]
    manager = getattr(cf_process, "_ExecutorManagerThread", None)
    if manager is not None and "process_result_item" in manager.__dict__:
        targets.append((manager, "process_result_item", _process_result_item))
    return targets


def patch() -> None:
    """Route the standard library's children (idempotent)."""
    with _lock:
        if _patched:
            return
        for owner, name, replacement in _targets():
            _ORIGINALS[name] = owner.__dict__[name]
            setattr(owner, name, replacement)
            _patched.append((owner, name))


def unpatch() -> None:
    """Put back every attribute ``patch`` replaced."""
    with _lock:
        while _patched:
            owner, name = _patched.pop()
            setattr(owner, name, _ORIGINALS[name])


def patched() -> list[str]:
    """The attributes replaced now, as ``'module.Class.name'``."""
    return [f"{owner.__module__}.{owner.__qualname__}.{name}" for owner, name in _patched]
