"""What cannot be sent, where it sits, and what to do instead.

``checked_dumps`` pickles or raises ``SerializationError`` naming the innermost part
that failed (``args[1]['conn']``, ``target.__globals__['log']``), its type and advice.
"""

from __future__ import annotations

import pickle
import types
from typing import Any

from .arrays import in_band, segments_released_on_error
from .pickler import PROTOCOL, dumps, plain_dumps

__all__ = [
    "SerializationError",
    "PICKLING_ERRORS",
    "describe_unpicklable",
    "fails",
    "checked_dumps",
    "dumps_tracked",
]


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
    (
        ("TextIOWrapper", "BufferedReader", "BufferedWriter", "BufferedRandom", "FileIO"),
        "pass the file's path and open it in the child",
    ),
    (("socket",), "pass the address and connect in the child, or use mpnb.Pipe()/Queue()"),
    (
        ("Connection", "Cursor"),
        "pass the database path or URL and connect in the child (sqlite3 connections "
        "belong to one process)",
    ),
    (
        ("generator", "async_generator", "coroutine"),
        "pass a list (list(gen)) or the generator function and its arguments",
    ),
    (
        ("lock", "RLock", "Condition", "Semaphore", "Event", "Barrier"),
        "use mpnb.Lock(), mpnb.RLock(), mpnb.Event()... which work across processes",
    ),
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
        parts += [
            (f".__globals__[{name!r}]", obj.__globals__[name])
            for name in names
            if name in obj.__globals__
        ]
        return parts
    if isinstance(obj, type):
        return []
    try:
        reduced = obj.__reduce_ex__(PROTOCOL)
    except Exception:  # this object itself is the culprit
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


def fails(obj: Any) -> BaseException | None:
    try:
        with in_band():
            dumps(obj)
    except Exception as exc:  # any failure to pickle counts
        return exc
    return None


def describe_unpicklable(
    obj: Any, root: str, error: BaseException | None = None, *, depth: int = 6
) -> SerializationError:
    """Find the innermost part of ``obj`` that cannot be pickled and explain it."""
    path, culprit, cause = root, obj, error
    for _ in range(depth):
        for suffix, child in _children(culprit):
            child_error = fails(child)
            if child_error is not None:
                path, culprit, cause = path + suffix, child, child_error
                break
        else:
            break
    type_name = f"{type(culprit).__module__}.{type(culprit).__qualname__}"
    reason = f" ({cause})" if cause is not None else ""
    message = (
        f"cannot send {path} to another process: an object of type {type_name} "
        f"cannot be pickled{reason}. Instead, {_advice_for(culprit)}."
    )
    return SerializationError(message, path=path, obj_type=type_name)


def checked_dumps(obj: Any, root: str) -> bytes | memoryview:
    """``dumps``, with a ``SerializationError`` naming the culprit under ``root``."""
    try:
        return dumps(obj)
    except SerializationError:
        raise
    except PICKLING_ERRORS as exc:
        raise describe_unpicklable(obj, root, exc) from exc


def dumps_tracked(obj: Any, root: str) -> tuple[bytes | memoryview, list[str]]:
    """``checked_dumps``, and the shared-memory segments the payload refers to (to be
    released with ``release_segments`` if the payload is never delivered)."""
    data = plain_dumps(obj)  # plain data: no segments, no errors
    if data is not None:
        return data, []
    with segments_released_on_error() as created:
        return checked_dumps(obj, root), created
