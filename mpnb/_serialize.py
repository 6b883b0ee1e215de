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

import contextlib
import copyreg
import ctypes
import io
import marshal
import os
import pickle
import sys
import threading
import types
from collections import ChainMap
from multiprocessing import reduction
from multiprocessing.process import BaseProcess
from typing import Any, Iterator

from . import _compat

__all__ = ["Pickler", "dumps", "loads", "dump", "install", "uninstall", "installed",
           "Pickled", "SerializationError", "describe_unpicklable", "checked_dumps",
           "reduce_process", "in_band", "dumps_tracked", "release_segments",
           "segments_released_on_error", "by_reference"]

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


def _reduce_code(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """A code object as ``marshal`` writes it: all of it, its file and line numbers
    included, so a child's traceback points at the cell (``Cell In[3], line 2``).

    (cloudpickle 3.1.3 and later write ``<dynamic-code>`` for the file.) Sender and
    receiver run the same interpreter, which is all marshal asks; a code object that
    marshal refuses (made by hand, with odd constants) goes cloudpickle's way.
    """
    try:
        return marshal.loads, (marshal.dumps(code),)
    except ValueError:
        return _compat.PICKLER_DISPATCH[types.CodeType](code)  # type: ignore[no-any-return]


def _reduce_method(method: types.MethodType) -> Any:
    """A bound method (a classmethod too) by reference, ``getattr(owner, name)``, as the
    standard library sends it, where that finds the same method: its function then
    runs in its own module, on that module's globals. Otherwise cloudpickle's copy."""
    owner, name = method.__self__, method.__func__.__name__
    try:
        same = getattr(owner, name) == method
    except Exception:  # noqa: BLE001 - a descriptor that raises: copy the method
        same = False
    if same:
        return getattr, (owner, name)
    return _compat.PICKLER_DISPATCH[types.MethodType](method)


class Pickler(_compat.PicklerBase):
    """A ``ForkingPickler`` that sends dynamic functions and classes by value."""

    # A class attribute: the C pickler reads it once, in __init__. A live ChainMap, so
    # reducers registered later with ``ForkingPickler.register`` (shared ctypes types,
    # connections) are honoured.
    dispatch_table = ChainMap({io.TextIOWrapper: _reduce_text_file,
                               types.CodeType: _reduce_code,
                               types.MethodType: _reduce_method},
                              _compat.PICKLER_DISPATCH,
                              reduction.ForkingPickler._extra_reducers,
                              copyreg.dispatch_table)

    def __init__(self, file: Any, protocol: int | None = None) -> None:
        super().__init__(file, PROTOCOL if protocol is None else protocol)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _CTYPES_METACLASSES) and not by_reference(obj):
            return _reduce_ctypes_class(obj)
        numpy = sys.modules.get("numpy")
        if numpy is not None and type(obj) is numpy.ndarray and _SHARED_ARRAYS \
                and obj.nbytes >= SHARED_ARRAY_MIN:
            reduced = _reduce_large_array(obj)
            if reduced is not None:
                return reduced
        managers = sys.modules.get("multiprocessing.managers")
        if managers is not None and isinstance(obj, managers.BaseProxy):
            return _reduce_proxy(obj)
        return super().reducer_override(obj)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> tuple[Any, ...]:
        make, newargs, state, items, dict_items, _setstate = super()._dynamic_function_reduce(func)
        return make, newargs, state, items, dict_items, _set_function_state

    def _function_getnewargs(self, func: types.FunctionType) -> tuple[Any, ...]:
        # Functions from one namespace (a notebook's) share one globals dict in every
        # receiving process, as they do in the sender: a ``global`` set by a pool
        # initializer is seen by the tasks that worker runs later.
        code, base_globals, *rest = super()._function_getnewargs(func)
        return (code, _SharedGlobals(_globals_key(func.__globals__), base_globals), *rest)


# -- large numpy arrays through shared memory --------------------------------------------
# An array this large is copied once into a shared-memory segment instead of into the
# pickle, and the receiver maps that segment: no copy through the pipe, none when
# unpickling. The receiver unlinks the segment as it maps it (the mapping lives as long
# as the array); a segment never received is removed by the resource tracker when the
# program ends.
SHARED_ARRAY_MIN = 1 << 20
_SHARED_ARRAYS = os.name == "posix"


