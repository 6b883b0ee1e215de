"""What a worker runs for one item of a parallel cell (``%%mp_pool``).

This module and ``warm`` are the parts of ``mpnb.magics`` a worker or the core may
load: neither imports IPython.

A ``CellSpec`` carries the cell's code and the notebook names it uses (functions and
data by value, modules by reference), once per run. Each item runs in a fresh namespace
built from them: nothing from an earlier run, or an earlier item, leaks into the next.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import time
import types
from multiprocessing import shared_memory
from typing import Any

from ..errors import frames_of, short_repr

__all__ = ["CellSpec", "ItemFailed", "RunControl", "run_item", "run_chunk"]

# Seconds an SPMD rank waits for the others to start before giving up.
SPMD_START_TIMEOUT = 120.0


@dataclasses.dataclass
class CellSpec:
    body: types.CodeType  # the cell without its last expression
    last: types.CodeType | None  # the last expression, whose value is the item's result
    filename: str  # where the parent's linecache holds the cell's source
    loop_target: str | None  # "x" or "x, y" (map form), None for SPMD
    namespace: dict[str, Any]
    control: str  # name of the run's shared-memory control block
    keep_going: bool
    size: int  # number of items (SPMD: number of ranks)


@dataclasses.dataclass
class ItemFailed:
    """An item's exception, returned instead of raised (to keep going, or to say which
    item failed)."""

    index: int
    item_repr: str
    error: BaseException
    frames: list[tuple[str, int, str, str]] = dataclasses.field(default_factory=list)


class _Skipped:
    """The run was cancelled before this item started."""


SKIPPED = _Skipped()


class RunControl:
    """A small shared-memory block: byte 0 cancels the run, bytes 1..n mark started ranks."""

    def __init__(self, size: int) -> None:
        self.block = shared_memory.SharedMemory(create=True, size=1 + max(size, 1))
        buf = self.block.buf
        assert buf is not None  # open until close()
        self.buf: memoryview = buf
        buf[:] = bytes(len(buf))

    @property
    def name(self) -> str:
        return self.block.name

    def cancel(self) -> None:
        self.buf[0] = 1

    def close(self) -> None:
        self.block.close()
        self.block.unlink()


# The run's control block as mapped in this worker, by name (the last one only).
_controls: dict[str, tuple[mmap.mmap, memoryview]] = {}


def _control(name: str) -> memoryview | None:
    """The control block's bytes, or ``None`` on another machine (a Dask worker that is
    not on the kernel's machine: there the run is stopped by cancelling its futures, and
    ranks do not wait for each other). Mapped directly, not through ``SharedMemory``: the
    parent owns the block, and a worker must not register it with the resource tracker
    (a late registration would outlive the parent's unlink and read as a leak)."""
    found = _controls.get(name)
    if found is None:
        import _posixshmem

        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        except FileNotFoundError:
            return None
        try:
            mapping = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        for old in list(_controls):
            old_mapping, old_view = _controls.pop(old)
            old_view.release()
            old_mapping.close()
        found = _controls[name] = (mapping, memoryview(mapping))
    return found[1]


def _wait_for_ranks(block: memoryview, rank: int, size: int) -> None:
    block[1 + rank] = 1
    deadline = time.monotonic() + SPMD_START_TIMEOUT
    while any(block[1 + r] == 0 for r in range(size)):
        if block[0]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"rank {rank}: the other ranks did not start within {SPMD_START_TIMEOUT:.0f} s"
            )
        time.sleep(0.001)


def run_item(spec: CellSpec, indexed: tuple[int, Any]) -> Any:
    """Run the cell for one item; the value of its last expression, or ``ItemFailed``."""
    index, item = indexed
    block = _control(spec.control)
    if block is not None and block[0]:
        return SKIPPED
    namespace = dict(spec.namespace)
    namespace.setdefault("__name__", "__main__")
    body, last = spec.body, spec.last
    try:
        if spec.loop_target is None:
            namespace.update(mp_rank=item, mp_size=spec.size)
            if block is not None:
                _wait_for_ranks(block, item, spec.size)
        else:
            exec(f"{spec.loop_target} = __mp_item__", {"__mp_item__": item}, namespace)
        exec(body, namespace)
        return eval(last, namespace) if last is not None else None
    except Exception as exc:
        if not spec.keep_going and block is not None:
            block[0] = 1
        frames = frames_of(exc, drop=1)  # not this function's frame
        exc.__traceback__ = None
        return ItemFailed(index, short_repr(item), exc, frames)


def run_chunk(world: object, spec: CellSpec, chunk: list[tuple[int, Any]]) -> list[Any]:
    """``run_item`` for each ``(index, item)`` of ``chunk``. ``world`` (a
    ``mpnb._world.Sync``) was applied when this call was unpickled, before ``spec``."""
    return [run_item(spec, indexed) for indexed in chunk]
