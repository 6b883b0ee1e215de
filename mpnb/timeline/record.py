"""What a pool's engine and ``Process.start`` note for the timeline, kept cheap.

The clock: a worker times each task with ``time.perf_counter()`` and sends its start
with the result it sends anyway (``protocol.RESULT``); the end is start plus the
seconds it ran. The parent reads the same clock. ``perf_counter`` is system-wide on
Linux (``CLOCK_MONOTONIC``), macOS (``mach_absolute_time``) and Windows
(``QueryPerformanceCounter``), so a worker's times need no mapping to the parent's.
Where the worker's time cannot be had (a task whose worker died), the parent's
``perf_counter()`` stands in: the task started when the worker's previous one ended
(or the worker started) and ended when the parent saw the death.

The engine appends one plain tuple per task (a chunk of a map is one task) to its
``Recorder`` (a bounded deque, ``MAX_RECORDS``); ``TaskRecord``s are made only when
someone asks (``Recorder.records``). ``set_recording(False)`` (or the environment
variable ``MPNB_TIMELINE=0`` at import) turns recording off for every pool.

Plain ``mpnb.Process`` objects (not pool workers) are noted as they start and when
their exit code is first seen (``join()``, ``exitcode``, the monitor): one lane each.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

__all__ = [
    "OK",
    "ERROR",
    "CRASHED",
    "CANCELLED",
    "RUNNING",
    "MAX_RECORDS",
    "TaskRecord",
    "Recorder",
    "recording",
    "set_recording",
    "last_recorder",
    "process_started",
    "process_pid",
    "process_ended",
    "process_records",
    "now",
]

OK, ERROR, CRASHED, CANCELLED, RUNNING = "ok", "error", "crashed", "cancelled", "running"

# Tasks kept per pool (the newest): a chunk of a map is one.
MAX_RECORDS = 100_000
# Plain processes kept (the newest).
MAX_PROCESSES = 1_000
# A task that ran at least this long gets its label (``square(3)``) in its record;
# shorter ones keep the function's name (making a label costs microseconds).
LABEL_SECONDS = 0.05

now = time.perf_counter  # the timeline's clock, in every process (see the docstring)

_recording = os.environ.get("MPNB_TIMELINE", "1").strip().lower() not in ("0", "false", "off", "no")


@dataclasses.dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task (an apply call, a chunk of a map, or a plain process) on one lane.

    ``start``/``end``: seconds on ``time.perf_counter``'s clock. ``item``: the index of
    the task's first item in its map (``None`` for an apply call or a process),
    ``count`` its items, ``errors`` how many of them failed. ``outcome``: ``"ok"``,
    ``"error"``, ``"crashed"`` (its worker died), ``"cancelled"`` (stopped by an
    interrupt or ``terminate``) or ``"running"`` (a process not seen exiting yet).
    ``exitcode`` is set for processes and crashed tasks.
    """

    lane: str
    worker: int
    pid: int | None
    start: float
    end: float
    outcome: str
    item: int | None
    count: int
    errors: int
    label: str
    job: int
    exitcode: int | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def what(self) -> str:
        """``items 0-99 of square``, ``item 7 of square``, ``square(3)``."""
        if self.item is None:
            return self.label
        if self.count == 1:
            return f"item {self.item} of {self.label}"
        return f"items {self.item}-{self.item + self.count - 1} of {self.label}"


