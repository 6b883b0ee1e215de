"""Cell-defined code in a real ipykernel: every API family, under every start method,
and ``%load_ext mpnb`` for code written against the standard library."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.timeout(240)]

DEFINITIONS = """
import mpnb as mp
import ctypes
factor = 3

def scale(x):
    return x * factor

class Point:
    def __init__(self, x):
        self.x = x

class CellError(Exception):
    pass

def fail(x):
    raise CellError(f"item {x}")

class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int), ("b", ctypes.c_double)]

def worker(q, conn, pair, f):
    q.put(Point(f(2)))
    conn.send(lambda: "from child")
    pair.a += 1

class Echo(mp.Process):
    def __init__(self, q):
        super().__init__()
        self.q = q
    def run(self):
        self.q.put(Point(self.name))

class Store:
    def __init__(self):
        self.items = []
    def add(self, item):
        self.items.append(item)
        return len(self.items)
    def first(self):
        return self.items[0]

from mpnb.managers import BaseManager
class StoreManager(BaseManager):
    pass
StoreManager.register("Store", Store)
"""

FAMILIES = """
results = {}
for method in mp.get_all_start_methods():
    ctx = mp.get_context(method)
    with ctx.Pool(2) as pool:
        squares = pool.map(scale, range(4))
        lam = pool.map(lambda v: v + factor, [1])
        pts = pool.map(Point, [1, 2])
        try:
            pool.apply(fail, (7,))
            caught = None
        except CellError as exc:
            caught = str(exc)
    q = ctx.Queue()
    a, b = ctx.Pipe()
    pair = ctx.Value(Pair, 1, 0.5)
    p = ctx.Process(target=worker, args=(q, b, pair, lambda v: v * 10))
    p.start()
    got, said = q.get(timeout=60), a.recv()()
    p.join(60)
    q_default = mp.Queue()  # Echo subclasses mp.Process: the default context's
    e = Echo(q_default)
    e.start()
    echoed = q_default.get(timeout=60)
    e.join(60)
    with StoreManager(ctx=ctx) as manager:
        store = manager.Store()
        store.add(Point(5))
        stored = store.first()
    results[method] = (squares, lam, [isinstance(x, Point) for x in pts], caught,
                       isinstance(got, Point) and got.x, said, pair.a, p.exitcode,
                       echoed.x, isinstance(stored, Point) and stored.x)
results
"""


def test_every_family_with_cell_code(module_kernel):
    module_kernel.ensure_ok(DEFINITIONS)
    results = module_kernel.evaluate(FAMILIES.strip(), timeout=200)
    assert set(results) == {"forkserver", "spawn", "fork"}
    for method, row in results.items():
        squares, lam, are_points, caught, got, said, pair_a, exitcode, echoed, stored = row
        assert squares == [0, 3, 6, 9], method
        assert lam == [4], method
        assert are_points == [True, True], method
        assert caught == "item 7", method
        assert got == 20, method
        assert said == "from child", method
        assert pair_a == 2, method
        assert exitcode == 0, method
        assert echoed.startswith("Echo-"), method
        assert stored == 5, method


def test_unsendable_argument_error_in_the_kernel(module_kernel):
    module_kernel.ensure_ok(DEFINITIONS)
    res = module_kernel.execute(
        "import sqlite3\n"
        "p = mp.Process(target=print, args=(1, {'conn': sqlite3.connect(':memory:')}))\n"
        "p.start()"
    )
    assert res.error is not None and res.error.ename == "SerializationError"
    assert "args[1]['conn']" in res.error.evalue and "sqlite3.Connection" in res.error.evalue
    assert module_kernel.evaluate("len(mp.active_children())") == 0


STDLIB = """
import multiprocessing, concurrent.futures
def cube(x):
    return x ** 3
out = {}
for method in ("spawn", "forkserver"):
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        out[method] = pool.map(cube, range(3)) + pool.map(Point, [4])[0:0]
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        out[method + "-executor"] = list(ex.map(cube, range(3)))
out
"""


def test_load_ext_makes_the_stdlib_work_and_unload_undoes_it(kernel):
    kernel.ensure_ok(DEFINITIONS)
    kernel.ensure_ok("%load_ext mpnb")
    out = kernel.evaluate(STDLIB.strip(), timeout=200)
    assert out == {
        "spawn": [0, 1, 8],
        "forkserver": [0, 1, 8],
        "spawn-executor": [0, 1, 8],
        "forkserver-executor": [0, 1, 8],
    }
    kernel.ensure_ok("%unload_ext mpnb")
    res = kernel.execute(
        "import multiprocessing.reduction as r, pickle\n"
        "try:\n"
        "    pickle.loads(bytes(r.ForkingPickler.dumps(lambda: 1)))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    assert "PicklingError" in res.stdout or "AttributeError" in res.stdout
