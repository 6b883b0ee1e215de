"""The drop-in API: names, contexts, start methods, and every family of objects that
crosses a process boundary, with code defined as a cell defines it."""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import pickle
import sqlite3
import subprocess
import sys
import threading
import types

import pytest
from cells import cell

import mpnb

pytestmark = [pytest.mark.core, pytest.mark.timeout(90)]

CODE = """
import mpnb, ctypes
offset = 10

def add_offset(x):
    return x + offset

def make_adder(n):
    def adder(x):
        return x + n
    return adder

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def norm2(self):
        return self.x * self.x + self.y * self.y

class CellError(Exception):
    pass

def fail(x):
    raise CellError(f"bad {x}")

class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int), ("b", ctypes.c_double)]

def put_point(q, x):
    q.put(Point(x, x + 1))

def send_point(conn, x):
    conn.send(Point(x, 2 * x))
    conn.close()

def relay(q_in, q_out):
    obj = q_in.get()
    q_out.put((type(obj).__name__, obj.norm2(), obj))

def bump_pair(pair, arr):
    with pair.get_lock():
        pair.a += 1
        pair.b *= 2
    for i in range(len(arr)):
        arr[i] = arr[i] * 10

def use_joinable(q):
    while True:
        item = q.get()
        q.task_done()
        if item is None:
            break

class Counter:
    def __init__(self):
        self.n = 0
    def inc(self, by=1):
        self.n += by
        return self.n
    def point(self):
        return Point(self.n, 0)

def init_worker(value):
    global worker_value
    worker_value = value

def read_worker_value(_):
    return worker_value
"""


@pytest.fixture(scope="module")
def c() -> types.SimpleNamespace:
    return cell(CODE)


# -- the drop-in surface -----------------------------------------------------------------


def test_every_public_name_of_multiprocessing_is_there():
    public = {
        n
        for n in dir(multiprocessing)
        if not n.startswith("_") and not isinstance(getattr(multiprocessing, n), types.ModuleType)
    }
    missing = sorted(public - set(dir(mpnb)))
    assert missing == []
    for name in ("reduction", "util", "spawn", "resource_tracker", "synchronize"):
        assert getattr(mpnb, name) is sys.modules[f"multiprocessing.{name}"]


def test_submodules_users_import_from():
    import mpnb.dummy
    import mpnb.shared_memory

    import mpnb.connection
    import mpnb.managers
    import mpnb.pool
    import mpnb.sharedctypes

    assert mpnb.shared_memory.SharedMemory is multiprocessing.shared_memory.SharedMemory
    assert set(mpnb.sharedctypes.__all__) == set(multiprocessing.sharedctypes.__all__)
    assert callable(mpnb.dummy.Pool) and callable(mpnb.connection.wait)
    assert issubclass(mpnb.managers.SyncManager, multiprocessing.managers.SyncManager)


def test_start_methods_behave_as_the_stdlib():
    methods = mpnb.get_all_start_methods()
    assert set(methods) == set(multiprocessing.get_all_start_methods())
    expected_default = "forkserver" if sys.platform.startswith("linux") else "spawn"
    assert methods[0] == expected_default
    for method in methods:
        ctx = mpnb.get_context(method)
        assert ctx.get_start_method() == method
        assert ctx.Process._start_method == method
        with pytest.raises(ValueError):
            ctx.set_start_method("spawn")
    with pytest.raises(ValueError, match="cannot find context"):
        mpnb.get_context("threads")


def test_set_start_method_is_mpnb_only():
    stdlib_before = multiprocessing.get_start_method(allow_none=True)
    mpnb_before = mpnb.get_start_method(allow_none=True)
    try:
        mpnb.set_start_method("spawn", force=True)
        assert mpnb.get_start_method() == "spawn"
        with pytest.raises(RuntimeError, match="already been set"):
            mpnb.set_start_method("fork")
        assert multiprocessing.get_start_method(allow_none=True) == stdlib_before
    finally:
        mpnb.set_start_method(mpnb_before, force=True)


