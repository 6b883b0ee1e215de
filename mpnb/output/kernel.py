"""The kernel side of output routing: routes are cells, published on IOPub.

In an IPython kernel, ``start()`` installs a ``mpnb._routing`` router whose routes
are the msg_ids of the cells that started work; it remembers each such cell's parent
header, so text a child writes later (even after its cell finished) is sent as an IOPub
``stream`` message with that header and lands in that cell, never in another one (a
display item a child sends, as ``display_data`` or ``update_display_data``). The
text comes from a ``Relay`` (``mpnb.output.relay``), started when the first child
needs its address. What the kernel printed itself is flushed first, so a child's
output comes after it; while the kernel's own stream of that name holds an unfinished
line (``print`` writes its text and its newline apart), a child's line waits for the
kernel's newline, at most ``UNFINISHED_LINE_WAIT`` seconds, so it never lands inside
that line (``LineWatch``). Frames of notebook cells in a child's traceback are labelled
by ``mpnb._compat.running_cell_label``.

A forked child of the kernel is no kernel: it lets go of the relay's sockets without
touching its locks (``os.register_at_fork``).
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

from .. import _compat, _routing
from .relay import Relay

__all__ = [
    "MAX_ROUTES",
    "UNFINISHED_LINE_WAIT",
    "LineWatch",
    "KernelSide",
    "KernelRouter",
    "find_kernel",
    "flush_kernel_streams",
    "current",
    "start",
    "stop",
    "forget",
]

# Parent headers of the cells that started work, by msg_id (the route); the oldest
# is forgotten first (its late output then goes to the cell running at that time).
MAX_ROUTES = 4096
# Seconds a child's line waits at most for the kernel to finish a line it is printing.
UNFINISHED_LINE_WAIT = 0.5
# Seconds between two looks at whether the kernel finished its line.
_LINE_POLL = 0.002


def find_kernel() -> Any:
    """The running ipykernel's kernel object, if IPython and ipykernel are loaded and
    this is a kernel that can publish (``None`` otherwise; never imports either)."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return None
    shell = sys.modules["IPython"].get_ipython()
    kernel = getattr(shell, "kernel", None)
    if getattr(kernel, "session", None) is None or getattr(kernel, "iopub_socket", None) is None:
        return None
    return kernel


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


def flush_kernel_streams() -> None:
    """Send what the kernel printed so far, so a child's output comes after it."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "_flush_pending", True) is False:
            continue  # an ipykernel stream with nothing waiting
        try:
            stream.flush()
        except Exception:
            pass


class LineWatch:
    """Whether one of the kernel's own streams (an ipykernel ``OutStream``) holds an
    unfinished line: its ``write`` is wrapped to note when the last text written ended
    without a newline, and by which thread. IPython wraps ``write`` anew for each cell
    and puts the old one back after it, so ``install`` runs again before each cell.

    Lock-free (plain attribute writes), so a fork never inherits a held lock.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.since: float | None = None  # when the unfinished line began
        self.writer: int | None = None  # the thread writing it
        self._write: Any = None
        self.install()

    def install(self) -> None:
        """Wrap the stream's current ``write`` (unless it is this watch's already)."""
        current = self.stream.write
        if getattr(current, "__self__", None) is not self:
            self._write = current
            self.stream.write = self.write

    def write(self, text: str, *args: Any, **kwargs: Any) -> Any:
        written = self._write(text, *args, **kwargs)
        if text:
            if text.endswith("\n"):
                self.since = None
            elif self.since is None:
                self.writer = threading.get_ident()
                self.since = time.monotonic()
        return written

    def wait_for_line_end(self, limit: float) -> None:
        """Return once the kernel's line is finished, or ``limit`` seconds after it
        began; at once when this thread is the one writing it (it cannot finish it)."""
        since = self.since
        if since is None or self.writer == threading.get_ident():
            return
        deadline = since + limit
        while self.since is not None and time.monotonic() < deadline:
            time.sleep(_LINE_POLL)

    def close(self) -> None:
        """Put back the ``write`` this watch wrapped."""
        if self.stream.__dict__.get("write") == self.write:
            self.stream.write = self._write


def _watch(stream: Any) -> LineWatch | None:
    """A ``LineWatch`` on ``stream`` if it is an ipykernel stream (else ``None``)."""
    if not type(stream).__module__.startswith("ipykernel."):
        return None
    try:
        return LineWatch(stream)
    except (AttributeError, TypeError):
        return None


