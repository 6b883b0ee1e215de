"""``%mp_timeline`` in a real kernel and in terminal IPython."""

from __future__ import annotations

import json

import pytest
from kernel_harness import run_terminal_ipython

pytestmark = [pytest.mark.timeout(240)]

SETUP = """
%load_ext mpnb
import os, time
import mpnb as mp

def work(x):
    if x == 3:
        raise ValueError("three")
    if x == 5:
        os._exit(9)
    time.sleep(0.05)
    return x
"""


def _html(result) -> str:
    (shown,) = [d for d in result.displays if "text/html" in d.get("data", {})]
    return shown["data"]["text/html"]


@pytest.mark.kernel
def test_mp_timeline_shows_the_last_run(kernel, tmp_path) -> None:
    kernel.ensure_ok(SETUP)
    empty = kernel.ensure_ok("%mp_timeline")
    assert "no pool has run a task yet" in _html(empty)

    # A %%mp_pool run on the warm pool: one lane per worker.
    kernel.ensure_ok("%%mp_pool -n 2 --out roots for x in range(6)\nx * x")
    shown = _html(kernel.ensure_ok("%mp_timeline"))
    assert shown.count('<g class="mpnb-lane"') == 2
    assert shown.count('class="mpnb-task') >= 1

    # A pool with a failing and a crashing item: the last run now.
    trace = tmp_path / "run.json"
    kernel.ensure_ok(
        "with mp.Pool(2) as pool:\n"
        "    it = pool.imap(work, range(8))\n"
        "    got = []\n"
        "    for _ in range(8):\n"
        "        try:\n"
        "            got.append(next(it))\n"
        "        except Exception as exc:\n"
        "            got.append(type(exc).__name__)\n"
        "got"
    )
    result = kernel.ensure_ok(f"%mp_timeline --trace {trace}")
    shown = _html(result)
    assert shown.count('<g class="mpnb-lane"') == 3  # two, and the one that replaced the dead
    assert shown.count("mpnb-error") == 1 and shown.count("mpnb-crashed") == 1
    assert "item 5 of work" in shown
    (plain,) = [d["data"]["text/plain"] for d in result.displays if "text/plain" in d["data"]]
    assert "8 tasks (8 items) on 3 lanes" in plain and "1 crashed" in plain
    events = json.loads(trace.read_text())["traceEvents"]
    assert len([e for e in events if e["ph"] == "X"]) == 8

    # Plain processes, a lane each.
    kernel.ensure_ok(
        "ps = [mp.Process(target=time.sleep, args=(0.1,)) for _ in range(2)]\n"
        "[p.start() for p in ps]; [p.join() for p in ps]"
    )
    shown = _html(kernel.ensure_ok("%mp_timeline --processes"))
    assert shown.count('<g class="mpnb-lane"') >= 2

    bad = kernel.execute("%mp_timeline --bogus")
    assert not bad.ok and "unrecognized arguments" in str(bad)


@pytest.mark.core
def test_text_fallback_in_terminal_ipython() -> None:
    code = SETUP + (
        "\nwith mp.Pool(2) as pool:\n    pool.map(abs, range(-6, 0), chunksize=1)\n\n"
        "%mp_timeline\n"
        "exit\n"
    )
    out = run_terminal_ipython(code, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "6 tasks (6 items) on 2 lanes" in out.stdout, out.stdout
    rows = [line for line in out.stdout.splitlines() if "PoolWorker" in line and "|" in line]
    assert len(rows) == 2 and all("#" in row for row in rows), out.stdout
