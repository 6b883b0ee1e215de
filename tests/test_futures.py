"""``mpnb.ProcessPoolExecutor``: the ``concurrent.futures`` interface on mpnb's pool, under
every start method; and the standard library's executor with an mpnb context."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.queues
import os
import signal
import threading
import time
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool

import pytest
from cells import cell

import mpnb
from mpnb.errors import RemoteTraceback, TaskCancelledError
from mpnb.futures import BrokenInitializerError, BrokenWorkerError

pytestmark = [pytest.mark.core, pytest.mark.timeout(90)]

WAIT = 30

_STATE: dict[str, object] = {}


def square(x):
    return x * x


def keep_gate(gate):
    _STATE["gate"] = gate


def wait_gate(value=None):
    _STATE["gate"].wait(WAIT)
    return value


def touch(path):
    with open(path, "w"):
        pass
    return path


def sleep_for(seconds):
    time.sleep(seconds)


def getpid(_=None):
    return os.getpid()


def die_at(x):
    if x == 2:
        os._exit(7)
    return x


def divide(x):
    return 1 / (x - 3)


def failing_initializer():
    raise ValueError("no database")


@pytest.fixture
def gated(ctx):
    """An executor of one worker, whose ``wait_gate`` calls run until ``gate.set()``."""
    gate = ctx.Event()
    ex = mpnb.ProcessPoolExecutor(1, mp_context=ctx, initializer=keep_gate, initargs=(gate,))
    yield ex, gate
    gate.set()
    ex.shutdown(wait=True)


# -- the API ----------------------------------------------------------------------------


def test_submit_map_and_the_context_manager(ctx):
    with mpnb.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        future = ex.submit(pow, 2, exp=5)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(WAIT) == 32 and future.done() and not future.cancelled()
        assert list(ex.map(square, range(10), chunksize=3)) == [x * x for x in range(10)]
        assert list(ex.map(pow, [2, 3, 4], [3, 2])) == [8, 9]
        assert list(ex.map(square, [])) == []
        assert list(ex.map(square, iter(range(7)), chunksize=2, buffersize=2)) == [
            x * x for x in range(7)
        ]
        futures = [ex.submit(square, x) for x in range(6)]
        done, not_done = concurrent.futures.wait(futures, timeout=WAIT)
        assert len(done) == 6 and not not_done
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == [
            0,
            1,
            4,
            9,
            16,
            25,
        ]
        assert ex._max_workers == 2 and "max_workers=2" in repr(ex)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    assert not mpnb.active_children()


def test_initializer_and_max_tasks_per_child(ctx):
    gate = ctx.Event()
    gate.set()
    with mpnb.ProcessPoolExecutor(
        1, mp_context=ctx, initializer=keep_gate, initargs=(gate,), max_tasks_per_child=1
    ) as ex:
        assert [ex.submit(wait_gate, x).result(WAIT) for x in range(3)] == [0, 1, 2]
        assert len({ex.submit(getpid).result(WAIT) for _ in range(3)}) == 3


def test_an_error_keeps_its_type_and_the_worker_traceback(ctx):
    with mpnb.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        with pytest.raises(ZeroDivisionError) as info:
            ex.submit(divide, 3).result(WAIT)
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "return 1 / (x - 3)" in str(info.value.__cause__)
        results = ex.map(divide, range(6), chunksize=2)  # a failed chunk fails whole
        assert [next(results), next(results)] == [-1 / 3, -1 / 2]
        with pytest.raises(ZeroDivisionError) as info:
            next(results)
        assert "item 3 of the map" in str(info.value.__cause__)
        with pytest.raises(StopIteration):
            next(results)
        assert ex.submit(square, 4).result(WAIT) == 16


def test_a_crash_is_a_broken_process_pool_and_the_executor_goes_on(ctx):
    with mpnb.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        futures = [ex.submit(die_at, x) for x in range(5)]
        with pytest.raises(BrokenProcessPool) as info:
            futures[2].result(WAIT)
        error = info.value
        assert isinstance(error, BrokenWorkerError) and isinstance(error, mpnb.WorkerCrashedError)
        assert error.exitcode == 7 and error.task == "die_at(2)" and error.pid
        assert "exited with code 7 while running die_at(2)" in str(error)
        assert [f.result(WAIT) for i, f in enumerate(futures) if i != 2] == [0, 1, 3, 4]
        assert ex.submit(square, 5).result(WAIT) == 25
        assert list(ex.map(square, range(4))) == [0, 1, 4, 9]


def test_a_failing_initializer_breaks_the_executor(ctx):
    with mpnb.ProcessPoolExecutor(1, mp_context=ctx, initializer=failing_initializer) as ex:
        with pytest.raises(BrokenProcessPool) as info:
            ex.submit(square, 1).result(WAIT)
        assert isinstance(info.value, BrokenInitializerError)
        assert isinstance(info.value, mpnb.InitializerError)
        assert str(info.value.__cause__) == "no database"
        with pytest.raises(BrokenInitializerError):
            ex.submit(square, 2)


def test_a_pending_future_can_be_cancelled(gated, tmp_path):
    ex, gate = gated
    running = ex.submit(wait_gate, "opened")
    pending = ex.submit(touch, str(tmp_path / "ran"))
    assert pending.cancel() and pending.cancelled()
    done, _ = concurrent.futures.wait([pending], timeout=WAIT)  # waiters are told
    assert done == {pending}
    with pytest.raises(CancelledError):
        pending.result(0)
    assert not running.cancel()  # already sent to the worker
    gate.set()
    assert running.result(WAIT) == "opened"
    assert ex.submit(square, 3).result(WAIT) == 9
    ex.shutdown(wait=True)
    assert not (tmp_path / "ran").exists()


def test_shutdown_can_cancel_the_pending_futures(gated, tmp_path):
    ex, gate = gated
    running = ex.submit(wait_gate, "opened")
    pending = [ex.submit(touch, str(tmp_path / f"ran{i}")) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in pending)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(square, 1)
    gate.set()
    ex.shutdown(wait=True)
    assert running.result(0) == "opened"
    assert not list(tmp_path.iterdir())
    assert not mpnb.active_children()


def test_a_map_timeout_cancels_the_rest(gated):
    ex, gate = gated
    results = ex.map(wait_gate, range(4), timeout=0.2)
    with pytest.raises(concurrent.futures.TimeoutError):  # TimeoutError from 3.11
        next(results)
    gate.set()
    assert ex.submit(square, 2).result(WAIT) == 4


# A worker stopped while it waits on a multiprocessing Event leaves that Event unusable:
# the tests that stop running calls run ``sleep_for`` instead.


@pytest.mark.parametrize("how", ["terminate_workers", "kill_workers"])
def test_terminate_and_kill_workers(ctx, how):
    ex = mpnb.ProcessPoolExecutor(1, mp_context=ctx)
    running = ex.submit(sleep_for, WAIT)
    pending = ex.submit(square, 2)
    deadline = time.monotonic() + WAIT
    while not running.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    getattr(ex, how)()
    assert not mpnb.active_children()
    with pytest.raises(TaskCancelledError):
        running.result(WAIT)
    assert pending.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)


def test_an_interrupt_while_waiting_cancels_the_pending_futures(ctx):
    with mpnb.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        running = ex.submit(sleep_for, WAIT)
        pending = [ex.submit(square, x) for x in range(3)]
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            running.result(WAIT)
        with pytest.raises(TaskCancelledError):
            running.result(WAIT)
        assert all(f.cancelled() for f in pending)
        assert ex.submit(square, 3).result(WAIT) == 9  # the executor answers at once


def test_an_interrupt_in_the_with_block_cancels_everything(ctx):
    with pytest.raises(KeyboardInterrupt):
        with mpnb.ProcessPoolExecutor(1, mp_context=ctx) as ex:
            running = ex.submit(sleep_for, WAIT)
            pending = ex.submit(square, 2)
            raise KeyboardInterrupt
    with pytest.raises(TaskCancelledError):
        running.result(WAIT)
    assert pending.cancelled()
    assert not mpnb.active_children()


def test_progress_bar_on_map(ctx, capsys):
    with mpnb.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert list(ex.map(square, range(12), chunksize=5, progress=True)) == [
            x * x for x in range(12)
        ]
        assert list(ex.map(square, iter(range(5)), buffersize=1, progress=True)) == [
            x * x for x in range(5)
        ]
    err = capsys.readouterr().err
    assert "12/12" in err and "5/5" in err, err


def test_bad_arguments_are_refused_like_the_standard_library(ctx):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            mpnb.ProcessPoolExecutor(bad, mp_context=ctx)
    with pytest.raises(TypeError, match="max_workers"):
        mpnb.ProcessPoolExecutor("2", mp_context=ctx)
    with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
        mpnb.ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=0)
    with pytest.raises(TypeError, match="max_tasks_per_child must be an integer"):
        mpnb.ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child="1")
    with pytest.raises(TypeError, match="initializer must be a callable"):
        mpnb.ProcessPoolExecutor(1, mp_context=ctx, initializer=3)
    with pytest.raises(TypeError, match="mp_context must be a multiprocessing context"):
        mpnb.ProcessPoolExecutor(1, mp_context="spawn")
    with pytest.raises(mpnb.SerializationError, match=r"initargs\[0\]"):
        mpnb.ProcessPoolExecutor(1, mp_context=ctx, initializer=print, initargs=(threading.Lock(),))
    assert not mpnb.active_children()
    with mpnb.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        with pytest.raises(ValueError, match="chunksize must be >= 1"):
            ex.map(square, [1], chunksize=0)
        with pytest.raises(ValueError, match="buffersize must be None or > 0"):
            ex.map(square, [1], buffersize=0)
        with pytest.raises(mpnb.SerializationError, match=r"args\[0\]"):
            ex.submit(square, threading.Lock())
        with pytest.raises(mpnb.SerializationError, match=r"iterables\[0\]\[1\]"):
            ex.map(square, [1, threading.Lock()])
        assert ex.submit(square, 2).result(WAIT) == 4


def test_a_standard_library_context_is_taken_by_its_start_method(start_method):
    with mpnb.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(start_method)) as ex:
        assert ex._mp_context is mpnb.get_context(start_method)
        assert ex.submit(square, 3).result(WAIT) == 9


# -- the standard library's executor with an mpnb context -------------------------------

CELL = """
def cube(x):
    return x ** 3
"""


def test_the_standard_library_executor_takes_cell_code_with_an_mpnb_context(ctx):
    c = cell(CELL)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert list(ex.map(c.cube, range(4))) == [0, 1, 8, 27]
        assert ex.submit(lambda: "lambda").result(WAIT) == "lambda"


class _SpyQueue(multiprocessing.queues.Queue):
    """A standard library queue that records what its feeder could not send."""

    def __init__(self, ctx):
        super().__init__(ctx=ctx)
        self.errors = []

    def _on_queue_feeder_error(self, e, obj):
        self.errors.append(e)


def test_only_queues_of_mpnb_contexts_send_with_mpnb(start_method):
    fn = cell(CELL).cube
    ours = _SpyQueue(mpnb.get_context(start_method))
    ours.put(fn)
    assert ours.get(timeout=WAIT)(2) == 8 and ours.errors == []
    theirs = _SpyQueue(multiprocessing.get_context(start_method))
    theirs.put(fn)  # the standard library's pickler: refused, dropped
    theirs.put("next")
    assert theirs.get(timeout=WAIT) == "next"
    assert len(theirs.errors) == 1
    for q in (ours, theirs):
        q.close()
        q.join_thread()
