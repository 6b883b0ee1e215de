"""Managers whose proxies carry cell-defined objects both ways.

The standard library's managers with two defaults changed: the ``'mpnb'`` serializer
(connections that send with mpnb's pickler, see ``mpnb.connection``) and mpnb's
default context (the server process is an mpnb process). ``BaseManager.register``
takes cell-defined classes and callables.

A proxy call interrupted between its request and its reply (a ``KeyboardInterrupt``
in a notebook) leaves the reply on the way: the standard library would hand it to the
next call. A proxy of the ``'mpnb'`` serializer drops that thread's connection instead,
and its next call opens a fresh one (``_callmethod`` below).
"""

from __future__ import annotations

import multiprocessing.managers as _std
import threading
import types
from collections.abc import Callable, Iterator, Reversible
from multiprocessing.managers import BaseListProxy, BaseProxy, Namespace, Server, Token, ValueProxy
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from . import connection

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

# Re-exported names that typeshed's stub of the module leaves out (Any to the checker).
from multiprocessing.managers import (  # type: ignore[attr-defined]
    AcquirerProxy,
    ArrayProxy,
    AutoProxy,
    ConditionProxy,
    EventProxy,
    IteratorProxy,
    MakeProxyType,
    NamespaceProxy,
    PoolProxy,
    RebuildProxy,
    Value,
)

__all__ = [
    "BaseManager",
    "SyncManager",
    "BaseProxy",
    "Token",
    "SharedMemoryManager",
    "Namespace",
    "Value",
    "MakeProxyType",
    "AutoProxy",
    "DictProxy",
    "ListProxy",
    "NamespaceProxy",
    "ValueProxy",
    "ArrayProxy",
    "AcquirerProxy",
    "ConditionProxy",
    "EventProxy",
    "IteratorProxy",
    "PoolProxy",
    "BaseListProxy",
    "RebuildProxy",
    "Server",
    "SetProxy",
]

SERIALIZER = "mpnb"

_T = TypeVar("_T")
_KT = TypeVar("_KT")
_VT = TypeVar("_VT")


class _ManagersModule(Protocol):
    """What ``multiprocessing.managers`` has and typeshed leaves out."""

    # serializer name -> (Listener, Client)
    listener_client: dict[str, tuple[Callable[..., Any], Callable[..., Any]]]


class _ProxyInternals(Protocol):
    """``BaseProxy._callmethod`` as it is: it returns what the referent's method
    returned (typeshed says ``None``)."""

    def _callmethod(
        self, methodname: str, args: tuple[Any, ...] = (), kwds: dict[Any, Any] | None = None
    ) -> Any: ...


class _Exposing(Protocol):
    _exposed_: tuple[str, ...]  # the methods a proxy class forwards to its referent


def _call(proxy: BaseProxy, name: str, args: tuple[Any, ...] = ()) -> Any:
    """``proxy._callmethod(name, args)``: the referent's method's return value."""
    return cast(_ProxyInternals, proxy)._callmethod(name, args)


# A new entry beside 'pickle' and 'xmlrpclib', nothing replaced. Proxies sent to another
# process arrive there with 'mpnb' where this module is loaded and 'pickle' elsewhere:
# in mpnb's children the standard library's connections send with mpnb's pickler.
cast(_ManagersModule, _std).listener_client.setdefault(
    SERIALIZER, (connection.Listener, connection.Client)
)


class _ProxyState(Protocol):
    """``BaseProxy``'s state used here: its serializer and per-thread connection."""

    _serializer: str
    _tls: threading.local


_std_callmethod = BaseProxy._callmethod


def _callmethod(
    self: BaseProxy, methodname: str, args: tuple[Any, ...] = (), kwds: dict[Any, Any] | None = None
) -> Any:
    """``BaseProxy._callmethod``; for the ``'mpnb'`` serializer, a call cut short by a
    ``KeyboardInterrupt`` (any ``BaseException`` but an ``Exception``) closes this
    thread's connection, whose next reply would be this call's: the next call connects
    afresh and never gets a stale reply."""
    call = cast(Callable[..., Any], _std_callmethod)
    state = cast(_ProxyState, self)
    if state._serializer != SERIALIZER:
        return call(self, methodname, args, {} if kwds is None else kwds)
    try:
        return call(self, methodname, args, {} if kwds is None else kwds)
    except Exception:
        raise
    except BaseException:
        conn = getattr(state._tls, "connection", None)
        if conn is not None:
            del state._tls.connection
            try:
                conn.close()
            except OSError:
                pass
        raise


# Every proxy class inherits it; proxies of other serializers call the original.
BaseProxy._callmethod = _callmethod  # type: ignore[method-assign]

if TYPE_CHECKING:
    # A mixin over a manager class: to the type checker, a manager.
    _ManagerBase = _std.BaseManager
    _StdListProxy = _std.ListProxy
    _StdDictProxy = _std.DictProxy
    _BaseSetProxy = BaseProxy  # the methods MakeProxyType adds are not seen statically