class KernelSide:
    """The kernel's routes, and the relay that publishes on its IOPub socket."""

    def __init__(self, kernel: Any, tags: bool = True) -> None:
        self.kernel = kernel
        self.token = secrets.token_hex(8)
        self.tags = tags
        self.relay: Relay | None = None
        self._headers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.watches: dict[str, LineWatch] = {}
        for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
            watch = _watch(stream)
            if watch is not None:
                self.watches[name] = watch
        events = getattr(getattr(kernel, "shell", None), "events", None)
        self._events = events if self.watches and hasattr(events, "register") else None
        if self._events is not None:
            self._events.register("pre_run_cell", self._watch_cell)

    def _watch_cell(self, *info: Any) -> None:
        """Before each cell: watch the ``write`` IPython installed for it; a line an
        earlier cell left unfinished is no line of this cell."""
        for watch in self.watches.values():
            watch.since = None
            watch.install()

    def address(self) -> str | None:
        """The relay's address, starting the relay on first use (``None``: cannot)."""
        with self._lock:
            if self.relay is None or not self.relay.alive:
                try:
                    self.relay = Relay(
                        self.send,
                        self.token,
                        _compat.running_cell_label,
                        tags=self.tags,
                        show=self.show,
                    )
                except (OSError, AttributeError):  # no AF_UNIX sockets here
                    return None
            return self.relay.address

    def set_tags(self, tags: bool) -> None:
        """Tag text with its process when several write into a cell (or stop)."""
        self.tags = tags
        relay = self.relay
        if relay is not None:
            relay.tags = tags

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
        watch = self.watches.get(stream)
        if watch is not None:  # never inside a line the kernel is printing
            watch.wait_for_line_end(UNFINISHED_LINE_WAIT)
        flush_kernel_streams()  # what the kernel printed before comes first
        self.kernel.session.send(
            self.kernel.iopub_socket,
            "stream",
            {"name": stream, "text": text},
            parent=header,
            ident=b"stream." + stream.encode(),
        )

    def show(self, route: str | None, msg_type: str, content: dict[str, Any]) -> None:
        """Publish a child's display message (``display_data``, ``update_display_data``,
        ``clear_output``) into the cell of ``route``, after what the kernel printed."""
        with self._lock:
            header = self._headers.get(route) if route else None
        if header is None:
            header = _current_header(self.kernel)
        flush_kernel_streams()
        self.kernel.session.send(
            self.kernel.iopub_socket,
            msg_type,
            content,
            parent=header,
            ident=b"display_data" if msg_type != "clear_output" else b"clear_output",
        )

    def close(self) -> None:
        if self._events is not None:
            try:
                self._events.unregister("pre_run_cell", self._watch_cell)
            except ValueError:
                pass
        for watch in self.watches.values():
            watch.close()
        if self.relay is not None:
            self.relay.close()


class KernelRouter:
    """``_routing``'s router in the kernel: routes are cells' msg_ids."""

    def __init__(self, side: KernelSide) -> None:
        self.side = side

    def capture(self) -> str | None:
        flush_kernel_streams()
        return self.side.capture()

    def enter(self, route: Any) -> None:
        pass

    def leave(self) -> None:
        pass

    def drain(self, process: Any = None) -> None:
        relay = self.side.relay
        if relay is not None:
            relay.drain(getattr(process, "pid", None))


_side: KernelSide | None = None
_fork_handler_registered = False


def current() -> KernelSide | None:
    """This process's kernel side, if it routes its children's output."""
    return _side


def start(tags: bool = True) -> KernelSide | None:
    """Route as the kernel: install the router (``None`` outside a kernel).

    The caller holds ``mpnb.output``'s lock and knows no side runs yet.
    """
    global _side
    kernel = find_kernel()
    if kernel is None:
        return None
    _side = KernelSide(kernel, tags)
    _routing.set_router(KernelRouter(_side))
    _register_fork_handler()
    return _side


def stop() -> None:
    """Stop routing as the kernel; children already routed keep publishing until they end."""
    global _side
    side, _side = _side, None
    if side is None:
        return
    _drop_router()
    side.close()


def forget() -> None:
    """In a child that starts routing as a child: whatever it inherited, it is no kernel."""
    global _side
    _side = None


def _drop_router() -> None:
    previous = _routing.set_router(None)
    if not isinstance(previous, KernelRouter):
        _routing.set_router(previous)


def _register_fork_handler() -> None:
    global _fork_handler_registered
    if not _fork_handler_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_handler_registered = True


def _after_fork_in_child() -> None:
    """A forked child is no kernel: drop the parent's relay without touching its locks."""
    global _side
    side, _side = _side, None
    if side is None:
        return
    _drop_router()
    if side.relay is not None:
        side.relay.abandon()
