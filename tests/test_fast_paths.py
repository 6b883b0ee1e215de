"""The fast paths: plain data through the C pickler alone, a busy pool worker's tasks
sent together, a cached function's module checked without a ``stat`` per task, a
process's world pickled once. Each must change nothing but speed."""

from __future__ import annotations

import collections
import importlib
import io
import os
import pickle
import sys
import time

import pytest

import mpnb
from mpnb._pickle import pickler as _pickler
from mpnb._pool import tasks as _tasks

pytestmark = [pytest.mark.core, pytest.mark.timeout(60)]

WAIT = 30


def _full(obj):
    """``obj`` through mpnb's full pickler (cloudpickle's ``dump``)."""
    buf = io.BytesIO()
    _pickler.Pickler(buf).dump(obj)
    return buf.getvalue()


class Point:
    def __init__(self, x):
        self.x = x


class Tagged(dict):
    pass


PLAIN = [
    None,
    True,
    7,
    2**80,
    0.5,
    "text",
    b"bytes",
    bytearray(b"ba"),
    {"i": 1, "name": "item-1", "value": 0.5},
    [1, [2, [3, (4, 5)]], {6}, frozenset({7})],
    ("shared",) * 3,
    "x" * 200_000,  # large: its buffer is returned, uncopied
]


@pytest.mark.parametrize("obj", PLAIN, ids=lambda o: type(o).__name__)
def test_plain_data_pickles_byte_for_byte_as_the_full_pickler(obj):
    data = _pickler.plain_dumps(obj)
    assert data is not None
    assert bytes(data) == _full(obj)
    assert pickle.loads(data) == obj
    assert bytes(_pickler.dumps(obj)) == _full(obj)


def test_shared_references_keep_their_identity():
    inner = [1, 2]
    data = _pickler.plain_dumps([inner, inner])
    assert data is not None
    first, second = pickle.loads(data)
    assert first is second


def test_anything_else_is_left_to_the_full_pickler():
    for obj in (
        Point(1),
        [1, 2, Point(3)],
        {"k": Tagged(a=1)},
        lambda: 1,
        collections.OrderedDict(a=1),
        os.getpid,
    ):
        assert _pickler.plain_dumps(obj) is None
        assert pickle.loads(_pickler.dumps(obj)) is not None


def test_too_deep_data_still_fails_clearly():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert _pickler.plain_dumps(deep) is None
    with pytest.raises(mpnb.SerializationError, match="the item"):
        mpnb.get_context("spawn").SimpleQueue().put(deep)


def test_the_plain_pickler_is_reusable_after_a_refusal():
    assert _pickler.plain_dumps([1, Point(2)]) is None
    assert bytes(_pickler.plain_dumps({"a": 1})) == _full({"a": 1})


def test_a_queue_item_that_cannot_be_sent_still_raises_at_put(ctx):
    q = ctx.Queue()
    try:
        with open(os.devnull) as f, pytest.raises(mpnb.SerializationError, match=r"item\[1\]"):
            q.put([1, f])
        q.put({"plain": [1, 2.5, "x"]})
        assert q.get(timeout=WAIT) == {"plain": [1, 2.5, "x"]}
    finally:
        q.close()
        q.join_thread()


# -- the pool: tasks for a busy worker go out together -----------------------------------


def sleep_then(x):
    time.sleep(x[1])
    return x[0], os.getpid()


def exit_on(x):
    if x == -1:
        time.sleep(0.2)
        os._exit(3)
    return x


def test_a_plain_task_message_is_byte_for_byte_the_full_one_and_only_plain():
    from mpnb._pool import protocol

    plain = ((1, "two", [3.0]), {"k": None})
    args = (7, 3, protocol.APPLY, 0, True, None)
    assert bytes(protocol.plain_task_message(*args, plain)) == bytes(
        protocol.task_message(*args, plain)
    )
    assert protocol.plain_task_message(*args, ((Point(1),), {})) is None
    assert protocol.plain_task_message(*args, ((lambda: 1,), {})) is None


def test_pipelined_tasks_all_arrive_in_order_each_on_the_worker_that_ran_it(ctx):
    with ctx.Pool(2) as pool:
        pool.map(sleep_then, [(i, 0.0) for i in range(20)], chunksize=1)  # known as fast
        pending = [pool.apply_async(sleep_then, ((i, 0.02 if i < 4 else 0.0),)) for i in range(300)]
        results = [p.get(WAIT) for p in pending]
    assert [r[0] for r in results] == list(range(300))
    assert len({r[1] for r in results}) <= 2


def test_a_module_builtin_is_pickled_once_a_bound_builtin_method_every_time(ctx):
    import math

    items = [1, 2]
    with ctx.Pool(1) as pool:
        cache = pool._tasks._func_cache
        assert pool.apply(math.sqrt, (16,)) == 4.0
        assert pool.apply(abs, (-3,)) == 3
        assert id(abs) in cache and id(math.sqrt) in cache  # kept: never change
        copy = items.copy
        assert pool.apply(copy) == [1, 2]
        items.append(3)  # a bound method carries its object as it is at each call
        assert pool.apply(copy) == [1, 2, 3]
        assert id(copy) not in cache


