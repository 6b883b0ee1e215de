"""The kernel's interrupt (SIGINT to its process group) stops what the running cell
started and nothing else; a Manager proxy call interrupted midway leaves the proxy
usable; a kernel killed with SIGKILL leaves no process, and the next kernel removes its
temporary folder (never a live kernel's)."""

from __future__ import annotations

import os
import signal
import time

import leaks
import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

BACK_WITHIN = 30.0  # a hang guard, not a timing assertion
GONE_WITHIN = 10.0

SETUP = """
import mpnb as mp, os, pathlib, time
mp.set_start_method({method!r}, force=True)
marks = pathlib.Path({marks!r})

def producer(q):
    for i in range(600):
        q.put(i)
        print("tick", i, flush=True)
        time.sleep(0.1)

def own(name):
    (marks / name).touch()
    time.sleep(60)

class SlowKey:
    def __hash__(self):
        (marks / "hashing").touch()
        time.sleep(3)
        return 1
"""


def _wait_for(path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _interrupted(kernel, msg_id: str) -> None:
    kernel.interrupt()
    result = kernel.wait(msg_id, timeout=BACK_WITHIN)
    assert result.status == "error", result.stdout
    assert result.error.ename == "KeyboardInterrupt", result.error.text


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_interrupt_stops_only_the_running_cells_processes(make_kernel, tmp_path, method):
    kernel = make_kernel()
    kernel.ensure_ok(SETUP.format(method=method, marks=str(tmp_path)))
    kernel.ensure_ok("q = mp.Queue()\nprod = mp.Process(target=producer, args=(q,))\nprod.start()")
    assert kernel.evaluate("q.get(timeout=60)") == 0

    # this cell's own process gets the interrupt; the earlier cell's producer does not
    msg_id = kernel.submit(
        "mine = mp.Process(target=own, args=('mine',))\nmine.start()\nmine.join()"
    )
    _wait_for(tmp_path / "mine")
    _interrupted(kernel, msg_id)
    kernel.ensure_ok("mine.join(30)\nassert mine.exitcode == 1, mine")  # KeyboardInterrupt
    assert kernel.evaluate("prod.is_alive()") is True
    assert isinstance(kernel.evaluate("q.get(timeout=30)"), int)
    late = kernel.collect_iopub(timeout=3)
    assert any("tick" in m["content"].get("text", "") for m in late), "no later output"

    # a cell that only waits on the earlier cell's process stops waiting; it goes on
    msg_id = kernel.submit("prod.join()")
    time.sleep(1)
    _interrupted(kernel, msg_id)
    assert kernel.evaluate("prod.is_alive()") is True
    assert isinstance(kernel.evaluate("q.get(timeout=30)"), int)

    # Process.interrupt() still reaches it on purpose
    kernel.ensure_ok("prod.interrupt()\nprod.join(30)\nassert prod.exitcode == 1, prod")
    kernel.ensure_ok("q.close()")


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_manager_proxy_usable_after_interrupted_call(make_kernel, tmp_path, method):
    kernel = make_kernel()
    kernel.ensure_ok(SETUP.format(method=method, marks=str(tmp_path)))
    kernel.ensure_ok("m = mp.Manager()\nd = m.dict()\nd['a'] = 1")
    msg_id = kernel.submit("d[SlowKey()] = 'slow'")
    _wait_for(tmp_path / "hashing")
    _interrupted(kernel, msg_id)
    assert kernel.evaluate("d['a']") == 1
    assert kernel.evaluate("d.get('a')") == 1
    time.sleep(3)  # the interrupted call's reply has come by now, to a closed connection
    assert kernel.evaluate("sorted(k for k in d.keys() if isinstance(k, str))") == ["a"]
    kernel.ensure_ok("m.shutdown()")


def test_killed_kernel_leaves_nothing_and_next_kernel_removes_its_folder(make_kernel):
    kernel = make_kernel()
    kernel.ensure_ok(
        "import mpnb as mp, time\n"
        "proc = mp.Process(target=time.sleep, args=(120,))\nproc.start()\n"
        "m = mp.Manager()\nd = m.dict()\n"
        "pool = mp.Pool(2)\nbusy = pool.map_async(time.sleep, [120] * 4)\n"
        "q = mp.Queue()\nq.put(1)\nq.get(timeout=30)\n"
        "from mpnb.output import kernel as k\nfolder = k.current().relay._dir"
    )
    folder = kernel.evaluate("folder")
    sems = kernel.evaluate("[s._semlock.name for s in (q._rlock, q._wlock, q._sem)]")
    shm = {"sem." + name.lstrip("/") for name in sems}
    children = set(kernel.children())  # fork server and resource tracker included
    assert len(children) >= 6, children
    live = make_kernel()
    live.ensure_ok(
        "import mpnb as mp, time\np = mp.Process(target=time.sleep, args=(0,))\np.start()\n"
        "p.join()\nfrom mpnb.output import kernel as k\nfolder = k.current().relay._dir"
    )
    live_folder = live.evaluate("folder")
    # what a kernel killed with its resource tracker (a cgroup's OOM kill) would leave
    prefix = "__import__('mpnb._owner', fromlist=['_']).dir_prefix()"
    stray = os.path.join(leaks.SHM_DIR, kernel.evaluate(prefix) + "0123456789abcdef")
    live_stray = os.path.join(leaks.SHM_DIR, live.evaluate(prefix) + "0123456789abcdef")
    for path in (stray, live_stray):
        open(path, "wb").close()

    os.kill(kernel.kernel_pid, signal.SIGKILL)
    left = leaks.wait_gone(children, GONE_WITHIN)
    assert not left, leaks.describe(left)
    assert not shm & set(os.listdir(leaks.SHM_DIR)), "the dead kernel's semaphores"
    assert os.path.isdir(folder)

    nxt = make_kernel()
    nxt.ensure_ok("import mpnb")
    assert not os.path.exists(folder), folder
    assert os.path.isdir(live_folder), "a live kernel's folder was removed"
    assert not os.path.exists(stray), "a dead kernel's segment is left"
    assert os.path.exists(live_stray), "a live kernel's segment was removed"
    os.unlink(live_stray)


def test_restart_with_arrays_in_flight_prints_no_tracker_warning(make_kernel):
    pytest.importorskip("numpy")
    kernel = make_kernel()
    kernel.ensure_ok(
        "import mpnb as mp, numpy as np\n"
        "def send_big(q):\n"
        "    q.put(np.ones(1 << 21))\n"
        "to_child, from_child = mp.Queue(), mp.Queue()\n"
        "to_child.put(np.zeros(1 << 21))           # never received\n"
        "p = mp.Process(target=send_big, args=(from_child,))\n"
        "p.start()\np.join(60)\nassert p.exitcode == 0, p\n"
        "import os\n"
        "left = [n for n in os.listdir('/dev/shm') if n.startswith('mpnb-')]"
    )
    names = set(kernel.evaluate("left"))
    assert len(names) >= 2, names  # one each way, neither received
    kernel.restart()
    assert not names & set(os.listdir(leaks.SHM_DIR)), "segments left in /dev/shm"
    output = kernel.terminal_output()
    assert "leaked" not in output and "resource_tracker" not in output, output[-3000:]
