"""A pool's ``initargs`` travel with each worker as it starts, as in the standard library:
queues, locks, semaphores, events and shared ctypes (which may only be shared through
inheritance) work there, for workers respawned later too; what can never be sent still
fails at ``Pool()``, naming it."""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest

import mpnb

pytestmark = [pytest.mark.core, pytest.mark.timeout(90)]

WAIT = 30

_STATE: dict[str, object] = {}


def keep(*objects):
    _STATE["objects"] = objects


def obj():
    return _STATE["objects"][0]


def put(x):
    obj().put((os.getpid(), x))
    return x


def try_acquire(_):
    got = obj().acquire(False)
    if got:
        obj().release()
    return got


def add_one(_):
    with obj().get_lock():
        obj().value += 1


def fill(i):
    obj()[i] = i * i


def set_event(_):
    obj().set()


def total(_):
    return int(obj().sum())


def check_queue(pool, q):
    assert pool.map(put, range(4)) == [0, 1, 2, 3]
    assert sorted(q.get(timeout=WAIT)[1] for _ in range(4)) == [0, 1, 2, 3]


def check_lock(pool, lock):
    lock.acquire()
    assert pool.map(try_acquire, range(2)) == [False, False]
    lock.release()
    assert pool.apply(try_acquire, (0,)) is True


def check_value(pool, value):
    pool.map(add_one, range(5))
    assert value.value == 5


def check_array(pool, array):
    pool.map(fill, range(4), chunksize=1)
    assert list(array) == [0, 1, 4, 9]


def check_event(pool, event):
    pool.apply(set_event, (0,))
    assert event.is_set()


PRIMITIVES = {
    "Queue": (lambda c: c.Queue(), check_queue),
    "SimpleQueue": (lambda c: c.SimpleQueue(), None),
    "Lock": (lambda c: c.Lock(), check_lock),
    "RLock": (lambda c: c.RLock(), check_lock),
    "Semaphore": (lambda c: c.Semaphore(1), check_lock),
    "Value": (lambda c: c.Value("i", 0), check_value),
    "Array": (lambda c: c.Array("i", 4), check_array),
    "Event": (lambda c: c.Event(), check_event),
}


def check_simple_queue(pool, q):
    assert pool.map(put, range(3)) == [0, 1, 2]
    assert sorted(q.get()[1] for _ in range(3)) == [0, 1, 2]


@pytest.mark.parametrize("lib", ["mpnb", "stdlib"])
@pytest.mark.parametrize("kind", sorted(PRIMITIVES))
def test_an_inheritance_only_object_reaches_the_initializer(ctx, start_method, kind, lib):
    make, check = PRIMITIVES[kind]
    maker = ctx if lib == "mpnb" else multiprocessing.get_context(start_method)
    shared = make(maker)
    with ctx.Pool(2, initializer=keep, initargs=(shared,)) as pool:
        (check or check_simple_queue)(pool, shared)


def test_a_respawned_worker_gets_a_working_queue(ctx):
    q = ctx.Queue()
    with ctx.Pool(1, initializer=keep, initargs=(q,), maxtasksperchild=1) as pool:
        assert [pool.apply(put, (x,)) for x in range(3)] == [0, 1, 2]
        got = [q.get(timeout=WAIT) for _ in range(3)]
    assert sorted(x for _, x in got) == [0, 1, 2]
    assert len({pid for pid, _ in got}) == 3  # three workers, each with the queue


def test_a_worker_replaced_after_a_crash_gets_a_working_queue(ctx):
    q = ctx.Queue()
    with ctx.Pool(1, initializer=keep, initargs=(q,)) as pool:
        with pytest.raises(mpnb.WorkerCrashedError):
            pool.apply_async(os._exit, (3,)).get(WAIT)
        assert pool.apply(put, (5,)) == 5
        assert q.get(timeout=WAIT)[1] == 5


def test_a_large_array_in_initargs_reaches_every_worker(ctx):
    numpy = pytest.importorskip("numpy")
    array = numpy.arange(1 << 18, dtype=numpy.int64)  # 2 MiB: shared memory if it can
    with ctx.Pool(2, initializer=keep, initargs=(array,), maxtasksperchild=1) as pool:
        assert pool.map(total, range(4), chunksize=1) == [int(array.sum())] * 4


def test_an_unsendable_initarg_still_fails_at_pool_naming_it(ctx, tmp_path):
    q = ctx.Queue()
    with open(tmp_path / "f.txt", "w") as f:
        with pytest.raises(mpnb.SerializationError, match=r"initargs\[1\]") as info:
            ctx.Pool(1, initializer=keep, initargs=(q, f))
    assert "open it in the child" in str(info.value)
    assert not mpnb.active_children()


def test_a_lock_of_a_fork_context_goes_only_to_forked_workers(ctx, start_method):
    if start_method != "fork" and sys.version_info < (3, 11):
        pytest.skip("Python 3.10 sends it to a spawned worker, which then crashes")
    lock = mpnb.get_context("fork").Lock()
    if start_method == "fork":
        with ctx.Pool(1, initializer=keep, initargs=(lock,)) as pool:
            check_lock(pool, lock)
    else:  # the standard library's own error, at Pool() rather than at a worker's start
        with pytest.raises(RuntimeError, match="fork context"):
            ctx.Pool(1, initializer=keep, initargs=(lock,))
        assert not mpnb.active_children()


def refuse_to_load(message):
    raise LookupError(message)


class LoadsNowhere:
    """Pickles in the parent; loading it raises (a module missing in the worker, say)."""

    def __reduce__(self):
        return refuse_to_load, ("not in this worker",)


def test_an_initializer_that_cannot_be_loaded_breaks_the_pool_once(ctx, start_method):
    with ctx.Pool(2, initializer=keep, initargs=(LoadsNowhere(),)) as pool:
        if start_method == "fork":  # inherited, never pickled
            assert pool.apply(abs, (-1,)) == 1
            return
        with pytest.raises(mpnb.InitializerError, match="keep") as info:
            pool.map_async(abs, range(4)).get(WAIT)
        cause = info.value.__cause__
        assert isinstance(cause, LookupError) and str(cause) == "not in this worker"
        with pytest.raises(mpnb.InitializerError):
            pool.apply_async(abs, (1,))
