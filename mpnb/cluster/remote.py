"""The worker side of a pool on a Dask cluster: run a pickled task, send its output.

``run`` is the one function the client submits (by reference: ``mpnb`` is installed on
the workers). It unpickles the task with mpnb's pickler, runs it, and returns its
values pickled by mpnb again (so a class defined in a notebook cell comes back as that
class) and each failed item as an ``errors.ErrorRecord``: plain data, so Dask never
sees the task's exception (no retry, no ``tblib``). What the task writes to
``sys.stdout``/``sys.stderr`` (``print``, ``logging``'s default handler) while it runs
goes, line by line, to the client as a Dask event (``Worker.log_event`` on the pool's
topic), tagged with the task's key and the cell's route; the count sent rides with the
result so that the client publishes the output before the result.

Imports ``distributed`` (the worker has it); the client imports this module only
through ``engine``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from typing import Any

from distributed import get_worker

from .._pickle import dumps, in_band, loads
from ..errors import TaskSerializationError, capture

__all__ = ["run", "STARTED", "OUTPUT", "AT_ITEM"]

_HERE = __file__

# Kinds of event a task sends on its pool's topic.
STARTED, OUTPUT, AT_ITEM = "started", "output", "at-item"


class _Capture:
    """The output of one running task: whole lines go out as events at once, an
    unfinished line after ``FLUSH_DELAY`` (``_flusher``)."""

    __slots__ = (
        "topic",
        "key",
        "route",
        "sent",
        "partial",
        "since",
        "worker",
        "item",
        "item_since",
        "told",
        "lock",
        "__weakref__",
    )

    def __init__(self, topic: str, key: str, route: Any, worker: Any) -> None:
        self.topic = topic
        self.key = key
        self.route = route
        self.worker = worker
        self.sent = 0
        self.partial = {"stdout": "", "stderr": ""}
        self.since: float | None = None  # when the oldest unfinished line began
        self.item = -1  # the index of the map item running (-1: none)
        self.item_since = 0.0
        self.told = -1  # the last item told to the client
        self.lock = threading.Lock()

    def event(self, kind: str, **fields: Any) -> None:
        msg = {"kind": kind, "key": self.key, "worker": self.worker.address, **fields}
        self.worker.log_event(self.topic, msg)
        self.sent += 1

    def write(self, stream: str, text: str) -> None:
        with self.lock:
            text = self.partial[stream] + text
            head, sep, tail = text.rpartition("\n")
            self.partial[stream] = tail
            if sep:
                self.event(OUTPUT, stream=stream, text=head + sep, route=self.route)
            if tail:
                if self.since is None:
                    self.since = time.monotonic()
                _pending.add(self)
            elif not any(self.partial.values()):
                self.since = None

    def flush(self) -> None:
        with self.lock:
            for stream, text in self.partial.items():
                if text:
                    self.partial[stream] = ""
                    self.event(OUTPUT, stream=stream, text=text, route=self.route)
            self.since = None


# Seconds an unfinished line waits before it is sent as it is.
FLUSH_DELAY = 0.1

# Captures holding an unfinished line, watched by the flusher thread.
_pending: weakref.WeakSet[_Capture] = weakref.WeakSet()
# Captures of the map chunks running here: an item that runs longer than ``FLUSH_DELAY``
# is told to the client, which names it if the worker dies.
_chunks: weakref.WeakSet[_Capture] = weakref.WeakSet()


def _flusher() -> None:
    while True:
        time.sleep(FLUSH_DELAY / 2)
        now = time.monotonic()
        for out in list(_pending):
            since = out.since
            if since is not None and now - since >= FLUSH_DELAY:
                out.flush()
            if out.since is None:
                _pending.discard(out)
        for out in list(_chunks):
            item = out.item
            if item >= 0 and item != out.told and now - out.item_since >= FLUSH_DELAY:
                with out.lock:
                    out.told = item
                    out.event(AT_ITEM, index=item)


_local = threading.local()


class _Stream:
    """``sys.stdout``/``sys.stderr`` of a worker: a task's thread writes into its
    ``_Capture``; any other thread (Dask's own) to the stream that was there."""

    def __init__(self, name: str, original: Any) -> None:
        self.name = name
        self.original = original

    def write(self, text: str) -> int:
        capture_ = getattr(_local, "capture", None)
        if capture_ is None:
            return int(self.original.write(text) or 0)
        capture_.write(self.name, str(text))
        return len(text)

    def flush(self) -> None:
        if getattr(_local, "capture", None) is None:
            self.original.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


_install_lock = threading.Lock()
_flusher_started: list[bool] = []

# The pools (their topics) whose initializer ran in this process.
_initialized: set[str] = set()


def _install_streams() -> None:
    """Once per worker process: per-thread capture on ``sys.stdout``/``sys.stderr``, and
    the thread that sends unfinished lines."""
    with _install_lock:
        if not _flusher_started:
            _flusher_started.append(True)
            threading.Thread(target=_flusher, name="mpnb-output-flush", daemon=True).start()
        if not isinstance(sys.stdout, _Stream):
            sys.stdout = _Stream("stdout", sys.stdout)
        if not isinstance(sys.stderr, _Stream):
            sys.stderr = _Stream("stderr", sys.stderr)


def run(
    topic: str,
    key: str,
    route: Any,
    func_bytes: bytes,
    payload: bytes,
    star: int,
    start: int,
    *shared: Any,
) -> tuple[bytes | None, list[tuple[int, Any]], int, str, int, float, float]:
    """Run one task: ``star`` -1 is an apply (``payload``: args and kwds), 0 a chunk of
    ``map``, 1 of ``starmap`` (``payload``: the items, from index ``start``).
    ``shared`` are scattered arrays the payload refers to by position.

    Returns ``(values pickled, [(offset, ErrorRecord)], events sent, worker, pid, began,
    seconds)``: ``began`` on the wall clock (machines differ in their monotonic clocks),
    ``seconds`` on the worker's ``perf_counter``.
    """
    began, clock = time.time(), time.perf_counter()
    worker = get_worker()
    _install_streams()
    out = _Capture(topic, key, route, worker)
    out.event(STARTED, pid=os.getpid())
    _local.capture = out
    values: list[Any] = []
    errors: list[tuple[int, Any]] = []
    try:
        try:
            func, init = loads(func_bytes)
            if init is not None and topic not in _initialized:
                _initialized.add(topic)
                initializer, initargs = init
                initializer(*initargs)
            data = _resolve(loads(payload), shared, star < 0)
        except Exception as exc:
            errors.append((0, capture(exc, skip=_HERE)))
            data = None
        if data is not None:
            if star < 0:
                args, kwds = data
                try:
                    values.append(func(*args, **kwds))
                except Exception as exc:
                    errors.append((0, capture(exc, skip=_HERE)))
            else:
                _chunks.add(out)
                try:
                    _map(func, data, bool(star), values, errors, out, start)
                finally:
                    _chunks.discard(out)
                    out.item = -1
    finally:
        _local.capture = None
        out.flush()
    blob = _pickled(values, errors, start if star >= 0 else None)
    return blob, errors, out.sent, worker.address, os.getpid(), began, time.perf_counter() - clock


def _map(
    func: Any,
    items: list[Any],
    star: bool,
    values: list[Any],
    errors: list[tuple[int, Any]],
    out: _Capture,
    start: int,
) -> None:
    clock = time.monotonic
    for offset, item in enumerate(items):
        out.item_since = clock()
        out.item = start + offset
        try:
            values.append(func(*item) if star else func(item))
        except Exception as exc:
            errors.append((offset, capture(exc, skip=_HERE, item=item, has_item=True)))
            values.append(None)


def _pickled(values: list[Any], errors: list[tuple[int, Any]], start: int | None) -> bytes | None:
    """``values`` pickled by mpnb; one that cannot be becomes an error of its item."""
    try:
        with in_band():
            return bytes(dumps(values))
    except Exception:
        pass
    failed = dict(errors)
    for offset, value in enumerate(values):
        if offset in failed:
            continue
        try:
            with in_band():
                dumps(value)
        except Exception:
            exc = TaskSerializationError.of_result(value, None if start is None else start + offset)
            failed[offset] = capture(exc, skip=_HERE)
            values[offset] = None
    errors[:] = sorted(failed.items())
    with in_band():
        return bytes(dumps(values))


class Shared:
    """In a payload: the scattered array passed as ``shared[index]``."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> Any:
        return Shared, (self.index,)


def _resolve(data: Any, shared: tuple[Any, ...], apply: bool) -> Any:
    """``data`` (args and kwds, or items) with each ``Shared`` one level down replaced."""
    if not shared:
        return data
    if apply:
        args, kwds = data
        return (
            tuple(shared[a.index] if isinstance(a, Shared) else a for a in args),
            {k: shared[v.index] if isinstance(v, Shared) else v for k, v in kwds.items()},
        )
    return [shared[i.index] if isinstance(i, Shared) else i for i in data]
