"""The bytes a routed child sends the kernel's relay: who it is, and which cell is next.

A child opens one stream connection per stream (they become its fds 1 and 2). Each
starts with one line that introduces it (``hello``: token, process name, pid, stream,
route) and then carries the raw bytes the child writes, whoever writes them: ``print``,
C code, a shell started with ``os.system``. A route change is a marker written
atomically into the byte stream (``marker``: ``\\0mpnb:<token>:<route>\\0``): what
comes after it belongs to the new route.

Both sides import this module, and nothing else of each other: the child side
(``mpnb.output.child``) writes these bytes, the relay (``mpnb.output.relay``) reads them.
"""

from __future__ import annotations

import json
from typing import NamedTuple

__all__ = [
    "HELLO_PREFIX",
    "MAX_HELLO",
    "Hello",
    "hello",
    "read_hello",
    "marker",
    "marker_start",
    "marker_prefix",
]

# The first bytes of an introduction line (the protocol's version is in it).
HELLO_PREFIX = b"mpnb-output 1 "
# The longest introduction line a child may send.
MAX_HELLO = 4096


class Hello(NamedTuple):
    """What a connection's first line says."""

    token: str
    name: str
    pid: int
    stream: str  # 'stdout' or 'stderr'
    route: str | None


def hello(token: str, name: str, pid: int, stream: str, route: str | None) -> bytes:
    """The line a child sends first on each of its connections."""
    info = {"token": token, "name": name, "pid": pid, "stream": stream, "route": route}
    return HELLO_PREFIX + json.dumps(info).encode() + b"\n"


def read_hello(line: bytes) -> Hello | None:
    """The introduction in ``line`` (without its newline); ``None`` if it is not one."""
    if not line.startswith(HELLO_PREFIX):
        return None
    try:
        info = json.loads(line[len(HELLO_PREFIX) :])
        return Hello(
            str(info["token"]),
            str(info["name"]),
            int(info["pid"]),
            "stderr" if info["stream"] == "stderr" else "stdout",
            info["route"] if isinstance(info["route"], str) else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


def marker_start(token: str) -> bytes:
    """The bytes every marker of ``token`` starts with (the route and a NUL follow)."""
    return b"\0mpnb:" + token.encode() + b":"


def marker(token: str, route: str | None) -> bytes:
    """The bytes that switch a connection to ``route`` (``None``: no cell)."""
    return marker_start(token) + (route or "").encode() + b"\0"


def marker_prefix(buf: bytes, mark: bytes) -> int:
    """How many bytes at the end of ``buf`` may be the start of a marker (``mark`` is
    ``marker_start(token)``)."""
    start = buf.rfind(b"\0", max(0, len(buf) - len(mark) + 1))
    if start >= 0 and mark.startswith(buf[start:]):
        return len(buf) - start
    return 0
