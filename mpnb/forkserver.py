"""mpnb's fork server: each ``forkserver`` child is forked from a warm process that has
mpnb, cloudpickle and the preloaded modules imported.

The standard library's fork server costs each child a new socket connection, four
descriptors and a pipe that the child reads its pickled process from after the fork. Here
a parent keeps one connection to its own server and sends the pickled process in the
request itself; the server forks with the bytes in hand, so the child reads nothing and
the parent learns the pid from the status pipe it keeps anyway.

One request on the connection (one sender at a time, under the server's lock):

- a header, ``_HEADER`` (the lengths of the three parts below, the descriptor count),
  sent with the descriptors (``SCM_RIGHTS``): the status pipe's write end, the
  parent-alive pipe's read end, the resource tracker's descriptor, then the process's own
  (``Popen.duplicate_for_child``);
- the parent's state, if it changed since the last request (else nothing);
- the names of modules to learn that this server was not told yet (else nothing): the
  modules the parent's targets come from (``mpnb._preload``);
- the payload: the process's name and the process object, each pickled.

The state is what every child of one parent starts with: the preparation data of
``multiprocessing.spawn`` but the name (``sys.path``, ``sys.argv``, cwd, authkey, main
module...) and the environ. The server applies it to itself, so a child inherits it
instead of unpickling and applying it again; where applying it fails there, every child
applies it itself, as ``multiprocessing.spawn`` would, and reports the error.

The server answers each request with the child's pid on the connection (8 bytes, in
request order), read when the pid is first needed (``Popen.pid``): ``start()`` does not
wait for the fork, so a parent starting several processes keeps the server busy. Once it
has reaped the child, the server writes its exit code (8 bytes, as
``multiprocessing.forkserver`` does) to the status pipe, whose read end is the parent's
sentinel. The server exits when its connection reaches end of file: its parent
closed it or died. The module offers the names of ``multiprocessing.forkserver`` that a
user calls (``ensure_running``, ``get_inherited_fds``, ``set_forkserver_preload``), for
mpnb's server.
"""

from __future__ import annotations

import atexit
import importlib
import io
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import forkserver as _std_forkserver
from multiprocessing import process, reduction, resource_tracker, spawn, util
from multiprocessing.context import set_spawning_popen
from multiprocessing.popen_fork import Popen as _ForkPopen
from typing import Any, cast

from . import _preload
from ._world import apply_environ, environ_snapshot

# Private helpers of ``multiprocessing.util`` that typeshed leaves out, used as
# ``multiprocessing.forkserver`` and ``popen_fork`` use them.
_util: Any = util
_atexit: Any = atexit
# The C module behind ``signal`` (no enum conversions; typeshed has no stub for it).
_signal: Any = importlib.import_module("_signal")

__all__ = [
    "ForkServer",
    "Popen",
    "ensure_running",
    "get_inherited_fds",
    "set_forkserver_preload",
    "main",
]

#: Modules the server imports besides the user's preload list, so that every child
#: starts with mpnb's pickler ready.
MPNB_PRELOAD = ("mpnb", "cloudpickle")
#: The most descriptors one request carries (as the standard library's server).
MAXFDS_TO_SEND = 256
_HEADER = struct.Struct("=QQQI")
_MAIN_KEYS = ("sys_path", "init_main_from_path", "init_main_from_name")
_SIGNED = _std_forkserver.SIGNED_STRUCT  # the stdlib's framing: pids, exit codes
_READY = -1  # the server's first message: not a pid


