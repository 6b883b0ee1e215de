"""The child side of output routing: streams on the relay's sockets, a route per task.

A start hook (``start_hook``, added with ``process.add_start_hook``) gives each child
a ``ChildSetup``: the address of the kernel's relay and the route of its cell (the
cell's msg_id). Run in the child before its target, it connects the child's fds 1 and
2 there (``mpnb.output.protocol``) and replaces ``sys.stdout``/``sys.stderr`` by UTF-8
streams on them: line-buffered, and an unfinished line goes out after ``FLUSH_DELAY``,
so output arrives without flushing. ``logging`` handlers that wrote to the old streams
write to the new ones, and the child's root logger gets the kernel's level and stream
handlers (``log_config``), so its records show in the cell, once, with its name. A
pool worker switches route per task through ``mpnb._routing`` (``enter``/``leave``):
a marker in the byte stream. Grandchildren started through mpnb get the same relay and
their parent's current route. Rich output (``display``, matplotlib figures) goes through
the same stream (``mpnb.output.display``, installed here, imports nothing until used).
"""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
import time
from typing import Any

from .. import _compat, _routing
from .. import process as _process
from . import display as _display
from . import kernel as _kernel
from .protocol import MAX_DISPLAY, display, hello, marker

__all__ = [
    "FLUSH_DELAY",
    "ChildSetup",
    "ChildStream",
    "ChildSide",
    "ChildRouter",
    "LOGGING",
    "FIGURE_FORMATS",
    "LogConfig",
    "current",
    "log_config",
    "start_child",
    "start_hook",
]

# Seconds an unfinished line waits in a child's stream before it is written anyway:
# long enough to gather the pieces ``print`` writes, short next to the relay's wait.
FLUSH_DELAY = 0.05

_fork_handler_registered = False


# Whether children get the kernel's logging set-up (``mpnb.output.configure(logging=)``).
LOGGING = True
# The formats children started from now on send matplotlib figures in
# (``mpnb.output.configure(figure_formats=)``); ``None``: the kernel's inline formats.
FIGURE_FORMATS: tuple[str, ...] | None = None

# The kernel's root logger as a child rebuilds it: its level, and per stream handler on
# sys.stdout/sys.stderr: stream name, handler level, format, date format, style.
LogHandler = tuple[str, int, str, "str | None", str]
LogConfig = tuple[int, list[LogHandler]]


class ChildSetup:
    """Run in a child before its target: connect its fds 1 and 2 to the kernel's relay
    (and set up its root logger as the kernel's, ``log_config``)."""

    __slots__ = ("address", "token", "route", "name", "logging", "figure_formats")

    def __init__(
        self,
        address: str,
        token: str,
        route: str | None,
        name: str,
        logging: LogConfig | None = None,
        figure_formats: tuple[str, ...] | None = None,
    ) -> None:
        self.address, self.token, self.route, self.name = address, token, route, name
        self.logging = logging
        self.figure_formats = figure_formats

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return ChildSetup, (
            self.address,
            self.token,
            self.route,
            self.name,
            self.logging,
            self.figure_formats,
        )

    def __call__(self) -> None:
        start_child(self)


