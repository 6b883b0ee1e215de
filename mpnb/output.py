"""Child output in the notebook cell that started the work.

In an IPython kernel, everything an mpnb child writes (``print``, ``sys.stdout`` and
``sys.stderr``, ``logging``, C code and shells writing to fds 1 and 2) appears in the
output area of the cell that started the process or submitted the task: sent as IOPub
``stream`` messages with that cell's parent header, so it lands there even after the
cell finished, and never in another cell. stderr stays stderr. Children's streams are
line-buffered and an unfinished line goes out after a tenth of a second: output
arrives without flushing. Grandchildren started through mpnb route the same way. A
traceback frame in a notebook cell reads ``Cell In[n], line k`` followed by the cell's
source line.

How: a start hook (``process.add_start_hook``) gives each child the address of the
kernel's relay (``mpnb._relay``) and the route of its cell (the cell's msg_id); the
child connects its fds 1 and 2 there and replaces ``sys.stdout``/``sys.stderr`` by
UTF-8 streams on them. A pool worker switches route per task through
``mpnb._routing`` (``enter``/``leave``); the parent ``drain``s before it hands a result
or a joined process back, so output comes before what follows it in the cell.

Routing is on in a kernel from ``import mpnb`` (and ``%load_ext mpnb``); it changes
nothing but where mpnb's own children write. ``deactivate()`` (or ``%unload_ext
mpnb``) turns it off. Outside a kernel (terminal IPython, scripts) children write to
the inherited fds, as with the standard library.
"""
from __future__ import annotations

import io
import os
import secrets
import socket
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

from . import _compat, _routing
from . import process as _process
from ._relay import Relay, hello, marker

__all__ = ["activate", "deactivate", "active", "configure"]

# Parent headers of the cells that started work, by msg_id (the route); the oldest
# is forgotten first (its late output then goes to the cell running at that time).
MAX_ROUTES = 4096

# Seconds an unfinished line waits in a child's stream before it is written anyway:
# long enough to gather the pieces ``print`` writes, short next to the relay's wait.
FLUSH_DELAY = 0.05

_settings: dict[str, Any] = {"tags": True}
_state_lock = threading.Lock()
_fork_handler_registered = False


def activate() -> bool:
    """Route mpnb children's output to the cells that start them.

    Returns whether routing is on: ``False`` outside an IPython kernel, where children
    keep writing to the inherited file descriptors.
    """
    global _kernel
    with _state_lock:
        if _kernel is not None or _child is not None:
            return True
        found = _find_kernel()
        if found is None:
            return False
        _kernel = _KernelSide(*found)
        _routing.set_router(_KernelRouter(_kernel))
        _process.add_start_hook(_start_hook)
        _register_fork_handler()
    return True


def deactivate() -> None:
    """Stop routing: processes started from now on write to the inherited fds.

    Children already routed keep publishing into their cells until they end.
    """
    global _kernel
    with _state_lock:
        side, _kernel = _kernel, None
        if side is None:
            return
        _process.remove_start_hook(_start_hook)
        previous = _routing.set_router(None)
        if not isinstance(previous, _KernelRouter):
            _routing.set_router(previous)
        side.close()


def active() -> bool:
    """Whether this process routes its mpnb children's output (or is routed itself)."""
    return _kernel is not None or _child is not None


def configure(*, tags: bool | None = None) -> dict[str, Any]:
    """Change settings; return them all.

    ``tags``: when more than one process writes into a cell, start the text of each
    change of source with ``[stdout:<process name>]`` (default ``True``).
    """
    if tags is not None:
        _settings["tags"] = bool(tags)
        side = _kernel
        if side is not None and side.relay is not None:
            side.relay.tags = bool(tags)
    return dict(_settings)


# -- the kernel side -----------------------------------------------------------------------


def _find_kernel() -> tuple[Any, Any] | None:
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return None
    shell = sys.modules["IPython"].get_ipython()
    kernel = getattr(shell, "kernel", None)
    if getattr(kernel, "session", None) is None or getattr(kernel, "iopub_socket", None) is None:
        return None
    return shell, kernel