class ForkServer:
    """A process's connection to its fork server, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forkserver_pid: int | None = None
        self._connection: socket.socket | None = None
        self._preload_modules: list[str] = ["__main__"]
        self._inherited_fds: list[int] | None = None
        self._state_sent: dict[str, Any] | None = None  # the last state the server got
        self._modules: list[str] = []  # the modules of targets started so far, in order
        self._modules_told = 0  # how many of them the server was told
        self._replies: _Replies | None = None  # the pids the server sends back

    # -- the parent's side ------------------------------------------------------------

    def set_forkserver_preload(self, modules_names: list[str]) -> None:
        """The modules a server started from now on imports (besides mpnb's)."""
        if not all(type(name) is str for name in modules_names):
            raise TypeError(
                "module_names must be a list of strings: the names of modules for the fork "
                f"server to import, got {modules_names!r}"
            )
        self._preload_modules = list(modules_names)

    def get_inherited_fds(self) -> list[int] | None:
        """In a child of the server: the descriptors its parent passed (else ``None``)."""
        return self._inherited_fds

    def ensure_running(self) -> None:
        """Start the server, or a new one if the last one died."""
        with self._lock:
            resource_tracker.ensure_running()
            self._ensure_running_unlocked()

    def _ensure_running_unlocked(self) -> None:
        if self._forkserver_pid is not None:
            try:
                pid, _ = os.waitpid(self._forkserver_pid, os.WNOHANG)
            except ChildProcessError:
                pid = self._forkserver_pid
            if not pid:
                return
            self._forget()
        self._start()

    def _start(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            preload = self._preload_modules + [
                m for m in MPNB_PRELOAD if m not in self._preload_modules
            ]
            data = spawn.get_preparation_data("ignore")
            # The parent's main module, imported once in the server rather than again in
            # every child (the standard library's server means to, but asks for a key
            # that the preparation data does not have).
            prep = {key: data[key] for key in _MAIN_KEYS if key in data}
            package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            # SIGINT ignored from the first line: a ^C meant for the parent's group must
            # not stop the server while it imports its preloads.
            # (Its children get the handler it started with.)
            cmd = (
                "import signal; sigint = signal.signal(signal.SIGINT, signal.SIG_IGN); "
                f"import sys; sys.path.insert(0, {package_root!r}); "
                "from mpnb.forkserver import main; "
                f"main({theirs.fileno()}, {preload!r}, sigint, **{prep!r})"
            )
            exe = spawn.get_executable()
            args = [exe, *_util._args_from_interpreter_flags(), "-c", cmd]
            pid = _util.spawnv_passfds(exe, args, [theirs.fileno()])
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        # The server says it is ready (preloads imported, ^C ignored) before anything is
        # asked of it: a request is never lost to a server still starting.
        ready = b""
        while len(ready) < _SIGNED.size:
            chunk = mine.recv(_SIGNED.size - len(ready))
            if not chunk:
                break
            ready += chunk
        if ready != _SIGNED.pack(_READY):
            mine.close()
            _reap(pid, 1.0)
            raise RuntimeError(
                "mpnb's fork server exited as it started (its error, if any, is on this "
                "process's stderr); the spawn start method does not need it: "
                "mpnb.get_context('spawn')"
            )
        self._connection = mine
        self._replies = _Replies(mine)
        self._forkserver_pid = pid

    def _forget(self, *, forked_copy: bool = False) -> None:
        """Drop the connection (the server exits once no process holds it) and what was
        sent on it. ``forked_copy``: this is a forked child, whose parent still uses the
        connection: close this copy only."""
        if self._replies is not None and not forked_copy:
            self._replies.close()
        self._replies = None
        if self._connection is not None:
            try:
                if not forked_copy:
                    self._connection.shutdown(socket.SHUT_RDWR)  # wakes a pid reader
                self._connection.close()
            except OSError:
                pass
        self._connection = None
        self._forkserver_pid = None
        self._state_sent = None
        self._modules_told = 0

    def _stop(self, timeout: float = 5.0) -> None:
        """Close the connection (the server exits) and reap the server."""
        with self._lock:
            pid = self._forkserver_pid
            self._forget()
        if pid is not None:
            _reap(pid, timeout)

    def new_process(
        self, popen: Popen, state: dict[str, Any], module: str | None, payload: memoryview
    ) -> tuple[_Replies, int, int, int]:
        """Ask the server for a child running ``payload`` in ``state``: where its pid will
        come (the replies and the request's number), the status pipe's read end (the
        sentinel) and the parent-alive pipe's write end. ``module``: where the child's code
        comes from, for the server to learn."""
        fds = popen._fds
        if len(fds) + 3 > MAXFDS_TO_SEND:
            raise ValueError(f"too many descriptors for one process: {len(fds)}")
        tracker_fd = resource_tracker.getfd()
        assert tracker_fd is not None  # getfd() starts the tracker
        status_r, status_w = os.pipe()
        alive_r, alive_w = os.pipe()
        try:
            passed = [status_w, alive_r, tracker_fd, *fds]
            with self._lock:
                for attempt in (1, 2):
                    self._ensure_running_unlocked()
                    connection, replies = self._connection, self._replies
                    assert connection is not None and replies is not None
                    replies.drain()  # so the server never waits to send a pid
                    changed = state != self._state_sent
                    state_bytes = _dump_state(popen, state) if changed else b""
                    if module is not None and module not in self._modules:
                        self._modules.append(module)
                    untold = self._modules[self._modules_told :]
                    learn = pickle.dumps(untold) if untold else b""
                    header = _HEADER.pack(len(state_bytes), len(learn), len(payload), len(passed))
                    try:
                        socket.send_fds(connection, [header], passed)
                        connection.sendall(state_bytes + learn)
                        connection.sendall(payload)
                        self._state_sent = state
                        self._modules_told = len(self._modules)
                        request = replies.requested()
                        break
                    except (BrokenPipeError, ConnectionResetError):
                        # The server died since it last answered: once more, on a new one.
                        if attempt == 2:
                            raise
                        pid = self._forkserver_pid
                        self._forget()
                        if pid is not None:
                            _reap(pid, 1.0)
        except BaseException:
            os.close(status_r)
            os.close(alive_w)
            raise
        finally:
            os.close(status_w)
            os.close(alive_r)
        assert replies is not None
        return replies, request, status_r, alive_w

    def _close_at_exit(self) -> None:
        """At interpreter exit, after the children were joined: the server exits."""
        with self._lock:
            self._forget()

    def _after_fork_in_child(self) -> None:
        """A forked copy of this process starts its own server: it must never write to
        its parent's connection, nor keep that server alive."""
        self._lock = threading.Lock()
        self._forget(forked_copy=True)


class _Replies:
    """The pids one server sends back, one per request, in request order."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._requested = 0  # requests sent (the next one's number)
        self._received = 0  # pids read
        self._buffer = b""
        self._pids: dict[int, int] = {}  # read, not yet asked for
        self._closed = False

    def requested(self) -> int:
        """A request was sent (under the server's lock): its number."""
        number = self._requested
        self._requested += 1
        return number

    def _take(self, data: bytes) -> None:
        buffer = self._buffer + data
        whole = len(buffer) - len(buffer) % _SIGNED.size
        for (pid,) in _SIGNED.iter_unpack(buffer[:whole]):
            self._pids[self._received] = pid
            self._received += 1
        self._buffer = buffer[whole:]

    def drain(self) -> None:
        """Read the pids that arrived, without waiting."""
        with self._lock:
            while not self._closed:
                try:
                    data = self._connection.recv(65536, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    data = b""
                if not data:
                    self._closed = True
                    return
                self._take(data)

    def pid(self, number: int) -> int | None:
        """The pid of request ``number``, waiting for it; ``None`` if the server went away
        before it forked (its exit code reads 255, as in the standard library)."""
        with self._lock:
            while number not in self._pids and not self._closed:
                try:
                    data = self._connection.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._closed = True
                    break
                self._take(data)
            return self._pids.pop(number, None)

    def close(self) -> None:
        """The connection is being closed: a pid not read by now will not come."""
        self._closed = True


def _dump_state(popen: Popen, state: dict[str, Any]) -> bytes:
    set_spawning_popen(cast(Any, popen))  # the authkey pickles only for a child
    try:
        return bytes(reduction.ForkingPickler.dumps(state))
    finally:
        set_spawning_popen(None)


def reaped(pid: int, timeout: float) -> bool:
    """Whether child ``pid`` exited (and was reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _reap(pid: int, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for the server to exit, then kill it."""
    if not reaped(pid, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _code_module(process_obj: Any) -> str | None:
    """The module a process's code comes from (its target's, or its class's if it has its
    own ``run``), if the server could import it by name."""
    target = getattr(process_obj, "_target", None)
    if target is not None:
        name = getattr(target, "__module__", None)
    elif type(process_obj).run is not process.BaseProcess.run:
        name = type(process_obj).__module__
    else:
        return None
    if not isinstance(name, str) or name in ("__main__", "__mp_main__"):
        return None
    module = sys.modules.get(name)
    return name if getattr(module, "__file__", None) else None


class _DupFd:
    """A descriptor a child of the server received with its request."""

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        fds = _forkserver.get_inherited_fds()
        assert fds is not None, "not a child of mpnb's fork server"
        return fds[self.index]


class Popen(_ForkPopen):
    """``multiprocessing.popen_forkserver.Popen`` over mpnb's fork server."""

    method = "forkserver"
    DupFd = _DupFd

    def __init__(self, process_obj: Any) -> None:
        self._fds: list[int] = []
        self._pid: int | None = None
        self._replies: _Replies | None = None
        self._request = -1
        self._on_pid: list[Callable[[int], None]] = []
        self._poll_lock = threading.Lock()
        self._pid_lock = threading.Lock()
        super().__init__(process_obj)

    @property
    def pid(self) -> int | None:  # type: ignore[override]
        """The child's pid: read from the server's replies the first time it is needed."""
        if self._replies is not None:
            with self._pid_lock:  # one reader; another thread asking meanwhile waits
                replies = self._replies
                if replies is not None:
                    self._pid = replies.pid(self._request)
                    self._replies = None
                    callbacks, self._on_pid = self._on_pid, []
                    if self._pid is not None:
                        for callback in callbacks:
                            callback(self._pid)
        return self._pid

    def when_pid(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(pid)`` once the pid is known (now, if it is)."""
        with self._pid_lock:
            if self._replies is not None:
                self._on_pid.append(callback)
                return
        if self._pid is not None:
            callback(self._pid)

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj: Any) -> None:
        state = spawn.get_preparation_data(process_obj._name)
        name = state.pop("name")
        state["environ"] = environ_snapshot()
        buf = io.BytesIO()
        set_spawning_popen(cast(Any, self))
        try:
            reduction.dump(name, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        module = _code_module(process_obj)
        self._replies, self._request, self.sentinel, alive_w = _forkserver.new_process(
            self, state, module, buf.getbuffer()
        )
        self.finalizer = util.Finalize(self, _util.close_fds, (alive_w, self.sentinel))

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if self.returncode is None:
            from multiprocessing.connection import wait

            timeout = 0 if flag == os.WNOHANG else None
            if not wait([self.sentinel], timeout):
                return None
            # One reader: ``start()`` polls every child (``process._cleanup``) from any
            # thread, and a second read of the status would find the pipe at its end.
            with self._poll_lock:
                if self.returncode is None:
                    self.pid  # noqa: B018 - read by now (sent before the exit): frees its slot
                    try:
                        self.returncode = _std_forkserver.read_signed(self.sentinel)
                    except (OSError, EOFError):
                        # The server died before it could report the exit (as the stdlib
                        # says).
                        self.returncode = 255
        return self.returncode

    def _send_signal(self, sig: int) -> None:
        if self.pid is not None:  # None: the server went away before it forked
            super()._send_signal(sig)  # type: ignore[misc]


# -- the server --------------------------------------------------------------------------


def main(
    connection_fd: int,
    preload: list[str],
    sigint: Any = signal.default_int_handler,
    sys_path: list[str] | None = None,
    init_main_from_path: str | None = None,
    init_main_from_name: str | None = None,
) -> None:
    """Run the fork server on ``connection_fd`` until it reaches end of file; ``sigint``:
    the SIGINT handler its children start with (the one it started with)."""
    if sys_path is not None:
        sys.path[:] = sys_path
    if "__main__" in preload:
        _preload.import_main(init_main_from_path, init_main_from_name)
    _preload.import_preload(preload)
    learned = _preload.Learned()
    _util._close_stdin()

    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    handlers: dict[signal.Signals, Any] = {
        signal.SIGCHLD: lambda *_: None,
        signal.SIGINT: signal.SIG_IGN,
    }
    old_handlers = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    old_handlers[signal.SIGINT] = sigint
    child_handlers = [
        (int(sig), int(handler) if isinstance(handler, int) else handler)
        for sig, handler in old_handlers.items()
    ]
    signal.set_wakeup_fd(sig_w)
    connection = socket.socket(fileno=connection_fd)
    connection.sendall(_SIGNED.pack(_READY))
    poller = select.poll()
    poller.register(connection, select.POLLIN)
    poller.register(sig_r, select.POLLIN)
    status_fds: dict[int, int] = {}  # child pid -> its status pipe's write end
    unapplied: bytearray | None = None  # a state that failed to apply here: each child applies it

    while True:
        try:
            ready = {fd for fd, _ in poller.poll()}
        except InterruptedError:
            continue
        if sig_r in ready:
            _reap_children(sig_r, status_fds)
        if connection.fileno() in ready:
            request = _receive(connection)
            if request is None:
                return  # the parent is gone
            state, learn, payload, (status_w, *fds) = request
            if state:
                unapplied = None if _applied_here(state) else state
                learned.reimport()  # what the learned modules' imports read may have changed
            if learn:
                learned.learn(pickle.loads(learn))
            learned.refresh()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    for fd in (connection_fd, sig_r, sig_w, status_w, *status_fds.values()):
                        os.close(fd)
                    signal.set_wakeup_fd(-1)
                    # ``_signal``'s own function: ``signal.signal`` converts to and from
                    # enums, Python code that each child would run (and copy pages for).
                    for sig, handler in child_handlers:
                        _signal.signal(sig, handler)
                    # The child's exit handlers are its own, multiprocessing's first (it
                    # flushes the queues): as a forked child of Python 3.13 exits.
                    _atexit._clear()
                    _atexit.register(_util._exit_function)
                    code = _serve_one(unapplied, payload, fds)
                except Exception:
                    sys.excepthook(*sys.exc_info())
                    sys.stderr.flush()
                finally:
                    _atexit._run_exitfuncs()
                    os._exit(code)
            del payload
            for fd in fds:
                os.close(fd)
            status_fds[pid] = status_w
            try:
                connection.sendall(_SIGNED.pack(pid))
            except OSError:
                return  # the parent is gone


def _receive(
    connection: socket.socket,
) -> tuple[bytearray, bytearray, bytearray, list[int]] | None:
    """One request: the state (empty if unchanged), the modules to learn (empty if none),
    the payload and the descriptors; ``None`` at end of file."""
    try:
        header, fds, _, _ = socket.recv_fds(connection, _HEADER.size, MAXFDS_TO_SEND)
    except ConnectionResetError:  # the parent closed with pids unread
        return None
    if not header:
        return None
    while len(header) < _HEADER.size:
        more = connection.recv(_HEADER.size - len(header))
        if not more:
            return None
        header += more
    state_length, learn_length, length, count = _HEADER.unpack(header)
    if len(fds) != count or count < 3:
        raise RuntimeError(f"fork server: expected {count} descriptors, received {len(fds)}")
    state = _receive_exactly(connection, state_length)
    learn = _receive_exactly(connection, learn_length)
    payload = _receive_exactly(connection, length)
    if state is None or learn is None or payload is None:
        return None
    return state, learn, payload, fds


def _receive_exactly(connection: socket.socket, length: int) -> bytearray | None:
    data = bytearray(length)
    view = memoryview(data)
    got = 0
    while got < length:
        try:
            n = connection.recv_into(view[got:])
        except ConnectionResetError:
            return None
        if not n:
            return None
        got += n
    return data


def _apply_state(state: bytes | bytearray) -> None:
    """Apply a parent's state (preparation data and environ) to this process."""
    data = pickle.loads(state)
    apply_environ(data.pop("environ"))
    spawn.prepare(data)


def _applied_here(state: bytearray) -> bool:
    """In the server: whether ``state`` applied (if not, each child applies it and
    reports the error, as ``multiprocessing.spawn`` would)."""
    current = process.current_process()
    current._inheriting = True  # type: ignore[attr-defined]
    try:
        _apply_state(state)
    except Exception:
        return False
    finally:
        del current._inheriting  # type: ignore[attr-defined]
    return True


def _reap_children(sig_r: int, status_fds: dict[int, int]) -> None:
    """Report the exit code of every child that ended to its parent."""
    try:
        os.read(sig_r, 65536)
    except BlockingIOError:
        pass
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status_w = status_fds.pop(pid, None)
        if status_w is None:
            continue
        try:
            _std_forkserver.write_signed(status_w, os.waitstatus_to_exitcode(status))
        except BrokenPipeError:
            pass
        os.close(status_w)


def _serve_one(unapplied: bytearray | None, payload: bytearray, fds: list[int]) -> int:
    """In the forked child: load the process as ``multiprocessing.spawn._main`` does (its
    state is the server's already, or ``unapplied``), then run it."""
    alive_r, tracker_fd, *inherited = fds
    resource_tracker._resource_tracker._fd = tracker_fd  # type: ignore[attr-defined]
    _forkserver._inherited_fds = inherited
    from_parent = io.BytesIO(payload)
    current = process.current_process()
    current._inheriting = True  # type: ignore[attr-defined]
    try:
        current.name = pickle.load(from_parent)
        if unapplied is not None:
            _apply_state(unapplied)
        process_obj = pickle.load(from_parent)
    finally:
        del current._inheriting  # type: ignore[attr-defined]
    del payload, from_parent
    return int(process_obj._bootstrap(alive_r))


_forkserver = ForkServer()
ensure_running = _forkserver.ensure_running
get_inherited_fds = _forkserver.get_inherited_fds
set_forkserver_preload = _forkserver.set_forkserver_preload
# Last among multiprocessing's exit finalizers (it runs them after joining the children).
util.Finalize(_forkserver, _forkserver._close_at_exit, exitpriority=-100)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _forkserver._after_fork_in_child())
