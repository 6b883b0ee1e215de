"""Task functions that every peer can run: importable, so they pickle by reference.

``benchmarks.cells`` defines the same functions in a simulated notebook cell.
"""

from __future__ import annotations

import os
import time
from typing import Any


def noop() -> None:
    """The target of W1's processes."""


def inc(x: int) -> int:
    """W3's map function, and the trivial task everywhere else."""
    return x + 1


def spin(n: int) -> int:
    """Pure-Python CPU work: ``n`` is calibrated by the runner to take a chosen time."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def spin_item(item: tuple[int, int]) -> int:
    """``spin`` for a map: ``item`` is ``(index, n)``; returns ``index`` to check order."""
    index, n = item
    spin(n)
    return index


def array_sum(array: Any) -> float:
    """W6: the worker's whole job on the 256 MB array."""
    return float(array.sum())


def frame_sum(frame: Any) -> float:
    """W12: the sum of every value of a numeric DataFrame."""
    return float(frame.to_numpy().sum())


def crash_at(item: tuple[int, int, float]) -> int:
    """W7: ``(i, bad, delay)``; sleeps ``delay``, and the task ``i == bad`` kills its worker."""
    i, bad, delay = item
    time.sleep(delay)
    if i == bad:
        os._exit(1)
    return i + 1


def sleep_stamp(item: tuple[int, str, float]) -> int:
    """W8: ``(i, path, seconds)``; appends ``"i start_time"`` to ``path``, then sleeps."""
    i, path, seconds = item
    line = f"{i} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(seconds)
    return i


def queue_echo(inbox: Any, outbox: Any) -> None:
    """W9's child: sends back everything it receives until ``None``."""
    while True:
        item = inbox.get()
        if item is None:
            break
        outbox.put(item)
