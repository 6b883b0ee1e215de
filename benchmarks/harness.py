"""Measuring tools shared by the runner and the cases: timing, statistics, watchdogs,
process-tree memory sampling, and finding what a case left behind."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

# Every case process, and so every process it starts, carries this variable with a value
# of its own: the runner finds leftovers by it, wherever they were reparented.
TOKEN_ENV = "MPNB_BENCH_CASE"

# Where POSIX shared memory and semaphores live on Linux.
SHM_DIR = "/dev/shm"

now = time.perf_counter


@dataclass
class Stats:
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Stats | None:
        if not samples:
            return None
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


def repeat_timed(run: Callable[[], float], repeat: int, budget: float) -> list[float]:
    """Calls ``run`` (which returns one sample) up to ``repeat`` times.

    Stops early once another call would likely end past ``budget`` seconds, but always
    takes at least one sample: a slow peer gets fewer samples rather than a longer run.
    """
    samples: list[float] = []
    start = now()
    for _ in range(max(1, repeat)):
        t0 = now()
        samples.append(run())
        last = now() - t0
        if now() - start + last > budget:
            break
    return samples


class CaseRecord:
    """The rows a case reports, written to its result file after every change so that a
    case killed half-way still leaves what it had measured."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def row(self, variant: str, **fields: Any) -> dict[str, Any]:
        """A new row (or the existing one of that variant), updated with ``fields``."""
        with self.lock:
            for row in self.rows:
                if row["variant"] == variant:
                    break
            else:
                row = {"variant": variant, "status": "running"}
                self.rows.append(row)
            row.update(fields)
            self._write()
            return row

    def update(self, row: dict[str, Any], **fields: Any) -> None:
        with self.lock:
            row.update(fields)
            self._write()

    def extra(self, row: dict[str, Any], **fields: Any) -> None:
        with self.lock:
            row.setdefault("extra", {}).update(fields)
            self._write()

    def _write(self) -> None:
        tmp = self.path + ".part"
        with open(tmp, "w") as f:
            json.dump(self.rows, f, default=str)
        os.replace(tmp, self.path)


class Watchdog:
    """Fires ``on_expire`` and then ends the interpreter with ``os._exit(3)`` if the
    block has not finished within ``seconds``: the way a case records a hang instead of
    suffering it. Children are left for the runner to find and kill."""

    EXIT_CODE = 3

    def __init__(self, seconds: float, on_expire: Callable[[], None]) -> None:
        self.seconds = seconds
        self.on_expire = on_expire
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bench-watchdog", daemon=True)

    def _watch(self) -> None:
        if self._done.wait(self.seconds):
            return
        try:
            self.on_expire()
        finally:
            os._exit(self.EXIT_CODE)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()


def descendants(pid: int | None = None) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def marked_processes(token: str, exclude: set[int] = frozenset()) -> list[psutil.Process]:
    """Live processes whose environment carries ``TOKEN_ENV=token``."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid in exclude or proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TOKEN_ENV) == token:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe(proc: psutil.Process) -> str:
    """A short label for a leftover process: pid and what it runs."""
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        cmd = "?"
    for needle, label in (
        ("forkserver", "forkserver"),
        ("resource_tracker", "resource_tracker"),
        ("semaphore_tracker", "resource_tracker"),
        ("loky", "loky worker"),
        ("distributed", "dask"),
        ("spawn_main", "spawned worker"),
    ):
        if needle in cmd:
            return f"{proc.pid} {label}"
    return f"{proc.pid} {cmd[:60]}"


def is_service(proc: psutil.Process) -> bool:
    """Helper processes that live as long as their parent by design, not workers."""
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "resource_tracker" in cmd or "semaphore_tracker" in cmd or "forkserver" in cmd


def kill_all(procs: list[psutil.Process], grace: float = 1.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after ``grace`` seconds."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)


def shm_names_used(pids: list[int]) -> set[str]:
    """Top-level names in /dev/shm that these processes have open or mapped now."""
    prefix = SHM_DIR + "/"
    names: set[str] = set()

    def add(path: str) -> None:
        if path.startswith(prefix):
            names.add(path[len(prefix) :].split("/", 1)[0])

    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    parts = line.split(None, 5)
                    if len(parts) == 6:
                        add(parts[5].strip().removesuffix(" (deleted)"))
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    add(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    continue
        except OSError:
            continue
    return names


def shm_used() -> int:
    """Bytes in use on /dev/shm (tmpfs): memory, though no process's RSS shows it."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def paths_in_use(paths: set[str]) -> set[str]:
    """Which of ``paths`` some live process has open or mapped."""
    used: set[str] = set()
    for proc in psutil.process_iter(["pid"]):
        try:
            for f in proc.open_files():
                if f.path in paths:
                    used.add(f.path)
            with open(f"/proc/{proc.pid}/maps") as maps:
                for line in maps:
                    parts = line.split(None, 5)
                    if len(parts) == 6:
                        path = parts[5].strip().removesuffix(" (deleted)")
                        if path in paths:
                            used.add(path)
        except (psutil.Error, OSError):
            continue
    return used


@dataclass
class TreeMemory:
    """Peaks of the process tree's memory seen by a ``MemorySampler``, in bytes."""

    rss_base: int = 0
    rss_peak: int = 0
    pss_base: int = 0
    pss_peak: int = 0
    samples: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_base

    @property
    def pss_growth(self) -> int:
        return self.pss_peak - self.pss_base


def _tree_memory() -> tuple[int, int]:
    rss = pss = 0
    for proc in [psutil.Process()] + descendants():
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss + shm_used()


class MemorySampler:
    """Samples the memory of this process and all its descendants every ``interval``.

    Two figures: the sum of RSS (what the workload table asks for; it counts a page that
    several processes map once per process), and PSS plus /dev/shm in use (each page once,
    including shared memory that nobody maps at the moment).
    """

    def __init__(self, interval: float = 0.025) -> None:
        self.interval = interval
        self.result = TreeMemory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        rss, pss = _tree_memory()
        r = self.result
        r.rss_peak = max(r.rss_peak, rss)
        r.pss_peak = max(r.pss_peak, pss)
        r.samples += 1

    def __enter__(self) -> MemorySampler:
        rss, pss = _tree_memory()
        self.result = TreeMemory(rss_base=rss, rss_peak=rss, pss_base=pss, pss_peak=pss)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
