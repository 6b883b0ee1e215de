"""Executors in a real kernel: cell-defined functions through the standard library's
``ProcessPoolExecutor`` with an mpnb context (no ``%load_ext``), and through
``mpnb.ProcessPoolExecutor``."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]

DEFINITIONS = """
import concurrent.futures, os
import mpnb as mp
factor = 2

def cube(x):
    return x ** 3 * factor

def shout(x):
    print(f"item {x}")
    return x

def bad(x):
    return 1 / (x - 2)

def die(x):
    if x == 1:
        os._exit(9)
    return x
"""

STDLIB = """
out = {}
for method in ("spawn", "forkserver"):
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        out[method] = (list(ex.map(cube, range(3))), ex.submit(lambda: factor + 1).result(60))
out
"""


def test_the_standard_library_executor_runs_cell_code_with_an_mpnb_context(module_kernel):
    module_kernel.ensure_ok(DEFINITIONS)
    assert module_kernel.evaluate(STDLIB.strip(), timeout=150) == {
        "spawn": ([0, 2, 16], 3),
        "forkserver": ([0, 2, 16], 3),
    }
    # The standard library's own pickler was left alone (no %load_ext).
    assert module_kernel.evaluate("mp._pickle.installed()") is False


def test_mpnb_executor_with_cell_code(module_kernel):
    module_kernel.ensure_ok(DEFINITIONS)
    module_kernel.ensure_ok("ex = mp.ProcessPoolExecutor(2)")
    try:
        assert module_kernel.evaluate("list(ex.map(cube, range(4), chunksize=2))") == [0, 2, 16, 54]
        res = module_kernel.ensure_ok("ex.submit(shout, 7).result(60)")
        assert "item 7" in res.stdout  # the worker's output, in the cell that submitted

        res = module_kernel.execute("ex.submit(bad, 2).result(60)")
        assert res.error.ename == "ZeroDivisionError"
        assert "RemoteTraceback" in res.error.text and "running bad(2)" in res.error.text

        res = module_kernel.execute("[f.result(60) for f in [ex.submit(die, x) for x in range(3)]]")
        assert res.error.ename == "BrokenWorkerError"
        assert "exited with code 9 while running die(1)" in res.error.evalue
        assert module_kernel.evaluate("ex.submit(cube, 3).result(60)") == 54
    finally:
        module_kernel.ensure_ok("ex.shutdown()")