class _SegmentState(threading.local):
    def __init__(self) -> None:
        self.in_band = 0                          # > 0: no segments (see ``in_band``)
        self.created: list[str] | None = None     # names made while tracking


_segments = _SegmentState()


class in_band:
    """Within this block, large arrays go inside the pickle: for payloads loaded more
    than once (a pool's function or initializer) or never (a probe)."""

    def __enter__(self) -> None:
        _segments.in_band += 1

    def __exit__(self, *exc: object) -> None:
        _segments.in_band -= 1


@contextlib.contextmanager
def segments_released_on_error() -> Iterator[list[str]]:
    """Collect the segments pickled within; remove them if the block raises."""
    outer = _segments.created
    created: list[str] = []
    _segments.created = created
    try:
        yield created
    except BaseException:
        release_segments(created)
        raise
    finally:
        _segments.created = outer
        if outer is not None:
            outer.extend(created)


def dumps_tracked(obj: Any, root: str) -> tuple[bytes | memoryview, list[str]]:
    """``checked_dumps``, and the shared-memory segments the payload refers to (to be
    released with ``release_segments`` if the payload is never delivered)."""
    with segments_released_on_error() as created:
        return checked_dumps(obj, root), created


def release_segments(names: list[str]) -> None:
    """Remove segments made for a payload that will not be delivered."""
    import _posixshmem
    from multiprocessing import resource_tracker
    for name in names:
        try:
            _posixshmem.shm_unlink(name)
        except OSError:
            continue
        resource_tracker.unregister(name, "shared_memory")


def _reduce_large_array(array: Any) -> tuple[Any, tuple[Any, ...]] | None:
    if array.dtype.hasobject or _segments.in_band:
        return None
    if array.flags.c_contiguous:
        order = "C"
    elif array.flags.f_contiguous:
        order = "F"
    else:
        return None  # strided views go in-band, as numpy pickles them
    from multiprocessing import shared_memory
    segment = shared_memory.SharedMemory(create=True, size=array.nbytes)
    try:
        # Reserve the pages now: a full /dev/shm (64 MiB in many containers) must mean
        # an in-band pickle, not a SIGBUS while copying.
        os.posix_fallocate(segment._fd, 0, array.nbytes)  # type: ignore[attr-defined]
    except OSError:
        segment.close()
        segment.unlink()
        return None
    try:
        segment.buf[:array.nbytes] = array.reshape(-1, order=order).view("B")
    finally:
        segment.close()
    if _segments.created is not None:
        _segments.created.append(segment._name)  # type: ignore[attr-defined]
    return _array_from_shared, (segment._name, array.dtype, array.shape, order,  # type: ignore[attr-defined]
                                bool(array.flags.writeable))


def _array_from_shared(name: str, dtype: Any, shape: tuple[int, ...], order: str,
                       writeable: bool) -> Any:
    import mmap

    import _posixshmem
    import numpy
    from multiprocessing import resource_tracker
    nbytes = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    fd = _posixshmem.shm_open(name, os.O_RDWR, mode=0o600)
    try:
        mapping = mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)
    _posixshmem.shm_unlink(name)
    resource_tracker.unregister(name, "shared_memory")
    array = numpy.frombuffer(mapping, dtype=dtype).reshape(shape, order=order)
    array.flags.writeable = writeable
    return array


# -- manager proxies ------------------------------------------------------------------
def _reduce_proxy(proxy: Any) -> Any:
    rebuild, (func, token, serializer, kwds) = proxy.__reduce__()
    if serializer != "mpnb":
        return NotImplemented
    return _rebuild_proxy, (rebuild, func, token, kwds)


def _rebuild_proxy(rebuild: Any, func: Any, token: Any, kwds: dict[str, Any]) -> Any:
    """A proxy with mpnb's serializer where ``mpnb.managers`` is loaded, else 'pickle'
    (the same, in an mpnb child: its standard library sends with this pickler)."""
    from multiprocessing.managers import listener_client
    return rebuild(func, token, "mpnb" if "mpnb" in listener_client else "pickle", kwds)


# -- ctypes structures defined in cells ------------------------------------------------
# Their class dict holds field descriptors that cannot be pickled; they are rebuilt
# from ``_fields_`` instead, and come back as the same class object (cloudpickle's
# class tracking), so ``Value(CellStruct, ...)`` works across processes.
_CTYPES_METACLASSES = (type(ctypes.Structure), type(ctypes.Union))


