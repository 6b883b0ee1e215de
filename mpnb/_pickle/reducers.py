"""Reducers for what the standard library pickles differently, or not at all.

- the interpreter's own streams by name (any other open file is refused);
- code objects whole, with their file and line numbers (``marshal``), so a child's
  traceback points at the notebook cell whatever cloudpickle does with code objects;
- bound methods of importable classes by reference, as the standard library sends them;
- manager proxies, which keep mpnb's serializer where the receiver has it;
- ctypes ``Structure``/``Union`` classes defined in cells, rebuilt from ``_fields_``.

``by_reference`` is the one answer to "can the receiver import this function or class".
"""

from __future__ import annotations

import ctypes
import io
import marshal
import sys
import types
from collections.abc import Callable
from typing import Any, Protocol, cast

from .. import _compat

__all__ = [
    "reduce_text_file",
    "reduce_code",
    "reduce_method",
    "reduce_proxy",
    "CTYPES_METACLASSES",
    "reduce_ctypes_class",
    "by_reference",
]


def reduce_text_file(file: io.TextIOWrapper) -> tuple[Any, tuple[Any, ...]]:
    """The interpreter's own streams by name; any other open file is refused.

    (cloudpickle would send a copy of a readable file's contents, which hides the
    mistake of sending a file: the child gets a snapshot, not the file.)
    """
    for name in ("stdout", "stderr", "stdin"):
        if file is getattr(sys, name, None) or file is getattr(sys, f"__{name}__", None):
            return getattr, (sys, name)
    raise TypeError(f"cannot pickle an open file ({file.name!r})")


def reduce_code(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """A code object as ``marshal`` writes it: all of it, its file and line numbers
    included, so a child's traceback points at the cell (``Cell In[3], line 2``).

    (cloudpickle 3.1.3 and later write ``<dynamic-code>`` for the file.) Sender and
    receiver run the same interpreter, which is all marshal asks; a code object that
    marshal refuses (made by hand, with odd constants) goes cloudpickle's way.
    """
    try:
        return marshal.loads, (marshal.dumps(code),)
    except ValueError:
        return _compat.PICKLER_DISPATCH[types.CodeType](code)


def reduce_method(method: types.MethodType) -> Any:
    """A bound method (a classmethod too) by reference, ``getattr(owner, name)``, as the
    standard library sends it, where that finds the same method: its function then
    runs in its own module, on that module's globals. Otherwise cloudpickle's copy."""
    owner, name = method.__self__, method.__func__.__name__
    try:
        same = getattr(owner, name) == method
    except Exception:  # a descriptor that raises: copy the method
        same = False
    if same:
        return getattr, (owner, name)
    return _compat.PICKLER_DISPATCH[types.MethodType](method)


# -- manager proxies ------------------------------------------------------------------


class _ManagersModule(Protocol):
    """What ``multiprocessing.managers`` has and typeshed leaves out."""

    # serializer name -> (Listener, Client)
    listener_client: dict[str, tuple[Callable[..., Any], Callable[..., Any]]]


def reduce_proxy(proxy: Any) -> Any:
    rebuild, (func, token, serializer, kwds) = proxy.__reduce__()
    if serializer != "mpnb":
        return NotImplemented
    return _rebuild_proxy, (rebuild, func, token, kwds)


def _rebuild_proxy(rebuild: Any, func: Any, token: Any, kwds: dict[str, Any]) -> Any:
    """A proxy with mpnb's serializer where ``mpnb.managers`` is loaded, else 'pickle'
    (the same, in an mpnb child: its standard library sends with this pickler)."""
    from multiprocessing import managers

    listener_client = cast(_ManagersModule, managers).listener_client
    return rebuild(func, token, "mpnb" if "mpnb" in listener_client else "pickle", kwds)


# -- ctypes structures defined in cells ------------------------------------------------
# Their class dict holds field descriptors that cannot be pickled; they are rebuilt
# from ``_fields_`` instead, and come back as the same class object (cloudpickle's
# class tracking), so ``Value(CellStruct, ...)`` works across processes.
CTYPES_METACLASSES = (type(ctypes.Structure), type(ctypes.Union))


def reduce_ctypes_class(cls: type) -> tuple[Any, tuple[Any, ...]]:
    attrs = {
        name: value
        for name, value in vars(cls).items()
        if name not in ("__dict__", "__weakref__") and type(value).__name__ != "CField"
    }
    tracker_id = _compat.class_tracker_id(cls)
    # The metaclass by the name of its ctypes base: ``_ctypes`` does not expose it.
    kind = "Structure" if issubclass(cls, ctypes.Structure) else "Union"
    return _rebuild_ctypes_class, (kind, cls.__name__, cls.__bases__, attrs, tracker_id)


def _rebuild_ctypes_class(
    kind: str, name: str, bases: tuple[type, ...], attrs: dict[str, Any], tracker_id: str
) -> type:
    metaclass = type(getattr(ctypes, kind))
    return _compat.lookup_class_or_track(tracker_id, metaclass(name, bases, attrs))


def by_reference(obj: Any) -> bool:
    """Whether pickling ``obj`` (a function or class) names it, rather than copying it:
    it is importable where it is loaded."""
    try:
        return _compat.should_pickle_by_reference(obj)
    except Exception:  # not a function or class: unsure, so copy
        return False
