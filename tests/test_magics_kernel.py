"""``%%mp_pool`` and ``%mp_pool`` in a real kernel: both forms, the options, errors,
notebook names that change between runs, and every usage error."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.timeout(240)]

SETUP = """
%load_ext mpnb
import math
factor = 2
def scale(v):
    return v * factor
class Box:
    def __init__(self, v):
        self.v = v
"""


@pytest.fixture(scope="module")
def k(module_kernel):
    module_kernel.ensure_ok(SETUP)
    module_kernel.ensure_ok("%mp_pool -n 2")
    yield module_kernel
    module_kernel.ensure_ok("%mp_pool --shutdown")


def test_map_form_collects_in_input_order(k):
    k.ensure_ok(
        "%%mp_pool --no-progress for x in range(10)\ny = scale(x)\nmath.sqrt(y) if x < 0 else y + 1"
    )
    assert k.evaluate("mp_results") == [2 * x + 1 for x in range(10)]


def test_several_loop_names_and_out(k):
    k.ensure_ok(
        "%%mp_pool --no-progress -o pairs for i, (a, b) in enumerate([(1, 2), (3, 4)])\n(i, a * b)"
    )
    assert k.evaluate("pairs") == [(0, 2), (1, 12)]


def test_notebook_values_are_sent_fresh_each_run(k):
    k.ensure_ok("factor = 3")
    k.ensure_ok("%%mp_pool --no-progress -o r for x in [1, 2]\nscale(x)")
    assert k.evaluate("r") == [3, 6]
    k.ensure_ok("factor = 5\ndef scale(v):\n    return v * factor + 1")
    k.ensure_ok("%%mp_pool --no-progress -o r for x in [1, 2]\nscale(x)")
    assert k.evaluate("r") == [6, 11]
    k.ensure_ok("factor = 2\ndef scale(v):\n    return v * factor")


def test_no_stale_globals_in_warm_workers(k):
    k.ensure_ok("%%mp_pool --no-progress -o r for x in range(4)\nleftover = x\nx")
    res = k.execute("%%mp_pool --no-progress -o r for x in range(4)\nleftover")
    assert res.error is not None and "NameError" in res.error.text


def test_cell_classes_come_back_as_themselves(k):
    k.ensure_ok("%%mp_pool --no-progress -o boxes for x in range(3)\nBox(x)")
    assert k.evaluate("[isinstance(b, Box) for b in boxes]") == [True] * 3


def test_spmd_form_runs_once_per_worker(k):
    k.ensure_ok("%%mp_pool -n 2 -o ranks\nimport os\n(mp_rank, mp_size, os.getpid())")
    ranks = k.evaluate("ranks")
    assert [r[:2] for r in ranks] == [(0, 2), (1, 2)]
    assert len({r[2] for r in ranks}) == 2


def test_unordered_chunksize_and_start_method(k):
    k.ensure_ok("%%mp_pool --no-progress --unordered --chunksize 3 -o r for x in range(9)\nx")
    assert sorted(k.evaluate("r")) == list(range(9))
    k.ensure_ok("%%mp_pool --no-progress --start-method spawn -o r for x in range(3)\nscale(x)")
    assert k.evaluate("r") == [0, 2, 4]
    assert "spawn" in k.execute("%mp_pool").result
    k.ensure_ok("%mp_pool --start-method forkserver")


def test_first_failure_stops_and_names_the_item(k):
    res = k.execute("%%mp_pool --no-progress for x in range(6)\n1 / (x - 4)")
    assert res.error is not None
    text = res.error.text
    assert "item 4 (x = 4)" in text and "ZeroDivisionError" in text
    assert "1 / (x - 4)" in text  # the cell's own line, from the worker's traceback
    assert "Cell In[" in text


def test_keep_going_collects_exceptions(k):
    res = k.ensure_ok("%%mp_pool --no-progress --keep-going -o r for x in range(5)\n10 // (x - 2)")
    assert "1 of 5 items failed" in res.stdout
    assert k.evaluate("[type(v).__name__ for v in r]") == [
        "int",
        "int",
        "ZeroDivisionError",
        "int",
        "int",
    ]


SLOW_ITEM = """import os, pathlib, time
pathlib.Path(marks, f"started-{x}").write_text(str(os.getpid()))
time.sleep(120)
pathlib.Path(marks, f"finished-{x}").write_text("the item was not stopped")
"""


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_timeout_stops_the_items_and_the_next_run_starts_at_once(k, tmp_path, method):
    import psutil

    k.ensure_ok(f"marks = {str(tmp_path)!r}")
    k.ensure_ok(f"%%mp_pool --no-progress --start-method {method} for x in range(2)\nx")
    res = k.execute("%%mp_pool --no-progress --timeout 2 for x in range(2)\n" + SLOW_ITEM)
    assert res.error is not None and res.error.ename == "PoolTimeoutError", res.error
    assert "no result within --timeout 2.0 s" in res.error.text
    # The old items held both workers for 120 s: the next run finishes only if they
    # were stopped, and before any of them could finish.
    k.ensure_ok("%%mp_pool --no-progress -o r for x in range(2)\nx", timeout=60)
    assert k.evaluate("r") == [0, 1]
    assert not list(tmp_path.glob("finished-*"))
    pids = [int(p.read_text()) for p in tmp_path.glob("started-*")]
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert not alive
    k.ensure_ok("%mp_pool --start-method forkserver")


def test_timeout_is_caught_by_both_timeout_errors(k):
    for caught in ("TimeoutError", "multiprocessing.TimeoutError"):
        k.ensure_ok(
            "import multiprocessing\n"
            "try:\n"
            "    get_ipython().run_cell_magic('mp_pool', "
            "'--no-progress --timeout 0.5 for x in range(2)', 'import time\\ntime.sleep(120)')\n"
            f"except {caught} as exc:\n"
            "    got = type(exc).__mro__\n",
            timeout=60,
        )
        assert k.evaluate("multiprocessing.TimeoutError in got and TimeoutError in got")
    k.ensure_ok("%%mp_pool --no-progress -o r for x in range(2)\nx", timeout=60)
    assert k.evaluate("r") == [0, 1]


def test_more_processes_than_cores_needs_force(k):
    n = k.evaluate("__import__('mpnb.magics.pool', fromlist=['_']).cores()") + 1
    for line in (f"%%mp_pool -n {n} for x in range(3)\nx", f"%mp_pool -n {n}"):
        res = k.execute(line)
        assert res.error is not None and res.error.ename == "UsageError", res.error
        assert f"-n {n} is more than the {n - 1} cores" in res.error.text
        assert "--force" in res.error.text
    assert "2 workers" in k.execute("%mp_pool").result  # nothing was started
    k.ensure_ok(f"%%mp_pool --no-progress -n {n} --force -o r for x in range(3)\nx")
    assert k.evaluate("r") == [0, 1, 2]
    assert f"{n} workers" in k.execute("%mp_pool").result
    k.ensure_ok(f"%mp_pool -n {n} --force")
    k.ensure_ok("%mp_pool -n 2")


def test_max_items_bounds_endless_and_long_inputs(k):
    k.ensure_ok("import itertools")
    res = k.execute("%%mp_pool --no-progress for x in itertools.count()\nx")
    assert res.error is not None and res.error.ename == "UsageError", res.error
    assert "more than 1000000 items" in res.error.text and "--max-items" in res.error.text
    res = k.execute("%%mp_pool --max-items 5 for x in range(10**12)\nx")
    assert res.error is not None and "has 1000000000000 items" in res.error.text
    k.ensure_ok("%%mp_pool --no-progress --max-items 3 -o r for x in iter([1, 2, 3])\nx")
    assert k.evaluate("r") == [1, 2, 3]


def test_a_function_in_the_cell_may_return(k):
    k.ensure_ok("%%mp_pool --no-progress -o r for x in range(2)\ndef f():\n    return x\nf()")
    assert k.evaluate("r") == [0, 1]


def test_progress_bar_widget(k):
    res = k.ensure_ok("%%mp_pool -o r for x in range(20)\nx")
    views = [
        d
        for d in res.displays
        if "application/vnd.jupyter.widget-view+json" in d.get("content", d).get("data", {})
    ]
    assert views, res.displays


def test_line_magic_shows_and_resizes(k):
    k.ensure_ok("%mp_pool -n 3 --force")
    shown = k.execute("%mp_pool").result
    assert "3 workers" in shown and shown.count("alive") == 3
    k.ensure_ok("%mp_pool -n 2")
    k.ensure_ok("%mp_pool --shutdown")
    assert "not running" in k.execute("%mp_pool").result
    k.ensure_ok("%mp_pool -n 2")


def test_help_text(k):
    res = k.execute("%%mp_pool?")
    # Jupyter shows help in its pager: the execute_reply's payload.
    text = str(res.reply["content"].get("payload")) + res.stdout
    assert "--keep-going" in text and "mp_rank" in text
    assert "--max-items" in text and "--force" in text and "PoolTimeoutError" in text


@pytest.mark.parametrize(
    "line, message",
    [
        ("%%mp_pool for x in\nx", "cannot read the loop"),
        ("%%mp_pool for 1 in range(3)\nx", "is not a loop target"),
        ("%%mp_pool for x in range(\nx", "is not an expression"),
        ("%%mp_pool\nx", "nothing to run in parallel"),
        ("%%mp_pool -n 0 for x in [1]\nx", "-n/--processes must be 1 or more"),
        ("%%mp_pool --chunksize 0 for x in [1]\nx", "--chunksize must be 1 or more"),
        ("%%mp_pool --timeout -1 for x in [1]\nx", "--timeout must be a positive"),
        ("%%mp_pool -o 1bad for x in [1]\nx", "is not a Python name"),
        ("%%mp_pool -n 2 --unordered\nx", "need a loop"),
        ("%%mp_pool --bogus for x in [1]\nx", "unrecognized arguments"),
        ("%%mp_pool for x in [1]\n", "empty"),
        ("%mp_pool --shutdown -n 2", "--shutdown takes no other option"),
        ("%%mp_pool for x in [1]\nreturn x", "'return' at the top level of the cell (line 1)"),
        ("%%mp_pool for x in [1]\nx\nyield x", "'yield' at the top level"),
        ("%%mp_pool for x in [1]\nawait f(x)", "'await' at the top level"),
        ("%%mp_pool for x in [1]\nif x:\n    return x", "its last expression is the item's"),
        ("%%mp_pool for x in [1]\nnonlocal x", "the cell does not compile"),
        ("%%mp_pool --max-items 0 for x in [1]\nx", "--max-items must be 1 or more"),
        ('%%mp_pool -o "r for x in [1]\nx', "cannot read the options"),
        ("%%mp_pool -o 'r for x in [1]\nx", "No closing quotation"),
        ('%mp_pool -n "2', "cannot read the options"),
        ("%%mp_pool for x range(3)\nx", "(no 'in')"),
        ("%%mp_pool -n\nx", "expected one argument"),
    ],
)
def test_usage_errors(k, line, message):
    res = k.execute(line)
    assert res.error is not None and res.error.ename == "UsageError", res.error
    assert message in res.error.text


def test_item_output_lands_in_the_cell(k):
    res = k.ensure_ok(
        "%%mp_pool --no-progress -o r for x in range(4)\nprint(f'item {x} says hi')\nx"
    )
    lines = [line.split("] ")[-1] for line in res.stdout.splitlines()]
    assert sorted(line for line in lines if "says hi" in line) == [
        f"item {x} says hi" for x in range(4)
    ]


def test_interrupt_mid_run_then_the_pool_answers(k):
    import time

    msg_id = k.submit("%%mp_pool --no-progress for x in range(40)\nimport time\ntime.sleep(0.5)\nx")
    time.sleep(1.5)
    k.interrupt()
    res = k.wait(msg_id, timeout=60)
    assert res.error is not None and res.error.ename == "KeyboardInterrupt", res.error
    k.ensure_ok("%%mp_pool --no-progress -o r for x in range(4)\nx * 10", timeout=30)
    assert k.evaluate("r") == [0, 10, 20, 30]
    workers = k.evaluate(
        "[w['alive'] for w in __import__('mpnb.magics.warm', fromlist=['_']).describe()['workers']]"
    )
    assert workers == [True, True]


def test_statements_sharing_the_last_line_and_line_numbers(k):
    k.ensure_ok("%%mp_pool --no-progress -o r for x in range(3)\ny = x * 2; y + 1")
    assert k.evaluate("r") == [1, 3, 5]
    res = k.execute("%%mp_pool --no-progress for x in range(3)\na = 1\nb = 2\n1 / (x - 1)")
    assert "Cell In[" in res.error.text and "line 3" in res.error.text


def test_items_that_fail_to_evaluate_keep_their_exception(k):
    res = k.execute("%%mp_pool --no-progress for x in b'\\xff'.decode()\nx")
    assert res.error is not None and res.error.ename == "UnicodeDecodeError"