def test_tasks_held_for_a_worker_that_dies_go_to_its_replacement(ctx):
    with ctx.Pool(1) as pool:
        # Known as fast: the worker may hold many tasks, and gets them in batches.
        assert pool.map(exit_on, range(20), chunksize=1) == list(range(20))
        bad = pool.apply_async(exit_on, (-1,))
        rest = [pool.apply_async(exit_on, (i,)) for i in range(60)]
        with pytest.raises(mpnb.WorkerCrashedError):
            bad.get(WAIT)
        assert [r.get(WAIT) for r in rest] == list(range(60))


# -- a cached function's module ------------------------------------------------------------


def test_a_reloaded_module_reaches_the_pool_at_once(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "fast_path_mod.py"
    source.write_text("def version(_=None):\n    return 'v1'\n")
    importlib.invalidate_caches()
    module = importlib.import_module("fast_path_mod")
    try:
        with mpnb.get_context("forkserver").Pool(1) as pool:
            assert pool.apply(module.version) == "v1"
            source.write_text("def version(_=None):\n    return 'v2, longer'\n")
            importlib.reload(module)
            # At once: well within the window in which the file is not stat'ed again.
            assert pool.apply(module.version) == "v2, longer"
    finally:
        sys.modules.pop("fast_path_mod", None)


def test_an_edited_module_reaches_the_pool_once_the_recheck_window_passed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "fast_path_mod2.py"
    source.write_text("def version(_=None):\n    return 'v1'\n")
    importlib.invalidate_caches()
    module = importlib.import_module("fast_path_mod2")
    try:
        with mpnb.get_context("forkserver").Pool(1) as pool:
            assert pool.apply(module.version) == "v1"
            source.write_text("def version(_=None):\n    return 'v2, edited'\n")
            time.sleep(_tasks.STAMP_RECHECK * 2)
            # Not reloaded here: the worker re-imports the edited file.
            assert pool.apply(module.version) == "v2, edited"
    finally:
        sys.modules.pop("fast_path_mod2", None)


# -- a process's world ---------------------------------------------------------------------


def environ_value(q):
    q.put(os.environ.get("MPNB_FAST_PATH"))


def test_a_process_starts_in_the_environ_of_its_start(ctx, start_method, monkeypatch):
    q = ctx.SimpleQueue()
    monkeypatch.setenv("MPNB_FAST_PATH", "one")
    p = ctx.Process(target=environ_value, args=(q,))
    monkeypatch.setenv("MPNB_FAST_PATH", "two")
    p.start()
    try:
        assert q.get() == "two"
    finally:
        p.join(WAIT)
    assert p.exitcode == 0
    # Fork copies the world and the fork server takes it with the request
    # (mpnb/forkserver.py); a spawned child gets its set-up.
    worlds = [s for s in p._mpnb_child_setups if type(s).__name__ == "WorldSetup"]
    assert bool(worlds) == (start_method == "spawn")


def environ_bytes(q, keys):
    q.put({k: os.environb.get(k) for k in keys})


def test_a_process_gets_added_changed_removed_and_undecodable_environ_entries(ctx, monkeypatch):
    keys = [b"MPNB_ENV_ADDED", b"MPNB_ENV_CHANGED", b"MPNB_ENV_REMOVED", b"MPNB_ENV_RAW"]
    monkeypatch.setenv("MPNB_ENV_CHANGED", "before")
    monkeypatch.setenv("MPNB_ENV_REMOVED", "here")
    q = ctx.SimpleQueue()
    first = ctx.Process(target=environ_bytes, args=(q, []))  # a fork server starts now
    first.start()
    assert q.get() == {}
    first.join(WAIT)
    monkeypatch.setenv("MPNB_ENV_ADDED", "new")
    monkeypatch.setenv("MPNB_ENV_CHANGED", "after")
    monkeypatch.delenv("MPNB_ENV_REMOVED")
    os.environb[b"MPNB_ENV_RAW"] = b"\xff\xfe not utf-8"
    try:
        p = ctx.Process(target=environ_bytes, args=(q, keys))
        p.start()
        assert q.get() == {
            b"MPNB_ENV_ADDED": b"new",
            b"MPNB_ENV_CHANGED": b"after",
            b"MPNB_ENV_REMOVED": None,
            b"MPNB_ENV_RAW": b"\xff\xfe not utf-8",
        }
        p.join(WAIT)
        assert p.exitcode == 0
    finally:
        os.environb.pop(b"MPNB_ENV_RAW", None)


def test_joinable_and_bounded_queues_keep_their_own_put(ctx):
    import queue

    jq = ctx.JoinableQueue()
    bounded = ctx.Queue(1)
    try:
        jq.put({"plain": 1})
        jq.put(Point(2))  # not plain data: the full pickler
        assert jq.get(timeout=WAIT) == {"plain": 1}
        assert jq.get(timeout=WAIT).x == 2
        jq.task_done()
        jq.task_done()
        jq.join()  # every put counted, every task done
        bounded.put("one")
        with pytest.raises(queue.Full):
            bounded.put("two", block=False)
    finally:
        for q in (jq, bounded):
            q.close()
            q.join_thread()
