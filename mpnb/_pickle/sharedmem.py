"""Arrays that live in an mpnb shared-memory segment from the start (``mp.shared_array``).

Such an array (or any view of it) pickles as the segment's name, an offset, dtype,
shape and strides: no bytes are copied, and every receiver maps the segment writable,
so what one process writes the others see. The process that made the segment removes
it once its mapping is gone (no array of it left) and no pool job leases it
(``buffers.leasing``); a kernel's segments are named after it, so what a killed kernel
left is removed by the next one (``mpnb._owner.remove_stale``).
"""

from __future__ import annotations

import atexit
import mmap
import os
import sys
import threading
import weakref
from typing import Any

from . import buffers
from .arrays import _posixshmem_module, new_name, release_segments

__all__ = ["create", "reduce_shared_array", "owned_segments"]


class Segment:
    """One segment mapped here; ``owned``: made here, so removed from here."""

    __slots__ = ("name", "nbytes", "address", "owned", "leases", "dead", "mapping_ref")

    def __init__(self, name: str, nbytes: int, address: int, owned: bool) -> None:
        self.name = name
        self.nbytes = nbytes
        self.address = address
        self.owned = owned
        self.leases = 0
        self.dead = False  # the mapping here is gone
        self.mapping_ref: weakref.ref[mmap.mmap] | None = None

    def unleased(self) -> None:
        """(``_lock`` held by the caller's lease bookkeeping.) Remove if done."""
        if self.dead and self.leases == 0 and self.owned:
            self.owned = False
            release_segments([self.name])


_lock = threading.Lock()
_by_mapping: dict[int, Segment] = {}  # id(mmap) -> its segment
_by_name: dict[str, Segment] = {}
_atexit_set = False


def _track(mapping: mmap.mmap, segment: Segment) -> None:
    global _atexit_set
    key = id(mapping)

    def gone(_: object) -> None:
        with _lock:
            _by_mapping.pop(key, None)
            if _by_name.get(segment.name) is segment:
                del _by_name[segment.name]
            segment.dead = True
            segment.unleased()

    segment.mapping_ref = weakref.ref(mapping, gone)
    with _lock:
        _by_mapping[key] = segment
        _by_name[segment.name] = segment
        if segment.owned and not _atexit_set:
            atexit.register(_release_all)
            _atexit_set = True


def _address(mapping: mmap.mmap) -> int:
    numpy = sys.modules["numpy"]
    return int(numpy.frombuffer(mapping, dtype=numpy.uint8).ctypes.data)


def create(nbytes: int) -> mmap.mmap:
    """A new zero-filled segment of ``nbytes`` (at least 1), mapped writable here."""
    from multiprocessing import resource_tracker

    shm = _posixshmem_module()
    name = "/" + new_name()  # as SharedMemory names it: what the tracker knows
    size = max(nbytes, 1)
    fd = shm.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)  # a full /dev/shm: an error now, not SIGBUS
            mapping = mmap.mmap(fd, size)
        except OSError:
            shm.shm_unlink(name)
            raise
    finally:
        os.close(fd)
    resource_tracker.register(name, "shared_memory")
    _track(mapping, Segment(name, size, _address(mapping), owned=True))
    return mapping


def _segment_of(array: Any) -> Segment | None:
    numpy = sys.modules["numpy"]
    base = array.base
    while isinstance(base, numpy.ndarray):
        base = base.base
    if not isinstance(base, mmap.mmap):
        return None
    with _lock:
        return _by_mapping.get(id(base))


def reduce_shared_array(array: Any) -> tuple[Any, tuple[Any, ...]] | None:
    """``array`` by segment name if it lies in one (``None``: it does not)."""
    if not _by_mapping:
        return None
    segment = _segment_of(array)
    if segment is None:
        return None
    offset = int(array.__array_interface__["data"][0]) - segment.address
    buffers.lease(segment)
    return _rebuild, (
        segment.name,
        segment.nbytes,
        offset,
        array.dtype,
        array.shape,
        array.strides,
        bool(array.flags.writeable),
    )


def _rebuild(
    name: str,
    nbytes: int,
    offset: int,
    dtype: Any,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    writeable: bool,
) -> Any:
    import numpy

    with _lock:
        known = _by_name.get(name)
        mapping = known.mapping_ref() if known and known.mapping_ref else None
    if mapping is None:
        shm = _posixshmem_module()
        fd = shm.shm_open(name, os.O_RDWR, 0o600)
        try:
            mapping = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)
        _track(mapping, Segment(name, nbytes, _address(mapping), owned=False))
        buffers.keep_mapping(name, mapping)  # the next task using it maps nothing
    array = numpy.ndarray(shape, dtype=dtype, buffer=mapping, offset=offset, strides=strides)
    array.flags.writeable = writeable
    return array


def _forget_after_fork() -> None:
    """In a forked child: the parent's segments are the parent's to remove."""
    global _lock
    _lock = threading.Lock()
    for segment in _by_name.values():
        segment.owned = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def owned_segments() -> list[str]:
    """The names of the segments made here and not yet removed (for tests)."""
    with _lock:
        return [s.name for s in _by_name.values() if s.owned]


def _release_all() -> None:
    with _lock:
        owned = [s for s in _by_name.values() if s.owned]
        for segment in owned:
            segment.owned = False
    release_segments([s.name for s in owned])
