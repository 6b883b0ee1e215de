"""Managers whose proxies carry cell-defined objects both ways.

The standard library's managers with two defaults changed: the ``'mpnb'`` serializer
(connections that send with mpnb's pickler, see ``mpnb.connection``) and mpnb's
default context (the server process is an mpnb process). ``BaseManager.register``
takes cell-defined classes and callables.
"""
from __future__ import annotations

import multiprocessing.managers as _std
from multiprocessing.managers import (  # noqa: F401 - re-exported
    AcquirerProxy, ArrayProxy, AutoProxy, BaseListProxy, BaseProxy, ConditionProxy,
    EventProxy, IteratorProxy, MakeProxyType, Namespace,
    NamespaceProxy, PoolProxy, RebuildProxy, Server, Token, Value, ValueProxy)
from typing import Any

from . import connection


__all__ = ["BaseManager", "SyncManager", "BaseProxy", "Token", "SharedMemoryManager",
           "Namespace", "Value", "MakeProxyType", "AutoProxy", "DictProxy", "ListProxy",
           "NamespaceProxy", "ValueProxy", "ArrayProxy", "AcquirerProxy",
           "ConditionProxy", "EventProxy", "IteratorProxy", "PoolProxy", "BaseListProxy",
           "RebuildProxy", "Server", "SetProxy"]

SERIALIZER = "mpnb"
# A new entry beside 'pickle' and 'xmlrpclib', nothing replaced. Proxies sent to another
# process arrive there with 'mpnb' where this module is loaded and 'pickle' elsewhere:
# in mpnb's children the standard library's connections send with mpnb's pickler.
_std.listener_client.setdefault(SERIALIZER, (connection.Listener, connection.Client))


class _MpnbDefaults:
    def __init__(self, address: Any = None, authkey: bytes | None = None,
                 serializer: str = SERIALIZER, ctx: Any = None, **kwargs: Any) -> None:
        if ctx is None:
            from .context import _default_context
            ctx = _default_context.get_context()
        super().__init__(address, authkey, serializer, ctx, **kwargs)  # type: ignore[call-arg]


class BaseManager(_MpnbDefaults, _std.BaseManager):
    """``multiprocessing.managers.BaseManager`` sending with mpnb's pickler."""


class SyncManager(_MpnbDefaults, _std.SyncManager):
    """``multiprocessing.managers.SyncManager`` sending with mpnb's pickler.

    With what Python 3.14 adds, on every supported Python: ``set()``, ``clear()`` and
    ``copy()`` on list proxies, ``|`` and ``|=`` on dict proxies.
    """


def _exposing(base: type, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(base._exposed_) + tuple(n for n in names if n not in base._exposed_)  # type: ignore[attr-defined]


class ListProxy(_std.ListProxy):
    """A list proxy with ``clear()`` and ``copy()`` (Python 3.14's)."""

    _exposed_ = _exposing(_std.ListProxy, ("clear", "copy"))

    def clear(self) -> None:
        self._callmethod("clear")

    def copy(self) -> list[Any]:
        return self._callmethod("copy")  # type: ignore[no-any-return]


class DictProxy(_std.DictProxy):
    """A dict proxy with ``|``, ``|=`` and ``reversed()`` (Python 3.14's)."""

    _exposed_ = _exposing(_std.DictProxy, ("__or__", "__ror__", "keys"))

    def __or__(self, other: Any) -> dict[Any, Any]:
        return self._callmethod("__or__", (other,))  # type: ignore[no-any-return]

    def __ror__(self, other: Any) -> dict[Any, Any]:
        return self._callmethod("__ror__", (other,))  # type: ignore[no-any-return]

    def __ior__(self, other: Any) -> DictProxy:
        self._callmethod("update", (other,))
        return self

    def __reversed__(self) -> Any:
        return reversed(self._callmethod("keys"))


_BaseSetProxy = _std.MakeProxyType("_BaseSetProxy", (
    "__and__", "__contains__", "__iand__", "__ior__", "__isub__", "__ixor__", "__len__",
    "__or__", "__rand__", "__ror__", "__rsub__", "__rxor__", "__sub__", "__xor__",
    "__ge__", "__gt__", "__le__", "__lt__", "add", "clear", "copy", "difference",
    "difference_update", "discard", "intersection", "intersection_update", "isdisjoint",
    "issubset", "issuperset", "pop", "remove", "symmetric_difference",
    "symmetric_difference_update", "union", "update"))


class SetProxy(_BaseSetProxy):  # type: ignore[misc,valid-type]
    """A proxy of a ``set`` in the manager (``SyncManager.set()``, Python 3.14's)."""

    def __iter__(self) -> Any:
        return iter(self._callmethod("copy"))

    def __ior__(self, other: Any) -> SetProxy:
        self._callmethod("__ior__", (other,))
        return self

    def __iand__(self, other: Any) -> SetProxy:
        self._callmethod("__iand__", (other,))
        return self

    def __ixor__(self, other: Any) -> SetProxy:
        self._callmethod("__ixor__", (other,))
        return self

    def __isub__(self, other: Any) -> SetProxy:
        self._callmethod("__isub__", (other,))
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
