"""Stop every process mpnb started when the interpreter or the kernel shuts down.

At interpreter exit an ``atexit`` handler terminates every pool and every live process
mpnb started (SIGTERM, then SIGKILL after ``GRACE`` seconds). In a plain script,
non-daemonic processes are the exception: as with the standard library, the script
waits for them (``multiprocessing``'s own exit handler joins them). It is registered
when the first mpnb process starts (``mpnb.process`` calls ``watch``), so it runs before
``multiprocessing.util._exit_function`` (handlers run last registered, first run), which
would otherwise wait forever on a non-daemonic child that does not end.

In an ipykernel, a shutdown or restart request does not get that far: before exiting,
the kernel sends SIGTERM to every child in its process group and waits while any is
left; the resource tracker ignores SIGTERM, so the kernel waits until the frontend gives
up (jupyter_client's ``shutdown_wait_time`` / 2) and SIGTERMs the kernel, which then
exits without running ``atexit``: queues' semaphores are left to the tracker, which
warns about them. So mpnb wraps the kernel's ``do_shutdown``: it stops mpnb's
processes, runs multiprocessing's exit finalizers, then stops the fork server and the
resource tracker (with bounded waits), and the kernel exits at once, cleanly.

Pool workers also watch the process that owns their pool and exit when it dies (a
kernel killed with SIGKILL runs none of this).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import weakref
from contextlib import AbstractContextManager
from typing import Any, Protocol, cast

from .forkserver import reaped
from .registry import REGISTRY

__all__ = ["GRACE", "watch", "track", "stopping", "stop_all"]


# The standard library's private parts used at kernel shutdown (typeshed leaves them out).


class _UtilModule(Protocol):
    def _run_finalizers(self, minpriority: int | None = None) -> None: ...


class _ForkServerInternals(Protocol):
    """``multiprocessing.forkserver.ForkServer``'s state."""

    _lock: AbstractContextManager[Any]
    _forkserver_pid: int | None
    _forkserver_alive_fd: int | None
    _forkserver_address: str | None


class _ResourceTrackerInternals(Protocol):
    """``multiprocessing.resource_tracker.ResourceTracker``'s state."""

    _lock: AbstractContextManager[Any]
    _fd: int | None
    _pid: int | None


# Seconds a process gets between SIGTERM and SIGKILL at shutdown.
GRACE = 1.0
# Seconds the fork server and the resource tracker get to exit at a kernel shutdown.
HELPER_GRACE = 1.0

_tracked: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_watching_pid: int | None = None
_stopping = False


def track(pool_core: Any) -> None:
    """Terminate ``pool_core`` (anything with ``terminate(timeout)``) at shutdown."""
    _tracked.add(pool_core)


def stopping() -> bool:
    """True once shutdown began: pools start no new workers."""
    return _stopping


def watch() -> None:
    """Install the exit handlers in this process (idempotent; cheap after the first)."""
    global _watching_pid
    if _watching_pid == os.getpid():
        return
    with _lock:
        if _watching_pid == os.getpid():
            return
        import multiprocessing.util  # noqa: F401 - its atexit handler must come first

        atexit.register(_at_exit)
        _watching_pid = os.getpid()
    _hook_kernel()


def stop_all(grace: float = GRACE, everything: bool = True) -> None:
    """Terminate every pool and every live process mpnb started in this process.

    ``everything=False`` leaves non-daemonic processes that are not pool workers to
    ``multiprocessing``'s own exit handler, which waits for them (a script's semantics).
    """
    global _stopping
    _stopping = True
    pid = os.getpid()
    pools = list(_tracked)
    for core in pools:
        core.request_terminate()
    handles = [
        p
        for p in REGISTRY.live_handles().values()
        if getattr(p, "_parent_pid", None) == pid
        and (everything or p.daemon or getattr(p, "_mpnb_pool", None))
    ]
    live = []
    for p in handles:
        try:
            if p.is_alive():
                p.terminate()
                live.append(p)
        except (OSError, ValueError, AssertionError):
            continue
    _wait(live, grace)
    for p in live:
        try:
            if p.is_alive():
                p.kill()
        except (OSError, ValueError, AssertionError):
            continue
    _wait(live, grace)
    for core in pools:
        core.terminate(timeout=grace)


def _wait(processes: list[Any], timeout: float) -> None:
    from multiprocessing.connection import wait

    deadline = time.monotonic() + timeout
    pending = [p for p in processes if p.exitcode is None]
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        wait([p.sentinel for p in pending], left)
        pending = [p for p in pending if p.exitcode is None]


def _at_exit() -> None:
    if _watching_pid != os.getpid():
        return  # a forked child inherited the handler: its parent's processes are not its own
    stop_all(everything=_interactive())


def _interactive() -> bool:
    """A kernel, an IPython shell or ``python -i``: its children end with it."""
    ipython = sys.modules.get("IPython")
    try:
        if ipython is not None and ipython.get_ipython() is not None:
            return True
    except Exception:  # a half torn-down IPython: not a shell any more
        pass
    return bool(sys.flags.interactive or getattr(sys, "ps1", None))


# -- ipykernel --------------------------------------------------------------------------


def _hook_kernel() -> None:
    """Wrap the running ipykernel's ``do_shutdown`` (see the module docstring)."""
    from ._compat import kernel_of_app

    kernel = kernel_of_app()
    if kernel is None or getattr(kernel, "_mpnb_do_shutdown", None) is not None:
        return
    original = kernel.do_shutdown

    def do_shutdown(restart: bool) -> Any:
        try:
            kernel_shutdown()
        except Exception:  # never block the kernel's own shutdown
            import traceback

            traceback.print_exc()
        return original(restart)

    kernel._mpnb_do_shutdown = original
    kernel.do_shutdown = do_shutdown


def kernel_shutdown() -> None:
    """What a kernel does for mpnb before it exits: processes, finalizers, the segments
    of payloads never received, helpers."""
    if _watching_pid != os.getpid():
        return
    stop_all()
    from multiprocessing import util

    cast(_UtilModule, util)._run_finalizers(0)
    from . import _owner

    _owner.release_segments()  # payloads never received: the tracker would warn
    _stop_forkserver()
    _stop_resource_tracker()


def _stop_forkserver() -> None:
    """Stop mpnb's fork server, and the standard library's if this process started it."""
    if sys.platform == "win32":  # pragma: no cover - Windows has none
        return
    from . import forkserver as mpnb_forkserver

    mpnb_forkserver._forkserver._stop(HELPER_GRACE)
    from multiprocessing import forkserver

    server = cast(_ForkServerInternals, forkserver._forkserver)
    with server._lock:
        pid = getattr(server, "_forkserver_pid", None)
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not reaped(pid, HELPER_GRACE):
            return
        alive_fd = server._forkserver_alive_fd
        try:
            if alive_fd is not None:
                os.close(alive_fd)
        except OSError:
            pass
        address = server._forkserver_address
        server._forkserver_pid = None
        server._forkserver_alive_fd = None
        server._forkserver_address = None
        if isinstance(address, str) and not address.startswith("\0"):
            try:
                os.unlink(address)
            except OSError:
                pass


def _stop_resource_tracker() -> None:
    from multiprocessing import resource_tracker

    tracker = cast(_ResourceTrackerInternals, resource_tracker._resource_tracker)
    with tracker._lock:
        fd, pid = tracker._fd, tracker._pid
        if fd is None or pid is None:
            return
        os.close(fd)  # the tracker exits once every copy of this descriptor is closed
        tracker._fd = None
        tracker._pid = None
        reaped(pid, HELPER_GRACE)
