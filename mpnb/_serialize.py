"""Pickling for objects that cross a process boundary.

Goal: a function, lambda, closure or class defined in a notebook cell (the kernel's
interactive ``__main__``, or any module a child cannot import) travels *by value*
through cloudpickle; everything importable travels *by reference*, exactly as with
the standard library, so payloads stay small and plain data is no slower.

Scope:
- ``Pickler``: multiprocessing's ``ForkingPickler`` reducers (connections, sockets,
  shared ctypes...) plus cloudpickle's by-value reducers for dynamic code.
- ``dumps`` / ``loads``: what mpnb's queues, pipes, managers and pools use.
- ``install`` / ``uninstall``: make the standard library's own ``ForkingPickler`` use
  this pickler. mpnb children always install it (so they can send cell-defined objects
  back and to each other); the IPython extension installs it in the kernel.
- ``SerializationError``: raised in the sender, naming the object that cannot be sent.

Non-goal: pickling what cannot be pickled at all (open files, sockets outside of
process start-up, locks of the ``threading`` module): the error says what to do instead.
"""
from __future__ import annotations

import copyreg
import io
import pickle
import sys
import threading
import types
from collections import ChainMap
from multiprocessing import reduction
from multiprocessing.process import BaseProcess
from typing import Any

import cloudpickle

__all__ = ["Pickler", "dumps", "loads", "dump", "install", "uninstall", "installed",
           "Pickled", "SerializationError", "describe_unpicklable", "checked_dumps",
           "reduce_process"]

loads = pickle.loads

# The highest protocol every supported Python reads; protocol 5 also lets large
# buffers (numpy arrays) go out-of-band where the transport supports it.
PROTOCOL = pickle.HIGHEST_PROTOCOL


def _reduce_text_file(file: io.TextIOWrapper) -> tuple[Any, tuple[Any, ...]]:
    """The interpreter's own streams by name; any other open file is refused.

    (cloudpickle would send a copy of a readable file's contents, which hides the
    mistake of sending a file: the child gets a snapshot, not the file.)
    """
    for name in ("stdout", "stderr", "stdin"):
        if file is getattr(sys, name, None) or file is getattr(sys, f"__{name}__", None):
            return getattr, (sys, name)
    raise TypeError(f"cannot pickle an open file ({file.name!r})")


class Pickler(cloudpickle.Pickler):
    """A ``ForkingPickler`` that sends dynamic functions and classes by value."""

    # A class attribute: the C pickler reads it once, in __init__. A live ChainMap, so
    # reducers registered later with ``ForkingPickler.register`` (shared ctypes types,
    # connections) are honoured.
    dispatch_table = ChainMap({io.TextIOWrapper: _reduce_text_file},
                              cloudpickle.Pickler._dispatch_table,
                              reduction.ForkingPickler._extra_reducers,
                              copyreg.dispatch_table)

    def __init__(self, file: Any, protocol: int | None = None) -> None:
        super().__init__(file, PROTOCOL if protocol is None else protocol)


def dumps(obj: Any, protocol: int | None = None) -> memoryview:
    """Serialize ``obj``; the result is a buffer, like ``ForkingPickler.dumps``."""
    buf = io.BytesIO()
    Pickler(buf, protocol).dump(obj)
    return buf.getbuffer()


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


# -- the global switch -------------------------------------------------------------
_install_lock = threading.Lock()
_install_count = 0
_saved: dict[str, Any] = {}


def _forking_dumps(cls: type, obj: Any, protocol: int | None = None) -> memoryview:
    return dumps(obj, protocol)


def _forking_dump(obj: Any, file: Any, protocol: int | None = None) -> None:
    if isinstance(obj, BaseProcess):  # a process object being started
        obj = _ProcessEnvelope(obj)
    dump(obj, file, protocol)


# -- process objects ---------------------------------------------------------------
def reduce_process(process: BaseProcess) -> tuple[Any, tuple[Any, ...]]:
    """Reduce a process object so that the child installs this pickler first.

    The process (its class, target, args) is pickled by this module's pickler even
    when the standard library's pickler starts it; unpickling it in the child installs
    the pickler there, so the child can send dynamic objects back.
    """
    parts = object.__reduce_ex__(process, PROTOCOL)
    return _rebuild_process, (Pickled(dumps(parts[:3])),)


def _rebuild_process(parts: tuple[Any, ...]) -> BaseProcess:
    install()
    make, args, state = parts
    process = make(*args)
    if state:
        process.__dict__.update(state)
    return process


class _ProcessEnvelope:
    __slots__ = ("process",)

    def __init__(self, process: BaseProcess) -> None:
        self.process = process

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return reduce_process(self.process)


