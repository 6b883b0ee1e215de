"""Large numpy arrays through shared memory, and the segments that carry them.

An array of ``SHARED_ARRAY_MIN`` bytes or more is copied once into a shared-memory
segment instead of into the pickle, and the receiver maps that segment: no copy through
the pipe, none when unpickling. Every segment has one owner that removes it: the
receiver, as it maps it, or the sender, when the payload is never delivered
(``segments_released_on_error``, ``release_segments``). Within ``in_band()`` arrays go
inside the pickle (a payload loaded more than once, or never).

A segment is named ``mpnb-<pid>-<start time>-<random>`` after the kernel above the
process that makes it (``set_owner_tag``; the process itself outside a kernel): a
kernel that shuts down removes what is left of its own and its children's (payloads
never received, ``release_owned``), and a later kernel removes a dead one's.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import threading
from collections.abc import Iterator
from typing import Any, Literal, Protocol, cast

__all__ = [
    "SHARED_ARRAY_MIN",
    "SHARED_ARRAYS",
    "in_band",
    "segments_released_on_error",
    "release_segments",
    "reduce_large_array",
    "SEGMENT_PREFIX",
    "set_owner_tag",
    "release_owned",
]


# An array this large is copied once into a shared-memory segment instead of into the
# pickle, and the receiver maps that segment: no copy through the pipe, none when
# unpickling. The receiver unlinks the segment as it maps it (the mapping lives as long
# as the array); a segment never received is removed by the resource tracker when the
# program ends.
SHARED_ARRAY_MIN = 1 << 20
SHARED_ARRAYS = os.name == "posix"


SEGMENT_PREFIX = "mpnb-"
SHM_DIR = "/dev/shm"

# "<pid>-<start time>" of the kernel above this process (``None``: this process's pid).
_owner_tag: str | None = None


def set_owner_tag(tag: str) -> None:
    """Name the segments made here after ``tag`` (``mpnb._owner`` sets the kernel's)."""
    global _owner_tag
    _owner_tag = tag


def _new_name() -> str:
    tag = _owner_tag if _owner_tag is not None else f"{os.getpid()}-0"
    return f"{SEGMENT_PREFIX}{tag}-{secrets.token_hex(8)}"  # SharedMemory adds the "/"


def release_owned(tag: str, directory: str = SHM_DIR) -> list[str]:
    """Remove the segments named after ``tag`` that are still there (never received),
    and tell the resource tracker, which would warn about them; return their names."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    mine = ["/" + n for n in names if n.startswith(f"{SEGMENT_PREFIX}{tag}-")]
    release_segments(mine)
    return mine


class _SegmentState(threading.local):
    def __init__(self) -> None:
        self.in_band = 0  # > 0: no segments (see ``in_band``)
        self.created: list[str] | None = None  # names made while tracking


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


class _PosixShmem(Protocol):
    """CPython's ``_posixshmem`` (``multiprocessing.shared_memory``'s; no stub)."""

    def shm_open(self, path: str, flags: int, mode: int = 0o777) -> int: ...
    def shm_unlink(self, path: str) -> None: ...


def _posixshmem_module() -> _PosixShmem:
    return cast(_PosixShmem, importlib.import_module("_posixshmem"))


class _SegmentInternals(Protocol):
    """The private attributes of ``shared_memory.SharedMemory`` used here."""

    _fd: int  # its descriptor
    _name: str  # its name as the OS knows it (``name`` may drop a leading '/')


def release_segments(names: list[str]) -> None:
    """Remove segments made for a payload that will not be delivered."""
    posixshmem = _posixshmem_module()
    from multiprocessing import resource_tracker

    for name in names:
        try:
            posixshmem.shm_unlink(name)
        except OSError:
            continue
        resource_tracker.unregister(name, "shared_memory")


def reduce_large_array(array: Any) -> tuple[Any, tuple[Any, ...]] | None:
    if array.dtype.hasobject or _segments.in_band:
        return None
    order: Literal["C", "F"]
    if array.flags.c_contiguous:
        order = "C"
    elif array.flags.f_contiguous:
        order = "F"
    else:
        return None  # strided views go in-band, as numpy pickles them
    from multiprocessing import shared_memory

    try:
        segment = shared_memory.SharedMemory(_new_name(), create=True, size=array.nbytes)
    except FileExistsError:
        return None
    std = cast(_SegmentInternals, segment)
    try:
        # Reserve the pages now: a full /dev/shm (64 MiB in many containers) must mean
        # an in-band pickle, not a SIGBUS while copying.
        os.posix_fallocate(std._fd, 0, array.nbytes)
    except OSError:
        segment.close()
        segment.unlink()
        return None
    try:
        # ``buf`` is None only once the segment is closed.
        cast(memoryview, segment.buf)[: array.nbytes] = array.reshape(-1, order=order).view("B")
    finally:
        segment.close()
    if _segments.created is not None:
        _segments.created.append(std._name)
    return _array_from_shared, (
        std._name,
        array.dtype,
        array.shape,
        order,
        bool(array.flags.writeable),
    )


def _array_from_shared(
    name: str, dtype: Any, shape: tuple[int, ...], order: Literal["C", "F"], writeable: bool
) -> Any:
    import mmap

    import numpy

    _posixshmem = _posixshmem_module()
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
