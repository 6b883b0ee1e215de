"""The kernel side of output routing: routes are cells, published on IOPub.

In an IPython kernel, ``start()`` installs a ``mpnb._routing`` router whose routes
are the msg_ids of the cells that started work; it remembers each such cell's parent
header, so text a child writes later (even after its cell finished) is sent as an IOPub
``stream`` message with that header and lands in that cell, never in another one. The
text comes from a ``Relay`` (``mpnb.output.relay``), started when the first child
needs its address. What the kernel printed itself is flushed first, so a child's
output comes after it. Frames of notebook cells in a child's traceback are labelled
by ``mpnb._compat.running_cell_label``.

A forked child of the kernel is no kernel: it lets go of the relay's sockets without
touching its locks (``os.register_at_fork``).
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from collections import OrderedDict
from typing import Any

from .. import _compat, _routing
from .relay import Relay

__all__ = [
    "MAX_ROUTES",
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


class KernelSide:
    """The kernel's routes, and the relay that publishes on its IOPub socket."""

    def __init__(self, kernel: Any, tags: bool = True) -> None:
        self.kernel = kernel
        self.token = secrets.token_hex(8)
        self.tags = tags
        self.relay: Relay | None = None
        self._headers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def address(self) -> str | None:
        """The relay's address, starting the relay on first use (``None``: cannot)."""
        with self._lock:
            if self.relay is None or not self.relay.alive:
                try:
                    self.relay = Relay(
                        self.send, self.token, _compat.running_cell_label, tags=self.tags
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
        flush_kernel_streams()  # what the kernel printed before comes first
        self.kernel.session.send(
            self.kernel.iopub_socket,
            "stream",
            {"name": stream, "text": text},
            parent=header,
            ident=b"stream." + stream.encode(),
        )

    def close(self) -> None:
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
