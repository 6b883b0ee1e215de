"""Queues whose items may be cell-defined objects.

``put`` serializes the item at once, in the caller's thread, with mpnb's pickler. Two
differences from the standard library follow, both on purpose:

- an item that cannot be sent raises ``SerializationError`` at the ``put`` call (the
  standard library prints the error later, from its feeder thread, and drops the item);
- the item is sent as it was when ``put`` was called, not as it is when the feeder
  thread gets to it.

The bytes go straight to the pipe from ``put`` when the feeder thread is idle and one
non-blocking write can take them (``_queue_pipe``: no hand-over between threads, the same
order, and ``put`` still never blocks on the pipe); otherwise to the feeder thread.

The feeder thread sends those bytes as they are: ``multiprocessing.queues`` gets a
stand-in for its ``ForkingPickler`` that passes mpnb's pre-pickled items through and
hands everything else to ``ForkingPickler`` unchanged (installed when the first mpnb
queue or ``BoundedSemaphore`` is made, in this process or a child).

Standard library queues made with an mpnb context (the call queue of
``concurrent.futures.ProcessPoolExecutor(mp_context=mpnb.get_context(...))``) send with
mpnb's pickler too: each such queue holds a ``BoundedSemaphore`` of the context and
hands it to its feeder thread, by which the stand-in recognises that thread. Queues of
standard library contexts see no difference.

``get`` is the standard library's.
"""

from __future__ import annotations

import collections
import multiprocessing.queues as _std
import pickle
import queue
import threading
import types
from collections.abc import Callable
from multiprocessing import reduction, synchronize
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from . import _pickle
from ._queue_pipe import QueuePipe
from .connection import Connection, _adopt

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

__all__ = ["Queue", "JoinableQueue", "SimpleQueue", "BoundedSemaphore"]

_T = TypeVar("_T")


class _QueuesModule(Protocol):
    """What ``multiprocessing.queues`` has and typeshed leaves out."""

    _ForkingPickler: Any  # the pickler its feeder threads send with


class _QueueClass(Protocol):
    """The private static method of ``multiprocessing.queues.Queue`` used here."""

    _feed: Callable[..., None]  # the feeder thread's target


class _Finalizer(Protocol):
    """``multiprocessing.util.Finalize``: a queue's ``_close``."""

    def still_active(self) -> bool: ...


class _Resettable(Protocol):
    """``multiprocessing.queues.Queue._reset`` (typeshed leaves it out)."""

    def _reset(self, after_fork: bool = False) -> None: ...


class _SemLockState(Protocol):
    """``multiprocessing.synchronize.SemLock.__setstate__`` (typeshed leaves it out)."""

    def __setstate__(self, state: Any) -> None: ...


_std_queues = cast(_QueuesModule, _std)


class _Prepickled(_pickle.Pickled):
    """An item pickled by ``put``; the feeder sends its bytes as they are."""

    __slots__ = ()


