"""Display items through the relay on its own: fake children in, messages out.

No kernel, no child process: each "child" is a socket that speaks the relay's protocol,
so a display item can be cut anywhere, mixed with text and route markers, or broken.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

from mpnb.output import protocol
from mpnb.output.protocol import display, hello, marker
from mpnb.output.relay import Relay

pytestmark = [pytest.mark.core, pytest.mark.timeout(60)]

TOKEN = "0123456789abcdef"


class Published:
    """Everything the relay published, in order: ('text', route, stream, text) and
    ('show', route, msg_type, content)."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.lock = threading.Lock()

    def send(self, route, stream, text):
        with self.lock:
            self.items.append(("text", route, stream, text))

    def show(self, route, msg_type, content):
        with self.lock:
            self.items.append(("show", route, msg_type, content))


@pytest.fixture
def relay():
    published = Published()
    r = Relay(published.send, TOKEN, show=published.show)
    r.published = published  # type: ignore[attr-defined]
    socks: list[socket.socket] = []
    r.socks = socks  # type: ignore[attr-defined]
    yield r
    for sock in socks:
        sock.close()
    r.close()
    r._thread.join(10)
    assert not r._thread.is_alive()


def child(relay, name="P-1", pid=101, route="cell-a"):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(relay.address)
    sock.sendall(hello(TOKEN, name, pid, "stdout", route))
    relay.socks.append(sock)
    return sock


def item(html: str, **transient) -> bytes:
    data = {"text/plain": "x", "text/html": html}
    return display(TOKEN, "display_data", {"data": data, "metadata": {}, "transient": transient})


def test_an_item_cut_anywhere_comes_whole_after_the_text_before_it(relay):
    s = child(relay)
    data = b"before\npart" + item("<b>one</b>") + b"after\n" + item("<i>two</i>")
    for i in range(0, len(data), 7):
        s.sendall(data[i : i + 7])
        relay.drain()
    relay.drain()
    items = relay.published.items
    kinds = [(kind, *rest[:2]) for kind, *rest in items]
    assert kinds == [
        ("text", "cell-a", "stdout"),
        ("text", "cell-a", "stdout"),
        ("show", "cell-a", "display_data"),
        ("text", "cell-a", "stdout"),
        ("show", "cell-a", "display_data"),
    ]
    assert [i[3] for i in items if i[0] == "text"] == ["before\n", "part", "after\n"]
    shown = [i[3] for i in items if i[0] == "show"]
    assert [c["data"]["text/html"] for c in shown] == ["<b>one</b>", "<i>two</i>"]
    assert all(c["metadata"]["mpnb"] == {"process": "P-1", "pid": 101} for c in shown)


def test_an_item_goes_to_the_route_in_force(relay):
    s = child(relay)
    s.sendall(item("a") + marker(TOKEN, "cell-b") + item("b") + marker(TOKEN, None) + item("c"))
    relay.drain()
    assert [(i[1], i[3]["data"]["text/html"]) for i in relay.published.items] == [
        ("cell-a", "a"),
        ("cell-b", "b"),
        (None, "c"),
    ]


def test_items_of_several_processes_are_labelled(relay):
    a, b = child(relay, "P-1", 101), child(relay, "P-2", 102)
    a.sendall(item("a1"))
    relay.drain()
    b.sendall(item("b1"))
    relay.drain()
    a.sendall(b"a line\n")
    relay.drain()
    b.sendall(item("b2"))
    relay.drain()
    texts = [i[3] for i in relay.published.items if i[0] == "text"]
    # The first item is alone in its cell: no label. Then each item names its process,
    # and text after another process's item is tagged again.
    assert texts == ["[display:P-2]\n", "[stdout:P-1] a line\n", "[display:P-2]\n"]


def test_updates_and_clears_pass_and_bytes_travel_as_base64(relay):
    s = child(relay)
    content = {"data": {"image/png": b"\x89PNG"}, "metadata": {}, "transient": {"display_id": "d"}}
    s.sendall(display(TOKEN, "update_display_data", content))
    s.sendall(display(TOKEN, "clear_output", {"wait": True}))
    relay.drain()
    (update, clear) = relay.published.items
    assert update[2] == "update_display_data"
    assert update[3]["data"]["image/png"] == "iVBORw=="
    assert update[3]["transient"] == {"display_id": "d"}
    assert clear[2:] == ("clear_output", {"wait": True})


def test_a_broken_item_closes_only_its_connection(relay):
    bad, good = child(relay, "bad", 1), child(relay, "good", 2)
    bad.sendall(protocol.marker_start(TOKEN) + b"\x01notanumber\0junk")
    good.sendall(item("fine"))
    relay.drain()
    assert [i[3]["data"]["text/html"] for i in relay.published.items] == ["fine"]
    bad.settimeout(10)
    assert bad.recv(1) == b""  # closed by the relay


def test_an_item_that_is_not_a_display_message_is_dropped(relay):
    s = child(relay)
    payload = json.dumps({"msg_type": "execute_result", "content": {}}).encode()
    s.sendall(protocol.marker_start(TOKEN) + f"\x01{len(payload)}".encode() + b"\0" + payload)
    s.sendall(b"still here\n")
    relay.drain()
    assert relay.published.items == [("text", "cell-a", "stdout", "still here\n")]
