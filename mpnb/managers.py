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
    DictProxy, EventProxy, IteratorProxy, ListProxy, MakeProxyType, Namespace,
    NamespaceProxy, PoolProxy, RebuildProxy, Server, Token, Value, ValueProxy)
from typing import Any

from . import connection


__all__ = ["BaseManager", "SyncManager", "BaseProxy", "Token", "SharedMemoryManager",
           "Namespace", "Value", "MakeProxyType", "AutoProxy", "DictProxy", "ListProxy",
           "NamespaceProxy", "ValueProxy", "ArrayProxy", "AcquirerProxy",
           "ConditionProxy", "EventProxy", "IteratorProxy", "PoolProxy", "BaseListProxy",
           "RebuildProxy", "Server"]

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
    """``multiprocessing.managers.SyncManager`` sending with mpnb's pickler."""


if hasattr(_std, "SharedMemoryManager"):
    class SharedMemoryManager(_MpnbDefaults, _std.SharedMemoryManager):
        """``multiprocessing.managers.SharedMemoryManager`` on mpnb's context."""
else:  # pragma: no cover
    __all__.remove("SharedMemoryManager")
