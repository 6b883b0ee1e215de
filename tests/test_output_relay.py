"""The relay on its own: bytes written by fake children in, messages out.

Fast and deterministic: no kernel, no child process; each "child" is a socket that
speaks the relay's protocol, so the tests can cut lines, markers and UTF-8 characters
wherever they like.
"""

from __future__ import annotations

import linecache
import os
import socket
import threading
import time

import pytest

from mpnb.output import relay as _relay
from mpnb.output.protocol import hello, marker
from mpnb.output.relay import Relay

pytestmark = pytest.mark.timeout(60)

TOKEN = "0123456789abcdef"


class Sent:
    """What the relay published: (route, stream, text) in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str | None, str, str]] = []
        self.cond = threading.Condition()

    def __call__(self, route: str | None, stream: str, text: str) -> None:
        with self.cond:
            self.items.append((route, stream, text))
            self.cond.notify_all()

    def text(self, route: str | None = None, stream: str | None = None) -> str:
        with self.cond:
            return "".join(
                t
                for r, s, t in self.items
                if (route is None or r == route) and (stream is None or s == stream)
            )

    def wait_for(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while needle not in "".join(t for _, _, t in self.items):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{needle!r} not published; got {self.items!r}")
                self.cond.wait(remaining)


@pytest.fixture
def relay():
    sent = Sent()
    labels = {"/tmp/cell-7.py": "Cell In[7]"}
    r = Relay(sent, TOKEN, labels.get)
    r.sent = sent  # type: ignore[attr-defined]
    r.children = []  # type: ignore[attr-defined]
    yield r
    for sock in r.children:  # type: ignore[attr-defined]
        sock.close()
    r.close()
    r._thread.join(10)
    assert not r._thread.is_alive()
    assert not os.path.exists(r.address)


def child(
    relay: Relay,
    name: str = "P-1",
    pid: int = 101,
    stream: str = "stdout",
    route: str | None = "cell-a",
    token: str = TOKEN,
) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(relay.address)
    sock.sendall(hello(token, name, pid, stream, route))
    relay.children.append(sock)  # type: ignore[attr-defined]
    return sock


def test_whole_lines_from_pieces(relay):
    s = child(relay)
    s.sendall(b"hel")
    s.sendall(b"lo\nwor")
    relay.drain()
    assert relay.sent.text() == "hello\n"
    s.sendall(b"ld\n")
    relay.drain()
    assert relay.sent.items == [("cell-a", "stdout", "hello\n"), ("cell-a", "stdout", "world\n")]
    s.close()


def test_partial_line_is_published_after_a_short_delay(relay):
    s = child(relay)
    s.sendall(b"working...")
    relay.sent.wait_for("working...")
    s.sendall(b" done\n")
    relay.sent.wait_for(" done\n")
    assert relay.sent.text() == "working... done\n"
    s.close()


def test_end_of_connection_publishes_the_rest(relay):
    s = child(relay)
    s.sendall(b"no newline at the end")
    s.close()
    relay.drain()
    assert relay.sent.text() == "no newline at the end"


def test_utf8_cut_anywhere(relay):
    s = child(relay)
    data = "été ✓ 🐍\n".encode()
    for i in range(len(data)):
        s.sendall(data[i : i + 1])
    relay.drain()
    assert relay.sent.text() == "été ✓ 🐍\n"
    s.close()


def test_streams_and_routes(relay):
    out, err = child(relay, stream="stdout"), child(relay, stream="stderr")
    out.sendall(b"a\n" + marker(TOKEN, "cell-b") + b"b\n")
    err.sendall(b"e\n")
    relay.drain()
    assert relay.sent.text("cell-a", "stdout") == "a\n"
    assert relay.sent.text("cell-b", "stdout") == "b\n"
    assert relay.sent.text("cell-a", "stderr") == "e\n"
    out.close()
    err.close()


def test_marker_cut_in_pieces_and_partial_line_before_it(relay):
    s = child(relay)
    data = b"half" + marker(TOKEN, "cell-b") + b"next\n" + marker(TOKEN, None) + b"none\n"
    for i in range(0, len(data), 3):
        s.sendall(data[i : i + 3])
    relay.drain()
    assert ("cell-a", "stdout", "half") in relay.sent.items
    assert relay.sent.text("cell-b") == "next\n"
    assert [t for r, _, t in relay.sent.items if r is None] == ["none\n"]
    s.close()


def test_nul_bytes_that_are_no_marker_pass(relay):
    s = child(relay)
    s.sendall(b"a\0b\0\n")
    relay.drain()
    assert relay.sent.text() == "a\0b\0\n"
    s.close()


def test_wrong_token_is_refused(relay):
    s = child(relay, token="f" * 16)
    try:
        s.sendall(b"injected\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the relay may have closed the connection already: refused either way
    relay.drain()
    assert relay.sent.items == []
    s.close()


def test_tags_when_a_second_process_writes_into_a_cell(relay):
    a, b = child(relay, "P-1", 1), child(relay, "P-2", 2)
    a.sendall(b"a1\n")
    relay.drain()
    b.sendall(b"b1\nb2\n")
    relay.drain()
    a.sendall(b"a2\n")
    relay.drain()
    assert relay.sent.text() == "a1\n[stdout:P-2] b1\nb2\n[stdout:P-1] a2\n"
    a.close()
    b.close()


def test_tags_off(relay):
    relay.tags = False
    a, b = child(relay, "P-1", 1), child(relay, "P-2", 2)
    a.sendall(b"a1\n")
    relay.drain()
    b.sendall(b"b1\n")
    relay.drain()
    assert relay.sent.text() == "a1\nb1\n"
    a.close()
    b.close()


def test_another_source_never_continues_an_unfinished_line(relay):
    a, b = child(relay, "P-1", 1), child(relay, "P-2", 2)
    a.sendall(b"progress")
    relay.sent.wait_for("progress")
    b.sendall(b"other\n")
    relay.drain()
    assert relay.sent.text() == "progress\n[stdout:P-2] other\n"
    a.close()
    b.close()


def test_different_cells_are_tagged_separately(relay):
    a = child(relay, "P-1", 1, route="cell-a")
    b = child(relay, "P-2", 2, route="cell-b")
    a.sendall(b"a\n")
    b.sendall(b"b\n")
    relay.drain()
    assert relay.sent.text("cell-a") == "a\n"
    assert relay.sent.text("cell-b") == "b\n"
    a.close()
    b.close()


def test_drain_by_pid_reads_that_process_only(relay):
    a, b = child(relay, "P-1", 1), child(relay, "P-2", 2, route="cell-b")
    relay.drain()  # both introduced
    with relay._lock:  # keep the relay's thread out while both write
        a.sendall(b"from a\n")
        b.sendall(b"from b\n")
        relay.drain(pid=1)
        assert relay.sent.text() == "from a\n"
    a.close()
    b.close()


def test_traceback_frames_in_cells(relay, monkeypatch):
    monkeypatch.setitem(
        linecache.cache,
        "/tmp/cell-7.py",
        (40, None, ["def boom():\n", "    raise ValueError('x')\n"], "/tmp/cell-7.py"),
    )
    s = child(relay, stream="stderr")
    s.sendall(
        b"Traceback (most recent call last):\n"
        b'  File "/usr/lib/python3/x.py", line 3, in run\n'
        b"    f()\n"
        b'  File "/tmp/cell-7.py", line 2, in boom\n'
    )
    relay.drain()
    # The cell's frame waits for its next line: is it the source line or not?
    assert "cell-7" not in relay.sent.text()
    s.sendall(b"ValueError: x\n")
    relay.drain()
    assert relay.sent.text() == (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/x.py", line 3, in run\n'
        "    f()\n"
        "  Cell In[7], line 2, in boom\n"
        "    raise ValueError('x')\n"
        "ValueError: x\n"
    )
    s.close()


def test_traceback_source_line_is_not_repeated(relay, monkeypatch):
    monkeypatch.setitem(
        linecache.cache,
        "/tmp/cell-7.py",
        (40, None, ["def boom():\n", "    raise ValueError('x')\n"], "/tmp/cell-7.py"),
    )
    s = child(relay, stream="stderr")
    s.sendall(b"  File \"/tmp/cell-7.py\", line 2, in boom\n    raise ValueError('x')\n")
    relay.drain()
    assert relay.sent.text() == "  Cell In[7], line 2, in boom\n    raise ValueError('x')\n"
    s.close()


def test_held_frame_line_is_published_after_the_delay(relay, monkeypatch):
    monkeypatch.setitem(
        linecache.cache, "/tmp/cell-7.py", (10, None, ["x = 1 / 0\n"], "/tmp/cell-7.py")
    )
    s = child(relay, stream="stderr")
    s.sendall(b'  File "/tmp/cell-7.py", line 1, in <module>\n')
    relay.sent.wait_for("x = 1 / 0")
    assert relay.sent.text() == "  Cell In[7], line 1, in <module>\n    x = 1 / 0\n"
    s.close()


def test_long_line_without_end_is_published(relay):
    s = child(relay)
    s.sendall(b"y" * (_relay.MAX_PARTIAL + 10))
    relay.drain()
    assert len(relay.sent.text()) >= _relay.MAX_PARTIAL
    s.close()
