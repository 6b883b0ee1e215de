"""Pools in a real kernel: errors of cell-defined code read like the cell's own."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def kernel(module_kernel):
    module_kernel.ensure_ok("import mpnb as mp\npool = mp.Pool(2)")
    yield module_kernel
    module_kernel.ensure_ok("pool.terminate()")


def test_a_cell_function_error_shows_the_cell_line_from_the_worker(kernel):
    kernel.ensure_ok("def bad(x):\n    return 1 / (x - 2)")
    result = kernel.execute("pool.map(bad, range(5))")
    assert result.error.ename == "ZeroDivisionError"
    text = result.error.text
    assert "RemoteTraceback" in text
    assert "item 2 of the map, bad(2)" in text
    assert "Cell In[" in text and "return 1 / (x - 2)" in text


def test_a_cell_exception_class_comes_back_as_itself(kernel):
    kernel.ensure_ok("class Oops(Exception):\n    pass\ndef fail(x):\n    raise Oops(x)")
    assert kernel.evaluate(
        "try:\n    pool.apply(fail, (3,))\nexcept Oops as e:\n    caught = e.args\ncaught"
    ) == (3,)


def test_a_crash_in_a_cell_function_is_reported_and_the_pool_goes_on(kernel):
    kernel.ensure_ok("import os\ndef die(x):\n    if x == 1:\n        os._exit(9)\n    return x")
    result = kernel.execute("pool.map(die, range(3), chunksize=1)")
    assert result.error.ename == "WorkerCrashedError"
    assert "exited with code 9 while running die(1) (item 1)" in result.error.evalue
    assert kernel.evaluate("pool.map(abs, [-1, -2])") == [1, 2]