def _current_header(kernel: Any) -> dict[str, Any]:
    """The parent header a ``print`` here would get: the cell running now."""
    header = getattr(sys.stdout, "parent_header", None)
    if isinstance(header, dict) and header.get("msg_id"):
        return header
    try:
        parent = kernel.get_parent("shell") or {}
    except Exception:
        return {}
    return dict(parent.get("header") or {})


def _flush_kernel_streams() -> None:
    """Send what the kernel printed so far, so a child's output comes after it."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "_flush_pending", True) is False:
            continue  # an ipykernel stream with nothing waiting
        try:
            stream.flush()
        except Exception:
            pass


class _KernelSide:
    """The kernel's routes, and the relay that publishes on its IOPub socket."""

    def __init__(self, shell: Any, kernel: Any) -> None:
        self.shell = shell
        self.kernel = kernel
        self.token = secrets.token_hex(8)
        self.relay: Relay | None = None
        self._headers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def address(self) -> str | None:
        """The relay's address, starting the relay on first use (``None``: cannot)."""
        with self._lock:
            if self.relay is None or not self.relay.alive:
                try:
                    self.relay = Relay(self.send, self.token, self.label,
                                       tags=_settings["tags"])
                except (OSError, AttributeError):  # no AF_UNIX sockets here
                    return None
            return self.relay.address

    def capture(self) -> str | None:
        header = _current_header(self.kernel)
        msg_id = header.get("msg_id")
        if not msg_id:
            return None
        with self._lock:
            self._headers[msg_id] = header
            self._headers.move_to_end(msg_id)
            while len(self._headers) > MAX_ROUTES:
                self._headers.popitem(last=False)
        return str(msg_id)

    def send(self, route: str | None, stream: str, text: str) -> None:
        with self._lock:
            header = self._headers.get(route) if route else None
        if header is None:
            header = _current_header(self.kernel)
        _flush_kernel_streams()  # what the kernel printed before comes first
        self.kernel.session.send(self.kernel.iopub_socket, "stream",
                                 {"name": stream, "text": text}, parent=header,
                                 ident=b"stream." + stream.encode())

    def label(self, filename: str) -> str | None:
        """``'Cell In[3]'`` for the file name of a notebook cell, else ``None``."""
        return _compat.cell_label(self.shell, filename)

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()


class _KernelRouter:
    """``_routing``'s router in the kernel: routes are cells' msg_ids."""

    def __init__(self, side: _KernelSide) -> None:
        self.side = side

    def capture(self) -> str | None:
        _flush_kernel_streams()
        return self.side.capture()

    def enter(self, route: Any) -> None:
        pass

    def leave(self) -> None:
        pass

    def drain(self, process: Any = None) -> None:
        relay = self.side.relay
        if relay is not None:
            relay.drain(getattr(process, "pid", None))


_kernel: _KernelSide | None = None


# -- the child side --------------------------------------------------------------------------


class _ChildSetup:
    """Run in a child before its target: connect its fds 1 and 2 to the kernel's relay."""

    __slots__ = ("address", "token", "route", "name")

    def __init__(self, address: str, token: str, route: str | None, name: str) -> None:
        self.address, self.token, self.route, self.name = address, token, route, name

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _ChildSetup, (self.address, self.token, self.route, self.name)

    def __call__(self) -> None:
        _start_child(self)


class _ChildStream(io.TextIOWrapper):
    """A line-buffered UTF-8 text stream on fd 1 or 2; an unfinished line goes out after
    ``FLUSH_DELAY`` seconds, so nothing waits for a flush the user did not write."""

    def __init__(self, fd: int) -> None:
        super().__init__(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                         errors="backslashreplace", line_buffering=True)

    def write(self, text: str) -> int:
        written = super().write(text)
        if text and "\n" not in text:  # it waits in the buffer for the end of its line
            _flusher.wake()
        return written

    def flush(self) -> None:
        super().flush()
        _flush_c_streams()


