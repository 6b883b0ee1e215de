"""A queue's items go straight from ``put`` to the pipe when the feeder thread is idle
(mpnb/_queue_pipe.py): order, framing, never blocking, and the standard library's
behaviour when the pipe breaks, whichever way an item goes."""

from __future__ import annotations

import multiprocessing
import select

import pytest

pytestmark = [pytest.mark.core, pytest.mark.timeout(90)]

WAIT = 30
SMALL = 200  # pickled far below PIPE_BUF: may go straight to the pipe
LARGE = 70_000  # above a pipe's 64 KiB: only the feeder can write it


def item(writer: int, seq: int) -> tuple[int, int, bytes]:
    """Item ``seq`` of ``writer``: its size cycles through small, boundary and large."""
    size = (SMALL, select.PIPE_BUF - 60, select.PIPE_BUF + 10, LARGE)[seq % 4]
    return writer, seq, bytes([seq % 251]) * size


def put_items(q, writer: int, count: int) -> None:
    for seq in range(count):
        q.put(item(writer, seq))


def echo(inbox, outbox) -> None:
    while (x := inbox.get()) is not None:
        outbox.put(x)


def consume(q, count: int) -> None:
    for _ in range(count):
        q.get()
        q.task_done()


def _closed(*queues) -> None:
    for q in queues:
        q.close()
        q.join_thread()


def test_a_small_item_into_an_idle_queue_goes_straight_to_the_pipe(ctx):
    q = ctx.Queue()
    try:
        for i in range(10):
            q.put({"i": i})
        assert q._pipe.handed == 0  # none went through the feeder thread
        assert q.empty() is False  # already in the pipe
        assert [q.get(timeout=WAIT)["i"] for _ in range(10)] == list(range(10))
        q.put(b"x" * LARGE)  # too large for one atomic write: the feeder's
        assert q._pipe.handed == 1
        assert len(q.get(timeout=WAIT)) == LARGE
    finally:
        _closed(q)


def test_items_keep_their_order_whichever_way_they_go(ctx):
    inbox, outbox = ctx.Queue(), ctx.Queue()
    count = 400
    try:
        # All put before the child reads: the pipe fills, put hands items to the feeder,
        # which waits for room; small items after large ones must not overtake them.
        put_items(inbox, 0, count)
        child = ctx.Process(target=echo, args=(inbox, outbox))
        child.start()
        got = [outbox.get(timeout=WAIT) for _ in range(count)]
        inbox.put(None)
        child.join(WAIT)
        assert child.exitcode == 0
        assert got == [item(0, seq) for seq in range(count)]
    finally:
        _closed(inbox, outbox)


def test_put_never_blocks_on_a_full_pipe_even_with_the_reader_in_the_same_thread(ctx):
    q = ctx.Queue()
    count = 20_000  # about 1.3 MB: twenty times what the pipe holds
    try:
        for i in range(count):
            q.put({"i": i, "pad": "x" * 40})
        assert [q.get(timeout=WAIT)["i"] for _ in range(count)] == list(range(count))
    finally:
        _closed(q)


def test_several_processes_writing_one_queue_never_interleave_their_items(ctx):
    q = ctx.Queue()
    writers, count = 3, 300
    procs = [ctx.Process(target=put_items, args=(q, w, count)) for w in range(writers)]
    try:
        for p in procs:
            p.start()
        put_items(q, writers, count)  # this process writes too
        got = [q.get(timeout=WAIT) for _ in range((writers + 1) * count)]
        for p in procs:
            p.join(WAIT)
            assert p.exitcode == 0
        for w in range(writers + 1):
            mine = [x for x in got if x[0] == w]
            assert mine == [item(w, seq) for seq in range(count)]
    finally:
        _closed(q)


def test_a_joinable_queue_counts_every_item_whichever_way_it_goes(ctx):
    q = ctx.JoinableQueue()
    count = 2000
    child = ctx.Process(target=consume, args=(q, count))
    child.start()
    try:
        for i in range(count):
            q.put(i)
        q.join()  # every item counted and done
        child.join(WAIT)
        # One task_done more than the puts counted raises ValueError in the child.
        assert child.exitcode == 0
    finally:
        _closed(q)


@pytest.mark.parametrize("flavour", ["mpnb", "stdlib"])
def test_a_broken_pipe_is_reported_by_the_feeder_as_in_the_standard_library(
    start_method, flavour, capfd
):
    import mpnb

    module = mpnb if flavour == "mpnb" else multiprocessing
    q = module.get_context(start_method).Queue()
    try:
        q._reader.close()  # the only reader: writes now fail with EPIPE
        q.put({"small": 1})  # put itself does not fail
        q.close()
        q.join_thread()  # the feeder reported the error and went on to the sentinel
        assert "BrokenPipeError" in capfd.readouterr().err
    finally:
        _closed(q)


def test_a_forked_child_writes_an_inherited_queue_straight_to_the_pipe():
    import mpnb

    ctx = mpnb.get_context("fork")
    q = ctx.Queue()
    try:
        q.put("before")  # the parent's pipe set up before the fork
        child = ctx.Process(target=put_items, args=(q, 1, 8))
        child.start()
        got = [q.get(timeout=WAIT) for _ in range(9)]
        child.join(WAIT)
        assert child.exitcode == 0
        assert got[0] == "before"
        assert got[1:] == [item(1, seq) for seq in range(8)]
    finally:
        _closed(q)
