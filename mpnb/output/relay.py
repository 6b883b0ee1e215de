"""The kernel side's relay: one thread that rebuilds children's output into lines.

Each routed child connects two stream sockets (they become its fds 1 and 2) to the
relay's listening socket, in a directory only its user can enter, and speaks
``mpnb.output.protocol``: an introduction line, then raw bytes with route markers.

The relay reassembles whole lines per connection, so lines of different processes
never mix; publishes complete lines at once and a partial line after ``FLUSH_DELAY``.
When more than one process writes into a cell, the text is tagged with its source at
each change of source (``[stdout:Process-2] ...``, as ipyparallel does). A traceback
frame in a notebook cell reads ``Cell In[n], line k`` with the cell's source line
(``mpnb.output.tracebacks``). ``drain()`` publishes what was written so far, so a
result can follow its output.

A display item a child sends (``protocol.display``: ``display_data``,
``update_display_data``, ``clear_output``) comes after the text the process wrote before
it: that text is published first. Its metadata names the process (``mpnb``: ``process``,
``pid``), and when more than one process writes into a cell a ``display_data`` item is
preceded by a text label on stdout (``[display:<process name>]``), as text is tagged.

The relay knows nothing of kernels: it calls ``send(route, stream, text)`` and
``show(route, msg_type, content)`` (``mpnb.output.kernel`` publishes those on IOPub).
"""

from __future__ import annotations

import codecs
import hmac
import os
import selectors
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .. import _owner
from .protocol import (
    DISPLAY_MARK,
    MAX_DISPLAY,
    MAX_HELLO,
    marker_prefix,
    marker_start,
    read_display,
    read_hello,
)
from .tracebacks import Label, relabel

__all__ = [
    "Relay",
    "Send",
    "Show",
    "FLUSH_DELAY",
    "READ_SIZE",
    "MAX_PARTIAL",
    "MAX_DRAIN_READS",
    "MAX_CELLS",
]

# Seconds a partial line waits for the rest of its line before it is published as is.
FLUSH_DELAY = 0.1
# Bytes read from a connection at once.
READ_SIZE = 65536
# A partial line longer than this is published without waiting for its end.
MAX_PARTIAL = 65536
# Reads per connection in one ``drain()``: bounds it when a child keeps writing.
MAX_DRAIN_READS = 256
# Cells whose tagging state is kept (the oldest is forgotten first).
MAX_CELLS = 1024

#: ``send(route, stream, text)``: publish ``text`` on ``stream`` into the cell of ``route``.
Send = Callable[[str | None, str, str], None]
#: ``show(route, msg_type, content)``: publish a display message into the cell of ``route``.
Show = Callable[[str | None, str, dict[str, Any]], None]


