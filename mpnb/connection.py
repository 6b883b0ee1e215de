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
from multiprocessing import AuthenticationError, BufferTooShort, reduction
from multiprocessing.connection import answer_challenge, deliver_challenge, wait
from typing import Any, Protocol, cast

from . import _pickle

__all__ = [
    "Connection",
    "Pipe",
    "Listener",
    "Client",
    "wait",
    "BufferTooShort",
    "AuthenticationError",
    "answer_challenge",
    "deliver_challenge",
]


class _ConnectionInternals(Protocol):
    """The private parts of ``multiprocessing.connection.Connection`` used here
    (typeshed leaves them out)."""

    _handle: int | None

    def _check_closed(self) -> None: ...
    def _check_writable(self) -> None: ...
    def _send_bytes(self, buf: bytes | memoryview) -> None: ...


def _internals(conn: _std.Connection) -> _ConnectionInternals:
    return cast(_ConnectionInternals, conn)


class Connection(_std.Connection):
    """A connection whose ``send`` pickles with mpnb's pickler."""

    def send(self, obj: Any) -> None:
        std = _internals(self)
        std._check_closed()
        std._check_writable()
        std._send_bytes(_pickle.checked_dumps(obj, "the object"))


def _adopt(conn: _std.Connection) -> Connection:
    """The same OS handle, as an mpnb ``Connection``."""
    if sys.platform == "win32":  # pragma: no cover - named pipes keep their class
        return conn
    std = _internals(conn)
    handle, std._handle = std._handle, None  # hand the descriptor over
    assert handle is not None, "adopting a closed connection"
    return Connection(handle, conn.readable, conn.writable)


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """A pair of connected ``Connection`` objects (see ``multiprocessing.Pipe``)."""
    a, b = _std.Pipe(duplex)
    return _adopt(a), _adopt(b)


class Listener(_std.Listener):
    def accept(self) -> Connection:
        return _adopt(super().accept())


def Client(address: Any, family: str | None = None, authkey: bytes | None = None) -> Connection:
    return _adopt(_std.Client(address, family, authkey))


def _reduce_connection(conn: Connection) -> tuple[Any, tuple[Any, ...]]:
    return _rebuild_connection, (reduction.DupFd(conn.fileno()), conn.readable, conn.writable)


class _Detachable(Protocol):
    """What ``reduction.DupFd`` returns (one of three classes): a descriptor to take."""

    def detach(self) -> int: ...


def _rebuild_connection(dup: _Detachable, readable: bool, writable: bool) -> Connection:
    return Connection(dup.detach(), readable, writable)


if sys.platform != "win32":
    reduction.register(Connection, _reduce_connection)


def __getattr__(name: str) -> Any:
    """Every other name of the standard library's module (a drop-in has them all)."""
    return getattr(_std, name)
