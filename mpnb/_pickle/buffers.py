"""Large buffers out of band, through shared memory (pickle protocol 5).

Objects that pickle their data as ``PickleBuffer`` (contiguous numpy arrays, so the
numeric blocks of pandas frames too) hand ``dumps`` each buffer of
``SHARED_ARRAY_MIN`` bytes or more through ``buffer_callback``: its bytes go into a
shared-memory segment (one ``pwrite``), not into the pickle. The pickle is then framed
(``Framed``): a plain ``pickle.loads`` of the frame maps the segments and unpickles the
rest with them as ``buffers``, so the receiver's arrays are views of the mapping, with
no copy. Non-contiguous arrays and object dtypes give no ``PickleBuffer``: they go in
band, as do all buffers within ``in_band()``, and when /dev/shm is full.

A segment is one-shot or leased. A one-shot segment (results, queue items, process
arguments) has one receiver, which unlinks it as it maps it, writable if the buffer
was. A leased one (``leasing(holder)``: a pool's task arguments) stays while the array
it was made from lives or a holder (the task's job) does; receivers map it read-only
and keep the mapping, and it is reused when the same bytes are sent again (the rule is
above ``_Entry``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import mmap
import os
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from .arrays import (
    SHARED_ARRAY_MIN,
    SHARED_ARRAYS,
    SHM_DIR,
    _posixshmem_module,
    _segments,
    new_name,
    release_segments,
)

__all__ = [
    "on_buffer",
    "collecting",
    "leasing",
    "lease",
    "keep_mapping",
    "Framed",
    "load_framed",
    "frame",
]

# (name, nbytes, one_shot, writable): how a frame names a segment. A one-shot segment has one
# receiver, which maps it writable if the buffer was; a leased one is mapped read-only.
Segment = tuple[str, int, bool, bool]

_WRITE_CHUNK = 1 << 30  # Linux writes at most ~2 GiB per call


class _BufferState(threading.local):
    def __init__(self) -> None:
        self.found: list[Segment] | None = None  # the frame being made
        self.leased: list[Any] | None = None  # segments used within leasing()


_state = _BufferState()
_to_writable: set[int] = set()  # ids of buffers whose one-shot segment is mapped writable


@contextlib.contextmanager
def collecting() -> Iterator[list[Segment]]:
    """Within: buffers handed to ``on_buffer`` go out of band; yields their segments."""
    outer = _state.found
    found: list[Segment] = []
    _state.found = found
    try:
        yield found
    finally:
        _state.found = outer
        if outer is None:
            _to_writable.clear()


def on_buffer(buffer: pickle.PickleBuffer) -> bool:
    """The pickler's ``buffer_callback``: ``False`` (out of band) when the buffer went
    into a segment, ``True`` (in band) otherwise."""
    found = _state.found
    if found is None or _segments.in_band or not SHARED_ARRAYS:
        return True
    try:
        view = buffer.raw()
    except BufferError:  # not contiguous
        return True
    if view.nbytes < SHARED_ARRAY_MIN:
        return True
    if _state.leased is not None:
        entry = _reusable(view)
        if entry is not None:
            _state.leased.append(entry)
            found.append((entry.name, entry.nbytes, False, False))
            return False
    name = _write_segment(view)
    if name is None and _evict_unleased():
        name = _write_segment(view)  # room made by segments kept only for reuse
    if name is None:
        return True  # /dev/shm full: in band, as numpy pickles it
    if _state.leased is not None:
        entry = _remember(view, name)
        if entry is not None:
            _state.leased.append(entry)
            found.append((name, view.nbytes, False, False))
            return False
    if _segments.created is not None:
        _segments.created.append(name)
    writable = not view.readonly or id(buffer) in _to_writable
    found.append((name, view.nbytes, True, writable))
    _register(name)
    return False


def _mapping_under(array: Any) -> Any:
    numpy = sys.modules["numpy"]
    obj: Any = array
    while isinstance(obj, numpy.ndarray):
        obj = obj.base
    return obj.obj if isinstance(obj, memoryview) else obj


def reduce_received_array(array: Any) -> tuple[Any, tuple[Any, ...]] | None:
    """An array received here read-only from a leased segment (read-only for reuse's
    sake only) pickles to a writable one, as the sender's was: a result that is (a view
    of) its argument arrives writable. ``None``: any other array."""
    if not _mapped or array.flags.writeable:
        return None
    if array.flags.c_contiguous:
        order = "C"
    elif array.flags.f_contiguous:
        order = "F"
    else:
        return None
    base = _mapping_under(array)
    if not any(base is mapping for mapping in list(_mapped.values())):
        return None
    buffer = pickle.PickleBuffer(array)
    _to_writable.add(id(buffer))  # its segment is mapped writable (``on_buffer``)
    return _writable_frombuffer, (buffer, array.dtype, array.shape, order)


def _writable_frombuffer(buffer: Any, dtype: Any, shape: tuple[int, ...], order: str) -> Any:
    import numpy

    view = memoryview(buffer)
    base = view.obj
    if isinstance(base, mmap.mmap) and len(base) == view.nbytes:
        flat = numpy.frombuffer(base, dtype=dtype)  # the one-shot segment, mapped writable
        if not flat.flags.writeable:
            flat = flat.copy()
    else:
        flat = numpy.frombuffer(bytearray(view), dtype=dtype)  # in band
    return flat.reshape(shape, order="F" if order == "F" else "C")


def _register(name: str) -> None:
    from multiprocessing import resource_tracker

    resource_tracker.register(name, "shared_memory")


def _write_segment(view: memoryview) -> str | None:
    """A new segment holding ``view``'s bytes (its name), or ``None`` if there is no
    room: ``pwrite`` reserves and fills the pages in one pass, and a full /dev/shm is
    an ``OSError`` here rather than a SIGBUS later."""
    shm = _posixshmem_module()
    name = "/" + new_name()  # as SharedMemory names it: what the tracker knows
    try:
        fd = shm.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except OSError:
        return None
    try:
        data = view.cast("B") if view.ndim != 1 or view.format != "B" else view
        done, size = 0, data.nbytes
        while done < size:
            done += os.pwrite(fd, data[done : done + _WRITE_CHUNK], done)
    except OSError:
        os.close(fd)
        shm.shm_unlink(name)
        return None
    os.close(fd)
    return name


def _map(name: str, nbytes: int, writable: bool = False) -> mmap.mmap:
    shm = _posixshmem_module()
    fd = shm.shm_open(name, os.O_RDWR if writable else os.O_RDONLY, 0o600)
    try:
        if writable:
            return mmap.mmap(fd, nbytes)
        return mmap.mmap(fd, nbytes, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


# -- reuse ------------------------------------------------------------------------------
#
# The rule: a leased segment is reused for a buffer when the buffer is at the same
# address with the same size as the one it was made from, that memory's owner (the
# base array) is still alive, and the segment's bytes equal the buffer's now (a
# ``memcmp``: it reads both, about 7x cheaper than writing a new segment, and cannot
# miss an in-place write, whatever flags or views were used to make it). The
# read-only flag is not trusted: a read-only view of a writable array can change, and
# an array that owns its data can be made writable again.


class _Entry:
    __slots__ = ("name", "nbytes", "address", "owner", "mapping", "leases", "__weakref__")

    def __init__(self, name: str, nbytes: int, address: int) -> None:
        self.name = name
        self.nbytes = nbytes
        self.address = address
        self.owner: weakref.ref[Any] | None = None
        self.mapping: mmap.mmap | None = None
        self.leases = 0

    def unleased(self) -> None:
        """(``_lock`` held.) Remove the segment if it was replaced and is now unleased."""
        if self.leases == 0 and self in _retired:
            _retire(self)


_lock = threading.Lock()
_entries: dict[tuple[int, int], _Entry] = {}  # (address, nbytes) -> the live entry
_retired: set[_Entry] = set()  # replaced, still leased
_atexit_set = False


def _address(view: memoryview) -> int | None:
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    return int(numpy.frombuffer(view, dtype=numpy.uint8).ctypes.data)


def _owner_of(view: memoryview) -> Any:
    """The base array of the memory ``view`` exposes (``None``: not a numpy array)."""
    numpy = sys.modules.get("numpy")
    obj = view.obj
    if numpy is None or not isinstance(obj, numpy.ndarray):
        return None
    while isinstance(obj.base, numpy.ndarray):
        obj = obj.base
    return obj


_memcmp: Any = None


def _same_bytes(address: int, entry: _Entry) -> bool:
    global _memcmp
    if _memcmp is None:
        libc = ctypes.CDLL(None)
        libc.memcmp.restype = ctypes.c_int
        libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        _memcmp = libc.memcmp
    if entry.mapping is None:
        try:
            entry.mapping = _map(entry.name, entry.nbytes)
        except OSError:
            return False
    numpy = sys.modules["numpy"]
    mapped = int(numpy.frombuffer(entry.mapping, dtype=numpy.uint8).ctypes.data)
    return int(_memcmp(address, mapped, entry.nbytes)) == 0


def _reusable(view: memoryview) -> _Entry | None:
    address = _address(view)
    if address is None:
        return None
    with _lock:
        entry = _entries.get((address, view.nbytes))
    if entry is None or entry.owner is None or entry.owner() is None:
        return None
    if _owner_of(view) is not entry.owner():
        return None
    if _same_bytes(address, entry):
        return entry
    return None


def _remember(view: memoryview, name: str) -> _Entry | None:
    """Keep ``name`` for reuse while the array ``view`` belongs to lives."""
    global _atexit_set
    address, owner = _address(view), _owner_of(view)
    if address is None or owner is None:
        return None
    entry = _Entry(name, view.nbytes, address)
    key = (address, view.nbytes)
    try:
        entry.owner = weakref.ref(owner, lambda _: _owner_gone(entry))
    except TypeError:
        return None
    _register(name)
    with _lock:
        old = _entries.get(key)
        _entries[key] = entry
        if old is not None:
            _retire(old)
        if not _atexit_set:
            atexit.register(_release_all)
            _atexit_set = True
    return entry


def _retire(entry: _Entry) -> None:
    """(Lock held.) ``entry`` is no longer reusable; remove its segment once unleased."""
    entry.owner = None
    if entry.mapping is not None:
        try:
            entry.mapping.close()
        except BufferError:
            pass
        entry.mapping = None
    if entry.leases:
        _retired.add(entry)
    else:
        _retired.discard(entry)
        release_segments([entry.name])


def _evict_unleased() -> bool:
    """Remove the segments kept only for reuse (no pending task holds them); whether
    there were any."""
    with _lock:
        idle = [(key, e) for key, e in _entries.items() if not e.leases]
        for key, entry in idle:
            del _entries[key]
            _retire(entry)
    return bool(idle)


def _owner_gone(entry: _Entry) -> None:
    with _lock:
        key = (entry.address, entry.nbytes)
        if _entries.get(key) is entry:
            del _entries[key]
            _retire(entry)


def _unlease(entries: list[Any]) -> None:
    with _lock:
        for entry in entries:
            entry.leases -= 1
            entry.unleased()


def lease(segment: Any) -> None:
    """Within ``leasing``: the holder keeps ``segment`` (with ``leases`` and
    ``unleased()``) until it is gone."""
    if _state.leased is not None:
        _state.leased.append(segment)


def _release_all() -> None:
    with _lock:
        for entry in list(_entries.values()) + list(_retired):
            entry.leases = 0
            _retire(entry)
        _entries.clear()


def _forget_after_fork() -> None:
    """In a forked child: the parent's segments are the parent's to remove."""
    global _lock, _pruner
    _lock = threading.Lock()
    _pruner = None  # not running here; the next mapping starts one
    _entries.clear()
    _retired.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def live_segments() -> list[str]:
    """The names of the leased segments this process keeps (for tests)."""
    with _lock:
        return [e.name for e in _entries.values()] + [e.name for e in _retired]


@contextlib.contextmanager
def leasing(holder: Any) -> Iterator[None]:
    """Within: large buffers go into reusable segments that stay while ``holder`` (a
    pool's job: alive until its result is in) lives. A holder that cannot be weakly
    referenced gets one-shot segments."""
    try:
        probe = weakref.ref(holder)
    except TypeError:
        yield
        return
    del probe
    outer = _state.leased
    leased: list[Any] = []
    _state.leased = leased
    try:
        yield
    except BaseException:
        # Nothing was sent: the segments no other job holds go now.
        _state.leased = outer
        with _lock:
            for entry in leased:
                if not isinstance(entry, _Entry) or entry.leases:
                    continue
                key = (entry.address, entry.nbytes)
                if _entries.get(key) is entry:
                    del _entries[key]
                    _retire(entry)
        raise
    _state.leased = outer
    if leased:
        with _lock:
            for entry in leased:
                entry.leases += 1
        weakref.finalize(holder, _unlease, leased)


# -- the frame --------------------------------------------------------------------------


class Framed:
    """A pickle whose large buffers lie in segments: unpickled by ``load_framed``."""

    __slots__ = ("data", "segments")

    def __init__(self, data: bytes, segments: list[Segment]) -> None:
        self.data = data
        self.segments = segments

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return load_framed, (self.data, self.segments)


def frame(data: bytes | memoryview, segments: list[Segment]) -> bytes:
    """``data`` (a pickle made with ``on_buffer``) and its segments, as one pickle."""
    return pickle.dumps(Framed(bytes(data), list(segments)), pickle.HIGHEST_PROTOCOL)


# A receiver keeps its mappings of leased segments (their bytes never change), so a
# buffer sent again costs no page faults. One whose segment its sender has removed is
# dropped at the next frame received, or within ``_PRUNE_EVERY`` seconds by a daemon
# thread (an idle worker does not pin the memory of an array its sender let go).
_mapped: dict[str, mmap.mmap] = {}
_PRUNE_EVERY = 1.0
_pruner: threading.Thread | None = None


def _prune_mapped() -> None:
    for name in list(_mapped):
        if not os.path.exists(SHM_DIR + name):
            _mapped.pop(name, None)


def _prune_while_mapped() -> None:
    global _pruner
    while True:
        time.sleep(_PRUNE_EVERY)
        _prune_mapped()
        if not _mapped:
            _pruner = None  # a later mapping starts another
            return


def keep_mapping(name: str, mapping: mmap.mmap) -> None:
    """Keep ``mapping`` of segment ``name`` until the segment is removed."""
    global _pruner
    _mapped[name] = mapping
    if _pruner is None:
        _pruner = threading.Thread(target=_prune_while_mapped, name="mpnb-unmap", daemon=True)
        _pruner.start()


def load_framed(data: bytes, segments: list[Segment]) -> Any:
    """Map the segments read-only (unlinking the one-shot ones), then unpickle."""
    from multiprocessing import resource_tracker

    shm = _posixshmem_module()
    views: list[memoryview] = []
    error: BaseException | None = None
    if _mapped:
        _prune_mapped()
    for name, nbytes, one_shot, writable in segments:
        if error is None:
            try:
                mapping = None if one_shot else _mapped.get(name)
                if mapping is None:
                    mapping = _map(name, nbytes, writable)
                    if not one_shot:
                        keep_mapping(name, mapping)
                views.append(memoryview(mapping))
            except OSError as exc:
                error = exc
        if one_shot:
            try:
                shm.shm_unlink(name)
            except OSError:
                continue
            resource_tracker.unregister(name, "shared_memory")
    if error is not None:
        raise error
    return pickle.loads(data, buffers=views)
