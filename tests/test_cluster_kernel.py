"""Pools on real Dask clusters, in a real kernel: a ``LocalCluster`` the pool owns
(``cluster="local"``) and a cluster of separate processes started from the command line
(``dask scheduler`` and two ``dask worker``), both on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.timeout(180)]

DASK = str(Path(sys.executable).with_name("dask"))


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes (one thread each, with
    their nannies), stopped at the end; yields the scheduler's address."""
    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    common = {"cwd": folder, "start_new_session": True, "stdout": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            stderr=subprocess.DEVNULL,
            **common,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        DASK,
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                    ],
                    stderr=subprocess.DEVNULL,
                    **common,
                )
            )
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        _stop(procs)


@pytest.fixture(scope="module", params=["local", "cli"])
def kernel(request, module_kernel):
    """The module's kernel with ``pool`` on one kind of cluster."""
    if request.param == "local":
        module_kernel.ensure_ok('import mpnb as mp\npool = mp.Pool(2, cluster="local")', 90)
    else:
        address = request.getfixturevalue("cli_cluster")
        module_kernel.ensure_ok(f"import mpnb as mp\npool = mp.Pool(cluster={address!r})", 60)
    yield module_kernel
    module_kernel.ensure_ok("pool.terminate()", 60)


def test_cell_functions_lambdas_and_classes_with_every_method(kernel):
    kernel.ensure_ok(
        "class Point:\n"
        "    def __init__(self, x):\n"
        "        self.x = x\n"
        "def double(x):\n"
        "    return Point(2 * x)\n"
        "got = []\n"
    )
    assert kernel.evaluate("[p.x for p in pool.map(double, range(5))]") == [0, 2, 4, 6, 8]
    assert kernel.evaluate("type(pool.apply(double, (1,))) is Point") is True
    assert kernel.evaluate("pool.map(lambda x: x + 1, range(3), progress=True)") == [1, 2, 3]
    assert kernel.evaluate("pool.starmap(lambda a, b: a * b, [(1, 2), (3, 4)])") == [2, 12]
    assert kernel.evaluate("list(pool.imap(lambda x: -x, range(4)))") == [0, -1, -2, -3]
    assert kernel.evaluate("sorted(pool.imap_unordered(abs, [-1, -2, 3]))") == [1, 2, 3]
    assert kernel.evaluate("pool.starmap_async(pow, [(2, 5)]).get(30)") == [32]
    assert kernel.evaluate(
        "r = pool.map_async(abs, [-4], callback=got.append)\nr.wait(30)\n(r.get(), got)"
    ) == ([4], [[4]])
    assert kernel.evaluate(
        "errs = []\nr = pool.apply_async(lambda: 1 / 0, error_callback=errs.append)\n"
        "r.wait(30)\n(r.successful(), type(errs[0]).__name__)"
    ) == (False, "ZeroDivisionError")


def test_random_results_are_never_cached(kernel):
    kernel.ensure_ok("import random\ndef draw(_):\n    return random.random()")
    assert kernel.evaluate("pool.map(draw, [0] * 4) != pool.map(draw, [0] * 4)") is True


def test_output_lands_in_the_cell_that_submitted_it_with_the_worker_address(kernel):
    kernel.ensure_ok("def talk(x):\n    print('said', x)\n    return x")
    result = kernel.ensure_ok("pool.map(talk, range(4), chunksize=1)")
    for i in range(4):
        assert f"said {i}\n" in result.stdout
    assert "[stdout:tcp://127.0.0.1:" in result.stdout
    late = kernel.ensure_ok(
        "import logging, time\n"
        "def later():\n"
        "    time.sleep(1)\n"
        "    logging.warning('late warning')\n"
        "    print('late line')\n"
        "r = pool.apply_async(later)"
    )
    other = kernel.ensure_ok("r.wait(30)\n'next cell'")
    assert "late line" not in other.stdout and "late warning" not in other.stderr
    seen = [(name, parent) for name, text, parent in other.streams if "late" in text]
    seen += [(n, p) for n, t, p in late.streams if "late" in t]
    assert ("stdout", late.msg_id) in seen and ("stderr", late.msg_id) in seen


def test_an_exception_comes_back_with_its_type_and_cell_lines(kernel):
    kernel.ensure_ok("def bad(x):\n    return 1 / (x - 2)")
    result = kernel.execute("pool.map(bad, range(4), chunksize=1)")
    assert result.error.ename == "ZeroDivisionError"
    text = result.error.text
    assert "item 2 of the map, bad(2)" in text and "pool worker tcp://127.0.0.1:" in text
    assert "Cell In[" in text and "return 1 / (x - 2)" in text