class ChildStream(io.TextIOWrapper):
    """A line-buffered UTF-8 text stream on fd 1 or 2; an unfinished line goes out after
    ``FLUSH_DELAY`` seconds, so nothing waits for a flush the user did not write."""

    def __init__(self, fd: int) -> None:
        super().__init__(
            io.FileIO(fd, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )

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


class ChildSide:
    """A routed child: its connections to the relay and the route it writes under."""

    def __init__(self, setup: ChildSetup, out: socket.socket, err: socket.socket) -> None:
        self.address, self.token = setup.address, setup.token
        self.default = self.route = setup.route
        self.logging = setup.logging
        self.figure_formats = setup.figure_formats
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

    def display(self, msg_type: str, content: dict[str, Any]) -> bool:
        """Send a display message into the current route, after the text written so far
        (``False``: not sent, the relay is gone or the item too large)."""
        _flush_python_streams()
        data = display(self.token, msg_type, content)
        if len(data) > MAX_DISPLAY:
            return False
        with self._lock:
            try:
                self._socks[0].sendall(data)
            except OSError:
                return False
        return True


class ChildRouter:
    """``_routing``'s router in a child: a pool worker enters each task's route."""

    def __init__(self, side: ChildSide) -> None:
        self.side = side

    def capture(self) -> str | None:
        return self.side.route

    def enter(self, route: Any) -> None:
        self.side.switch(route)

    def leave(self) -> None:
        self.side.switch(self.side.default)

    def drain(self, process: Any = None) -> None:
        pass  # grandchildren write to the kernel's relay themselves


_child: ChildSide | None = None


def current() -> ChildSide | None:
    """This process's child side, if it is a routed child."""
    return _child


def start_child(setup: ChildSetup) -> None:
    """In the child, before its target: write to the relay (nothing, if it is gone)."""
    global _child
    _kernel.forget()
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
    sys.stdout, sys.stderr = ChildStream(1), ChildStream(2)
    _retarget_logging(old)
    if setup.logging is not None:
        _apply_log_config(setup.logging)
    _child = ChildSide(setup, socks[0], socks[1])
    _display.install(_child.display, setup.figure_formats)
    _routing.set_router(ChildRouter(_child))
    _process.add_start_hook(start_hook)
    _register_fork_handler()


def start_hook(process: Any) -> ChildSetup | None:
    """Before an mpnb process starts: how it should set up its output."""
    child = _child
    if child is not None:  # a grandchild: same relay, this process's current route
        return ChildSetup(
            child.address,
            child.token,
            child.route,
            process.name,
            child.logging,
            child.figure_formats,
        )
    side = _kernel.current()
    if side is None:
        return None
    address = side.address()
    if address is None:
        return None
    _kernel.flush_kernel_streams()
    config = log_config() if LOGGING else None
    formats = FIGURE_FORMATS
    if formats is None:
        found = _compat.figure_formats_of(getattr(side.kernel, "shell", None))
        formats = tuple(found) if found else None
    return ChildSetup(address, side.token, side.capture(), process.name, config, formats)


_STYLES = {"PercentStyle": "%", "StrFormatStyle": "{", "StringTemplateStyle": "$"}
_NAME_FIELD = {"%": "%(processName)s", "{": "{processName}", "$": "${processName}"}


def log_config() -> LogConfig | None:
    """The kernel's root logger as a child should rebuild it (``None``: logging's
    defaults, nothing to do). Only handlers writing to sys.stdout or sys.stderr are
    rebuilt, with the process name in front unless their format has it: in the child
    they write to its streams, which land in the cell that started the work."""
    logging = sys.modules.get("logging")
    if logging is None:
        return None
    root = logging.getLogger()
    handlers: list[LogHandler] = []
    for handler in root.handlers:
        if not isinstance(handler, logging.StreamHandler) or isinstance(
            handler, logging.FileHandler
        ):
            continue
        stream = handler.stream
        name = "stdout" if stream is sys.stdout else "stderr" if stream is sys.stderr else None
        if name is None:
            continue
        formatter = handler.formatter or logging.Formatter()
        style = _STYLES.get(type(formatter._style).__name__, "%")
        fmt = formatter._style._fmt or "%(message)s"
        if "processName" not in fmt:
            fmt = f"[{_NAME_FIELD[style]}] {fmt}"
        handlers.append((name, handler.level, fmt, formatter.datefmt, style))
    level = root.getEffectiveLevel()
    if not handlers and level == logging.WARNING:
        return None
    return (level, handlers)


def _apply_log_config(config: LogConfig) -> None:
    """Make this child's root logger the kernel's: its level, and its stream handlers
    in place of those it had on sys.stdout/sys.stderr (inherited through fork)."""
    import logging

    level, handlers = config
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        if (
            isinstance(handler, logging.StreamHandler)
            and not isinstance(handler, logging.FileHandler)
            and handler.stream in (sys.stdout, sys.stderr)
        ):
            root.removeHandler(handler)
    for name, handler_level, fmt, datefmt, style in handlers:
        new = logging.StreamHandler(getattr(sys, name))
        new.setLevel(handler_level)
        new.setFormatter(logging.Formatter(fmt, datefmt, style))  # type: ignore[arg-type]
        root.addHandler(new)


def _retarget_logging(old: tuple[Any, Any]) -> None:
    """Point logging handlers that wrote to the old stdout/stderr at the new ones."""
    logging = sys.modules.get("logging")
    if logging is None:
        return
    new = {id(old[0]): sys.stdout, id(old[1]): sys.stderr}
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and id(handler.stream) in new
            ):
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


def _register_fork_handler() -> None:
    global _fork_handler_registered
    if not _fork_handler_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_handler_registered = True


def _after_fork_in_child() -> None:
    """A forked grandchild has not its parent's flusher thread."""
    global _flusher
    _flusher = _Flusher()
