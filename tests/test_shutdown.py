"""Kernel restarts and interpreter exits stop every process mpnb started, and leave
nothing in /dev/shm and no resource tracker warning behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import leaks
import pytest
from kernel_harness import run_terminal_ipython

pytestmark = pytest.mark.timeout(180)

GONE_WITHIN = 10.0
WARNINGS = ("leaked", "resource_tracker", "Traceback")

BUSY_KERNEL = """
import mpnb as mp, time

def sleeper(seconds):
    time.sleep(seconds)
    return seconds

pool = mp.Pool(2)                                   # the default: forkserver on Linux
pool.map(sleeper, [0, 0])
busy = pool.map_async(sleeper, [60] * 4)
spawned = mp.get_context("spawn").Pool(1)
spawned.map(sleeper, [0])
proc = mp.Process(target=sleeper, args=(60,))        # not daemonic
proc.start()
queue = mp.Queue()                                  # semaphores, for the resource tracker
queue.put("x")
queue.get(timeout=30)
"""


@pytest.mark.skipif(not os.path.isdir(leaks.SHM_DIR), reason="no /dev/shm")
def test_kernel_restart_stops_every_child_and_frees_dev_shm(make_kernel):
    kernel = make_kernel()
    kernel.ensure_ok(BUSY_KERNEL)
    children = set(kernel.children())
    assert len(children) >= 5, children  # 3 workers, 1 process, forkserver, tracker
    names = kernel.evaluate("[s._semlock.name for s in (queue._rlock, queue._wlock, queue._sem)]")
    shm = {"sem." + name.lstrip("/") for name in names}
    assert shm <= set(os.listdir(leaks.SHM_DIR)), "the queue's semaphores are in /dev/shm"

    started = time.monotonic()
    kernel.restart()
    took = time.monotonic() - started
    left = leaks.wait_gone(children, GONE_WITHIN)
    assert not left, leaks.describe(left)
    assert not shm & set(os.listdir(leaks.SHM_DIR)), "left in /dev/shm"
    output = kernel.terminal_output()
    assert not [w for w in WARNINGS if w in output], output[-3000:]
    print(f"restart took {took:.2f} s")

    # the new kernel starts pools again (a new fork server, a new tracker)
    kernel.ensure_ok(
        "import mpnb as mp\nwith mp.Pool(2) as pool:\n    assert pool.map(abs, [-1, -2]) == [1, 2]"
    )


def test_kernel_shutdown_is_quick_and_clean(make_kernel):
    kernel = make_kernel()
    kernel.ensure_ok(BUSY_KERNEL)
    children = set(kernel.children())
    started = time.monotonic()
    kernel.shutdown()
    took = time.monotonic() - started
    assert not leaks.wait_gone(children, GONE_WITHIN)
    output = kernel.terminal_output()
    assert not [w for w in WARNINGS if w in output], output[-3000:]
    print(f"shutdown took {took:.2f} s")


def test_killed_kernel_leaves_no_pool_worker(make_kernel):
    kernel = make_kernel()
    kernel.ensure_ok(
        "import mpnb as mp, time\npool = mp.Pool(2)\n"
        "busy = pool.map_async(time.sleep, [60] * 4)\n"
        "spawned = mp.get_context('spawn').Pool(1)\n"
        "spawned_busy = spawned.map_async(time.sleep, [60])"
    )
    children = set(kernel.children())
    kernel.restart(now=True)  # SIGKILL: no exit handler runs; the workers see it
    left = leaks.wait_gone(children, GONE_WITHIN)
    assert not left, leaks.describe(left)


SCRIPT = """
import os, pathlib, sys, time
import mpnb as mp

def sleeper(seconds):
    time.sleep(seconds)
    return seconds

def finish(path):
    time.sleep(0.5)
    pathlib.Path(path).write_text("done")

if __name__ == "__main__":
    for method in mp.get_all_start_methods():
        ctx = mp.get_context(method)
        pool = ctx.Pool(2)                       # never closed
        pool.map_async(sleeper, [60] * 4)
        daemon = ctx.Process(target=sleeper, args=(60,), daemon=True)
        daemon.start()
        ctx.Queue().put(1)
    # not daemonic: a script waits for it at exit, as with the standard library
    mp.Process(target=finish, args=(sys.argv[1],)).start()
    print("exiting", flush=True)
"""


@pytest.mark.core
def test_script_exit_stops_pools_and_daemons_and_waits_for_the_others(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    marker = tmp_path / "finished"
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(script), str(marker)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert out.stdout == "exiting\n"
    assert marker.read_text() == "done"
    assert not [w for w in WARNINGS if w in out.stderr], out.stderr
    print(f"script took {took:.2f} s")  # the leak check fails the test if anything is left


@pytest.mark.core
def test_interactive_exit_stops_every_process(tmp_path):
    code = textwrap.dedent("""
        import mpnb as mp, time
        pool = mp.Pool(2)
        busy = pool.map_async(time.sleep, [60] * 4)
        proc = mp.Process(target=time.sleep, args=(60,))
        proc.start()
        exit()
    """)
    out = run_terminal_ipython(code, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not [w for w in WARNINGS if w in out.stderr], out.stderr
