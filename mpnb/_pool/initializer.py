"""A pool's initializer and its arguments: sent with each worker as it starts.

As in the standard library, ``initializer`` and ``initargs`` are process arguments of
every worker, pickled while its ``Popen`` is spawning (inherited under fork), so
queues, locks, events and shared ctypes in ``initargs`` travel to workers, respawned
ones too. ``check_sendable_at_start`` finds what could not travel when ``Pool()`` is
called, naming it, instead of at each worker's start.
"""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing.context import get_spawning_popen, set_spawning_popen
from typing import Any, cast

from .._pickle import checked_dumps, dumps, in_band, loads

__all__ = ["Initializer", "check_sendable_at_start"]


class Initializer:
    """A pool's initializer and its arguments, passed to each worker as a process argument.

    Pickled when that worker starts, within its ``Popen``'s spawning context, so queues,
    locks, events and shared ctypes in ``initargs`` travel as in the standard library
    (under fork it is inherited as it is). The pickle is nested: the worker loads it in
    ``run``, where an initializer that cannot be loaded is reported like one that raises.
    """

    __slots__ = ("_objects", "_data")

    def __init__(self, initializer: Any, initargs: tuple[Any, ...]) -> None:
        self._objects: tuple[Any, tuple[Any, ...]] | None = (initializer, initargs)
        self._data: bytes | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        data = self._data
        if self._objects is not None:
            # In-band: a worker stopped while it starts never loads what it was sent,
            # and a shared-memory segment would be left behind.
            with in_band():
                data = bytes(dumps(self._objects))
        return _unloaded_initializer, (data,)

    def load(self) -> tuple[Any, tuple[Any, ...]]:
        """``(initializer, initargs)``; unpickled here on first use."""
        if self._objects is None:
            assert self._data is not None  # one or the other, always
            self._objects, self._data = loads(self._data), None
        return self._objects


def _unloaded_initializer(data: bytes) -> Initializer:
    init = Initializer.__new__(Initializer)
    init._objects, init._data = None, data
    return init


class _ProbePopen:
    """Stands in for the ``Popen`` of a process being started while ``initargs`` are
    probed: what may only travel at process start (queues, locks, shared ctypes,
    connections) pickles as it would then; no descriptor is duplicated."""

    @staticmethod
    def duplicate_for_child(fd: int) -> int:
        return fd

    @staticmethod
    def DupFd(fd: int) -> int:
        return fd


def check_sendable_at_start(
    initializer: Callable[..., object], initargs: tuple[Any, ...], fork: bool
) -> None:
    """Raise ``SerializationError`` (naming ``initializer`` or ``initargs[i]``) now if
    they could not be sent to a worker when it starts.

    Each worker gets them as process arguments (``Initializer``), pickled while it
    starts, so the probe pickles them inside a spawning context as the start would.
    Under fork they are inherited, not pickled: an argument that only refuses to go to
    a spawned process (a lock made in a fork context: ``RuntimeError``) is accepted there.
    """
    outer = get_spawning_popen()
    set_spawning_popen(cast(Any, _ProbePopen()))  # a stand-in for the start's Popen
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
