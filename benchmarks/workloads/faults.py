"""W7 and W8: a worker that dies, and Ctrl-C in the middle of a map.

Each case runs in its own interpreter under a hard timeout; inside it, every wait has a
limit of its own, so a hang is recorded as an outcome and the case goes on to check
whether the pool is still usable.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from typing import Any

from .. import harness, peers
from ..harness import now
from .base import Case, Target, Workload, call_with_timeout, describe_exc, find

W7_TASKS = 10
W7_BAD = 3
W7_TASK_SECONDS = 0.1
#: no error after this long counts as a hang
W7_HANG_AFTER = 8.0
#: how long the "pool usable after" check waits
USABLE_WAIT = 6.0

W8_TASKS = 20
W8_TASK_SECONDS = 1.0
W8_SIGINT_AFTER = 1.0
#: how long after control returns the case looks at what still runs
W8_SETTLE = 2.5
#: SIGINT lands on a task boundary (1 s tasks, 1 s in): tasks already handed to a worker
#: start within this many ms after it, before any pool can react; the goal check allows them
W8_RACE_MS = 50.0


def _usable(state: str, value: Any, expected: Any) -> str:
    if state == "hang":
        return "hang"
    if state == "raised":
        return f"no ({type(value).__name__})"
    return "yes" if value == expected else f"wrong result {value!r:.40}"


class _OpenPool:
    """A pool entered by hand, so the exit can be timed and watched on its own."""

    def __init__(self, c: Case, row: dict[str, Any], inc: Any) -> None:
        self.c, self.row = c, row
        self.cm = c.peer.pool(2)
        with c.stage(15, row, "pool start"):
            self.pool = self.cm.__enter__()
            self.pool.map(inc, [1, 2, 3, 4])

    def close(self) -> None:
        t0 = now()
        with self.c.stage(8, self.row, "shutdown", shutdown="hang"):
            try:
                self.cm.__exit__(None, None, None)
                self.c.peer.shutdown()
                text = f"{now() - t0:.2f} s"
            except Exception as exc:
                text = f"raised {describe_exc(exc, 50)}"
        self.c.record.update(self.row, shutdown=text)


# -- W7 ---------------------------------------------------------------------------------


def run_w7(c: Case) -> None:
    crash, inc = c.fn("crash_at"), c.fn("inc")
    items = [(i, W7_BAD, W7_TASK_SECONDS) for i in range(W7_TASKS)]
    row = c.row()
    if c.variant == "submit" and not c.peer.has_submit:
        raise peers.NotSupported("no single-task API")
    opened = _OpenPool(c, row, inc)
    try:
        if c.variant == "map":
            _crash_map(c, row, opened.pool, crash, items)
        else:
            _crash_submit(c, row, opened.pool, crash, items)
        state, value, _ = call_with_timeout(
            lambda: list(opened.pool.map(inc, [1, 2, 3])), USABLE_WAIT
        )
        c.record.update(row, usable=_usable(state, value, [2, 3, 4]))
    finally:
        opened.close()
    c.record.update(row, status="ok")


def _crash_map(
    c: Case, row: dict[str, Any], pool: peers.Handle, crash: Any, items: list[Any]
) -> None:
    state, value, elapsed = call_with_timeout(lambda: pool.map(crash, items), W7_HANG_AFTER)
    if state == "raised":
        c.record.update(
            row,
            outcome=type(value).__name__,
            error=describe_exc(value, 300),
            s_to_error=round(elapsed, 3),
        )
    elif state == "hang":
        c.record.update(row, outcome=f"hang (nothing in {W7_HANG_AFTER:g} s)")
    else:
        c.record.update(row, outcome=f"no error, returned {list(value)!r:.40}")


def _crash_submit(
    c: Case, row: dict[str, Any], pool: peers.Handle, crash: Any, items: list[Any]
) -> None:
    t0 = now()
    pending = [pool.submit(crash, item) for item in items]
    states: list[str | None] = [None] * len(items)
    values: list[Any] = [None] * len(items)
    times: list[float] = [0.0] * len(items)
    while None in states and now() - t0 < W7_HANG_AFTER:
        for i, p in enumerate(pending):
            if states[i] is not None:
                continue
            try:
                values[i] = p.result(0.005)
                states[i] = "ok"
            except TimeoutError:
                continue
            except Exception as exc:
                values[i], states[i] = exc, "raised"
            times[i] = now() - t0
    bad = W7_BAD
    if states[bad] == "raised":
        c.record.update(
            row,
            outcome=type(values[bad]).__name__,
            error=describe_exc(values[bad], 300),
            s_to_error=round(times[bad], 3),
        )
    elif states[bad] is None:
        c.record.update(row, outcome=f"hang (nothing in {W7_HANG_AFTER:g} s)")
    else:
        c.record.update(row, outcome=f"no error, returned {values[bad]!r:.30}")
    good = sum(
        1 for i, (s, v) in enumerate(zip(states, values)) if i != bad and s == "ok" and v == i + 1
    )
    c.record.update(row, intact=f"{good}/{len(items) - 1}")


def targets_w7(rows: list[dict[str, Any]]) -> list[Target]:
    out = []
    for variant in ("map", "submit"):
        r = find(rows, "mpnb", variant)
        if not r or r.get("status") != "ok":
            out.append(
                Target(
                    f"mpnb {variant}: clear error < 1 s, pool usable"
                    + (", others intact" if variant == "submit" else ""),
                    "n/a",
                    None,
                )
            )
            continue
        s = r.get("s_to_error")
        ok = s is not None and s < 1 and r.get("usable") == "yes"
        if variant == "submit":
            ok = ok and r.get("intact") == f"{W7_TASKS - 1}/{W7_TASKS - 1}"
        measured = f"{r.get('outcome')}, {s} s, usable {r.get('usable')}"
        if variant == "submit":
            measured += f", intact {r.get('intact')}"
        out.append(
            Target(
                f"mpnb {variant}: clear error < 1 s, pool usable"
                + (", others intact" if variant == "submit" else ""),
                measured,
                ok,
            )
        )
    return out


W7 = Workload(
    id="W7",
    title=f"os._exit(1) in 1 of {W7_TASKS} tasks (task {W7_BAD}, "
    f"{W7_TASK_SECONDS} s each), pool of 2",
    unit="",
    better="outcome",
    run=run_w7,
    cases=tuple((p, v) for v in ("map", "submit") for p in peers.POOLS),
    repeat=1,
    budget=30,
    timeout=30,
    columns=(
        ("outcome", "outcome", "s"),
        ("s_to_error", "s to error", "s"),
        ("usable", "pool usable after", "s"),
        ("intact", "others intact", "s"),
        ("shutdown", "shutdown", "s"),
    ),
    targets=targets_w7,
    ratio=False,
    note="map: the 10 tasks as one map; submit: 10 single tasks, each result collected; "
    f"no error within {W7_HANG_AFTER:g} s is a hang; 'pool usable after' maps 3 more tasks",
)


# -- W8 ---------------------------------------------------------------------------------


def run_w8(c: Case) -> None:
    stamp, inc = c.fn("sleep_stamp"), c.fn("inc")
    fd, path = tempfile.mkstemp(prefix="mpnb-bench-w8-")
    os.close(fd)
    items = [(i, path, W8_TASK_SECONDS) for i in range(W8_TASKS)]
    row = c.row()
    fired: dict[str, float] = {}

    def sigint() -> None:
        fired["t"], fired["wall"] = now(), time.time()
        os.kill(os.getpid(), signal.SIGINT)

    # As in a kernel, SIGINT raises KeyboardInterrupt, even where this interpreter was
    # started with SIGINT ignored (a background job of a shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with c.stage(20, row, "interrupted map", status="ok", outcome="hang"):
            try:
                with c.peer.pool(2) as pool:
                    pool.map(inc, [1, 2, 3, 4])
                    timer = threading.Timer(W8_SIGINT_AFTER, sigint)
                    timer.daemon = True
                    timer.start()
                    pool.map(stamp, items)
                outcome = "completed, interrupt ignored"
            except KeyboardInterrupt:
                outcome = "KeyboardInterrupt"
            except BaseException as exc:
                outcome = type(exc).__name__
                c.record.update(row, error=describe_exc(exc, 300))
            t_control, wall_control = now(), time.time()
        if "t" not in fired:
            c.record.update(row, status="fail", reason="the map ended before the interrupt")
            return
        c.record.update(row, outcome=outcome, s_to_control=round(t_control - fired["t"], 3))
        time.sleep(W8_SETTLE)
        token = os.environ.get(harness.TOKEN_ENV, "")
        alive = [p for p in harness.marked_processes(token) if not harness.is_service(p)]
        c.record.update(row, alive_after=len(alive))
        t0 = now()
        with c.stage(8, row, "shutdown", shutdown="hang"):
            c.peer.shutdown()
        offsets = _offsets(path, fired["wall"])
        c.record.update(
            row,
            shutdown=f"{now() - t0:.2f} s",
            status="ok",
            started_after=len(offsets),
            started_after_ms=offsets,
            started_cell=_started_cell(offsets),
            started_after_control=_started_after(path, wall_control),
        )
    finally:
        os.unlink(path)


def _started_after(path: str, wall: float) -> int:
    return len(_offsets(path, wall))


def _offsets(path: str, wall: float) -> list[float]:
    """Milliseconds after ``wall`` at which tasks started, for those that started later."""
    with open(path) as f:
        starts = [float(line.split()[1]) for line in f if line.strip()]
    return sorted(round((t - wall) * 1e3, 1) for t in starts if t > wall)


def _started_cell(offsets: list[float]) -> str:
    """``"2 (+1, +3 ms)"``: how many started after SIGINT, and the first few offsets."""
    if not offsets:
        return "0"
    shown = ", ".join(f"+{o:.0f}" for o in offsets[:3]) + (", ..." if len(offsets) > 3 else "")
    return f"{len(offsets)} ({shown} ms)"


def targets_w8(rows: list[dict[str, Any]]) -> list[Target]:
    r = find(rows, "mpnb", "map")
    text = f"mpnb: control < 1 s, 0 tasks started after (beyond {W8_RACE_MS:g} ms), 0 orphans"
    if not r or r.get("status") != "ok" or r.get("s_to_control") is None:
        return [Target(text, "n/a", None)]
    s, orphans = r["s_to_control"], len(r.get("leftovers", []))
    late = sum(1 for o in r.get("started_after_ms", []) if o > W8_RACE_MS)
    return [
        Target(
            text,
            f"{s} s, {r.get('started_cell')} started after ({late} beyond "
            f"{W8_RACE_MS:g} ms), {orphans} orphans",
            s < 1 and late == 0 and orphans == 0,
        )
    ]


W8 = Workload(
    id="W8",
    title=f"SIGINT to the parent {W8_SIGINT_AFTER:g} s into a map of "
    f"{W8_TASKS} x {W8_TASK_SECONDS:g} s tasks, pool of 2",
    unit="",
    better="outcome",
    run=run_w8,
    cases=tuple((p, "map") for p in peers.POOLS),
    repeat=1,
    budget=30,
    timeout=30,
    columns=(
        ("outcome", "outcome", "s"),
        ("s_to_control", "s to control", "s"),
        ("started_cell", "started after", "s"),
        ("started_after_control", "after control", "s"),
        ("alive_after", "workers alive", "s"),
        ("orphans", "orphans", "s"),
        ("shutdown", "shutdown", "s"),
    ),
    targets=targets_w8,
    ratio=False,
    note="code as in a cell: `with pool: pool.map(...)` (loky, joblib and dask keep their "
    "pool after the block by design); s to control: SIGINT to the exception leaving the "
    f"block; workers alive: non-helper processes {W8_SETTLE:g} s later; started after: "
    "tasks begun after SIGINT, with when (SIGINT falls on a task boundary: 1 s tasks, so the "
    "next tasks begin a few ms later), until the pool was shut down; after control: the "
    "same, counted from when control returned; "
    "orphans: processes still alive after the case's interpreter exited",
)

WORKLOADS = (W7, W8)
