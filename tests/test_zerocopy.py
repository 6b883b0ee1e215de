"""Large buffers out of band through shared memory: task arguments reused while unchanged
and never stale, results and views, pandas frames, arrays living in shared memory, and
no segment left behind (the suite's leak check, and the explicit ones here)."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys

import pytest

import mpnb
from mpnb import _pickle
from mpnb._pickle import buffers, sharedmem

np = pytest.importorskip("numpy")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm"),
]

N = 300_000  # 2.4 MB of float64: above the out-of-band threshold


def _ours(name: str) -> bool:
    """Made here or by a process now gone (a worker): not another test run's, live."""
    try:
        pid = int(name.split("-")[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def _segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("mpnb-") and _ours(n)}


@pytest.fixture
def no_segment_left():
    before = _segments()
    yield
    gc.collect()
    assert _segments() <= before, "segments left in /dev/shm"


# -- tasks ------------------------------------------------------------------------------


def total(a):
    return float(a.sum())


def first_rows(a):
    return a[10:]  # a view of the argument


def transposed(a):
    return a.T


def every_other(a):
    return a[::2]


def itself(a):
    return a


def flags(a):
    return bool(a.flags.writeable), bool(a.flags.c_contiguous)


def frame_back(df):
    return df


def frame_sums(df):
    return df.select_dtypes("number").sum().tolist()


def fill_row(args):
    shared, i = args
    shared[i, :] = i
    return float(shared[i].sum())


def read_cell(args):
    shared, i = args
    return float(shared[i, 0])


def crash(a):
    os._exit(3)


# -- the payload ------------------------------------------------------------------------


@pytest.mark.core
def test_contiguous_arrays_go_out_of_band_and_strided_or_object_in_band(no_segment_left):
    big = np.arange(N, dtype=np.float64)
    framed = _pickle.dumps(big)
    assert len(framed) < 1000
    assert isinstance(pickle.loads(framed), np.ndarray)
    fortran = np.asfortranarray(big.reshape(600, 500))
    assert np.array_equal(pickle.loads(_pickle.dumps(fortran)), fortran)
    strided = big[::2]
    assert len(_pickle.dumps(strided)) > strided.nbytes
    objects = np.array([str(i) for i in range(N // 4)], dtype=object)
    before = _segments()
    assert len(_pickle.dumps(objects)) > N // 4
    assert _segments() == before
    assert list(pickle.loads(_pickle.dumps(objects))) == list(objects)


@pytest.mark.core
def test_a_one_shot_segment_is_writable_if_the_array_was(no_segment_left):
    big = np.ones(N)
    back = pickle.loads(_pickle.dumps(big))
    assert back.flags.writeable
    back[0] = 5  # the receiver's own memory: the sender's array is untouched
    assert big[0] == 1
    big.flags.writeable = False
    assert not pickle.loads(_pickle.dumps(big)).flags.writeable


# -- reuse, never stale -----------------------------------------------------------------


@pytest.mark.core
def test_an_unchanged_argument_reuses_its_segment_a_changed_one_does_not(no_segment_left):
    big = np.random.default_rng(0).random(N)
    with mpnb.get_context("fork").Pool(1) as pool:
        assert pool.apply(total, (big,)) == big.sum()
        first = set(buffers.live_segments())
        assert len(first) == 1
        assert pool.apply(total, (big,)) == big.sum()
        assert set(buffers.live_segments()) == first  # reused
        big[N // 2] += 1.0  # in place
        assert pool.apply(total, (big,)) == big.sum()
        assert set(buffers.live_segments()) != first
        big[-1] = 7.0
        assert pool.apply(total, (big,)) == big.sum()
        assert pool.apply(flags, (big,)) == (False, True)  # arguments arrive read-only
    del big
    gc.collect()
    assert buffers.live_segments() == []


@pytest.mark.core
def test_a_read_only_view_of_a_changed_array_is_sent_anew(no_segment_left):
    base = np.zeros(N)
    view = base[: N // 2]
    view.flags.writeable = False
    with mpnb.get_context("fork").Pool(1) as pool:
        assert pool.apply(total, (view,)) == 0.0
        base[0] = 3.0  # through the writable owner
        assert pool.apply(total, (view,)) == 3.0
        view2 = base[: N // 2]  # another view of the same memory
        base[1] = 4.0
        assert pool.apply(total, (view2,)) == 7.0


def test_reuse_within_one_map_and_across_start_methods(ctx, no_segment_left):
    big = np.arange(N, dtype=np.float64)
    with ctx.Pool(2) as pool:
        assert pool.map(total, [big] * 4, chunksize=1) == [big.sum()] * 4
        big *= 2
        assert pool.map(total, [big] * 4, chunksize=1) == [big.sum()] * 4


# -- results ----------------------------------------------------------------------------


def test_results_that_are_views_of_arguments(ctx, no_segment_left):
    big = np.arange(N, dtype=np.float64).reshape(600, 500)
    with ctx.Pool(1) as pool:
        assert np.array_equal(pool.apply(first_rows, (big,)), big[10:])
        assert np.array_equal(pool.apply(transposed, (big,)), big.T)
        assert np.array_equal(pool.apply(every_other, (big,)), big[::2])
        back = pool.apply(itself, (big,))
        assert np.array_equal(back, big) and back.flags.writeable
        back[0, 0] = -1  # the result is the caller's own
        assert big[0, 0] == 0
        big[1, 1] = -2  # and an argument changed later is sent anew
        assert np.array_equal(pool.apply(itself, (big,)), big)


# -- pandas -----------------------------------------------------------------------------


def test_dataframes_with_mixed_dtypes(ctx, no_segment_left):
    pd = pytest.importorskip("pandas")
    n = N
    df = pd.DataFrame(
        {
            "x": np.arange(n, dtype=np.float64),
            "y": np.arange(n, dtype=np.int64),
            "name": [f"row{i}" for i in range(n)],
        }
    )
    payload = _pickle.dumps(df)
    assert len(payload) < df.memory_usage(deep=True).sum() - 2 * n * 8  # numbers out of band
    assert pickle.loads(payload).equals(df)
    with ctx.Pool(1) as pool:
        assert pool.apply(frame_sums, (df,)) == [float(df.x.sum()), int(df.y.sum())]
        back = pool.apply(frame_back, (df,))
        assert back.equals(df)
        df.loc[5, "x"] = -1.0  # in place, then sent again
        assert pool.apply(frame_sums, (df,))[0] == float(df.x.sum())
        series = df["x"]
        payload = _pickle.dumps(series)
        assert len(payload) < series.nbytes // 2  # its values out of band
        assert pickle.loads(payload).equals(series)
        assert pool.apply(total, (series,)) == float(series.sum())
        assert pool.apply(itself, (series,)).equals(series)


# -- arrays in shared memory ------------------------------------------------------------


def test_shared_array_is_read_and_written_by_several_tasks(ctx, no_segment_left):
    shared = mpnb.shared_array((8, 1000))
    assert shared.dtype == np.float64 and not shared.any()
    with ctx.Pool(2) as pool:
        sums = pool.map(fill_row, [(shared, i) for i in range(8)], chunksize=1)
        assert sums == [1000.0 * i for i in range(8)]
        assert np.array_equal(shared[:, 0], np.arange(8.0))  # the tasks' writes, seen here
        shared[3, 0] = 42.0
        assert pool.apply(read_cell, ((shared, 3),)) == 42.0  # and the parent's, there
        view = shared[2:4]
        assert pool.apply(read_cell, ((view, 1),)) == 42.0
    p = ctx.Process(target=fill_row, args=((shared, 7),))
    shared[7] = 0
    p.start()
    p.join(30)
    assert p.exitcode == 0 and shared[7, 999] == 7.0
    names = sharedmem.owned_segments()
    assert len(names) == 1
    del shared, view
    gc.collect()
    assert sharedmem.owned_segments() == []


@pytest.mark.core
def test_shared_like_copies_and_sends_no_bytes(no_segment_left):
    source = np.arange(N, dtype=np.int32).reshape(300, 1000)
    shared = mpnb.shared_like(source)
    assert np.array_equal(shared, source) and shared.dtype == np.int32
    assert len(_pickle.dumps(shared)) < 500
    again = pickle.loads(_pickle.dumps(shared[5:]))
    again[0, 0] = -9  # the same memory
    assert shared[5, 0] == -9
    del again, shared
    gc.collect()
    assert sharedmem.owned_segments() == []


@pytest.mark.core
def test_shared_array_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="dtype=.*object"):
        mpnb.shared_array(3, dtype=object)
    with pytest.raises(TypeError, match="dtype="):
        mpnb.shared_array(3, dtype=str)
    with pytest.raises(TypeError, match="dtype="):
        mpnb.shared_array(3, dtype="not a dtype")
    with pytest.raises(ValueError, match="shape=.*negative"):
        mpnb.shared_array((3, -1))
    with pytest.raises(TypeError, match="shape=.*integer"):
        mpnb.shared_array(2.5)
    with pytest.raises(TypeError, match="a.dtype="):
        mpnb.shared_like(np.array(["a", "b"], dtype=object))


# -- crashes and leaks ------------------------------------------------------------------


@pytest.mark.core
def test_a_crashed_worker_leaves_no_segment(no_segment_left):
    big = np.ones(N)
    shared = mpnb.shared_array(N)
    with mpnb.get_context("forkserver").Pool(1) as pool:
        with pytest.raises(mpnb.WorkerCrashedError):
            pool.apply(crash, (big,))
        with pytest.raises(mpnb.WorkerCrashedError):
            pool.apply(crash, (shared,))
        assert pool.apply(total, (big,)) == N  # the pool goes on
    del big, shared


@pytest.mark.core
def test_numpy_stays_unimported_without_numpy_objects():
    code = (
        "import sys, mpnb\n"
        "if __name__ == '__main__':\n"
        "    with mpnb.Pool(1) as pool:\n"
        "        assert pool.map(abs, [-1, -2]) == [1, 2]\n"
        "    q = mpnb.Queue(); q.put(b'x' * (2 << 20)); assert len(q.get()) == 2 << 20\n"
        "    print('numpy' in sys.modules, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "False"], out.stderr


@pytest.mark.core
def test_a_full_dev_shm_sends_task_arguments_in_band(monkeypatch, no_segment_left):
    import errno

    def no_space(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    big = np.arange(N, dtype=np.float64)
    payload = _pickle.dumps(big)
    assert len(payload) > big.nbytes
    with mpnb.get_context("fork").Pool(1) as pool:
        assert pool.apply(total, (big,)) == big.sum()
    assert buffers.live_segments() == []


# -- a killed kernel --------------------------------------------------------------------

KERNEL_CODE = """
import mpnb as mp, numpy as np, os
shared = mp.shared_array((1000, 100))
big = np.ones(400_000)
pool = mp.Pool(1)
assert pool.apply(np.sum, (big,)) == 400_000
pool.starmap(np.copyto, [(shared[i], 1.0) for i in range(2)])
assert shared[:2].sum() == 200
names = sorted(n for n in os.listdir('/dev/shm') if n.startswith('mpnb-%d-' % os.getpid()))
"""


@pytest.mark.kernel
@pytest.mark.timeout(180)
def test_segments_of_a_killed_kernel_are_removed_by_the_next(make_kernel):
    kernel = make_kernel()
    kernel.ensure_ok(KERNEL_CODE)
    names = set(kernel.evaluate("names"))
    assert len(names) == 2, names  # the shared array's and the argument's
    assert names <= set(os.listdir("/dev/shm"))
    kernel.restart(now=True)  # SIGKILL: nothing of the kernel's own runs
    # The resource tracker may remove them as it sees the kernel gone, or not yet (a
    # tracker killed too): the next kernel to load mpnb removes what is left.
    kernel.ensure_ok("import mpnb")
    assert not names & set(os.listdir("/dev/shm"))


def sum_into(a, q):
    q.put((float(a.sum()), bool(a.flags.writeable), a[5:]))


def test_process_arguments_and_queue_items_out_of_band(ctx, no_segment_left):
    big = np.arange(N, dtype=np.float64)
    q = ctx.Queue()
    p = ctx.Process(target=sum_into, args=(big, q))
    p.start()
    total_, writable, tail = q.get(timeout=60)  # a view, sent back through the queue
    p.join(30)
    assert p.exitcode == 0
    assert total_ == big.sum() and np.array_equal(tail, big[5:]) and tail.flags.writeable
    if ctx.get_start_method() != "fork":  # fork pickles nothing at start
        assert writable
    q.close()
    q.join_thread()


def pid_and_total(a):
    return os.getpid(), float(a.sum())


@pytest.mark.core
def test_an_idle_worker_lets_go_of_a_segment_its_sender_removed(no_segment_left):
    import time

    big = np.ones(N)
    with mpnb.get_context("forkserver").Pool(1) as pool:
        pid, _ = pool.apply(pid_and_total, (big,))
        (name,) = buffers.live_segments()
        time.sleep(buffers._PRUNE_EVERY * 2)
        with open(f"/proc/{pid}/maps") as f:
            assert name in f.read()  # kept mapped for the next send, the task long done
        del big
        gc.collect()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{pid}/maps") as f:
                if name not in f.read():
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the idle worker still maps the removed segment")


def drop_everything(_):
    """What a forked child exiting normally runs (``atexit``), with nothing of its own."""
    gc.collect()
    count = len(buffers.live_segments()) + len(sharedmem.owned_segments())
    buffers._release_all()
    sharedmem._release_all()
    return count


@pytest.mark.core
def test_a_forked_child_never_removes_its_parents_segments(no_segment_left):
    big = np.ones(N)
    shared = mpnb.shared_array(N)
    with mpnb.get_context("fork").Pool(1) as pool:
        assert pool.apply(total, (big,)) == N
        kept = {n.lstrip("/") for n in buffers.live_segments() + sharedmem.owned_segments()}
        assert len(kept) == 2
        with mpnb.get_context("fork").Pool(1) as forked:  # inherits this process's state
            assert forked.apply(drop_everything, (0,)) == 0
        assert kept <= _segments()
        assert pool.apply(total, (big,)) == N and pool.apply(total, (shared,)) == 0
    del big, shared


@pytest.mark.core
def test_a_full_dev_shm_first_drops_segments_kept_only_for_reuse(monkeypatch, no_segment_left):
    import errno

    first = np.arange(N, dtype=np.float64)
    second = first * 2
    with mpnb.get_context("fork").Pool(1) as pool:
        assert pool.apply(total, (first,)) == first.sum()
        (kept,) = buffers.live_segments()  # first's, for reuse, no task pending
        real_pwrite = os.pwrite
        calls = []

        def full_once(fd, data, offset):
            calls.append(offset)
            if len(calls) == 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(os, "pwrite", full_once)
        assert pool.apply(total, (second,)) == second.sum()
        monkeypatch.undo()
        assert kept not in buffers.live_segments()  # made room...
        assert len(buffers.live_segments()) == 1  # ...and second went out of band
        assert pool.apply(total, (first,)) == first.sum()  # first is sent anew
    del first, second