@pytest.mark.parametrize("how", ["os._exit(3)", "os.kill(os.getpid(), 9)"])
def test_a_worker_that_dies_fails_its_task_and_the_others_are_kept(kernel, how):
    kernel.ensure_ok(
        "import os, time\n"
        "def fragile(x):\n"
        "    time.sleep(0.2)\n"
        f"    if x == 3:\n        {how}\n"
        "    return x\n"
    )
    got = kernel.evaluate(
        "rs = [pool.apply_async(fragile, (i,)) for i in range(6)]\n"
        "out = []\n"
        "for r in rs:\n"
        "    try:\n"
        "        out.append(r.get(60))\n"
        "    except mp.WorkerCrashedError as e:\n"
        "        out.append((e.worker.startswith('tcp://127.0.0.1:'), 'fragile(3)' in str(e)))\n"
        "out",
        timeout=90,
    )
    assert got == [0, 1, 2, (True, True), 4, 5]
    result = kernel.execute("pool.map(fragile, range(5), chunksize=1)", timeout=90)
    assert result.error.ename == "WorkerCrashedError"
    assert "(item 3)" in result.error.evalue
    # The timeline of that map: a lane per worker process, named by its address; the
    # crashed item marked.
    tl = kernel.evaluate(
        "tl = pool.timeline(last_run=True)\n"
        "sorted((t.item, t.outcome, t.lane.startswith('tcp://127.0.0.1:'), t.end >= t.start)"
        " for t in tl.tasks)"
    )
    assert (3, "crashed", True, True) in tl
    assert {(item, outcome) for item, outcome, _, _ in tl} <= {
        *((i, "ok") for i in range(5)),
        (3, "crashed"),
    }
    assert all(named and ordered for _, _, named, ordered in tl)
    kernel.ensure_ok("client = pool.client\nclient.wait_for_workers(2, timeout=60)", 90)
    assert kernel.evaluate("pool.map(abs, [-1, -2])") == [1, 2]


def test_an_interrupt_cancels_the_map_and_the_next_one_works(kernel):
    kernel.ensure_ok("import time\ndef slow(x):\n    time.sleep(0.3)\n    return x")
    msg_id = kernel.submit("pool.map(slow, range(40), chunksize=1)")
    time.sleep(2)
    kernel.interrupt()
    result = kernel.wait(msg_id, timeout=30)
    assert result.error.ename == "KeyboardInterrupt"
    assert kernel.evaluate("pool.map(slow, range(4), chunksize=1)") == [0, 1, 2, 3]


def test_the_executor_on_the_cluster(kernel):
    assert kernel.evaluate(
        "with mp.ProcessPoolExecutor(cluster=pool.client) as ex:\n"
        "    out = (ex.submit(lambda a: a * 3, 2).result(), list(ex.map(abs, [-1, -5])))\n"
        "out"
    ) == (6, [1, 5])


def test_mp_pool_magics_on_the_cluster(kernel, request):
    address = (
        "local" if "local" in request.node.callspec.id else request.getfixturevalue("cli_cluster")
    )
    kernel.ensure_ok("%load_ext mpnb")
    result = kernel.ensure_ok(
        f"%%mp_pool -n 2 --cluster {address} --no-progress for x in range(4)\n"
        "print('item', x)\nx * 10",
        90,
    )
    assert kernel.evaluate("mp_results") == [0, 10, 20, 30]
    assert "item 3" in result.stdout and "[stdout:tcp://127.0.0.1:" in result.stdout
    view = kernel.ensure_ok("%mp_pool", 60)
    assert "on the Dask cluster" in (view.result or "")
    kernel.ensure_ok("%mp_pool --cluster here", 60)
    kernel.ensure_ok(f"%mp_pool -n 2 --cluster {address}", 90)
    kernel.ensure_ok("%%mp_pool for y in [1, 2]\ny + 1", 60)
    assert kernel.evaluate("mp_results") == [2, 3]
    kernel.ensure_ok("%mp_pool --shutdown", 60)


