"""The bytes a routed child sends the kernel's relay: who it is, and which cell is next.

A child opens one stream connection per stream (they become its fds 1 and 2). Each
starts with one line that introduces it (``hello``: token, process name, pid, stream,
route) and then carries the raw bytes the child writes, whoever writes them: ``print``,
C code, a shell started with ``os.system``. A route change is a marker written
atomically into the byte stream (``marker``: ``\\0mpnb:<token>:<route>\\0``): what
comes after it belongs to the new route. A rich display item (``display``: a JSON
message, ``display_data`` and friends) travels in the same stream, so it keeps its
place among the process's text: a marker whose route is ``\\1<length>``, then that many
bytes of JSON.

Both sides import this module, and nothing else of each other: the child side
(``mpnb.output.child``) writes these bytes, the relay (``mpnb.output.relay``) reads them.
"""

from __future__ import annotations

import base64
import datetime
import json
import numbers
from typing import Any, NamedTuple

__all__ = [
    "HELLO_PREFIX",
    "MAX_HELLO",
    "Hello",
    "hello",
    "read_hello",
    "marker",
    "marker_start",
    "marker_prefix",
    "DISPLAY_MARK",
    "MAX_DISPLAY",
    "display",
    "read_display",
]

# The first bytes of an introduction line (the protocol's version is in it).
HELLO_PREFIX = b"mpnb-output 1 "
# The longest introduction line a child may send.
MAX_HELLO = 4096
# What starts the route field of a marker that announces a display item (no route does:
# routes are msg_ids).
DISPLAY_MARK = "\x01"
# The largest display item a child sends (bytes of JSON); a larger one is refused there.
MAX_DISPLAY = 64 * 1024 * 1024


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


def display(token: str, msg_type: str, content: dict[str, Any]) -> bytes:
    """The bytes that carry one IOPub message of ``msg_type`` (``display_data``,
    ``update_display_data``, ``clear_output``) with ``content``, in a child's stream."""
    item = {"msg_type": msg_type, "content": content}
    payload = json.dumps(item, default=_json_default).encode()
    return marker_start(token) + f"{DISPLAY_MARK}{len(payload)}".encode() + b"\0" + payload


def _json_default(obj: Any) -> Any:
    """What JSON cannot hold as it is: bytes as base64 (as Jupyter sends images), dates
    in ISO form, numbers (numpy's) as numbers, anything else as its text."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, (datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    return str(obj)


def read_display(payload: bytes) -> tuple[str, dict[str, Any]] | None:
    """``(msg_type, content)`` of a display item's JSON; ``None`` if it is none."""
    try:
        item = json.loads(payload)
        msg_type, content = item["msg_type"], item["content"]
    except (ValueError, KeyError, TypeError):
        return None
    if msg_type not in ("display_data", "update_display_data", "clear_output"):
        return None
    if not isinstance(content, dict):
        return None
    return str(msg_type), content
