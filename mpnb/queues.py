"""Queues whose items may be cell-defined objects.

``put`` serializes the item at once, in the caller's thread, with mpnb's pickler. Two
differences from the standard library follow, both on purpose:

- an item that cannot be sent raises ``SerializationError`` at the ``put`` call (the
  standard library prints the error later, from its feeder thread, and drops the item);
- the item is sent as it was when ``put`` was called, not as it is when the feeder
  thread gets to it.

``get`` is the standard library's.
"""
from __future__ import annotations

import multiprocessing.queues as _std
from typing import Any

from . import _serialize
from .connection import _adopt

__all__ = ["Queue", "JoinableQueue", "SimpleQueue"]


class Queue(_std.Queue):
    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        payload = _serialize.Pickled(_serialize.checked_dumps(obj, "the item"))
        super().put(payload, block, timeout)


class JoinableQueue(_std.JoinableQueue):
    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        payload = _serialize.Pickled(_serialize.checked_dumps(obj, "the item"))
        super().put(payload, block, timeout)


class SimpleQueue(_std.SimpleQueue):
    def __init__(self, *, ctx: Any) -> None:
        super().__init__(ctx=ctx)
        # Code that writes to the pipe directly (a pool's task handler) sends with
        # mpnb's pickler too.
        self._reader, self._writer = _adopt(self._reader), _adopt(self._writer)
        self._poll = self._reader.poll

    def put(self, obj: Any) -> None:
        data = _serialize.checked_dumps(obj, "the item")
        if self._wlock is None:
            self._writer.send_bytes(data)
        else:
            with self._wlock:
                self._writer.send_bytes(data)