class Recorder:
    """One pool's task records, appended by its engine's thread.

    ``raw`` holds, per task, ``(job, lane, start, seconds, item, count, errors, label,
    outcome, exitcode)``: a tuple append is all the engine pays. Its fields are numbers,
    strings and ``None`` only, so the garbage collector stops tracking it at once (a
    hundred thousand tracked tuples would slow every collection). ``lanes`` holds
    ``(name, slot, started)`` per worker started, by lane number (names, not process
    objects: a process object kept alive keeps its sentinel's file descriptor open).
    ``run_from``: the first job of the current run (a run: what was submitted since
    the pool was last idle).
    """

    __slots__ = ("name", "on", "raw", "run_from", "lanes", "__weakref__")

    def __init__(self, name: str, limit: int = MAX_RECORDS) -> None:
        self.name = name
        self.on = _recording
        self.raw: deque[tuple[Any, ...]] = deque(maxlen=limit)
        self.run_from = 0
        self.lanes: list[tuple[str, int, int | None, float]] = []
        _RECORDERS.add(self)

    def new_run(self, job: int) -> None:
        """A job was submitted to an idle pool: a new run starts with it."""
        global _last
        self.run_from = job
        _last = weakref.ref(self)

    def worker_started(self, process: Any, slot: int) -> int:
        """A worker started in ``slot``: its lane number."""
        pid = getattr(process, "pid", None)
        name = getattr(process, "name", f"worker {slot}")
        self.lanes.append((f"{name} (pid {pid})", slot, pid, now()))
        return len(self.lanes) - 1

    def crashed(
        self,
        job: int,
        lane: int,
        item: int | None,
        count: int,
        label: str,
        exitcode: int | None,
        cancelled: bool,
    ) -> None:
        """The task a worker ran did not finish (it died, or was stopped)."""
        if not self.on:
            return
        end = now()
        start = self.lanes[lane][3]
        for entry in reversed(self.raw):  # the end of the lane's previous task
            if entry[1] == lane:
                start = max(start, entry[2] + entry[3])
                break
        outcome = CANCELLED if cancelled else CRASHED
        self.raw.append(
            (job, lane, start, end - start, item, count, count, label, outcome, exitcode)
        )

    def records(self, since_job: int = 0) -> list[TaskRecord]:
        """The task records of jobs from ``since_job`` on, by start time."""
        out = []
        for _ in range(100):  # the engine's thread may append meanwhile
            try:
                raw = list(self.raw)
                break
            except RuntimeError:
                continue
        else:
            raw = []
        lanes = list(self.lanes)
        for job, lane, start, seconds, item, count, errors, label, outcome, code in raw:
            if job < since_job:
                continue
            lane_name, slot, pid, _ = lanes[lane]
            if outcome is None:
                outcome = ERROR if errors else OK
            out.append(
                TaskRecord(
                    lane=lane_name,
                    worker=slot,
                    pid=pid,
                    start=start,
                    end=start + seconds,
                    outcome=outcome,
                    item=item,
                    count=count,
                    errors=errors,
                    label=str(label),
                    job=job,
                    exitcode=code,
                )
            )
        out.sort(key=lambda r: r.start)
        return out


_RECORDERS: weakref.WeakSet[Recorder] = weakref.WeakSet()
_last: weakref.ref[Recorder] | None = None


def recording() -> bool:
    """Whether pools record their tasks' times (the default: yes)."""
    return _recording


def set_recording(on: bool) -> None:
    """Turn task recording on or off, for every pool, now and later."""
    global _recording
    if not isinstance(on, bool):
        raise TypeError(f"set_recording takes True or False, not {on!r}")
    _recording = on
    for recorder in list(_RECORDERS):
        recorder.on = on


def last_recorder() -> Recorder | None:
    """The recorder of the pool that started a run last (``None``: none yet)."""
    return None if _last is None else _last()


# -- plain processes --------------------------------------------------------------------

# [name, pid, start, end, exitcode, number] per process; names, not process objects (see
# ``Recorder``), found by process while it lives.
_processes: deque[list[Any]] = deque(maxlen=MAX_PROCESSES)
_by_process: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
_process_lock = threading.Lock()
_process_numbers = itertools.count()


def process_started(process: Any, pid: int | None) -> None:
    """A plain process started (pool workers are the pools' to record); ``pid``: ``None``
    until ``process_pid`` gives it (mpnb's fork server reports it after ``start``)."""
    if not _recording or getattr(process, "_mpnb_pool", None) is not None:
        return
    entry = [process.name, pid, now(), None, None, next(_process_numbers)]
    with _process_lock:
        _processes.append(entry)
        _by_process[process] = entry


def process_pid(process: Any, pid: int) -> None:
    """A plain process's pid became known."""
    entry = _by_process.get(process)
    if entry is not None:
        entry[1] = pid


def process_ended(process: Any, exitcode: int) -> None:
    """A plain process's exit code was seen (the first time counts)."""
    entry = _by_process.get(process)
    if entry is not None and entry[3] is None:
        entry[3], entry[4] = now(), exitcode


def process_records() -> list[TaskRecord]:
    """One record per plain process noted, by start time; those not seen exiting end now."""
    with _process_lock:
        entries = [list(e) for e in _processes]
    t = now()
    out = []
    for index, (name, pid, start, end, code, number) in enumerate(entries):
        if end is None:
            outcome = RUNNING
        elif code == 0:
            outcome = OK
        elif code is not None and code < 0:
            outcome = CRASHED
        else:
            outcome = ERROR
        out.append(
            TaskRecord(
                lane=f"{name} (pid {pid})",
                worker=index,
                pid=pid,
                start=start,
                end=t if end is None else end,
                outcome=outcome,
                item=None,
                count=1,
                errors=0 if outcome in (OK, RUNNING) else 1,
                label=name,
                job=number,
                exitcode=code,
            )
        )
    return out
