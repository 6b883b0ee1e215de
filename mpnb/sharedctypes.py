"""``multiprocessing.sharedctypes``: ctypes objects in shared memory, on mpnb's context.

The standard library's functions, with one default changed: a ``Value``, ``Array`` or
``synchronized`` object made without ``ctx`` gets its lock from mpnb's default context
(the standard library's would take its own default, whose locks cannot be sent to a
process of another start method). The ctypes type of an object (a ``Structure``
defined in a cell, say) travels with mpnb's pickler when it is passed to a process.
"""

from __future__ import annotations

import multiprocessing.sharedctypes as _std
from collections.abc import Sequence
from multiprocessing.sharedctypes import RawArray, RawValue, copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctypes import _CData
    from multiprocessing.context import BaseContext
    from multiprocessing.synchronize import Lock, RLock

__all__ = ["RawValue", "RawArray", "Value", "Array", "copy", "synchronized"]


def _context(ctx: BaseContext | None) -> BaseContext:
    if ctx is not None:
        return ctx
    from .context import _default_context

    return _default_context.get_context()


# Returns: as typeshed's most general overloads of the standard library's functions.
def Value(
    typecode_or_type: str | type[_CData],
    *args: Any,
    lock: bool | Lock | RLock = True,
    ctx: BaseContext | None = None,
) -> Any:
    """A synchronized ctypes object in shared memory (see ``multiprocessing.Value``)."""
    return _std.Value(typecode_or_type, *args, lock=lock, ctx=_context(ctx))


def Array(
    typecode_or_type: str | type[_CData],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: bool | Lock | RLock = True,
    ctx: BaseContext | None = None,
) -> Any:
    """A synchronized ctypes array in shared memory (see ``multiprocessing.Array``)."""
    return _std.Array(typecode_or_type, size_or_initializer, lock=lock, ctx=_context(ctx))


def synchronized(obj: Any, lock: Lock | RLock | None = None, ctx: BaseContext | None = None) -> Any:
    """``obj`` (a shared ctypes object) behind a lock of mpnb's context."""
    return _std.synchronized(obj, lock, _context(ctx))


def __getattr__(name: str) -> Any:
    """Every other name of the standard library's module (a drop-in has them all)."""
    return getattr(_std, name)
