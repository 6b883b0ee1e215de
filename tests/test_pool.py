"""``mpnb.Pool``: the standard library's API and semantics, under every start method."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time

import pytest

import mpnb
from mpnb._pool import core as pool_core
from mpnb.errors import RemoteTraceback, TaskCancelledError
from mpnb.pool import IMapIterator
from mpnb.registry import REGISTRY

pytestmark = [pytest.mark.core, pytest.mark.timeout(60)]

# Generous limits: a hang fails the test here, not through pytest-timeout.
WAIT = 30


def square(x):
    return x * x


def add(a, b):
    return a + b


def scaled(x, factor=1, offset=0):
    return x * factor + offset


def divide(x):
    return 1 / (x - 3)


def sleep_for(seconds):
    time.sleep(seconds)
    return os.getpid()


def getpid(_=None):
    return os.getpid()


_STATE = {}


def remember(value):
    _STATE["value"] = value


def remembered(_):
    return _STATE.get("value")


def numbers(n):
    yield from range(n)


def failing_numbers(n, bad):
    for i in range(n):
        if i == bad:
            raise LookupError(f"no item {i}")
        yield i


# -- the API ----------------------------------------------------------------------------


def test_map_family_gives_the_standard_library_results(ctx):
    with ctx.Pool(2) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert pool.map(square, range(10), chunksize=3) == [x * x for x in range(10)]
        assert pool.map(square, numbers(7)) == [x * x for x in range(7)]
        assert pool.map(square, []) == []
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.starmap_async(add, [(5, 6)]).get(WAIT) == [11]
        assert pool.apply(scaled, (2,), {"factor": 10, "offset": 1}) == 21
        assert pool.apply_async(add, (1,), {"b": 2}).get(WAIT) == 3
        assert list(pool.imap(square, range(6))) == [0, 1, 4, 9, 16, 25]
        assert list(pool.imap(square, numbers(9), chunksize=4)) == [x * x for x in range(9)]
        assert sorted(pool.imap_unordered(square, numbers(6))) == [0, 1, 4, 9, 16, 25]
        assert sorted(pool.imap_unordered(square, range(30), 7)) == sorted(x * x for x in range(30))
        assert list(pool.imap(square, [])) == []
        assert pool.map(lambda x: x + 1, [1, 2]) == [2, 3]  # by value
        result = pool.map_async(square, range(100))
        assert result.get(WAIT) == [x * x for x in range(100)]
        assert result.ready() and result.successful()
        result.wait()
        assert isinstance(pool.map(getpid, range(20), chunksize=1)[0], int)


def test_callbacks_run_once_with_the_result_or_the_error(ctx):
    got, errors = [], []
    done = threading.Event()
    with ctx.Pool(2) as pool:
        pool.apply_async(square, (4,), callback=got.append).get(WAIT)
        pool.map_async(square, range(3), callback=got.append).get(WAIT)
        failed = pool.apply_async(divide, (3,), error_callback=errors.append)
        with pytest.raises(ZeroDivisionError):
            failed.get(WAIT)
        pool.starmap_async(add, [(1, 1)], callback=lambda r: done.set())
        assert done.wait(WAIT)
    assert got == [16, [0, 1, 4]]
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)


def test_a_raising_callback_does_not_stop_the_pool(ctx, capfd):
    def bad_callback(_):
        raise RuntimeError("callback bug")

    with ctx.Pool(1) as pool:
        pool.apply_async(square, (2,), callback=bad_callback).wait(WAIT)
        assert pool.apply(square, (3,)) == 9
    assert "callback bug" in capfd.readouterr().err


def test_an_exception_keeps_its_type_and_brings_its_traceback(ctx):
    class CellError(Exception):  # not importable: travels by value, comes back the same
        pass

    def raise_cell_error(x):
        raise CellError(f"bad {x}")

    with ctx.Pool(2) as pool:
        with pytest.raises(ZeroDivisionError) as info:
            pool.map(divide, range(6), chunksize=2)
        remote = info.value.__cause__
        assert isinstance(remote, RemoteTraceback)
        assert [f.name for f in remote.frames] == ["divide"]
        assert "item 3 of the map" in str(remote)
        assert "return 1 / (x - 3)" in str(remote)
        assert "ZeroDivisionError: division by zero" in str(remote)
        assert "return 1 / (x - 3)" in "\n".join(remote._render_traceback_())
        if hasattr(info.value, "add_note"):
            assert "item 3 of the map" in info.value.__notes__[0]

        with pytest.raises(CellError, match="bad 7") as info:
            pool.apply(raise_cell_error, (7,))
        assert type(info.value) is CellError
        assert "raise_cell_error(7)" in str(info.value.__cause__)

        it = pool.imap(divide, range(6))
        assert [next(it), next(it), next(it)] == [-1 / 3, -1 / 2, -1.0]
        with pytest.raises(ZeroDivisionError):
            next(it)
        assert list(it) == [1.0, 0.5]  # the iteration goes on after a failed item

        it = pool.imap(square, failing_numbers(5, 3))
        assert [next(it) for _ in range(3)] == [0, 1, 4]
        with pytest.raises(LookupError, match="no item 3"):
            next(it)
        assert list(it) == []


def test_timeouts_raise_multiprocessing_timeout_error(ctx):
    with ctx.Pool(1) as pool:
        result = pool.apply_async(sleep_for, (0.5,))
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=0.01)
        with pytest.raises(TimeoutError):  # the builtin too: mpnb.errors.PoolTimeoutError
            result.get(timeout=0.01)
        assert mpnb.TimeoutError is multiprocessing.TimeoutError
        assert not result.ready()
        with pytest.raises(ValueError, match="not ready"):
            result.successful()
        result.wait(0.01)
        it = pool.imap(sleep_for, [0.5])
        with pytest.raises(multiprocessing.TimeoutError):
            it.next(timeout=0.01)
        with pytest.raises(TimeoutError):
            it.next(timeout=0.01)
        assert isinstance(it.next(timeout=WAIT), int)
        assert isinstance(result.get(WAIT), int)


def test_close_join_terminate(ctx):
    pool = ctx.Pool(2)
    results = [pool.apply_async(sleep_for, (0.2,)) for _ in range(4)]
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(square, (1,))
    pool.join()
    assert all(isinstance(r.get(0), int) for r in results)
    assert pool._pool == []

    pool = ctx.Pool(1)
    running = pool.apply_async(sleep_for, (30,))
    queued = pool.map_async(square, range(10))
    pool.terminate()
    pool.join()
    with pytest.raises(TaskCancelledError):
        running.get(WAIT)
    with pytest.raises(TaskCancelledError):
        queued.get(WAIT)
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [1])
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)
    assert "state=TERMINATE" in repr(pool)


def test_constructor_checks_like_the_standard_library(ctx):
    with pytest.raises(ValueError, match="at least 1"):
        ctx.Pool(0)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        ctx.Pool(1, maxtasksperchild=0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        ctx.Pool(1, initializer=3)
    with pytest.raises(mpnb.SerializationError, match="initargs"):
        ctx.Pool(1, initializer=remember, initargs=(threading.Lock(),))


def test_initializer_and_maxtasksperchild(ctx):
    with ctx.Pool(2, initializer=remember, initargs=("set",)) as pool:
        assert pool.map(remembered, range(4)) == ["set"] * 4
    with ctx.Pool(1, maxtasksperchild=2) as pool:
        pids = [pool.apply(getpid) for _ in range(6)]
        assert len(set(pids)) == 3
        assert pool.map(square, range(10), chunksize=1) == [x * x for x in range(10)]


def test_unpicklable_argument_raises_at_the_call_and_submits_nothing(ctx):
    lock = threading.Lock()
    with ctx.Pool(1) as pool:
        with pytest.raises(mpnb.SerializationError, match=r"args\[0\]"):
            pool.apply_async(square, (lock,))
        with pytest.raises(mpnb.SerializationError, match=r"kwds\['b'\]"):
            pool.apply_async(add, (1,), {"b": lock})
        with pytest.raises(mpnb.SerializationError, match=r"iterable\[2\]"):
            pool.map(square, [1, 2, lock, 3])
        with pytest.raises(mpnb.SerializationError, match=r"iterable\[1\]"):
            pool.imap(square, [1, lock])
        with pytest.raises(mpnb.SerializationError, match="func"):
            pool.map(lambda x: lock, [1])
        it = pool.imap(square, iter([1, 2, lock]))  # read lazily: the error at its place
        assert [next(it), next(it)] == [1, 4]
        with pytest.raises(mpnb.SerializationError, match=r"iterable\[2\]"):
            next(it)
        assert not pool._core._pending and pool.map(square, [5]) == [25]


def test_function_is_pickled_once_per_call_and_sent_once_per_worker(ctx, monkeypatch):
    sent = []
    real_send = pool_core.send_frames

    def spy(conn, payloads):
        sent.extend(bytes(p) for p in payloads)
        real_send(conn, payloads)

    monkeypatch.setattr(pool_core, "send_frames", spy)
    factor = 3

    def times(x):  # defined here: pickled by value
        return x * factor

    with ctx.Pool(2) as pool:
        pool.map(square, [1, 2])  # both workers ready
        sent.clear()
        assert pool.map(times, range(40), chunksize=1) == [x * 3 for x in range(40)]
        func_messages = [m for m in sent if pickle.loads(m)[0] == 1]
        assert 1 <= len(func_messages) <= 2
        assert len(sent) == 40 + len(func_messages)
        factor = 4  # a new call pickles the function again: with its globals as they are
        assert pool.map(times, [1]) == [4]


def test_default_chunksize_and_progress_hook(ctx):
    sizes = []
    with ctx.Pool(2) as pool:
        result = pool._map_async(square, range(100), 1, None, on_progress=sizes.append)
        assert result.get(WAIT) == [x * x for x in range(100)]
        assert sorted(sizes) == sorted([13] * 7 + [9])  # ceil(100 / (2 * 4)), as stdlib
        got = []
        assert (
            len(list(pool._imap(square, range(10), 3, IMapIterator, on_progress=got.append))) == 10
        )
        assert sum(got) == 10


def test_registry_names_workers_and_shows_running_tasks(ctx, start_method):
    prefix = {
        "spawn": "SpawnPoolWorker-",
        "forkserver": "ForkServerPoolWorker-",
        "fork": "ForkPoolWorker-",
    }[start_method]
    with ctx.Pool(2) as pool:
        workers = pool._pool
        assert len(workers) == 2
        assert all(w.name.startswith(prefix) and w._mpnb_pool == pool._name for w in workers)
        result = pool.apply_async(sleep_for, (1.5,))
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            records, pools = REGISTRY.snapshot()
            if any(r.task == "sleep_for(1.5)" for r in records if r.pool == pool._name):
                break
            time.sleep(0.02)
        else:
            pytest.fail("the running task never showed in the registry")
        result.get(WAIT)
        pool.map(square, range(10))
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            record = next(p for p in REGISTRY.snapshot()[1] if p.name == pool._name)
            if record.done == 11:
                break
            time.sleep(0.02)
        assert (record.processes, record.start_method, record.submitted, record.done) == (
            2,
            start_method,
            11,
            11,
        )


def test_keyboard_interrupt_cancels_queued_and_stops_running_tasks(ctx):
    with ctx.Pool(2) as pool:
        pool.map(square, range(4))
        before = {w.pid for w in pool._pool}
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            pool.map(sleep_for, [30] * 10, chunksize=1)
        assert time.monotonic() - started < WAIT
        queued = pool.apply_async(square, (3,))
        assert queued.get(WAIT) == 9  # the pool answers at once
        assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        deadline = time.monotonic() + WAIT
        while len(pool._pool) != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        after = {w.pid for w in pool._pool}
        assert len(after) == 2 and not before & after  # both busy workers were replaced


def _use_inherited_pool(pool, queue):
    try:
        pool.map(square, [1])
    except RuntimeError as exc:
        queue.put(str(exc))
    else:
        queue.put("no error")


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_forked_child_cannot_use_its_parents_pool():
    fork = mpnb.get_context("fork")
    with fork.Pool(1) as pool:
        queue = fork.SimpleQueue()
        child = fork.Process(target=_use_inherited_pool, args=(pool, queue))
        child.start()
        assert "cannot use its parent's pool" in queue.get()
        child.join(WAIT)
        assert pool.map(square, [2]) == [4]


def test_many_and_big_functions_are_resent_when_a_worker_dropped_them(ctx):
    def make(k, payload=b""):
        return lambda x: x * k + len(payload)

    small = [make(k) for k in range(40)]  # more than a worker keeps
    big = [make(k, bytes(5 * 2**20)) for k in range(5)]  # more bytes than it keeps
    with ctx.Pool(1) as pool:
        for funcs in (small, big):
            for _ in range(2):
                for k, func in enumerate(funcs):
                    assert pool.apply(func, (1,)) == k + (5 * 2**20 if funcs is big else 0)


@pytest.mark.filterwarnings("ignore:unclosed running multiprocessing pool:ResourceWarning")
def test_a_pending_result_keeps_its_pool_alive(ctx):
    import gc

    result = ctx.Pool(1).map_async(sleep_for, [0.2])  # nothing else refers to the pool
    gc.collect()
    assert isinstance(result.get(WAIT)[0], int)  # then the pool goes, as stdlib's does


def test_a_function_that_refers_to_its_pool_cannot_be_sent(ctx):
    with ctx.Pool(1) as pool:

        def uses_pool(x):
            return pool.map(square, [x])

        with pytest.raises(mpnb.SerializationError, match="pool"):
            pool.apply(uses_pool, (1,))
