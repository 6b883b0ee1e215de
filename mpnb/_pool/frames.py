"""Many ``multiprocessing.connection`` messages per system call, for the pool's thread.

The pool's manager thread shares the GIL with the notebook's code: every blocking call
it makes may wait for the GIL afterwards, so it makes as few as it can. ``FrameReader``
reads whatever a worker has sent in one ``read`` and splits it into messages;
``send_frames`` writes several messages with one ``writev``. Both speak the framing of
``Connection.send_bytes``/``recv_bytes`` (a 4-byte big-endian length, or -1 and an
8-byte length), so the worker side uses plain connections.

On Windows (named pipes, no file descriptors) both fall back to the connection's own
methods.
"""

from __future__ import annotations

import os
import struct
import sys
from typing import Any

__all__ = ["FrameReader", "send_frames", "FAST"]

# Whether connections are file descriptors we may read and write directly.
FAST = sys.platform != "win32"

# Bytes asked for by one read: a burst of small results, or the start of a big one.
READ_SIZE = 256 * 1024

_SMALL = struct.Struct("!i")
_BIG = struct.Struct("!Q")
# Largest length that fits the short header (as ``Connection._send_bytes`` decides).
_SMALL_MAX = 0x7FFFFFFF


class FrameReader:
    """Reads the messages a connection's peer sent; ``read()`` after it polled ready."""

    __slots__ = ("conn", "fd", "buf")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.fd = conn.fileno() if FAST else -1
        self.buf = b""

    def read(self) -> tuple[list[Any], bool]:
        """``(messages, eof)``: every complete message now readable, and whether the
        peer closed its end (a message it had not finished is dropped)."""
        if not FAST:
            try:
                return [self.conn.recv_bytes()], False
            except (EOFError, OSError):
                return [], True
        try:
            chunk = os.read(self.fd, READ_SIZE)
        except OSError:
            return [], True
        if not chunk:
            return [], True
        buf = self.buf + chunk if self.buf else chunk
        out: list[Any] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (size,) = _SMALL.unpack_from(buf, pos)
            head = 4
            if size == -1:
                if end - pos < 12:
                    break
                (size,) = _BIG.unpack_from(buf, pos + 4)
                head = 12
            stop = pos + head + size
            if stop <= end:
                out.append(buf[pos + head : stop])
                pos = stop
                continue
            if size <= READ_SIZE:
                break
            # A big message: read the rest of it now (its sender is writing it).
            message = bytearray(size)
            have = end - pos - head
            message[:have] = buf[pos + head :]
            view = memoryview(message)
            while have < size:
                try:
                    got = os.readv(self.fd, [view[have:]])
                except OSError:
                    got = 0
                if not got:
                    self.buf = b""
                    return out, True
                have += got
            out.append(message)
            pos = end
            break
        self.buf = buf[pos:] if pos < end else b""
        return out, False


def send_frames(conn: Any, payloads: list[Any]) -> None:
    """Send each of ``payloads`` (bytes-like) as one message, in one system call where
    the pipe takes it all; raises ``OSError`` if the peer is gone."""
    if not FAST:
        for payload in payloads:
            conn.send_bytes(payload)
        return
    parts: list[Any] = []
    for payload in payloads:
        size = len(payload)
        if size > _SMALL_MAX:
            parts.append(_SMALL.pack(-1) + _BIG.pack(size))
        else:
            parts.append(_SMALL.pack(size))
        parts.append(payload)
    fd = conn.fileno()
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        written = os.writev(fd, views[:1024])
        while written and views:
            first = views[0]
            if written >= len(first):
                written -= len(first)
                views.pop(0)
            else:
                views[0] = first[written:]
                written = 0
