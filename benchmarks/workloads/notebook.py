"""W10 and W11: the notebook side, the ``%%mp_pool`` magic and the monitor.

Both detect whether mpnb has the feature yet and report n/a with the reason when not.
"""

from __future__ import annotations

import importlib
import resource
import statistics
from typing import Any

from .. import harness, peers
from ..harness import now
from .base import Case, CaseFailure, Target, Workload, describe_exc, find, median
from .speed import calibrate_spin

MAGIC_CELL = "%%mp_pool -n 2 for x in range(4)\nx + 1"
#: the same work as a plain cell: what the magic's overhead is measured against
PLAIN_CELL = "[x + 1 for x in range(4)]"
W11_TASKS = 8
W11_TASK_SECONDS = 0.125


# -- W10 --------------------------------------------------------------------------------


def _shell() -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def _run_cell(shell: Any, source: str) -> float:
    t0 = now()
    result = shell.run_cell(source, store_history=False)
    elapsed = now() - t0
    if not result.success:
        error = result.error_before_exec or result.error_in_exec
        raise CaseFailure(f"cell failed: {describe_exc(error) if error else '?'}")
    return elapsed * 1e3


def _setup_magic(shell: Any) -> tuple[str, str]:
    try:
        importlib.import_module("mpnb.magics")
    except Exception as exc:
        raise peers.Unavailable(f"mpnb.magics: import failed: {describe_exc(exc)}") from exc
    result = shell.run_cell("%load_ext mpnb", store_history=False)
    if not result.success:
        error = result.error_before_exec or result.error_in_exec
        raise peers.Unavailable(f"%load_ext mpnb failed: {describe_exc(error) if error else '?'}")
    if "mp_pool" not in shell.magics_manager.magics.get("cell", {}):
        raise peers.Unavailable("%load_ext mpnb registers no %%mp_pool cell magic")
    return MAGIC_CELL, "%unload_ext mpnb"


def _setup_pool(shell: Any, peer: peers.Peer) -> tuple[str, str]:
    if not isinstance(peer, peers.MpApiPeer):
        raise peers.NotSupported("not a multiprocessing-API pool")
    context = f"_mp.get_context({peer.method!r})" if peer.method else "_mp"
    _run_cell(
        shell,
        f"import {peer.module_name} as _mp\n"
        "def inc(x):\n    return x + 1\n"
        f"pool = {context}.Pool(2)",
    )
    return "pool.map(inc, range(4))", "pool.terminate()"


def run_w10(c: Case) -> None:
    shell = _shell()
    row = c.row()
    cell, teardown = _setup_magic(shell) if c.variant == "magic" else _setup_pool(shell, c.peer)
    try:
        for _ in range(3):
            _run_cell(shell, PLAIN_CELL)
        plain = statistics.median(_run_cell(shell, PLAIN_CELL) for _ in range(max(5, c.repeat)))
        with c.stage(60, row, "first run of the cell"):
            cold = _run_cell(shell, cell)
        samples = harness.repeat_timed(lambda: _run_cell(shell, cell), c.repeat, c.budget)
        c.finish(row, [s - plain for s in samples], cold_ms=cold, plain_ms=plain)
    finally:
        shell.run_cell(teardown, store_history=False)


def targets_w10(rows: list[dict[str, Any]]) -> list[Target]:
    mine = median(find(rows, "mpnb", "magic"))
    return [
        Target(
            "mpnb %%mp_pool warm re-run overhead < 10 ms",
            "n/a" if mine is None else f"{mine:.3g} ms",
            None if mine is None else mine < 10,
        )
    ]


W10 = Workload(
    id="W10",
    title="re-run a trivial %%mp_pool cell (4 items, warm pool) in an IPython shell",
    unit="ms overhead",
    better="lower",
    run=run_w10,
    cases=(("mpnb", "magic"), ("mpnb", "pool.map"), ("mp:fork", "pool.map")),
    repeat=20,
    budget=10,
    timeout=90,
    columns=(("cold_ms", "first run ms", ".3g"), ("plain_ms", "plain cell ms", ".3g")),
    targets=targets_w10,
    ratio=False,
    note=f"magic: `{MAGIC_CELL.splitlines()[0]}` / `x + 1`; pool.map: `pool.map(inc, "
    "range(4))` on a pool made in an earlier cell (inc defined in a cell); overhead = "
    f"run_cell time minus that of the plain cell `{PLAIN_CELL}`",
)