def install() -> None:
    """Make the standard library's ``ForkingPickler`` send dynamic code by value.

    Counted: each ``install`` needs one ``uninstall``. Affects every multiprocessing
    object in this process (queues, pipes, pools, managers, process start-up).
    """
    global _install_count
    with _install_lock:
        _install_count += 1
        if _install_count > 1:
            return
        fp = reduction.ForkingPickler
        _saved["dumps"] = fp.__dict__["dumps"]
        _saved["dump"] = reduction.dump
        fp.dumps = classmethod(_forking_dumps)
        reduction.dump = _forking_dump


def uninstall() -> None:
    """Undo one ``install``; the last one restores the standard library's pickler."""
    global _install_count
    with _install_lock:
        if _install_count == 0:
            return
        _install_count -= 1
        if _install_count:
            return
        reduction.ForkingPickler.dumps = _saved.pop("dumps")
        reduction.dump = _saved.pop("dump")


def installed() -> bool:
    """Whether the standard library's pickler currently sends dynamic code by value."""
    return _install_count > 0


# -- errors ------------------------------------------------------------------------
class SerializationError(pickle.PicklingError, TypeError):
    """An object cannot be sent to another process.

    ``path`` names where it sits in what was sent (``args[1]['conn']``), ``obj_type``
    its type.
    """

    def __init__(self, message: str, path: str = "", obj_type: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.obj_type = obj_type


# What pickling raises for an object that cannot be pickled; other errors (a lock
# shared across incompatible contexts, say) already explain themselves.
PICKLING_ERRORS = (pickle.PicklingError, TypeError, AttributeError)

# What to do instead, by the kind of object that failed.
_ADVICE = (
    (("TextIOWrapper", "BufferedReader", "BufferedWriter", "BufferedRandom", "FileIO"),
     "pass the file's path and open it in the child"),
    (("socket",), "pass the address and connect in the child, or use mpnb.Pipe()/Queue()"),
    (("Connection", "Cursor"),
     "pass the database path or URL and connect in the child (sqlite3 connections "
     "belong to one process)"),
    (("generator", "async_generator", "coroutine"),
     "pass a list (list(gen)) or the generator function and its arguments"),
    (("lock", "RLock", "Condition", "Semaphore", "Event", "Barrier"),
     "use mpnb.Lock(), mpnb.RLock(), mpnb.Event()... which work across processes"),
    (("Thread",), "threads cannot move between processes; start the thread in the child"),
)


def _advice_for(obj: Any) -> str:
    name = type(obj).__name__
    for names, advice in _ADVICE:
        if name in names or any(n.lower() == name.lower() for n in names):
            return advice
    return "send data the child can rebuild (plain values, or what is needed to recreate it)"


def _children(obj: Any) -> list[tuple[str, Any]]:
    """The parts of ``obj`` that pickling it would pickle, with their path suffixes."""
    if isinstance(obj, dict):
        return [(f"[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return [(f"{{item {i}}}", v) for i, v in enumerate(obj)]
    if isinstance(obj, types.FunctionType):
        parts = []
        for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
            try:
                parts.append((f".<closure {name!r}>", cell.cell_contents))
            except ValueError:
                continue
        names = _code_names(obj.__code__)
        parts += [(f".__globals__[{name!r}]", obj.__globals__[name])
                  for name in names if name in obj.__globals__]
        return parts
    if isinstance(obj, type):
        return []
    try:
        reduced = obj.__reduce_ex__(PROTOCOL)
    except Exception:  # noqa: BLE001 - this object itself is the culprit
        return []
    state = reduced[2] if isinstance(reduced, tuple) and len(reduced) > 2 else None
    if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
        state = {**(state[0] or {}), **(state[1] or {})}
    if isinstance(state, dict):
        return [(f".{k}", v) for k, v in state.items()]
    return []


def _code_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _code_names(const)
    return names


def _fails(obj: Any) -> BaseException | None:
    try:
        dumps(obj)
    except Exception as exc:  # noqa: BLE001 - any failure to pickle counts
        return exc
    return None


def describe_unpicklable(obj: Any, root: str, error: BaseException | None = None,
                         *, depth: int = 6) -> SerializationError:
    """Find the innermost part of ``obj`` that cannot be pickled and explain it."""
    path, culprit, cause = root, obj, error
    for _ in range(depth):
        for suffix, child in _children(culprit):
            child_error = _fails(child)
            if child_error is not None:
                path, culprit, cause = path + suffix, child, child_error
                break
        else:
            break
    type_name = f"{type(culprit).__module__}.{type(culprit).__qualname__}"
    reason = f" ({cause})" if cause is not None else ""
    message = (f"cannot send {path} to another process: an object of type {type_name} "
               f"cannot be pickled{reason}. Instead, {_advice_for(culprit)}.")
    return SerializationError(message, path=path, obj_type=type_name)


def checked_dumps(obj: Any, root: str) -> memoryview:
    """``dumps``, with a ``SerializationError`` naming the culprit under ``root``."""
    try:
        return dumps(obj)
    except SerializationError:
        raise
    except PICKLING_ERRORS as exc:
        raise describe_unpicklable(obj, root, exc) from exc