class _Flusher:
    """A thread, started at the first unfinished line, that flushes the child's streams
    ``FLUSH_DELAY`` seconds after an unfinished line was written."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._armed = False
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        if self._armed:
            return
        self._armed = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mpnb-flush", daemon=True)
            self._thread.start()
        self._event.set()

    def _run(self) -> None:
        while True:
            self._event.wait()
            time.sleep(FLUSH_DELAY)
            self._event.clear()
            self._armed = False
            _flush_python_streams()


_flusher = _Flusher()


class _ChildSide:
    """A routed child: its connections to the relay and the route it writes under."""

    def __init__(self, setup: _ChildSetup, out: socket.socket, err: socket.socket) -> None:
        self.address, self.token = setup.address, setup.token
        self.default = self.route = setup.route
        self._socks = (out, err)
        self._lock = threading.Lock()

    def switch(self, route: str | None) -> None:
        """From now on, what this process writes goes to ``route``."""
        _flush_python_streams()
        with self._lock:
            if route == self.route:
                return
            mark = marker(self.token, route)
            for sock in self._socks:
                try:
                    sock.sendall(mark)
                except OSError:
                    pass
            self.route = route


class _ChildRouter:
    """``_routing``'s router in a child: a pool worker enters each task's route."""

    def __init__(self, side: _ChildSide) -> None:
        self.side = side

    def capture(self) -> str | None:
        return self.side.route

    def enter(self, route: Any) -> None:
        self.side.switch(route)

    def leave(self) -> None:
        self.side.switch(self.side.default)

    def drain(self, process: Any = None) -> None:
        pass  # grandchildren write to the kernel's relay themselves


_child: _ChildSide | None = None


def _start_child(setup: _ChildSetup) -> None:
    global _child, _kernel
    _kernel = None
    socks: list[socket.socket] = []
    try:
        for name in ("stdout", "stderr"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(sock)
            sock.connect(setup.address)
            sock.sendall(hello(setup.token, setup.name, os.getpid(), name, setup.route))
    except (OSError, AttributeError):  # no relay (any more), or no AF_UNIX here
        for sock in socks:
            sock.close()
        return
    old = (sys.stdout, sys.stderr)
    for stream in old:
        # A kernel's stream inherited through fork holds the kernel's unsent text.
        if stream is not None and not type(stream).__module__.startswith("ipykernel"):
            try:
                stream.flush()
            except Exception:
                pass
    os.dup2(socks[0].fileno(), 1)
    os.dup2(socks[1].fileno(), 2)
    sys.stdout, sys.stderr = _ChildStream(1), _ChildStream(2)
    _retarget_logging(old)
    _child = _ChildSide(setup, socks[0], socks[1])
    _routing.set_router(_ChildRouter(_child))
    _process.add_start_hook(_start_hook)
    _register_fork_handler()


def _retarget_logging(old: tuple[Any, Any]) -> None:
    """Point logging handlers that wrote to the old stdout/stderr at the new ones."""
    logging = sys.modules.get("logging")
    if logging is None:
        return
    new = {id(old[0]): sys.stdout, id(old[1]): sys.stderr}
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if (isinstance(handler, logging.StreamHandler)
                    and not isinstance(handler, logging.FileHandler)
                    and id(handler.stream) in new):
                handler.stream = new[id(handler.stream)]


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


_libc: Any = None


def _flush_c_streams() -> None:
    """``fflush(NULL)``: what C code printed with stdio goes out too."""
    global _libc
    if _libc is None:
        try:
            import ctypes
            _libc = ctypes.CDLL(None)
            _libc.fflush  # noqa: B018 - fails early where there is none
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.fflush(None)


# -- both sides ------------------------------------------------------------------------------


def _start_hook(process: Any) -> _ChildSetup | None:
    """Before an mpnb process starts: how it should set up its output."""
    child = _child
    if child is not None:  # a grandchild: same relay, this process's current route
        return _ChildSetup(child.address, child.token, child.route, process.name)
    side = _kernel
    if side is None:
        return None
    address = side.address()
    if address is None:
        return None
    _flush_kernel_streams()
    return _ChildSetup(address, side.token, side.capture(), process.name)


def _register_fork_handler() -> None:
    global _fork_handler_registered
    if not _fork_handler_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_handler_registered = True


def _after_fork_in_child() -> None:
    """A forked child is no kernel: drop the parent's relay without touching its locks.
    Nor has it the parent's flusher thread."""
    global _kernel, _flusher
    _flusher = _Flusher()
    side, _kernel = _kernel, None
    if side is None:
        return
    if isinstance(_routing._router, _KernelRouter):
        _routing.set_router(None)
    if side.relay is not None:
        side.relay.abandon()
