"""The pickler: by value only what must be, and a reusable one per thread.

``Pickler`` is multiprocessing's ``ForkingPickler`` (its reducers for connections,
sockets, shared ctypes...) plus cloudpickle's by-value reducers, which apply only to
objects a child could not import: a function, lambda, closure or class defined in a
notebook cell travels by value; everything importable by reference, byte for byte as
with the standard library, so plain data is no slower. ``dumps`` reuses one pickler per
thread for small payloads; ``Pickled`` carries bytes made here through another pickler.

Non-goal: pickling what cannot be pickled at all (open files, sockets outside of process
start-up, ``threading`` locks): ``diagnose`` says what to do instead.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import sys
import threading
import types
from collections import ChainMap
from collections.abc import Callable
from multiprocessing import reduction
from typing import Any, Protocol, cast

from .. import _compat
from . import buffers, sharedmem
from .arrays import SHARED_ARRAYS
from .namespaces import SharedGlobals, globals_key, set_function_state
from .reducers import (
    CTYPES_METACLASSES,
    by_reference,
    reduce_code,
    reduce_ctypes_class,
    reduce_method,
    reduce_proxy,
    reduce_text_file,
)

__all__ = ["Pickler", "PROTOCOL", "dumps", "plain_dumps", "loads", "dump", "Pickled"]

loads = pickle.loads

# The highest protocol every supported Python reads; protocol 5 also lets large
# buffers (numpy arrays) go out-of-band where the transport supports it.
PROTOCOL = pickle.HIGHEST_PROTOCOL


class _ForkingPicklerClass(Protocol):
    """``ForkingPickler``'s reducers registered with ``register`` (typeshed leaves it out)."""

    _extra_reducers: dict[type, Callable[[Any], Any]]


class Pickler(_compat.PicklerBase):
    """A ``ForkingPickler`` that sends dynamic functions and classes by value."""

    # A class attribute: the C pickler reads it once, in __init__. A live ChainMap, so
    # reducers registered later with ``ForkingPickler.register`` (shared ctypes types,
    # connections) are honoured.
    dispatch_table: ChainMap[type, Callable[[Any], Any]] = ChainMap(
        {
            io.TextIOWrapper: reduce_text_file,
            types.CodeType: reduce_code,
            types.MethodType: reduce_method,
        },
        _compat.PICKLER_DISPATCH,
        cast(_ForkingPicklerClass, reduction.ForkingPickler)._extra_reducers,
        copyreg.dispatch_table,
    )

    def __init__(self, file: Any, protocol: int | None = None, buffer_callback: Any = None) -> None:
        super().__init__(
            file, PROTOCOL if protocol is None else protocol, buffer_callback=buffer_callback
        )

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, CTYPES_METACLASSES) and not by_reference(obj):
            return reduce_ctypes_class(obj)
        numpy = sys.modules.get("numpy")
        if numpy is not None and type(obj) is numpy.ndarray and SHARED_ARRAYS:
            reduced = sharedmem.reduce_shared_array(obj) or buffers.reduce_received_array(obj)
            if reduced is not None:
                return reduced
        managers = sys.modules.get("multiprocessing.managers")
        if managers is not None and isinstance(obj, managers.BaseProxy):
            return reduce_proxy(obj)
        return super().reducer_override(obj)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> tuple[Any, ...]:
        make, newargs, state, items, dict_items, _setstate = super()._dynamic_function_reduce(func)
        return make, newargs, state, items, dict_items, set_function_state

    def _function_getnewargs(self, func: types.FunctionType) -> tuple[Any, ...]:
        # Functions from one namespace (a notebook's) share one globals dict in every
        # receiving process, as they do in the sender: a ``global`` set by a pool
        # initializer is seen by the tasks that worker runs later.
        code, base_globals, *rest = super()._function_getnewargs(func)
        return (code, SharedGlobals(globals_key(func.__globals__), base_globals), *rest)


# Making a pickler costs more than pickling a small object, so each thread keeps one
# and reuses it for payloads up to this size (larger ones keep their buffer, uncopied).
REUSE_LIMIT = 1 << 16


class _ReusablePickler(threading.local):
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.pickler = Pickler(self.buf, buffer_callback=buffers.on_buffer)
        self.busy = False