# -- W11 --------------------------------------------------------------------------------


def _start_monitor(factory: Any) -> Any:
    monitor = factory()
    if hasattr(monitor, "__enter__"):
        monitor.__enter__()
    elif callable(getattr(monitor, "start", None)):
        try:
            monitor.start()
        except RuntimeError:
            pass  # already sampling
    return monitor


def _stop_monitor(monitor: Any) -> None:
    if hasattr(monitor, "__exit__"):
        monitor.__exit__(None, None, None)
        return
    for name in ("stop", "close", "shutdown"):
        method = getattr(monitor, name, None)
        if callable(method):
            method()
            return


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_w11(c: Case) -> None:
    import mpnb

    factory = getattr(mpnb, "monitor", None)
    if not callable(factory):
        raise peers.Unavailable("mpnb.monitor() does not exist")
    n = int(int(c.params["spin_n"]) * W11_TASK_SECONDS / 0.25)
    cores = int(c.params["cores"])
    spin_item = c.fn("spin_item")
    items = [(i, n) for i in range(W11_TASKS)]
    row = c.row()
    slowdown: list[float] = []
    monitor_cpu: list[float] = []
    walls: dict[str, list[float]] = {"off": [], "on": []}
    with c.peer.pool(cores) as pool:
        with c.stage(30, row, "first map"):
            pool.map(spin_item, items[:cores])

        def timed(with_monitor: bool) -> tuple[float, float]:
            monitor = _start_monitor(factory) if with_monitor else None
            try:
                cpu0, t0 = _cpu(), now()
                pool.map(spin_item, items)
                wall, cpu = now() - t0, _cpu() - cpu0
            finally:
                if monitor is not None:
                    _stop_monitor(monitor)
            walls["on" if with_monitor else "off"].append(wall)
            return wall, cpu

        start = now()
        for i in range(max(3, c.repeat)):
            # Alternate which goes first, so a drift of the machine's load cancels out.
            first, second = (False, True) if i % 2 == 0 else (True, False)
            a, b = timed(first), timed(second)
            off, on = (a, b) if first is False else (b, a)
            slowdown.append((on[0] - off[0]) / off[0] * 100)
            monitor_cpu.append((on[1] / on[0] - off[1] / off[0]) * 100)
            if now() - start > c.budget and i >= 2:
                break
    c.finish(
        row,
        slowdown,
        off_s=statistics.median(walls["off"]),
        on_s=statistics.median(walls["on"]),
        monitor_cpu_pct=statistics.median(monitor_cpu),
    )


def targets_w11(rows: list[dict[str, Any]]) -> list[Target]:
    mine = median(find(rows, "mpnb", "monitor"))
    return [
        Target(
            "mpnb slow-down with the monitor sampling < 2%",
            "n/a" if mine is None else f"{mine:.2g}%",
            None if mine is None else mine < 2,
        )
    ]


W11 = Workload(
    id="W11",
    title=f"CPU-bound map ({W11_TASKS} x ~{W11_TASK_SECONDS} s) with mpnb.monitor() sampling",
    unit="% slow-down",
    better="lower",
    run=run_w11,
    cases=(("mpnb", "monitor"),),
    repeat=9,
    budget=20,
    timeout=90,
    columns=(
        ("off_s", "without s", ".3g"),
        ("on_s", "with s", ".3g"),
        ("monitor_cpu_pct", "parent CPU +%", ".2g"),
    ),
    targets=targets_w11,
    params=calibrate_spin,
    ratio=False,
    note="pairs of runs without and with the monitor, alternating which goes first; "
    "parent CPU +% = the parent's extra CPU time per wall second with the monitor on",
)

WORKLOADS = (W10, W11)