else:
    _ManagerBase = object
    # Subscriptable (``ListProxy[_T]``, as the type checker sees them) for the class
    # statements below; at run time they are not. Subclassing the alias subclasses the
    # class itself.
    _StdListProxy = types.GenericAlias(_std.ListProxy, (_T,))
    _StdDictProxy = types.GenericAlias(_std.DictProxy, (_KT, _VT))
    _BaseSetProxy = MakeProxyType(
        "_BaseSetProxy",
        (
            "__and__",
            "__contains__",
            "__iand__",
            "__ior__",
            "__isub__",
            "__ixor__",
            "__len__",
            "__or__",
            "__rand__",
            "__ror__",
            "__rsub__",
            "__rxor__",
            "__sub__",
            "__xor__",
            "__ge__",
            "__gt__",
            "__le__",
            "__lt__",
            "add",
            "clear",
            "copy",
            "difference",
            "difference_update",
            "discard",
            "intersection",
            "intersection_update",
            "isdisjoint",
            "issubset",
            "issuperset",
            "pop",
            "remove",
            "symmetric_difference",
            "symmetric_difference_update",
            "union",
            "update",
        ),
    )


class _MpnbDefaults(_ManagerBase):
    def __init__(
        self,
        address: str | tuple[str, int] | None = None,
        authkey: bytes | None = None,
        serializer: str = SERIALIZER,
        ctx: BaseContext | None = None,
        **kwargs: Any,
    ) -> None:
        if ctx is None:
            from .context import _default_context

            ctx = _default_context.get_context()
        super().__init__(address, authkey, serializer, ctx, **kwargs)


class BaseManager(_MpnbDefaults, _std.BaseManager):
    """``multiprocessing.managers.BaseManager`` sending with mpnb's pickler."""


class SyncManager(_MpnbDefaults, _std.SyncManager):
    """``multiprocessing.managers.SyncManager`` sending with mpnb's pickler.

    With what Python 3.14 adds, on every supported Python: ``set()``, ``clear()`` and
    ``copy()`` on list proxies, ``|`` and ``|=`` on dict proxies.
    """


def _exposing(base: type, names: tuple[str, ...]) -> tuple[str, ...]:
    exposed = cast(_Exposing, base)._exposed_
    return tuple(exposed) + tuple(n for n in names if n not in exposed)


class ListProxy(_StdListProxy[_T]):
    """A list proxy with ``clear()`` and ``copy()`` (Python 3.14's)."""

    _exposed_ = _exposing(_std.ListProxy, ("clear", "copy"))

    def clear(self) -> None:
        _call(self, "clear")

    def copy(self) -> list[_T]:
        return cast("list[_T]", _call(self, "copy"))


class DictProxy(_StdDictProxy[_KT, _VT]):
    """A dict proxy with ``|``, ``|=`` and ``reversed()`` (Python 3.14's)."""

    _exposed_ = _exposing(_std.DictProxy, ("__or__", "__ror__", "keys"))

    def __or__(self, other: Any) -> dict[Any, Any]:
        return cast("dict[Any, Any]", _call(self, "__or__", (other,)))

    def __ror__(self, other: Any) -> dict[Any, Any]:
        return cast("dict[Any, Any]", _call(self, "__ror__", (other,)))

    def __ior__(self, other: Any) -> DictProxy[_KT, _VT]:
        _call(self, "update", (other,))
        return self

    def __reversed__(self) -> Iterator[_KT]:
        return reversed(cast("Reversible[_KT]", _call(self, "keys")))


class SetProxy(_BaseSetProxy):
    """A proxy of a ``set`` in the manager (``SyncManager.set()``, Python 3.14's)."""

    def __iter__(self) -> Iterator[Any]:
        return iter(_call(self, "copy"))

    def __ior__(self, other: Any) -> SetProxy:
        _call(self, "__ior__", (other,))
        return self

    def __iand__(self, other: Any) -> SetProxy:
        _call(self, "__iand__", (other,))
        return self

    def __ixor__(self, other: Any) -> SetProxy:
        _call(self, "__ixor__", (other,))
        return self

    def __isub__(self, other: Any) -> SetProxy:
        _call(self, "__isub__", (other,))
        return self


SyncManager.register("list", list, ListProxy)
SyncManager.register("dict", dict, DictProxy)
SyncManager.register("set", set, SetProxy)


if hasattr(_std, "SharedMemoryManager"):

    class SharedMemoryManager(_MpnbDefaults, _std.SharedMemoryManager):
        """``multiprocessing.managers.SharedMemoryManager`` on mpnb's context."""
else:  # pragma: no cover
    __all__.remove("SharedMemoryManager")


def __getattr__(name: str) -> Any:
    """Every other name of the standard library's module (a drop-in has them all)."""
    return getattr(_std, name)
