"""Leak checks for the test suite: processes left running and /dev/shm entries left behind.

Goal: a test that leaves a worker, a manager or a shared-memory segment behind fails,
loudly and with the offender named, instead of slowing down or hanging later tests.

Non-goals: finding leaks inside a process (file descriptors, threads); telling which test
created a /dev/shm entry (names carry no pid, so that check runs once per session).

Which /dev/shm entries are the session's: every process of the session records the
names it registers with multiprocessing's resource tracker (``shm_audit/sitecustomize.py``,
loaded through ``PYTHONPATH``), and only those count (``session_created``): another
program's segments and semaphores, created meanwhile on the same machine, never do.

Long-lived helpers are not leaks: the multiprocessing resource tracker and the forkserver
live as long as the process that started them. They are recognised by their command line;
the workers a forkserver forks carry the same command line, so only the topmost process of
such a chain is exempt, never what it forked.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil

__all__ = [
    "LONG_LIVED_MARKERS",
    "SHM_PATTERNS",
    "descends_from",
    "describe",
    "is_long_lived",
    "live_descendants",
    "not_held_by_others",
    "reap",
    "session_created",
    "shm_entries",
    "wait_gone",
]

# Substrings of the command line of helper processes that stay up by design for the life
# of their parent: `multiprocessing.resource_tracker` and `multiprocessing.forkserver`
# (and any forkserver of mpnb's own, whose module name says so).
LONG_LIVED_MARKERS: tuple[str, ...] = ("resource_tracker", "forkserver")

# Names that multiprocessing and mpnb give to what they create in /dev/shm:
# shared_memory segments, POSIX semaphores behind Lock/Semaphore/Queue, mpnb's own.
SHM_PATTERNS: tuple[str, ...] = ("psm_*", "sem.mp-*", "mp-*", "mpnb*")

SHM_DIR = "/dev/shm"


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return ""


def is_long_lived(proc: psutil.Process) -> bool:
    """True for a resource tracker or forkserver, False for what a forkserver forked.

    A forked worker keeps its forkserver's command line word for word, which tells the two
    apart; the parent's command line may mention "forkserver" for other reasons
    (``pytest -k forkserver``), so only an identical one counts.
    """
    line = _cmdline(proc)
    if not any(m in line for m in LONG_LIVED_MARKERS):
        return False
    try:
        parent = proc.parent()
    except psutil.Error:
        return True
    return parent is None or _cmdline(parent) != line


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def live_descendants(root: psutil.Process | int | None = None) -> set[psutil.Process]:
    """Live (non-zombie) descendants of ``root`` (default: this process), helpers excluded."""
    if root is None:
        root = psutil.Process()
    elif isinstance(root, int):
        try:
            root = psutil.Process(root)
        except psutil.Error:
            return set()
    try:
        procs = root.children(recursive=True)
    except psutil.Error:
        return set()
    return {p for p in procs if _alive(p) and not is_long_lived(p)}


def descends_from(proc: psutil.Process, elders: set[psutil.Process]) -> bool:
    """True if an ancestor of ``proc`` is in ``elders`` and is not a resource tracker or
    forkserver (what those start belongs to whoever asked them)."""
    try:
        ancestors = proc.parents()
    except psutil.Error:
        return False
    return any(a in elders and not is_long_lived(a) for a in ancestors)


def wait_gone(procs: Iterable[psutil.Process], grace: float) -> set[psutil.Process]:
    """Poll until every process in ``procs`` has exited; return those still alive."""
    pending = {p for p in procs if _alive(p)}
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = {p for p in pending if _alive(p)}
    return pending


def describe(procs: Iterable[psutil.Process]) -> str:
    """One line per process: pid, parent pid, status and command line."""
    lines = []
    for p in sorted(procs, key=lambda p: p.pid):
        try:
            ppid, status = p.ppid(), p.status()
        except psutil.Error:
            ppid, status = "?", "gone"
        line = _cmdline(p) or "?"
        if len(line) > 200:
            line = line[:197] + "..."
        lines.append(f"  pid {p.pid} (parent {ppid}, {status}): {line}")
    return "\n".join(lines)


def reap(procs: Iterable[psutil.Process], timeout: float = 3.0) -> None:
    """Terminate, then kill, whatever in ``procs`` still runs.

    Never waits on a process (no waitpid): the exit status of a child belongs to the
    Popen or multiprocessing object that started it.
    """
    procs = [p for p in procs if _alive(p)]
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    for p in wait_gone(procs, timeout):
        try:
            p.kill()
        except psutil.Error:
            pass
    wait_gone(procs, timeout)


def shm_entries(directory: str = SHM_DIR) -> set[str]:
    """Names in /dev/shm that multiprocessing or mpnb may have created."""
    try:
        names = os.listdir(directory)
    except OSError:
        return set()
    return {n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in SHM_PATTERNS)}


def session_created(log_path: str) -> set[str]:
    """The /dev/shm names of what the session's processes registered with a resource
    tracker (the log of ``shm_audit/sitecustomize.py``)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    names: set[str] = set()
    for line in lines:
        rtype, _, name = line.partition(" ")
        name = name.lstrip("/")
        if rtype == "semaphore":
            names.add("sem." + name)
        elif rtype == "shared_memory":
            names.add(name)
    return names


def not_held_by_others(names: Iterable[str], directory: str = SHM_DIR) -> set[str]:
    """The entries of ``names`` that no process outside this process tree has mapped or
    open: on a shared machine, another test run's live segments are not our leak."""
    names = set(names)
    if not names or not os.path.isdir("/proc"):
        return names
    paths = {os.path.join(directory, n): n for n in names}
    ours = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    held: set[str] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        try:
            with open(f"/proc/{entry}/maps") as f:
                for line in f:
                    path = line.rstrip("\n").split(maxsplit=5)[-1]
                    path = path.removesuffix(" (deleted)")
                    if path in paths:
                        held.add(paths[path])
            for fd in os.listdir(f"/proc/{entry}/fd"):
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
                if target in paths:
                    held.add(paths[target])
        except OSError:
            continue
    return names - held


@dataclass
class SessionLeaks:
    """What the suite found left behind at its end."""

    shm: list[str] = field(default_factory=list)
    processes: str = ""

    def __bool__(self) -> bool:
        return bool(self.shm or self.processes)

    def report(self) -> str:
        parts = []
        if self.shm:
            parts.append(
                f"{len(self.shm)} /dev/shm entries created during the session are still "
                "there (a SharedMemory, Lock, Queue or pool not closed/unlinked):\n"
                + "\n".join(f"  {SHM_DIR}/{n}" for n in sorted(self.shm))
            )
        if self.processes:
            parts.append("child processes still alive at the end (killed):\n" + self.processes)
        return "\n".join(parts)