def test_importing_mpnb_changes_nothing_global():
    code = (
        "import multiprocessing.reduction as r, multiprocessing as m\n"
        "import multiprocessing.process as mpp, multiprocessing.pool as mpl\n"
        "import concurrent.futures.process as cfp\n"
        "def state():\n"
        "    return (r.ForkingPickler.__dict__['dumps'], r.dump, m.get_start_method(True),\n"
        "            dict(vars(mpp.BaseProcess)), dict(vars(mpl.Pool)),\n"
        "            dict(vars(cfp.ProcessPoolExecutor)))\n"
        "before = state()\n"
        "import mpnb\n"
        "after = state()\n"
        "assert before == after, (before, after)\n"
        "print('unchanged')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "unchanged", out.stderr


# -- cell-defined code through every family ----------------------------------------------


def test_pool_functions_lambdas_closures_and_classes(ctx, c):
    with ctx.Pool(2) as pool:
        assert pool.map(c.add_offset, range(4)) == [10, 11, 12, 13]
        assert pool.map(lambda x: x * 3, [1, 2]) == [3, 6]
        assert pool.apply(c.make_adder(5), (1,)) == 6
        points = pool.starmap(c.Point, [(1, 2), (3, 4)])
    assert all(isinstance(p, c.Point) for p in points)
    assert [p.norm2() for p in points] == [5, 25]


def test_pool_initializer_globals_are_visible_to_later_tasks(ctx, c):
    with ctx.Pool(2, initializer=c.init_worker, initargs=("ready",)) as pool:
        assert pool.map(c.read_worker_value, range(4)) == ["ready"] * 4


def test_cell_defined_exception_is_caught_in_the_parent(ctx, c):
    with ctx.Pool(1) as pool:
        with pytest.raises(c.CellError, match="bad 3"):
            pool.apply(c.fail, (3,))


def test_process_target_args_and_queue_back(ctx, c):
    q = ctx.Queue()
    p = ctx.Process(target=c.put_point, args=(q, 5))
    p.start()
    point = q.get(timeout=30)
    p.join(30)
    assert isinstance(point, c.Point) and (point.x, point.y) == (5, 6)
    assert p.exitcode == 0


def test_process_subclass_defined_in_a_cell(ctx):
    ns = cell(f"""
        import mpnb
        class Squarer(mpnb.get_context({ctx.get_start_method()!r}).Process):
            def __init__(self, q, n):
                super().__init__()
                self.q, self.n = q, n
            def run(self):
                self.q.put(self.n * self.n)
    """)
    q = ctx.Queue()
    p = ns.Squarer(q, 7)
    p.start()
    assert q.get(timeout=30) == 49
    p.join(30)
    assert p.exitcode == 0
    assert p.name.startswith("Squarer-")


def test_pipe_both_directions(ctx, c):
    parent_end, child_end = ctx.Pipe()
    p = ctx.Process(target=c.send_point, args=(child_end, 4))
    p.start()
    child_end.close()
    point = parent_end.recv()
    p.join(30)
    assert isinstance(point, c.Point) and point.norm2() == 80
    a, b = ctx.Pipe()
    a.send(c.make_adder(2))
    assert b.recv()(1) == 3


def test_child_to_child_through_queues(ctx, c):
    q_in, q_out = ctx.Queue(), ctx.Queue()
    consumer = ctx.Process(target=c.relay, args=(q_in, q_out))
    producer = ctx.Process(target=c.put_point, args=(q_in, 2))
    consumer.start()
    producer.start()
    name, norm2, obj = q_out.get(timeout=30)
    producer.join(30)
    consumer.join(30)
    assert (name, norm2) == ("Point", 13)
    assert isinstance(obj, c.Point)


def test_simple_and_joinable_queues(ctx, c):
    sq = ctx.SimpleQueue()
    sq.put(c.make_adder(1))
    assert sq.get()(1) == 2
    jq = ctx.JoinableQueue()
    p = ctx.Process(target=c.use_joinable, args=(jq,))
    p.start()
    for item in (c.Point(1, 1), lambda: 1, None):
        jq.put(item)
    jq.join()
    p.join(30)
    assert p.exitcode == 0


def test_value_and_array_with_a_cell_structure(ctx, c):
    pair = ctx.Value(c.Pair, 1, 1.5)
    arr = ctx.Array("i", [1, 2, 3])
    p = ctx.Process(target=c.bump_pair, args=(pair, arr))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert (pair.a, pair.b) == (2, 3.0)
    assert list(arr) == [10, 20, 30]


def test_manager_proxies_carry_cell_objects(ctx, c):
    with ctx.Manager() as manager:
        d = manager.dict()
        d["f"] = c.make_adder(3)
        d["p"] = c.Point(1, 2)
        assert d["f"](1) == 4
        assert isinstance(d["p"], c.Point)
        shared = manager.list()
        p = ctx.Process(target=c.put_point, args=(shared_queue := manager.Queue(), 9))
        p.start()
        point = shared_queue.get(timeout=30)
        p.join(30)
        shared.append(point)
        assert isinstance(shared[0], c.Point) and shared[0].x == 9


def test_custom_manager_registering_a_cell_class(ctx, c):
    ns = cell("""
        import mpnb.managers
        class CounterManager(mpnb.managers.BaseManager):
            pass
    """)
    ns.CounterManager.register("Counter", c.Counter)
    with ns.CounterManager(ctx=ctx) as manager:
        counter = manager.Counter()
        assert counter.inc() == 1
        assert counter.inc(by=4) == 5
        point = counter.point()
    assert isinstance(point, c.Point) and point.x == 5


def test_importable_objects_still_go_by_reference():
    import math

    from mpnb import _pickle

    stdlib = mpnb.reduction.ForkingPickler
    for obj in (math.sqrt, {"a": [1, 2.0, "x"]}, _pickle.Pickler, mpnb.Process):
        assert bytes(_pickle.dumps(obj)) == bytes(stdlib.dumps(obj, _pickle.PROTOCOL))


# -- what cannot be sent -------------------------------------------------------------------

UNSENDABLE = [
    pytest.param(
        lambda: (1, {"conn": sqlite3.connect(":memory:")}),
        "args[1]['conn']",
        "sqlite3.Connection",
        "database path",
        id="sqlite3",
    ),
    pytest.param(
        lambda: (open(__file__),), "args[0]", "TextIOWrapper", "file's path", id="open-file"
    ),
    pytest.param(lambda: ((x for x in "ab"),), "args[0]", "generator", "list(gen)", id="generator"),
    pytest.param(lambda: (threading.Lock(),), "args[0]", "lock", "mpnb.Lock()", id="thread-lock"),
]


@pytest.mark.parametrize("make_args, path, type_name, advice", UNSENDABLE)
def test_unsendable_argument_fails_at_start_naming_it(make_args, path, type_name, advice):
    ctx = mpnb.get_context("spawn")
    args = make_args()
    p = ctx.Process(target=print, args=args)
    try:
        with pytest.raises(mpnb.SerializationError) as info:
            p.start()
    finally:
        for arg in args:
            for obj in arg.values() if isinstance(arg, dict) else [arg]:
                getattr(obj, "close", lambda: None)()
    message = str(info.value)
    assert path in message and type_name in message and advice in message
    assert info.value.path == path
    assert isinstance(info.value, (TypeError, pickle.PicklingError))
    assert p.pid is None and mpnb.active_children() == []


def test_unsendable_globals_and_closures_are_named():
    with open(__file__) as log:
        ns = cell("""
            def make():
                lines = (n for n in range(3))
                def use():
                    return next(lines)
                return use
            def read():
                return log.read()
        """)
        ns.read.__globals__["log"] = log
        ctx = mpnb.get_context("spawn")
        with pytest.raises(mpnb.SerializationError, match=r"target.__globals__\['log'\]"):
            ctx.Process(target=ns.read).start()
        with pytest.raises(mpnb.SerializationError, match=r"target.<closure 'lines'>"):
            ctx.Process(target=ns.make()).start()
    assert mpnb.active_children() == []


def test_unsendable_queue_item_fails_at_put(ctx):
    q = ctx.Queue()
    with pytest.raises(mpnb.SerializationError, match="the item"):
        q.put(threading.Lock())
    q.put(1)
    assert q.get(timeout=10) == 1
    q.close()
    q.join_thread()


def test_ctypes_structure_is_plain_ctypes():
    assert issubclass(cell(CODE).Pair, ctypes.Structure)


# -- large arrays ---------------------------------------------------------------------------


def _psm_entries() -> set[str]:
    import os

    return {n for n in os.listdir("/dev/shm") if n.startswith(("psm_", "mpnb-"))}


@pytest.mark.skipif(sys.platform == "win32", reason="shared memory by name is POSIX here")
def test_large_arrays_travel_through_shared_memory(ctx):
    np = pytest.importorskip("numpy")
    from mpnb import _pickle

    before = _psm_entries()
    big = np.arange(300_000, dtype=np.float64).reshape(600, 500)  # 2.4 MB
    fortran = np.asfortranarray(big)
    frozen = big.copy()
    frozen.flags.writeable = False
    payload = _pickle.dumps(big)
    assert len(payload) < 1000  # the data is not in the pickle...
    assert np.array_equal(pickle.loads(payload), big)  # ...but in a segment, mapped here
    with ctx.Pool(1) as pool:
        assert pool.apply(np.sum, (big,)) == big.sum()
        back = pool.apply(np.copy, (fortran,))
    assert np.array_equal(back, big) and back.flags.writeable
    q = ctx.Queue()
    for array in (big, fortran, frozen):
        q.put(array)
        got = q.get(timeout=30)
        assert np.array_equal(got, array) and got.dtype == array.dtype
        assert got.flags.f_contiguous == array.flags.f_contiguous
        assert got.flags.writeable == array.flags.writeable
    strided = big[:20, ::2]  # in-band (40 kB: fits the pipe with nobody reading yet)
    a, b = ctx.Pipe()
    a.send(strided)
    assert np.array_equal(b.recv(), strided)
    del got, back, array
    assert _psm_entries() - before  # a pool's argument keeps its segment for reuse...
    del big, fortran, frozen, strided
    assert _psm_entries() <= before  # ...while the array lives


# -- notebook globals on both sides ------------------------------------------------------

GLOBALS = """
data = None            # the notebook's placeholder, as in the common idiom
scale = 1
def init(value):
    global data
    data = value
def use(i):
    return data[i] * scale
def set_scale_and_return_use(v):
    global scale
    scale = v
    return use
"""


def test_initializer_global_survives_a_notebook_placeholder(ctx):
    ns = cell(GLOBALS)
    with ctx.Pool(2, initializer=ns.init, initargs=([10, 20, 30],)) as pool:
        assert pool.map(ns.use, range(3)) == [10, 20, 30]


def test_values_sent_later_still_arrive_in_warm_workers(ctx):
    ns = cell(GLOBALS)
    with ctx.Pool(1, initializer=ns.init, initargs=([1, 2],)) as pool:
        assert pool.apply(ns.use, (1,)) == 2
        ns.use.__globals__["scale"] = 5  # the notebook changes a value
        assert pool.apply(ns.use, (1,)) == 10


def test_a_worker_never_overwrites_the_notebooks_globals(ctx):
    ns = cell(GLOBALS)
    placeholder = ns.use.__globals__["data"]
    with ctx.Pool(1, initializer=ns.init, initargs=([7],)) as pool:
        returned = pool.apply(ns.set_scale_and_return_use, (99,))
    assert ns.use.__globals__["scale"] == 1
    assert ns.use.__globals__["data"] is placeholder
    assert returned.__globals__ is not ns.use.__globals__


@pytest.mark.skipif(sys.platform == "win32", reason="shared memory by name is POSIX here")
def test_large_arrays_in_functions_and_initargs_reach_every_worker(ctx):
    np = pytest.importorskip("numpy")
    before = _psm_entries()
    big = np.arange(200_000, dtype=np.float64)
    ns = cell("def init(a):\n    global arr\n    arr = a\ndef get(i):\n    return arr[i]")
    with ctx.Pool(2, initializer=ns.init, initargs=(big,)) as pool:
        assert pool.map(ns.get, range(4), chunksize=1) == [0.0, 1.0, 2.0, 3.0]
        assert pool.map(lambda i: big[i] * 2, range(4), chunksize=1) == [0.0, 2.0, 4.0, 6.0]
    assert _psm_entries() <= before


@pytest.mark.skipif(sys.platform == "win32", reason="shared memory by name is POSIX here")
def test_shared_arrays_of_undelivered_payloads_are_removed(ctx):
    np = pytest.importorskip("numpy")
    before = _psm_entries()
    big = np.zeros(300_000)
    q = ctx.Queue(maxsize=1)
    q.put(1)
    with pytest.raises(Exception):  # queue.Full
        q.put(big, timeout=0.1)
    with ctx.Pool(1) as pool:
        with pytest.raises(mpnb.SerializationError):
            pool.apply_async(print, (big, threading.Lock()))
        with pytest.raises(mpnb.SerializationError):
            pool.map(print, [big, threading.Lock()], chunksize=1)
    if ctx.get_start_method() != "fork":  # fork pickles nothing at start
        with pytest.raises(mpnb.SerializationError):
            ctx.Process(target=print, args=(big, threading.Lock())).start()
    assert q.get(timeout=10) == 1
    del big  # a pool's argument keeps its segment for reuse while the array lives
    gc.collect()
    assert _psm_entries() <= before


@pytest.mark.skipif(sys.platform == "win32", reason="shared memory by name is POSIX here")
def test_a_full_dev_shm_means_in_band_not_a_crash(monkeypatch):
    import errno
    import os

    np = pytest.importorskip("numpy")
    from mpnb import _pickle

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = _psm_entries()
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: no_space(fd, offset, len(data)))
    big = np.ones(300_000)
    payload = _pickle.dumps(big)
    assert len(payload) > big.nbytes  # the data went inside the pickle
    assert np.array_equal(pickle.loads(payload), big)
    assert _psm_entries() <= before