class _Connection:
    """One stream of one child: its socket and the text waiting for its line's end."""

    __slots__ = (
        "sock",
        "ready",
        "closed",
        "name",
        "pid",
        "stream",
        "route",
        "raw",
        "decoder",
        "partial",
        "held",
        "deadline",
        "expect",
        "payload",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ready = False  # introduced itself
        self.closed = False
        self.name = ""
        self.pid = 0
        self.stream = "stdout"
        self.route: str | None = None
        self.raw = b""  # bytes not yet decoded: an unfinished marker
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.partial = ""  # the start of a line
        self.held = ""  # a traceback frame line, until its next line comes
        self.deadline: float | None = None
        self.expect: int | None = None  # bytes of a display item still to come
        self.payload = bytearray()  # what came of it

    @property
    def pending(self) -> bool:
        return bool(self.partial or self.held or (self.raw and self.ready))


class _Cell:
    """What was published into one cell: who wrote, who wrote last, unfinished lines."""

    __slots__ = ("sources", "last", "open")

    def __init__(self) -> None:
        self.sources: set[tuple[str, int]] = set()
        self.last: dict[str, tuple[str, int]] = {}
        self.open: dict[str, bool] = {}


class Relay:
    """A listening socket and the thread that republishes what children write to it."""

    def __init__(
        self,
        send: Send,
        token: str,
        label: Label | None = None,
        tags: bool = True,
        show: Show | None = None,
    ) -> None:
        self.tags = tags
        self._send = send
        self._show = show
        self._token = token
        self._mark = marker_start(token)
        self._label = label or (lambda filename: None)
        self._lock = threading.RLock()
        self._connections: set[_Connection] = set()
        self._cells: OrderedDict[str | None, _Cell] = OrderedDict()
        self._closing = False
        self._dir = tempfile.mkdtemp(prefix=_owner.dir_prefix())
        self.address = os.path.join(self._dir, "out")
        self._cleanup = weakref.finalize(self, _remove_dir, self._dir, os.getpid())
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.address)
        self._listener.listen(socket.SOMAXCONN)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="mpnb-output", daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------------------------

    def drain(self, pid: int | None = None) -> None:
        """Publish everything written so far (by ``pid`` only, when given).

        One poll of the sockets first: a drain with nothing to read (the common case,
        once per result) costs one system call.
        """
        with self._lock:
            try:
                events = self._selector.select(0)
            except (OSError, ValueError, RuntimeError):  # closed under us
                return
            ready = [key.data for key, _ in events if isinstance(key.data, _Connection)]
            if any(key.data == "accept" for key, _ in events):
                ready.extend(self._accept())  # they may have written already
            for conn in ready:
                if not conn.closed and (pid is None or conn.pid == pid or not conn.ready):
                    self._read(conn, MAX_DRAIN_READS)

    def close(self) -> None:
        """Accept no more children; the thread ends once those connected are done."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._close_listener()
        self._wake()

    def abandon(self) -> None:
        """In a forked child: let go of the parent's sockets, touching none of its locks."""
        for sock in [
            self._listener,
            self._wake_r,
            self._wake_w,
            *(c.sock for c in list(self._connections)),
        ]:
            try:
                sock.close()
            except OSError:
                pass
        try:
            self._selector.close()
        except (OSError, RuntimeError):
            pass
        self._cleanup.detach()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closing and not self._connections:
                    break
                timeout = self._timeout()
            try:
                events = self._selector.select(timeout)
            except (OSError, ValueError):  # the selector was closed under us
                break
            with self._lock:
                for key, _ in events:
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._clear_wake()
                    elif not key.data.closed:
                        self._read(key.data, 1)
                self._expire()
        with self._lock:
            self._close_listener()
            for sock in (self._wake_r, self._wake_w):
                sock.close()
            self._selector.close()
        self._cleanup()

    def _timeout(self) -> float | None:
        deadlines = [c.deadline for c in self._connections if c.deadline is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _clear_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _close_listener(self) -> None:
        if self._listener.fileno() >= 0:
            try:
                self._selector.unregister(self._listener)
            except (KeyError, ValueError, RuntimeError):
                pass
            self._listener.close()
            try:
                os.unlink(self.address)
            except OSError:
                pass

    def _accept(self) -> list[_Connection]:
        """Accept the children waiting to connect; returns their connections."""
        accepted: list[_Connection] = []
        if self._listener.fileno() < 0:
            return accepted
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # BlockingIOError: none waiting
                return accepted
            sock.setblocking(False)
            conn = _Connection(sock)
            self._connections.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)
            accepted.append(conn)

    def _read(self, conn: _Connection, reads: int) -> None:
        for _ in range(reads):
            try:
                data = conn.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close(conn)
                return
            self._feed(conn, data)

    def _close(self, conn: _Connection) -> None:
        conn.expect, conn.payload = None, bytearray()  # an item cut off: dropped
        if conn.ready:
            if conn.raw:
                conn.partial += conn.decoder.decode(conn.raw)
                conn.raw = b""
            conn.partial += conn.decoder.decode(b"", final=True)
            self._flush(conn)
        conn.closed = True
        self._connections.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError, RuntimeError):
            pass
        conn.sock.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in list(self._connections):
            if conn.deadline is not None and conn.deadline <= now:
                self._flush(conn)

    # -- bytes to lines -------------------------------------------------------------------

    def _feed(self, conn: _Connection, data: bytes) -> None:
        buf = conn.raw + data if conn.raw else data
        conn.raw = b""
        if not conn.ready:
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_HELLO:
                    self._close(conn)
                else:
                    conn.raw = buf
                return
            if not self._introduce(conn, buf[:end]):
                self._close(conn)
                return
            buf = buf[end + 1 :]
        mark = self._mark
        while buf:
            if conn.expect is not None:  # the rest of a display item
                take = buf[: conn.expect]
                conn.payload += take
                conn.expect -= len(take)
                buf = buf[len(take) :]
                if conn.expect == 0:
                    self._display(conn)
                continue
            start = buf.find(mark)
            if start < 0:
                keep = marker_prefix(buf, mark)
                self._text(conn, buf[: len(buf) - keep] if keep else buf)
                conn.raw = buf[len(buf) - keep :] if keep else b""
                break
            if start:
                self._text(conn, buf[:start])
            end = buf.find(b"\0", start + len(mark))
            if end < 0:
                conn.raw = buf[start:]
                break
            route = buf[start + len(mark) : end].decode("ascii", "replace") or None
            self._flush(conn)
            buf = buf[end + 1 :]
            if route is not None and route.startswith(DISPLAY_MARK):
                if not self._expect(conn, route[len(DISPLAY_MARK) :]):
                    self._close(conn)
                    return
                continue
            conn.route = route
        self._schedule(conn)

    def _expect(self, conn: _Connection, length: str) -> bool:
        """A display item of ``length`` bytes comes next (``False``: a broken stream)."""
        if not length.isdigit() or int(length) > MAX_DISPLAY:
            return False
        conn.expect, conn.payload = int(length), bytearray()
        if conn.expect == 0:
            self._display(conn)
        return True

    def _display(self, conn: _Connection) -> None:
        payload, conn.payload, conn.expect = bytes(conn.payload), bytearray(), None
        item = read_display(payload)
        if item is not None and self._show is not None:
            self._publish_display(conn, *item)

    def _introduce(self, conn: _Connection, line: bytes) -> bool:
        info = read_hello(line)
        if info is None:
            return False
        conn.name, conn.pid, conn.stream, conn.route = info.name, info.pid, info.stream, info.route
        conn.ready = hmac.compare_digest(info.token.encode(), self._token.encode())
        return conn.ready

    def _text(self, conn: _Connection, data: bytes) -> None:
        text = conn.decoder.decode(data)
        if not text:
            return
        conn.partial += text
        cut = conn.partial.rfind("\n") + 1
        if cut:
            lines, conn.partial = conn.partial[:cut], conn.partial[cut:]
            self._lines(conn, lines)
        if len(conn.partial) > MAX_PARTIAL:
            self._flush(conn)

    def _schedule(self, conn: _Connection) -> None:
        if not conn.pending:
            conn.deadline = None
        elif conn.deadline is None:
            conn.deadline = time.monotonic() + FLUSH_DELAY
            if threading.current_thread() is not self._thread:
                self._wake()  # the thread computes its next timeout again

    def _lines(self, conn: _Connection, text: str) -> None:
        """Publish whole lines (a trailing traceback frame waits for its source line)."""
        if conn.held:
            text, conn.held = conn.held + text, ""
        if 'File "' in text:
            text, conn.held = relabel(text, self._label)
        if text:
            self._publish(conn, text)

    def _flush(self, conn: _Connection) -> None:
        """Publish what waits: a held frame line, an unfinished marker, a partial line."""
        if conn.raw and conn.ready:
            raw, conn.raw = conn.raw, b""
            conn.partial += conn.decoder.decode(raw)
        text = ""
        if conn.held:
            text, _ = relabel(conn.held, self._label, final=True)
            conn.held = ""
        text += conn.partial
        conn.partial = ""
        conn.deadline = None
        if text:
            self._publish(conn, text)

    # -- publishing -----------------------------------------------------------------------

    def _cell(self, route: str | None) -> _Cell:
        cell = self._cells.get(route)
        if cell is None:
            cell = self._cells[route] = _Cell()
            while len(self._cells) > MAX_CELLS:
                self._cells.popitem(last=False)
        else:
            self._cells.move_to_end(route)
        return cell

    def _publish(self, conn: _Connection, text: str) -> None:
        route, stream, source = conn.route, conn.stream, (conn.name, conn.pid)
        cell = self._cell(route)
        cell.sources.add(source)
        last = cell.last.get(stream)
        head = ""
        if last is not None and last != source:
            if cell.open.get(stream):
                head = "\n"  # end the other process's unfinished line first
        if self.tags and len(cell.sources) > 1 and last != source:
            head += f"[{stream}:{conn.name}] "
        cell.last[stream] = source
        cell.open[stream] = not text.endswith("\n")
        try:
            self._send(route, stream, head + text)
        except Exception:  # never let one message stop the relay
            pass

    def _publish_display(self, conn: _Connection, msg_type: str, content: dict[str, Any]) -> None:
        """Publish a display item; label it when several processes write into its cell."""
        assert self._show is not None
        route, source = conn.route, (conn.name, conn.pid)
        cell = self._cell(route)
        cell.sources.add(source)
        if msg_type != "clear_output":
            content = _tagged(content, conn.name, conn.pid)
        if self.tags and len(cell.sources) > 1 and msg_type == "display_data":
            head = "\n" if cell.open.get("stdout") else ""
            cell.last["stdout"] = source
            cell.open["stdout"] = False
            try:
                self._send(route, "stdout", f"{head}[display:{conn.name}]\n")
            except Exception:
                pass
        try:
            self._show(route, msg_type, content)
        except Exception:  # never let one message stop the relay
            pass


def _tagged(content: dict[str, Any], name: str, pid: int) -> dict[str, Any]:
    """``content`` whose metadata names the process that made it (``mpnb``)."""
    metadata = content.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    metadata["mpnb"] = {"process": name, "pid": pid}
    return {**content, "metadata": metadata}


def _remove_dir(path: str, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)
