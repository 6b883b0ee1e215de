"""Connections whose ``send`` accepts cell-defined objects.

Re-exports the standard library's ``multiprocessing.connection`` (``wait``,
``Listener``, ``Client``...) with ``Pipe``, ``Listener`` and ``Client`` returning
connections that ``send`` with mpnb's pickler; ``recv`` is unchanged (plain
``pickle.loads`` reads what cloudpickle wrote). A connection sent to a child arrives
there as an mpnb connection too.
"""
from __future__ import annotations

import multiprocessing.connection as _std
import sys
from multiprocessing import reduction
from multiprocessing.connection import (  # noqa: F401 - re-exported
    AuthenticationError, BufferTooShort, answer_challenge, deliver_challenge, wait)
from typing import Any

from . import _pickle

__all__ = ["Connection", "Pipe", "Listener", "Client", "wait", "BufferTooShort",
           "AuthenticationError", "answer_challenge", "deliver_challenge"]


class Connection(_std.Connection):
    """A connection whose ``send`` pickles with mpnb's pickler."""

    def send(self, obj: Any) -> None:
        self._check_closed()
        self._check_writable()
        self._send_bytes(_pickle.checked_dumps(obj, "the object"))


def _adopt(conn: Any) -> Any:
    """The same OS handle, as an mpnb ``Connection``."""
    if sys.platform == "win32":  # pragma: no cover - named pipes keep their class
        return conn
    handle, conn._handle = conn._handle, None  # hand the descriptor over
    return Connection(handle, conn.readable, conn.writable)


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """A pair of connected ``Connection`` objects (see ``multiprocessing.Pipe``)."""
    a, b = _std.Pipe(duplex)
    return _adopt(a), _adopt(b)


class Listener(_std.Listener):
    def accept(self) -> Connection:
        return _adopt(super().accept())


def Client(address: Any, family: str | None = None, authkey: bytes | None = None) -> Any:
    return _adopt(_std.Client(address, family, authkey))


def _reduce_connection(conn: Connection) -> tuple[Any, tuple[Any, ...]]:
    return _rebuild_connection, (reduction.DupFd(conn.fileno()), conn.readable,
                                 conn.writable)


def _rebuild_connection(dup: Any, readable: bool, writable: bool) -> Connection:
    return Connection(dup.detach(), readable, writable)


if sys.platform != "win32":
    reduction.register(Connection, _reduce_connection)


def __getattr__(name: str) -> Any:
    """Every other name of the standard library's module (a drop-in has them all)."""
    return getattr(_std, name)
