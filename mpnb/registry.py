"""Records of every process and pool mpnb started in this interpreter.

A leaf module: the core writes records, the monitor reads snapshots. It imports
nothing of mpnb and nothing outside the standard library, so any layer may use it.

Records are mutable only through the registry's methods, under one lock; readers get
copies (``snapshot``), never the live objects.
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
import threading
import time
from collections import deque
from typing import Any

__all__ = ["ProcessRecord", "PoolRecord", "Registry", "REGISTRY", "signal_name"]

# How many finished processes are kept by default, so a user still sees the exit
# code of a process that died a while ago without the registry growing forever.
DEFAULT_HISTORY = 200


def signal_name(exitcode: int | None) -> str:
    """``-9`` -> ``'SIGKILL'``; ``''`` for a normal exit code or a running process."""
    if exitcode is None or exitcode >= 0:
        return ""
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


@dataclasses.dataclass
class ProcessRecord:
    """What mpnb knows of one process it started."""

    key: int
    name: str
    start_method: str
    pid: int | None = None
    pool: str | None = None
    task: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exitcode: int | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.exitcode is not None


@dataclasses.dataclass
class PoolRecord:
    """Progress counters of one pool."""

    name: str
    processes: int
    start_method: str
    created_at: float
    submitted: int = 0
    done: int = 0
    failed: int = 0
    closed: bool = False


class Registry:
    """Thread-safe store of process and pool records."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self._lock = threading.Lock()
        self._keys = itertools.count(1)
        self._live: dict[int, ProcessRecord] = {}
        self._finished: deque[ProcessRecord] = deque(maxlen=history)
        self._pools: dict[str, PoolRecord] = {}
        self._handles: dict[int, Any] = {}

    # -- processes ---------------------------------------------------------------
    def add_process(
        self, name: str, start_method: str, *, pool: str | None = None, handle: Any = None
    ) -> int:
        """Record a process about to start; returns its key."""
        with self._lock:
            key = next(self._keys)
            self._live[key] = ProcessRecord(
                key=key, name=name, start_method=start_method, pool=pool, started_at=time.time()
            )
            if handle is not None:
                self._handles[key] = handle
            return key

    def update_process(self, key: int, **changes: Any) -> None:
        """Change fields of a live record; a record with an exit code moves to history."""
        with self._lock:
            record = self._live.get(key)
            if record is None:
                return
            for field, value in changes.items():
                setattr(record, field, value)
            if record.exitcode is not None:
                if record.ended_at is None:
                    record.ended_at = time.time()
                del self._live[key]
                self._handles.pop(key, None)
                self._finished.append(record)

    def discard_process(self, key: int) -> None:
        """Forget a record of a process that never started."""
        with self._lock:
            self._live.pop(key, None)
            self._handles.pop(key, None)

    def live_handles(self) -> dict[int, Any]:
        """The objects (``Process`` instances) behind live records, by key."""
        with self._lock:
            return dict(self._handles)

    # -- pools -------------------------------------------------------------------
    def add_pool(self, name: str, processes: int, start_method: str) -> PoolRecord:
        with self._lock:
            record = PoolRecord(
                name=name, processes=processes, start_method=start_method, created_at=time.time()
            )
            self._pools[name] = record
            return dataclasses.replace(record)

    def update_pool(self, name: str, **changes: Any) -> None:
        with self._lock:
            record = self._pools.get(name)
            if record is None:
                return
            for field, value in changes.items():
                setattr(record, field, value)

    def count_pool(self, name: str, *, submitted: int = 0, done: int = 0, failed: int = 0) -> None:
        """Add to a pool's counters."""
        with self._lock:
            record = self._pools.get(name)
            if record is None:
                return
            record.submitted += submitted
            record.done += done
            record.failed += failed

    # -- readers -----------------------------------------------------------------
    def snapshot(self) -> tuple[list[ProcessRecord], list[PoolRecord]]:
        """Copies of every process record (live first, then finished) and pool record."""
        with self._lock:
            processes = [dataclasses.replace(r) for r in self._live.values()]
            processes += [dataclasses.replace(r) for r in reversed(self._finished)]
            pools = [dataclasses.replace(p) for p in self._pools.values()]
        return processes, pools

    @property
    def history(self) -> int:
        """How many finished processes are kept."""
        with self._lock:
            return self._finished.maxlen or 0

    def set_history(self, history: int) -> None:
        """Keep at most ``history`` finished processes."""
        with self._lock:
            self._finished = deque(self._finished, maxlen=history)

    def clear(self) -> None:
        with self._lock:
            self._live.clear()
            self._finished.clear()
            self._pools.clear()
            self._handles.clear()


REGISTRY = Registry()
