"""Children of a kernel: a process group of their own, the kernel's interrupt scoped to
the running cell, and a watch that ends them when the kernel dies.

Jupyter interrupts a kernel by sending SIGINT to its whole process group, which would
reach every child, whatever cell started it. So in a kernel each mpnb child moves into a
process group of its own (the child calls ``setpgid`` first thing, and the parent for
the fork and spawn methods, which closes the window); its own children stay in that
group, as in a terminal. The kernel's SIGINT handler (installed around each request,
``hook_kernel``) forwards SIGINT to the groups of the live processes that the running
cell started, then raises ``KeyboardInterrupt`` as before: a cell that only waits on
an earlier cell's process stops waiting, and that process goes on.

A kernel killed with SIGKILL (or by the OOM killer) stops nothing, and its children,
out of its process group, would outlive it, holding the fork server's and resource
tracker's pipes open. So every mpnb process started from a kernel, and every one those
start, watches the kernel (a pidfd, or a poll where there is none) and exits when it
dies. Outside a kernel nothing here applies: the standard library's semantics (a
script's non-daemonic children outlive it; Ctrl-C reaches the whole terminal group).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from . import _compat
from ._pickle import arrays as _arrays

__all__ = [
    "Owner",
    "start_time",
    "alive",
    "for_new_child",
    "started",
    "enter_child",
    "hook_kernel",
    "forward_interrupt",
    "dir_prefix",
    "remove_stale_dirs",
    "remove_stale",
    "release_segments",
]

# A kernel: its pid and its start time (clock ticks after boot; 0 where unknown), which
# tells it from a later process that got the same pid.
Owner = tuple[int, int]

# Seconds between two checks that the kernel lives, where pidfd_open is missing.
_POLL = 0.2

_inherited: Owner | None = None  # in a child of a kernel (or its descendants): the kernel
_children: weakref.WeakSet[Any] = weakref.WeakSet()  # in a kernel: its detached children


def start_time(pid: int) -> int:
    """When ``pid`` started (clock ticks after boot; 0 if unknown, -1 if no such process
    or a zombie: it ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            line = f.read()
    except FileNotFoundError:
        return -1
    except OSError:
        return 0
    try:
        fields = line[line.rindex(b")") + 2 :].split()
        return -1 if fields[0] in (b"Z", b"X") else int(fields[19])
    except (ValueError, IndexError):
        return 0


def alive(owner: Owner) -> bool:
    """Whether the process ``owner`` names still runs (not a zombie, not a later process
    with its pid)."""
    pid, started_at = owner
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    now = start_time(pid)
    return now != -1 and (now == 0 or started_at == 0 or now == started_at)


def tag(owner: Owner) -> str:
    """``<pid>-<start time>``: how names of folders and segments tell their kernel."""
    return f"{owner[0]}-{max(owner[1], 0)}"


def own() -> Owner:
    """This process, as an owner."""
    pid = os.getpid()
    return pid, start_time(pid)


def _kernel() -> Any:
    return _compat.kernel_of_app()


def for_new_child() -> tuple[Owner | None, bool]:
    """In the parent: the kernel a new child must watch (``None``: no kernel above it)
    and whether it gets a process group of its own (only a kernel's direct children)."""
    if _inherited is not None:
        return _inherited, False
    if sys.platform == "win32" or _kernel() is None:
        return None, False
    me = own()
    _arrays.set_owner_tag(tag(me))
    return me, True


def started(process: Any, detach: bool) -> None:
    """In the parent, once ``process`` started: its own group, for the interrupt."""
    if not detach:
        return
    _children.add(process)
    if getattr(process, "_mpnb_method", None) != "fork":
        return  # not this process's child, or exec'ed already: it joins its own group itself
    try:
        os.setpgid(process.pid, process.pid)
    except OSError:
        pass


def enter_child(owner: Owner | None, detach: bool) -> None:
    """In a child, before anything else: leave the kernel's group, watch the kernel."""
    global _inherited
    if owner is None:
        return
    _inherited = owner
    _arrays.set_owner_tag(tag(owner))
    if detach:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
    threading.Thread(target=_watch, args=(owner,), name="mpnb-kernel-watch", daemon=True).start()


def _watch(owner: Owner) -> None:
    fd: int | None = None
    try:
        fd = os.pidfd_open(owner[0])
    except ProcessLookupError:
        _exit()
    except (AttributeError, OSError):
        fd = None
    if fd is not None and alive(owner):
        select.select([fd], [], [])
    while alive(owner) and fd is None:
        time.sleep(_POLL)
    _exit()


def _exit() -> None:
    """The kernel is gone: end at once (what a kernel's SIGKILL would have done)."""
    try:
        from multiprocessing import util

        tempdir = util._current_process._config.get("tempdir")  # type: ignore[attr-defined]
        if isinstance(tempdir, str):
            import shutil

            shutil.rmtree(tempdir, ignore_errors=True)
    except Exception:
        pass
    os._exit(1)


# -- the kernel's interrupt -------------------------------------------------------------


def running_cell(kernel: Any) -> str | None:
    """The msg_id of the request the kernel runs now (``None``: none known)."""
    try:
        parent = kernel.get_parent("shell") or {}
    except Exception:
        return None
    msg_id = (parent.get("header") or {}).get("msg_id")
    return str(msg_id) if msg_id else None


def forward_interrupt() -> None:
    """Send SIGINT to the process groups of the live children the running cell started."""
    kernel = _kernel()
    cell = running_cell(kernel) if kernel is not None else None
    if cell is None:
        return
    for process in list(_children):
        if getattr(process, "_mpnb_cell", None) != cell or getattr(process, "_mpnb_pool", None):
            continue
        popen = getattr(process, "_popen", None)
        if popen is None or popen.returncode is not None:
            continue
        try:
            os.killpg(popen.pid, signal.SIGINT)
        except OSError:
            try:
                os.kill(popen.pid, signal.SIGINT)
            except OSError:
                pass


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    try:
        forward_interrupt()
    finally:
        signal.default_int_handler(signum, frame)


def hook_kernel() -> str | None:
    """In a kernel: forward its interrupts to the running cell's processes (idempotent).

    ipykernel sets ``default_int_handler`` before each request (``pre_handler_hook``);
    mpnb's handler replaces it then. Returns the running cell's msg_id (``None``
    outside a kernel), which a child started now records.
    """
    kernel = _kernel()
    if kernel is None:
        return None
    if getattr(kernel, "_mpnb_pre_handler_hook", None) is None:
        original = kernel.pre_handler_hook

        def pre_handler_hook() -> None:
            original()
            _install()

        kernel._mpnb_pre_handler_hook = original
        kernel.pre_handler_hook = pre_handler_hook
        _install()  # the cell running now
    return running_cell(kernel)


def _install() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


# -- what a dead kernel left in the temporary directory ---------------------------------

_STALE_DIR = re.compile(r"mpnb-(\d+)-(\d+)-[^/]+")


def dir_prefix() -> str:
    """The prefix of a kernel's temporary folder: ``mpnb-<pid>-<start time>-``, so a
    later kernel can tell whether its owner still lives (``remove_stale_dirs``)."""
    return f"mpnb-{tag(own())}-"


def remove_stale_dirs(parent: str | None = None) -> list[str]:
    """Remove this user's ``mpnb-<pid>-<start>-*`` folders whose kernel is dead; return
    them. A folder named otherwise, another user's, or a live kernel's stays."""
    return _remove_stale(tempfile.gettempdir() if parent is None else parent, stat.S_ISDIR)


def remove_stale() -> list[str]:
    """What dead kernels of this user left: their folders in the temporary directory and
    their segments in /dev/shm (a live kernel's stay)."""
    return remove_stale_dirs() + _remove_stale(_arrays.SHM_DIR, stat.S_ISREG)


def release_segments() -> list[str]:
    """At a kernel's shutdown: remove the segments of payloads never received."""
    pid = os.getpid()
    return _arrays.release_owned(tag(own())) + _arrays.release_owned(f"{pid}-0")


def _remove_stale(parent: str, kind: Callable[[int], bool]) -> list[str]:
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for name in names:
        match = _STALE_DIR.fullmatch(name)
        if match is None:
            continue
        path = os.path.join(parent, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not kind(st.st_mode) or (uid is not None and st.st_uid != uid):
            continue
        if alive((int(match.group(1)), int(match.group(2)))):
            continue
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                continue
        removed.append(path)
    return removed
