"""Functions from one notebook namespace share one globals dict in each receiver.

As they do in the sender: a ``global`` set by a pool initializer is seen by the tasks
that worker runs later. A received value replaces the one in the receiver's namespace
only if that one is still what was received before: a value the receiver set itself is
kept, a value the sender changed since (a notebook variable) arrives. What comes back to
the sender never writes into the sender's own namespace.
"""

from __future__ import annotations

import os
import types
from typing import Any

from .. import _compat
from .reducers import by_reference

__all__ = ["globals_key", "remember_namespaces", "SharedGlobals", "set_function_state"]


# Identifies this process's namespaces in the keys below; new in each forked child.
_PROCESS_TOKEN = os.urandom(8).hex()
# key -> the globals dict that functions sent from that namespace share here. Holds
# the namespaces it names (so their ids stay unique); a forked child inherits it, so
# what its parent sends later finds the namespace the child already has.
_shared_namespaces: dict[tuple[str, int], dict[str, Any]] = {}
# id(dict) -> key, for the dicts above, so sending such a function on keeps its key.
_namespace_keys: dict[int, tuple[str, int]] = {}


def globals_key(namespace: dict[str, Any]) -> tuple[str, int]:
    key = _namespace_keys.get(id(namespace))
    if key is None:
        key = (_PROCESS_TOKEN, id(namespace))
        _namespace_keys[id(namespace)] = key
        _shared_namespaces[key] = namespace
    return key


def remember_namespaces(*objects: Any) -> None:
    """Before a fork: note the namespaces of the functions among ``objects`` (and one
    level inside tuples, lists and dicts), so functions sent to the child later share
    the globals it inherited (a pool initializer's, say)."""
    for obj in objects:
        items = (
            obj.values()
            if isinstance(obj, dict)
            else (obj if isinstance(obj, (tuple, list)) else (obj,))
        )
        for item in items:
            if isinstance(item, types.FunctionType) and not by_reference(item):
                globals_key(item.__globals__)


def _after_fork_in_child() -> None:
    global _PROCESS_TOKEN
    _PROCESS_TOKEN = os.urandom(8).hex()
    # What a forked child inherited counts as received from its parent: values the
    # parent sends later replace it, values the child sets itself are kept.
    for namespace in _shared_namespaces.values():
        _received[id(namespace)] = dict(namespace)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _shared_globals(key: tuple[str, int], base: dict[str, Any]) -> dict[str, Any]:
    if key[0] == _PROCESS_TOKEN:
        # A function of this process's own namespace coming back: it gets a copy of
        # what it needs, never this process's namespace itself (a worker's values must
        # not overwrite the notebook's).
        return base
    namespace = _shared_namespaces.get(key)
    if namespace is None:
        namespace = _shared_namespaces[key] = base
        _namespace_keys[id(base)] = key
    return namespace


# id(shared namespace) -> {name: the value last received for it}. A received value
# replaces the one in the namespace only if that one is still what was received before:
# a value the receiver set itself (a pool initializer's ``global``) is kept, a value
# the sender changed since (a notebook variable) arrives.
_received: dict[int, dict[str, Any]] = {}


def set_function_state(func: types.FunctionType, state: tuple[Any, Any]) -> None:
    attributes, slots = state
    incoming = slots["__globals__"]
    namespace = func.__globals__
    if id(namespace) in _namespace_keys and incoming:
        received = _received.setdefault(id(namespace), {})
        missing = object()
        for name, value in incoming.items():
            current = namespace.get(name, missing)
            if current is missing or current is received.get(name, missing):
                namespace[name] = value
                received[name] = value
        slots = dict(slots, __globals__={})
    _compat.function_setstate(func, (attributes, slots))


class SharedGlobals:
    __slots__ = ("key", "base")

    def __init__(self, key: tuple[str, int], base: dict[str, Any]) -> None:
        self.key, self.base = key, base

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _shared_globals, (self.key, self.base)
