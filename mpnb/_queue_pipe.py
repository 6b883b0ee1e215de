"""The write end of a queue's pipe: items go in from ``put`` itself when they can.

The standard library's ``Queue.put`` appends the item to a buffer and a feeder thread
writes it to the pipe. In a busy process the feeder must win the GIL back from the
thread that puts, so items reach the reader in bursts, late, and both threads pay for
the hand-over. mpnb writes an item straight to the pipe, in ``put``, when all of these
hold (checked by the queue under its buffer lock):

- the feeder has nothing in hand: every item handed to it has been written (``idle``),
  so order is kept;
- the item with its header fits in ``select.PIPE_BUF`` bytes, so one non-blocking write
  puts all of it in the pipe or none of it (POSIX);
- no other process is writing to the pipe (its write lock is free);
- the pipe has room.

Otherwise the item goes to the feeder as before, and ``put`` never blocks on the pipe.
For that the write end is non-blocking (a flag of the pipe, so every process holding
it sees it); the feeder writes through ``send``, which waits in ``poll`` when the pipe
is full. Every process that has the queue uses these, since mpnb's ``Queue`` sets them
up in ``_reset`` (made, unpickled, or forked).
"""

from __future__ import annotations

import os
import select
import struct
from typing import Any, Protocol

__all__ = ["QueuePipe"]

_pack_size = struct.Struct("!i").pack
_pack_long_size = struct.Struct("!Q").pack
_SEPARATE_HEADER = 16384  # above this the header is written on its own, as in Connection


class _Lock(Protocol):
    def acquire(self, block: bool = ...) -> bool: ...
    def release(self) -> None: ...


class QueuePipe:
    """The non-blocking write end of one queue's pipe, in one process."""

    __slots__ = ("fd", "wlock", "handed", "sent", "_poll")

    # The largest item (pickled) that ``try_send`` writes: with its 4-byte header, one
    # atomic write.
    LIMIT = select.PIPE_BUF - 4

    def __init__(self, fd: int, wlock: _Lock) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.wlock = wlock
        self.handed = 0  # items given to the feeder (counted by the queue's put)
        self.sent = 0  # of those, items the feeder has written
        self._poll: Any = None

    @property
    def idle(self) -> bool:
        """Whether the feeder has written everything it was given."""
        return self.sent == self.handed

    def try_send(self, data: bytes | memoryview) -> bool:
        """Write one item now if that cannot block; ``False`` (nothing written) if not."""
        if len(data) > self.LIMIT or not self.wlock.acquire(False):
            return False
        try:
            os.write(self.fd, _pack_size(len(data)) + data)
        except OSError:  # full (EAGAIN), or broken: the feeder deals with it as it would
            return False
        finally:
            self.wlock.release()
        return True

    def send(self, buf: bytes | memoryview) -> None:
        """The feeder's ``send_bytes``: the framing of ``Connection.send_bytes``, waiting
        for room in the pipe."""
        n = len(buf)
        if n <= _SEPARATE_HEADER:
            self._write_all(_pack_size(n) + buf)
        else:
            self._write_all(
                _pack_size(n) if n <= 0x7FFFFFFF else _pack_size(-1) + _pack_long_size(n)
            )
            self._write_all(buf)
        self.sent += 1

    def _write_all(self, data: bytes | memoryview) -> None:
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            written = 0
        if written == len(data):  # the usual case: all of it at once
            return
        view = memoryview(data)[written:]
        while view:
            self._wait_for_room()
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                pass

    def _wait_for_room(self) -> None:
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.fd, select.POLLOUT)
        self._poll.poll()  # a broken pipe shows as POLLERR; the next write raises EPIPE