def _reduce_ctypes_class(cls: type) -> tuple[Any, tuple[Any, ...]]:
    attrs = {name: value for name, value in vars(cls).items()
             if name not in ("__dict__", "__weakref__")
             and type(value).__name__ != "CField"}
    tracker_id = _compat.class_tracker_id(cls)
    # The metaclass by the name of its ctypes base: ``_ctypes`` does not expose it.
    kind = "Structure" if issubclass(cls, ctypes.Structure) else "Union"
    return _rebuild_ctypes_class, (kind, cls.__name__, cls.__bases__, attrs, tracker_id)


def _rebuild_ctypes_class(kind: str, name: str, bases: tuple[type, ...],
                          attrs: dict[str, Any], tracker_id: str) -> type:
    metaclass = type(getattr(ctypes, kind))
    return _compat.lookup_class_or_track(tracker_id, metaclass(name, bases, attrs))


# Identifies this process's namespaces in the keys below; new in each forked child.
_PROCESS_TOKEN = os.urandom(8).hex()
# key -> the globals dict that functions sent from that namespace share here. Holds
# the namespaces it names (so their ids stay unique); a forked child inherits it, so
# what its parent sends later finds the namespace the child already has.
_shared_namespaces: dict[tuple[str, int], dict[str, Any]] = {}
# id(dict) -> key, for the dicts above, so sending such a function on keeps its key.
_namespace_keys: dict[int, tuple[str, int]] = {}


def _globals_key(namespace: dict[str, Any]) -> tuple[str, int]:
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
        items = obj.values() if isinstance(obj, dict) else (
            obj if isinstance(obj, (tuple, list)) else (obj,))
        for item in items:
            if isinstance(item, types.FunctionType) and not by_reference(item):
                _globals_key(item.__globals__)


def by_reference(obj: Any) -> bool:
    """Whether pickling ``obj`` (a function or class) names it, rather than copying it:
    it is importable where it is loaded."""
    try:
        return _compat.should_pickle_by_reference(obj)
    except Exception:  # noqa: BLE001 - not a function or class: unsure, so copy
        return False


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


def _set_function_state(func: types.FunctionType, state: tuple[Any, Any]) -> None:
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


class _SharedGlobals:
    __slots__ = ("key", "base")

    def __init__(self, key: tuple[str, int], base: dict[str, Any]) -> None:
        self.key, self.base = key, base

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _shared_globals, (self.key, self.base)


# Making a pickler costs more than pickling a small object, so each thread keeps one
# and reuses it for payloads up to this size (larger ones keep their buffer, uncopied).
REUSE_LIMIT = 1 << 16


class _ReusablePickler(threading.local):
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.pickler = Pickler(self.buf)
        self.busy = False


_reusable = _ReusablePickler()


def dumps(obj: Any, protocol: int | None = None) -> bytes | memoryview:
    """Serialize ``obj``; the result is a bytes-like object, like ``ForkingPickler.dumps``."""
    state = _reusable
    if state.busy or (protocol is not None and protocol != PROTOCOL):
        buf = io.BytesIO()  # a nested call (from a reducer), or another protocol
        Pickler(buf, protocol).dump(obj)
        return buf.getbuffer()
    state.busy = True
    buf, pickler = state.buf, state.pickler
    try:
        pickler.dump(obj)
        if buf.tell() <= REUSE_LIMIT:
            return buf.getvalue()
        state.buf = io.BytesIO()
        state.pickler = Pickler(state.buf)
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
    try:
        with segments_released_on_error():
            payload = dumps(parts[:3])
    except SerializationError:
        raise
    except PICKLING_ERRORS as exc:
        raise _explain_process(process, exc) from exc
    return _rebuild_process, (Pickled(payload),)


def _explain_process(process: BaseProcess, exc: BaseException) -> SerializationError:
    parts = (("target", getattr(process, "_target", None)),
             ("args", tuple(getattr(process, "_args", ()))),
             ("kwargs", dict(getattr(process, "_kwargs", {}))))
    for root, value in parts:
        if _fails(value) is not None:
            error = describe_unpicklable(value, root)
            break
    else:
        error = describe_unpicklable(process, type(process).__name__, exc)
    error.args = (f"{process.name}: {error.args[0]}",)
    return error


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
        with in_band():
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