def test_the_core_imports_no_notebook_package_in_a_script_or_its_children():
    """``import mpnb`` and its pools work without IPython, ipykernel, ipywidgets or
    psutil being imported, in the parent and in every child."""
    code = (
        "import sys\n"
        "import mpnb\n"
        "HEAVY = ('IPython', 'ipykernel', 'ipywidgets', 'psutil')\n"
        "def loaded(_):\n"
        "    return sorted(m for m in HEAVY if m in sys.modules)\n"
        "if __name__ == '__main__':\n"
        "    seen = set(loaded(0))\n"
        "    for method in mpnb.get_all_start_methods():\n"
        "        with mpnb.get_context(method).Pool(1) as pool:\n"
        "            seen.update(*pool.map(loaded, range(2)))\n"
        "    seen.update(loaded(0))\n"
        "    print(sorted(seen))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert out.stdout.strip() == "[]", out.stderr


def test_import_mpnb_leaves_the_drawing_code_for_when_it_is_asked_for():
    """What every child and fork server imports stays small: the timeline's drawing code
    (with ``statistics`` and ``html``) loads at the first ``Timeline``, not before."""
    code = (
        "import sys\n"
        "import mpnb\n"
        "LAZY = ('mpnb.timeline.render', 'statistics', 'secrets')\n"
        "def loaded(q):\n"
        "    q.put(sorted(m for m in LAZY if m in sys.modules))\n"
        "if __name__ == '__main__':\n"
        "    before = sorted(m for m in LAZY if m in sys.modules)\n"
        "    ctx = mpnb.get_context('forkserver')\n"
        "    q = ctx.SimpleQueue()\n"
        "    p = ctx.Process(target=loaded, args=(q,))\n"
        "    p.start()\n"
        "    in_child = q.get()\n"
        "    p.join()\n"
        "    from mpnb.timeline import Timeline\n"
        "    print(before, in_child, Timeline.__module__ in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert out.stdout.strip() == "[] [] True", out.stderr
