"""W6, W9 and W12: moving data: a big numpy array to a worker (cold, warm and modified),
many small items through a Queue, a pandas DataFrame to several tasks."""

from __future__ import annotations

import os
import statistics
import threading
from typing import Any

from .. import harness, peers
from ..harness import now
from .base import Case, CaseFailure, Target, Workload, call_one, find, median

W6_BYTES = 256 * 2**20
W9_ITEMS = 100_000
MB = 2**20


# -- memory counted once ----------------------------------------------------------------


def _pss_without_shmem(pid: int) -> int:
    """PSS of ``pid`` less its share of shared-memory pages (counted in /dev/shm)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line and "kB" in line)
    except (OSError, ValueError):
        return 0
    kb = {k: int(v.split()[0]) for k, v in fields.items() if v.split()}
    return (kb.get("Pss", 0) - kb.get("Pss_Shmem", 0)) * 1024


def _tree_once() -> int:
    pids = [os.getpid()] + [p.pid for p in harness.descendants()]
    return sum(_pss_without_shmem(pid) for pid in pids) + harness.shm_used()


class OnceSampler:
    """Peak growth of every page of the process tree counted once: its PSS without
    shared-memory pages, plus /dev/shm in use (``MemorySampler``'s PSS+shm counts a
    mapped /dev/shm page twice)."""

    def __init__(self, interval: float = 0.025) -> None:
        self.interval = interval
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-once", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_once())
            self._stop.wait(self.interval)

    def __enter__(self) -> OnceSampler:
        self.base = self.peak = _tree_once()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_once())

    @property
    def growth(self) -> int:
        return max(self.peak - self.base, 0)


# -- W6 ---------------------------------------------------------------------------------

W6_VARIANTS = ("cold", "warm", "modified")


def run_w6(c: Case) -> None:
    """One variant: ``cold`` sends a fresh copy each time (a first send), ``warm`` the same
    unchanged array again, ``modified`` the same array changed in place since the last
    send. Every result is checked."""
    import numpy as np

    array_sum = c.fn("array_sum")
    source = np.random.default_rng(0).random(W6_BYTES // 8)
    warm = source[: 2**18].copy()  # 2 MB: big enough for joblib's memmapping to start
    row = c.row()
    rss: list[float] = []
    total: list[float] = []
    shm: list[float] = []
    counted_once: list[float] = []
    shm_base = harness.shm_used()
    if c.variant == "shared":  # mpnb only: the array lives in shared memory from the start
        import mpnb

        array = mpnb.shared_like(source)
    else:
        array = source.copy() if c.variant == "cold" else source
    step = 0
    with c.peer.pool(2) as pool:
        with c.stage(30, row, "first task"):
            call_one(pool, array_sum, warm, 30)
        if c.variant != "cold":
            call_one(pool, array_sum, array, 120)  # the first send, not timed

        def once() -> float:
            nonlocal array, step
            if c.variant == "cold":
                array = source.copy()  # a new array: nothing sent before
            elif c.variant in ("modified", "shared"):
                step += 1
                array[(step * 7919) % array.size] += 1.0  # in place
            expected = float(array.sum())
            with harness.MemorySampler() as sampler, OnceSampler() as once_sampler:
                t0 = now()
                result = call_one(pool, array_sum, array, 120)
                elapsed = now() - t0
            if abs(result - expected) > 1e-9 * abs(expected):
                raise CaseFailure(f"wrong sum {result!r}, expected {expected!r} (stale data?)")
            rss.append(sampler.result.rss_growth / MB)
            total.append(sampler.result.pss_growth / MB)
            counted_once.append(once_sampler.growth / MB)
            shm.append((harness.shm_used() - shm_base) / MB)
            return elapsed * 1e3

        samples = harness.repeat_timed(once, c.repeat, c.budget)
    c.finish(
        row,
        samples,
        rss_growth_mb=statistics.median(rss),
        mem_growth_mb=statistics.median(total),
        once_growth_mb=statistics.median(counted_once),
        shm_mb=statistics.median(shm),
    )


def _ratio(mine: float | None, ref: float | None) -> float | None:
    return mine / ref if mine and ref else None


def _stdlib_best(rows: list[dict[str, Any]], variant: str) -> float | None:
    found = [median(find(rows, p, variant)) for p in ("mp:fork", "mp:forkserver", "mp:spawn")]
    return min((m for m in found if m), default=None)


def targets_w6(rows: list[dict[str, Any]]) -> list[Target]:
    out = []

    def check(text: str, ratio: float | None, limit: float) -> None:
        measured = "n/a" if ratio is None else f"{ratio:.3g}x"
        out.append(Target(text, measured, None if ratio is None else ratio <= limit))

    cold = median(find(rows, "mpnb", "cold"))
    check(
        "cold <= 0.25x stdlib forkserver",
        _ratio(cold, median(find(rows, "mp:forkserver", "cold"))),
        0.25,
    )
    check(
        "warm <= 1.0x joblib",
        _ratio(median(find(rows, "mpnb", "warm")), median(find(rows, "joblib", "warm"))),
        1.0,
    )
    modified = find(rows, "mpnb", "modified")
    check(
        "modified: right result, <= 0.3x stdlib",
        _ratio(median(modified), _stdlib_best(rows, "modified")),
        0.3,
    )
    limit = 0.2 * W6_BYTES / MB
    for variant in (*W6_VARIANTS, "shared"):
        extra = (find(rows, "mpnb", variant) or {}).get("extra", {})
        for key, what in (("rss_growth_mb", "RSS"), ("once_growth_mb", "PSS+shm, once")):
            growth = extra.get(key)
            out.append(
                Target(
                    f"{variant}: peak {what} growth <= 0.2x the array ({limit:.0f} MB)",
                    "n/a" if growth is None else f"{growth:.0f} MB",
                    None if growth is None else growth <= limit,
                )
            )
    return out


W6 = Workload(
    id="W6",
    title="a 256 MB float64 numpy array to a worker, return its sum: cold, warm, modified",
    unit="ms",
    better="lower",
    run=run_w6,
    cases=tuple((p, v) for p in ("serial",) + peers.POOLS for v in W6_VARIANTS)
    + (("mpnb", "shared"),),
    repeat=3,
    budget=15,
    timeout=180,
    columns=(
        ("rss_growth_mb", "RSS+ MB", ".0f"),
        ("mem_growth_mb", "PSS+shm+ MB", ".0f"),
        ("once_growth_mb", "once+ MB", ".0f"),
        ("shm_mb", "shm MB", ".0f"),
    ),
    targets=targets_w6,
    note="cold: a new array each time; warm: the same unchanged array again; modified: "
    "one element changed in place before each send (the sum is checked every time); "
    "shared (mpnb only): an mp.shared_like array, changed in place before each send. "
    "RSS+ = peak growth of the summed RSS of the process tree (a page mapped by two "
    "processes counts twice); PSS+shm+ = peak growth of the summed PSS plus /dev/shm "
    "in use (a mapped /dev/shm page counts twice; /dev/shm is shared by the machine, so "
    "it is noisy); once+ = the same with each page once (PSS less shared-memory pages, "
    "plus /dev/shm); shm MB = /dev/shm in use after the call, over the case's start "
    "(segments kept)",
)


# -- W12 --------------------------------------------------------------------------------

W12_BYTES = 200 * 2**20
W12_TASKS = 8


def run_w12(c: Case) -> None:
    import numpy as np
    import pandas as pd

    frame_sum = c.fn("frame_sum")
    columns = 25
    rows = W12_BYTES // 8 // columns
    data = np.random.default_rng(0).random((rows, columns))
    frame = pd.DataFrame(data, columns=[f"c{i}" for i in range(columns)])
    del data
    expected = float(frame.to_numpy().sum())
    row = c.row()
    total: list[float] = []
    with c.peer.pool(2) as pool:
        with c.stage(30, row, "first task"):
            pool.map(frame_sum, [frame.iloc[:1000].copy()])

        def once() -> float:
            with OnceSampler() as sampler:
                t0 = now()
                results = pool.map(frame_sum, [frame] * W12_TASKS)
                elapsed = now() - t0
            if any(abs(r - expected) > 1e-9 * abs(expected) for r in results):
                raise CaseFailure(f"wrong sums {results!r}, expected {expected!r}")
            total.append(sampler.growth / MB)
            return elapsed

        samples = harness.repeat_timed(once, c.repeat, c.budget)
    # The largest growth: the first send's (later ones may reuse what it made).
    c.finish(row, samples, mem_growth_mb=max(total))


def targets_w12(rows: list[dict[str, Any]]) -> list[Target]:
    extra = (find(rows, "mpnb", "import") or {}).get("extra", {})
    growth = extra.get("mem_growth_mb")
    limit = 1.2 * W12_BYTES / MB
    return [
        Target(
            f"extra memory (each page once) <= 1.2x the frame ({limit:.0f} MB)",
            "n/a" if growth is None else f"{growth:.0f} MB",
            None if growth is None else growth <= limit,
        )
    ]


W12 = Workload(
    id="W12",
    title=f"a 200 MB numeric pandas DataFrame sent to {W12_TASKS} tasks (a map)",
    unit="s",
    better="lower",
    run=run_w12,
    cases=tuple((p, "import") for p in ("serial",) + peers.POOLS),
    repeat=3,
    budget=20,
    timeout=240,
    columns=(("mem_growth_mb", "once+ MB", ".0f"),),
    targets=targets_w12,
    note="extra memory = peak growth, during the map, of the process tree's PSS less its "
    "shared-memory pages, plus /dev/shm in use (each page once); the largest over the "
    "repeats (the first send's)",
)


# -- W9 ---------------------------------------------------------------------------------


def run_w9(c: Case) -> None:
    ctx = c.peer.context()
    echo = c.fn("queue_echo")
    items = [{"i": i, "name": f"item-{i}", "value": i * 0.5} for i in range(W9_ITEMS)]
    row = c.row()
    inbox, outbox = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=echo, args=(inbox, outbox))
    child.start()
    try:
        with c.stage(30, row, "first items"):
            for item in items[:1000]:
                inbox.put(item)
            for _ in range(1000):
                outbox.get()

        def once() -> float:
            t0 = now()
            for item in items:
                inbox.put(item)
            received = [outbox.get() for _ in range(W9_ITEMS)]
            elapsed = now() - t0
            if received[-1] != items[-1] or received[W9_ITEMS // 2] != items[W9_ITEMS // 2]:
                raise CaseFailure("items came back wrong")
            return elapsed

        c.finish(row, harness.repeat_timed(once, c.repeat, c.budget))
    finally:
        inbox.put(None)
        child.join(10)
        if child.is_alive():
            child.terminate()
            child.join(5)
        for q in (inbox, outbox):
            q.close()
            q.join_thread()


def targets_w9(rows: list[dict[str, Any]]) -> list[Target]:
    out = []
    for mine_peer, stdlib_peer in (("mpnb", None), ("mpnb:spawn", "mp:spawn")):
        mine = median(find(rows, mine_peer, "import"))
        if stdlib_peer is None:
            # mpnb's default context against the stdlib with the same start method.
            method = (find(rows, mine_peer, "import") or {}).get("start_method") or "forkserver"
            stdlib_peer = f"mp:{method}"
        ref = median(find(rows, stdlib_peer, "import"))
        ratio = mine / ref if mine and ref else None
        out.append(
            Target(
                f"{mine_peer} <= 1.1x {stdlib_peer}",
                "n/a" if ratio is None else f"{ratio:.3g}x",
                None if ratio is None else ratio <= 1.1,
            )
        )
    return out


W9 = Workload(
    id="W9",
    title=f"{W9_ITEMS:,} small dicts through a Queue to a child and back",
    unit="s",
    better="lower",
    run=run_w9,
    cases=tuple((p, "import") for p in peers.PROCESS_API),
    repeat=5,
    budget=15,
    timeout=90,
    targets=targets_w9,
    note="one child echoes a Queue into another; the parent puts all, "
    "then gets all; only peers with a Queue",
)

WORKLOADS = (W6, W9, W12)
