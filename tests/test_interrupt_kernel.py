"""The kernel's interrupt (SIGINT to its process group, as a frontend's button sends it)
while a cell waits on a pool or a process: control comes back with KeyboardInterrupt,
queued tasks are cancelled, running ones stopped, and the pool answers the next cell."""

from __future__ import annotations

import os
import time

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

CYCLES = 20
# No cell may take longer than this to come back after the interrupt: a hang guard, not
# a timing assertion (the machines are shared and noisy).
BACK_WITHIN = 15.0

SETUP = """
import mpnb as mp, os, pathlib, time
marks = pathlib.Path({marks!r})

def slow(i):
    (marks / f"{{os.getpid()}}-{{i}}").touch()
    time.sleep(60)
    return i

def inc(x):
    return x + 1
"""


def _wait_for_marks(marks, n: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(os.listdir(marks)) < n:
        assert time.monotonic() < deadline, "no task started"
        time.sleep(0.01)


def _interrupt(kernel, code: str, marks) -> float:
    """Run ``code``, interrupt it once a task runs, return seconds until it was back."""
    for name in os.listdir(marks):
        os.remove(os.path.join(marks, name))
    msg_id = kernel.submit(code)
    _wait_for_marks(marks)
    started = time.monotonic()
    kernel.interrupt()
    result = kernel.wait(msg_id, timeout=BACK_WITHIN)
    back = time.monotonic() - started
    assert result.status == "error", result.stdout
    assert result.error.ename == "KeyboardInterrupt", result.error.text
    return back


def _settle(kernel, workers: int, timeout: float = 10.0) -> list:
    """The kernel's non-helper children once they number ``workers``."""
    deadline = time.monotonic() + timeout
    while True:
        children = kernel.children(helpers=False)
        if len(children) == workers or time.monotonic() > deadline:
            return children
        time.sleep(0.05)


@pytest.fixture(scope="module")
def marks(tmp_path_factory):
    return tmp_path_factory.mktemp("marks")


@pytest.fixture(scope="module")
def kernel(module_kernel, marks):
    module_kernel.ensure_ok(SETUP.format(marks=str(marks)))
    return module_kernel


def test_twenty_interrupted_maps_leave_no_stray_process(kernel, marks):
    kernel.ensure_ok("pool = mp.Pool(2)\npool.map(inc, range(4))")
    times = []
    for cycle in range(CYCLES):
        times.append(_interrupt(kernel, "pool.map(slow, range(20), chunksize=1)", marks))
        assert kernel.evaluate("pool.map(inc, range(4))") == [1, 2, 3, 4], cycle
        assert len(os.listdir(marks)) <= 2, "a queued task ran after the interrupt"
        children = _settle(kernel, 2)
        assert len(children) == 2, f"cycle {cycle}: {children}"
    print(
        f"control back after {max(times):.2f} s at most, {sum(times) / len(times):.2f} s on average"
    )
    kernel.ensure_ok("pool.terminate()")
    assert _settle(kernel, 0) == []


def test_interrupted_get_imap_and_join(kernel, marks):
    kernel.ensure_ok("pool = mp.Pool(2)\npool.map(inc, range(4))")
    _interrupt(kernel, "pool.apply_async(slow, (1,)).get()", marks)
    assert kernel.evaluate("pool.apply(inc, (1,))") == 2
    _interrupt(kernel, "for x in pool.imap(slow, range(10)):\n    pass", marks)
    assert kernel.evaluate("list(pool.imap(inc, range(3)))") == [1, 2, 3]
    _interrupt(kernel, "pool.map_async(slow, range(4)).wait()", marks)
    assert kernel.evaluate("pool.map(inc, [1])") == [2]
    assert len(_settle(kernel, 2)) == 2

    _interrupt(kernel, "pool.apply_async(slow, (1,))\npool.close()\npool.join()", marks)
    kernel.ensure_ok("pool.join()")  # the running task was stopped: join returns at once
    assert _settle(kernel, 0) == []


def test_interrupted_process_join(kernel, marks):
    _interrupt(kernel, "p = mp.Process(target=slow, args=(0,))\np.start()\np.join()", marks)
    kernel.ensure_ok("p.join(10)\nassert p.exitcode is not None, p")
    assert _settle(kernel, 0) == []