def test_the_monitor_lists_the_clusters_workers(kernel):
    kernel.ensure_ok("pool.map(abs, range(8), chunksize=1)")
    text = kernel.evaluate(
        "from mpnb.dashboard import sampler, views\nviews.render_text(sampler.Sampler().sample())"
    )
    lines = [ln for ln in text.splitlines() if ln.startswith("tcp://127.0.0.1:")]
    assert len(lines) == 2, text
    assert sum(int(ln.split()[-1]) for ln in lines) >= 8


def test_an_unfinished_line_is_sent_while_the_task_runs(kernel):
    first = kernel.ensure_ok(
        "import sys, time\n"
        "def ticking():\n"
        "    print('tick', end='')\n"
        "    time.sleep(3)\n"
        "    return 'tock'\n"
        "r = pool.apply_async(ticking)"
    )
    second = kernel.ensure_ok("time.sleep(1.5)")
    seen = [(t, p) for _, t, p in first.streams + second.streams if "tick" in t]
    assert seen and all(p == first.msg_id for _, p in seen)
    assert kernel.evaluate("r.get(30)") == "tock"


def test_an_interrupted_long_task_does_not_hold_the_next_map(kernel, request):
    if "local" not in request.node.callspec.id:
        pytest.skip("a worker is restarted only on a cluster the pool owns")
    kernel.ensure_ok("import time\ndef stuck(x):\n    time.sleep(120)\n    return x")
    msg_id = kernel.submit("pool.map(stuck, range(2), chunksize=1)")
    time.sleep(2)
    kernel.interrupt()
    assert kernel.wait(msg_id, timeout=30).error.ename == "KeyboardInterrupt"
    # Without the restart of the busy workers, this would wait for the sleeps to end.
    assert kernel.evaluate("pool.map(abs, [-1, -2, -3], chunksize=1)", timeout=60) == [1, 2, 3]


def test_a_large_read_only_array_is_scattered_once_and_a_changed_one_is_sent_anew(kernel):
    kernel.ensure_ok(
        "import numpy as np\n"
        "big = np.ones(300_000)\n"
        "big.flags.writeable = False\n"
        "first = float(pool.apply(np.sum, (big,)))\n"
        "key = pool._scattered[id(big)][1].key\n"
        "second = [float(v) for v in pool.map(np.sum, [big, big], chunksize=1)]\n"
        "mutable = np.zeros(300_000)\n"
        "before = float(pool.apply(np.sum, (mutable,)))\n"
        "mutable += 1\n"
        "after = float(pool.apply(np.sum, (mutable,)))\n"
    )
    assert kernel.evaluate("(first, second, pool._scattered[id(big)][1].key == key)") == (
        300_000.0,
        [300_000.0, 300_000.0],
        True,
    )
    assert kernel.evaluate("(before, after, id(mutable) in pool._scattered)") == (
        0.0,
        300_000.0,
        False,
    )


def test_a_crash_inside_a_chunk_names_the_item(kernel):
    kernel.ensure_ok(
        "import os, time\n"
        "def late_death(x):\n"
        "    time.sleep(0.3)\n"
        "    if x == 6:\n"
        "        os._exit(5)\n"
        "    return x\n"
    )
    result = kernel.execute("pool.map(late_death, range(8), chunksize=4)", timeout=90)
    assert result.error.ename == "WorkerCrashedError"
    assert "late_death(6) (item 6)" in result.error.evalue
    kernel.ensure_ok("pool.client.wait_for_workers(2, timeout=60)", 90)


@pytest.mark.parametrize("now", [False, True], ids=["shutdown", "killed"])
def test_an_open_local_cluster_does_not_outlive_its_kernel(make_kernel, now):
    import leaks

    before = leaks.shm_entries()
    other = make_kernel()
    other.ensure_ok(
        'import mpnb as mp\npool = mp.Pool(2, cluster="local")\nassert pool.map(abs, [-1]) == [1]',
        90,
    )
    assert len(other.children()) >= 2  # the two workers (and what they started)
    if now:
        other.shutdown(now=True)  # SIGKILL: no atexit, no finalizer
    other.close()  # fails if a process the kernel had is still alive
    left = leaks.shm_entries() - before
    if now:
        # Jupyter kills a kernel with SIGKILL to its whole process group, which takes the
        # standard library's resource tracker with it: the named semaphores Dask's
        # nannies and workers registered there stay (the README says so). Nothing else.
        assert all(name.startswith("sem.mp-") for name in left), left
        for name in left:
            os.unlink(os.path.join("/dev/shm", name))
    else:
        assert not left, f"left in /dev/shm by a kernel that shut down: {sorted(left)}"
