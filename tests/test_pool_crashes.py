"""The crash matrix: every way a task can break its worker or its result, under every
start method. Each case must end in a clear error (never a hang: every wait has a
limit, and the test a hard timeout), leave the pool usable, and leave no process behind
(the suite's leak check)."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

import pytest

import mpnb
from mpnb.registry import REGISTRY

pytestmark = [pytest.mark.core, pytest.mark.timeout(60)]

WAIT = 30
BAD = 3


# -- tasks ------------------------------------------------------------------------------


def exit_at(x):
    if x == BAD:
        os._exit(7)
    time.sleep(0.05)
    return x


def sigkill_at(x):
    if x == BAD:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return x


def segfault_at(x):
    if x == BAD:
        ctypes.string_at(0)
    time.sleep(0.05)
    return x


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")


def over_memory_limit_at(x):
    if x != BAD:
        return x
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + 64 * 2**20, hard))
    try:
        return len(bytearray(2**30))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def failing_initializer():
    raise ValueError("no database")


class NeedsTwoArgs(Exception):
    def __init__(self, a, b):  # pickles, but cannot be rebuilt from its args
        super().__init__(f"{a} {b}")


def unpicklable_exception_at(x):
    if x == BAD:
        raise NeedsTwoArgs("bad", "item")
    return x


def unpicklable_result_at(x):
    if x == BAD:
        return threading.Lock()
    return x


def inc(x):
    return x + 1


def worker_pids(pool):
    return {w.pid for w in pool._pool}


def wait_for_workers(pool, n):
    deadline = time.monotonic() + WAIT
    while len(pool._pool) != n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(pool._pool) == n


def assert_usable(pool):
    assert pool.map(inc, range(8), chunksize=1) == list(range(1, 9))
    wait_for_workers(pool, 2)


# -- a worker that dies -----------------------------------------------------------------

CRASHES = {
    "os._exit": (exit_at, 7, ""),
    "SIGKILL": (sigkill_at, -signal.SIGKILL, "SIGKILL"),
    "segfault": (segfault_at, -signal.SIGSEGV, "SIGSEGV"),
}


@pytest.mark.parametrize("kind", list(CRASHES))
def test_a_dying_worker_fails_its_task_and_is_replaced(ctx, kind):
    func, exitcode, signame = CRASHES[kind]
    with ctx.Pool(2) as pool:
        pool.map(inc, range(2))
        # map: the whole call fails with the crash, naming worker, exit code and item
        with pytest.raises(mpnb.WorkerCrashedError) as info:
            pool.map_async(func, range(8), chunksize=1).get(WAIT)
        err = info.value
        assert (err.exitcode, err.signal, err.index) == (exitcode, signame, BAD)
        assert err.worker in str(err) and f"pid {err.pid}" in str(err)
        assert f"{func.__name__}({BAD})" in str(err) and f"item {BAD}" in str(err)
        if signame:
            assert signame in str(err)
        else:
            assert f"exited with code {exitcode}" in str(err)
        if signame == "SIGKILL":
            assert "out-of-memory" in str(err)
        assert "replaced" in str(err)
        assert_usable(pool)

        # single tasks: only the crashed one fails, the others' results are all there
        results = [pool.apply_async(func, (i,)) for i in range(8)]
        for i, result in enumerate(results):
            if i == BAD:
                with pytest.raises(mpnb.WorkerCrashedError):
                    result.get(WAIT)
            else:
                assert result.get(WAIT) == i
        assert_usable(pool)

        # imap: the crashed item raises at its place, the iteration goes on
        it = pool.imap(func, range(6))
        got = []
        for _ in range(6):
            try:
                got.append(it.next(WAIT))
            except mpnb.WorkerCrashedError:
                got.append("crashed")
        assert got == [0, 1, 2, "crashed", 4, 5]
        assert_usable(pool)
        records = [r for r in REGISTRY.snapshot()[0] if r.pool == pool._name and r.error]
        assert any(f"{func.__name__}({BAD})" in r.error for r in records)


def test_a_crash_inside_a_big_chunk_names_the_item(ctx):
    with ctx.Pool(1) as pool:
        with pytest.raises(mpnb.WorkerCrashedError) as info:
            pool.map_async(exit_at, range(6), chunksize=6).get(WAIT)
        assert info.value.index == BAD
        assert_usable_one(pool)


def assert_usable_one(pool):
    assert pool.map(inc, range(4)) == [1, 2, 3, 4]


# -- memory -----------------------------------------------------------------------------


def test_a_memory_limit_raises_memory_error_in_the_parent(ctx):
    with ctx.Pool(2) as pool:
        with pytest.raises(MemoryError) as info:
            pool.map_async(over_memory_limit_at, range(6), chunksize=1).get(WAIT)
        assert "over_memory_limit_at" in str(info.value.__cause__)
        assert_usable(pool)


# -- initializer ------------------------------------------------------------------------


def test_an_initializer_that_raises_breaks_the_pool_once(ctx):
    with ctx.Pool(2, initializer=failing_initializer) as pool:
        with pytest.raises(mpnb.InitializerError, match="failing_initializer") as info:
            pool.map_async(inc, range(4)).get(WAIT)
        cause = info.value.__cause__
        assert isinstance(cause, ValueError) and str(cause) == "no database"
        assert "raise ValueError" in str(cause.__cause__)
        with pytest.raises(mpnb.InitializerError):
            pool.apply_async(inc, (1,))
        time.sleep(0.3)
        started = [r for r in REGISTRY.snapshot()[0] if r.pool == pool._name]
        assert len(started) <= 2  # no endless respawn
    pool.join()


def test_an_initializer_that_kills_its_worker_breaks_the_pool(ctx):
    with ctx.Pool(1, initializer=os._exit, initargs=(3,)) as pool:
        with pytest.raises(mpnb.InitializerError, match="exited with code 3"):
            pool.map_async(inc, range(4)).get(WAIT)
        started = [r for r in REGISTRY.snapshot()[0] if r.pool == pool._name]
        assert len(started) <= 3


# -- what cannot be sent back -----------------------------------------------------------


def test_an_unpicklable_result_fails_that_task(ctx):
    with ctx.Pool(2) as pool:
        with pytest.raises(mpnb.TaskSerializationError, match="lock") as info:
            pool.map_async(unpicklable_result_at, range(6), chunksize=2).get(WAIT)
        assert info.value.what == "result"
        assert f"item {BAD}" in str(info.value)
        results = [pool.apply_async(unpicklable_result_at, (i,)) for i in range(6)]
        with pytest.raises(mpnb.TaskSerializationError):
            results[BAD].get(WAIT)
        assert [r.get(WAIT) for i, r in enumerate(results) if i != BAD] == [0, 1, 2, 4, 5]
        assert_usable(pool)


def test_an_unpicklable_exception_comes_back_as_a_stand_in(ctx):
    with ctx.Pool(2) as pool:
        with pytest.raises(mpnb.TaskSerializationError) as info:
            pool.map_async(unpicklable_exception_at, range(6), chunksize=1).get(WAIT)
        err = info.value
        assert err.what == "exception"
        assert "NeedsTwoArgs" in err.obj_type and "NeedsTwoArgs" in str(err)
        remote = str(err.__cause__)
        assert 'raise NeedsTwoArgs("bad", "item")' in remote
        assert "NeedsTwoArgs: bad item" in remote
        assert_usable(pool)


# -- plain processes --------------------------------------------------------------------


def sleep_forever():
    time.sleep(60)


def test_processes_report_exit_codes_and_stop_on_request(ctx):
    exiting = ctx.Process(target=os._exit, args=(5,))
    exiting.start()
    exiting.join(WAIT)
    assert exiting.exitcode == 5

    sleeper = ctx.Process(target=sleep_forever)
    sleeper.start()
    sleeper.join(0.05)
    assert sleeper.exitcode is None and sleeper.is_alive()
    sleeper.terminate()
    sleeper.join(WAIT)
    assert sleeper.exitcode == -signal.SIGTERM

    sleeper = ctx.Process(target=sleep_forever)
    sleeper.start()
    sleeper.kill()
    sleeper.join(WAIT)
    assert sleeper.exitcode == -signal.SIGKILL
