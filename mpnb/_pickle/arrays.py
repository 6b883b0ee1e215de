"""The shared-memory segments that carry large buffers: names, owners, removal.

A buffer of ``SHARED_ARRAY_MIN`` bytes or more goes out of band into a segment
(``buffers``). A one-shot segment has one owner that removes it: the receiver, as it
maps it, or the sender, when the payload is never delivered
(``segments_released_on_error``, ``release_segments``); a leased one, its sender
(``buffers.leasing``). Within ``in_band()`` buffers go inside the pickle (a payload
loaded more than once, or never).

A segment is named ``mpnb-<pid>-<start time>-<random>`` after the kernel above the
process that makes it (``set_owner_tag``; the process itself outside a kernel): a
kernel that shuts down removes what is left of its own and its children's (payloads
never received, ``release_owned``), and a later kernel removes a dead one's.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator
from typing import Protocol, cast

__all__ = [
    "SHARED_ARRAY_MIN",
    "SHARED_ARRAYS",
    "in_band",
    "segments_released_on_error",
    "release_segments",
    "new_name",
    "SEGMENT_PREFIX",
    "set_owner_tag",
    "release_owned",
]


# A buffer this large is written once into a shared-memory segment instead of into the
# pickle, and the receiver maps that segment: no copy through the pipe, none when
# unpickling. A segment never received is removed by the resource tracker when the
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


def new_name() -> str:
    tag = _owner_tag if _owner_tag is not None else f"{os.getpid()}-0"
    return f"{SEGMENT_PREFIX}{tag}-{os.urandom(8).hex()}"  # SharedMemory adds the "/"


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