_reusable = _ReusablePickler()


class _NotPlain(Exception):
    """Raised by ``_PlainPickler`` at the first object that is not plain data."""


def _not_plain(obj: Any) -> Any:
    raise _NotPlain


class _PlainPickler(pickle.Pickler):
    """The C pickler for plain data only: it stops at anything else.

    The C pickler writes exact ``None``, ``bool``, ``int``, ``float``, ``str``,
    ``bytes``, ``bytearray``, ``dict``, ``list``, ``tuple``, ``set`` and ``frozenset``
    itself and asks ``reducer_override`` about every other object; this one raises
    there. For plain data the bytes are those ``Pickler`` writes (same protocol, same
    code path in C), without cloudpickle's Python-level ``dump``.
    """

    reducer_override = staticmethod(_not_plain)


class _ReusablePlain(threading.local):
    def __init__(self) -> None:
        buf = io.BytesIO()
        # [busy, buffer, pickler]: one lookup of the thread's state per call.
        self.state: list[Any] = [False, buf, _PlainPickler(buf, PROTOCOL)]


_plain = _ReusablePlain()


def plain_dumps(obj: Any) -> bytes | memoryview | None:
    """``obj`` pickled as ``dumps`` would, if it is plain data; ``None`` for anything
    else (then use ``dumps``)."""
    state = _plain.state
    if state[0]:  # a nested call (from a signal handler): the full pickler
        return None
    state[0] = True
    buf = state[1]
    data: bytes | memoryview | None = None
    try:
        state[2].dump(obj)
        if buf.tell() <= REUSE_LIMIT:
            data = buf.getvalue()
        else:  # large: keep its buffer, uncopied
            data = buf.getbuffer()
            state[1] = io.BytesIO()
            state[2] = _PlainPickler(state[1], PROTOCOL)
    except Exception:  # _NotPlain, or too deep: the full pickler says what went wrong
        pass
    finally:
        if state[1] is buf:
            buf.seek(0)
            buf.truncate()
            state[2].clear_memo()
        state[0] = False
    return data


def dumps(obj: Any, protocol: int | None = None) -> bytes | memoryview:
    """Serialize ``obj``; the result is a bytes-like object, like ``ForkingPickler.dumps``.

    Large buffers go out of band into shared memory (``buffers``); the result is then
    a frame that ``pickle.loads`` unpickles all the same."""
    state = _reusable
    if not state.busy and (protocol is None or protocol == PROTOCOL):
        data = plain_dumps(obj)
        if data is not None:
            return data
    if state.busy or (protocol is not None and protocol != PROTOCOL):
        buf = io.BytesIO()  # a nested call (from a reducer), or another protocol
        if protocol is not None and protocol < 5:
            Pickler(buf, protocol).dump(obj)
            return buf.getbuffer()
        with buffers.collecting() as found:
            Pickler(buf, protocol, buffer_callback=buffers.on_buffer).dump(obj)
        return buffers.frame(buf.getbuffer(), found) if found else buf.getbuffer()
    state.busy = True
    buf, pickler = state.buf, state.pickler
    try:
        with buffers.collecting() as found:
            pickler.dump(obj)
        if found:
            return buffers.frame(buf.getbuffer(), found)
        if buf.tell() <= REUSE_LIMIT:
            return buf.getvalue()
        state.buf = io.BytesIO()
        state.pickler = Pickler(state.buf, buffer_callback=buffers.on_buffer)
        return buf.getbuffer()
    finally:
        if state.buf is buf:
            buf.seek(0)
            buf.truncate()
            pickler.clear_memo()
            pickler.globals_ref.clear()
        state.busy = False


def dump(obj: Any, file: Any, protocol: int | None = None) -> None:
    """Serialize ``obj`` into an open binary file."""
    Pickler(file, protocol).dump(obj)


class Pickled:
    """Bytes already serialized by ``dumps``, carried through a plain pickler.

    Used where the standard library pickles an object itself (a process object at
    start-up, an item in a queue's feeder thread): the payload was made by mpnb's
    pickler, the outer pickle only carries it.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return loads, (bytes(self.data) if isinstance(self.data, memoryview) else self.data,)