class _FeederPickler:
    """``multiprocessing.queues._ForkingPickler``, passing ``_Prepickled`` through."""

    # What ``get`` calls per item, looked up once (``ForkingPickler.loads`` is it).
    loads = staticmethod(pickle.loads)

    @staticmethod
    def dumps(obj: Any, protocol: int | None = None) -> bytes | memoryview:
        if type(obj) is _Prepickled:
            return obj.data
        if _feeds_mpnb_queue():
            # In-band: an item of the standard library's queue may never be received.
            with _pickle.in_band():
                return _pickle.checked_dumps(obj, "the item")
        return reduction.ForkingPickler.dumps(obj, protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(reduction.ForkingPickler, name)


class BoundedSemaphore(synchronize.BoundedSemaphore):
    """``multiprocessing.BoundedSemaphore``; it also marks the queues of mpnb contexts.

    ``multiprocessing.queues.Queue`` makes one per queue with ``ctx.BoundedSemaphore``
    and passes it to its feeder thread (CPython 3.10 to 3.14), so the feeder pickler
    knows a queue made with an mpnb context by it (see the module docstring).
    """

    def __init__(self, value: int = 1, *, ctx: BaseContext) -> None:
        _install_feeder_pickler()
        super().__init__(value, ctx=ctx)

    def __setstate__(self, state: Any) -> None:
        _install_feeder_pickler()
        cast(_SemLockState, super()).__setstate__(state)


class _FeederState(threading.local):
    mpnb: bool | None = None  # whether this thread feeds a queue of an mpnb context


_feeder_state = _FeederState()


def _feeds_mpnb_queue() -> bool:
    """Whether the current thread is the feeder thread of a queue of an mpnb context."""
    state = _feeder_state
    if state.mpnb is None:
        thread = threading.current_thread()
        feed = cast(_QueueClass, _std.Queue)._feed
        state.mpnb = getattr(thread, "_target", None) is feed and any(
            isinstance(arg, BoundedSemaphore) for arg in getattr(thread, "_args", ())
        )
    return state.mpnb


_feeder_pickler = _FeederPickler()
_feeder_lock = threading.Lock()


def _install_feeder_pickler() -> None:
    with _feeder_lock:
        if _std_queues._ForkingPickler is not _feeder_pickler:
            _std_queues._ForkingPickler = _feeder_pickler


if TYPE_CHECKING:
    # A mixin over a queue class: to the type checker, a queue.
    _PutBase = _std.Queue[Any]
    _StdQueue = _std.Queue
    _StdJoinableQueue = _std.JoinableQueue
    _StdSimpleQueue = _std.SimpleQueue
else:
    # The standard library's classes, made subscriptable (``Queue[_T]``, as the type
    # checker sees them) for the class statements below: at run time they are only
    # from Python 3.12. Subclassing the alias subclasses the class itself.
    _PutBase = object
    _StdQueue = types.GenericAlias(_std.Queue, (_T,))
    _StdJoinableQueue = types.GenericAlias(_std.JoinableQueue, (_T,))
    _StdSimpleQueue = types.GenericAlias(_std.SimpleQueue, (_T,))


class _PrepicklingPut(_PutBase):
    # The standard library's, set in __init__ or _reset (typeshed leaves them out).
    _closed: bool
    _sem: synchronize.BoundedSemaphore
    _wlock: synchronize.Lock | None
    _writer: Connection
    _buffer: collections.deque[Any]
    _notempty: threading.Condition
    _thread: threading.Thread | None
    _close: _Finalizer | None
    _send_bytes: Callable[[bytes | memoryview], None]
    _start_thread: Callable[[], None]
    # mpnb's: the pipe's write end, written from ``put`` when it can (``_queue_pipe``).
    _pipe: QueuePipe | None

    def __init__(self, maxsize: int = 0, *, ctx: BaseContext) -> None:
        _install_feeder_pickler()
        super().__init__(maxsize, ctx=ctx)

    def __setstate__(self, state: Any) -> None:
        _install_feeder_pickler()
        super().__setstate__(state)

    def _reset(self, after_fork: bool = False) -> None:
        """The standard library's, then the pipe set up for writes from ``put`` (a new
        queue, an unpickled one, or a forked child's)."""
        cast(_Resettable, super())._reset(after_fork)
        self._pipe = None
        if self._wlock is None:  # Windows: no write lock, the feeder alone writes
            return
        try:
            fd = self._writer.fileno()
        except OSError:  # closed
            return
        self._pipe = QueuePipe(fd, self._wlock)
        self._send_bytes = self._pipe.send

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        data, segments = _pickle.dumps_tracked(obj, "the item")  # plain data first
        try:
            if self._closed:
                raise ValueError(f"Queue {self!r} is closed")
            if not self._sem.acquire(block, timeout):
                raise queue.Full
            self._enqueue(data)
        except BaseException:  # closed, Full: the item's shared arrays go too
            _pickle.release_segments(segments)
            raise

    def _enqueue(self, data: bytes | memoryview) -> None:
        """``put`` after its checks: what the standard library's does under its lock."""
        with self._notempty:
            if self._thread is None:
                self._start_thread()
            self._send_or_hand_over(data)

    def _send_or_hand_over(self, data: bytes | memoryview) -> None:
        """Write the item to the pipe now if the feeder is idle and the write cannot
        block, else hand it to the feeder. Called holding ``_notempty``."""
        pipe = self._pipe
        if pipe is not None:
            close = self._close
            # ``close`` still active: no sentinel yet, so the feeder keeps the pipe open.
            if (
                pipe.idle
                and not self._buffer
                and close is not None
                and close.still_active()
                and pipe.try_send(data)
            ):
                return
            pipe.handed += 1
        self._buffer.append(_Prepickled(data))
        self._notempty.notify()


class Queue(_PrepicklingPut, _StdQueue[_T]):
    """``multiprocessing.Queue`` whose items may be cell-defined objects."""


class JoinableQueue(_PrepicklingPut, _StdJoinableQueue[_T]):
    """``multiprocessing.JoinableQueue`` whose items may be cell-defined objects."""

    # The standard library's (typeshed leaves them out).
    _cond: threading.Condition
    _unfinished_tasks: synchronize.Semaphore

    def _enqueue(self, data: bytes | memoryview) -> None:
        with self._notempty, self._cond:
            if self._thread is None:
                self._start_thread()
            # Counted under ``_cond``, which ``task_done`` takes too, as in the stdlib.
            self._unfinished_tasks.release()
            self._send_or_hand_over(data)


class SimpleQueue(_StdSimpleQueue[_T]):
    """``multiprocessing.SimpleQueue`` whose items may be cell-defined objects."""

    # The standard library's, set in __init__ (typeshed leaves them out).
    _reader: Connection
    _writer: Connection
    _wlock: synchronize.Lock | None
    _poll: Callable[[float | None], bool]

    def __init__(self, *, ctx: BaseContext) -> None:
        super().__init__(ctx=ctx)
        # Code that writes to the pipe directly (a pool's task handler) sends with
        # mpnb's pickler too.
        self._reader, self._writer = _adopt(self._reader), _adopt(self._writer)
        self._poll = self._reader.poll

    def put(self, obj: Any) -> None:
        data, segments = _pickle.dumps_tracked(obj, "the item")
        try:
            if self._wlock is None:
                self._writer.send_bytes(data)
            else:
                with self._wlock:
                    self._writer.send_bytes(data)
        except BaseException:
            _pickle.release_segments(segments)
            raise


def __getattr__(name: str) -> Any:
    """Every other name of the standard library's module (a drop-in has them all)."""
    return getattr(_std, name)
