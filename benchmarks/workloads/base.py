"""What a workload is, and what its code sees inside a case process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import harness, peers


class CaseFailure(Exception):
    """The peer ran but did the wrong thing (a child failed, a wrong result)."""


@dataclass(frozen=True)
class Target:
    """One line of a workload's goals, checked against the figures of one run."""

    text: str
    measured: str
    passed: bool | None  # None: could not be checked (n/a)


@dataclass(frozen=True)
class Workload:
    id: str
    title: str
    #: unit of the figure in the table (median/min/max of the samples)
    unit: str
    #: "lower" or "higher" is better; "outcome" for the crash and interrupt cases
    better: str
    #: runs one case inside its own interpreter
    run: Callable[[Case], None]
    #: (peer, case variant) pairs, in table order
    cases: tuple[tuple[str, str], ...]
    repeat: int = 5
    #: seconds of measuring per case before it stops repeating
    budget: float = 15.0
    #: hard limit per case process, start-up and teardown included
    timeout: float = 90.0
    #: extra columns of the table: (key in row["extra"], header, format)
    columns: tuple[tuple[str, str, str], ...] = ()
    #: checks of the mpnb goals, given the merged rows of the workload
    targets: Callable[[list[dict[str, Any]]], list[Target]] | None = None
    #: runner-side parameters (e.g. calibrated work sizes), computed once per run
    params: Callable[[], dict[str, Any]] | None = None
    #: ratio mpnb / best peer is meaningful for this workload
    ratio: bool = True
    note: str = ""


@dataclass
class Case:
    """One (workload, peer, variant) inside its case process."""

    workload: Workload
    peer: peers.Peer
    variant: str
    repeat: int
    budget: float
    params: dict[str, Any]
    record: harness.CaseRecord
    _functions: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def fn(self, name: str) -> Callable[..., Any]:
        """A task function: importable, or defined in a notebook cell for variant "cell"."""
        if not self._functions:
            if self.variant == "cell":
                from .. import cells

                self._functions = cells.define()
            else:
                from .. import tasks

                self._functions = {
                    n: getattr(tasks, n) for n in dir(tasks) if not n.startswith("_")
                }
        return self._functions[name]

    def row(self, variant: str | None = None, **fields: Any) -> dict[str, Any]:
        fields.setdefault("label", self.peer.label())
        fields.setdefault("start_method", self.peer.start_method)
        return self.record.row(variant or self.variant, **fields)

    def finish(self, row: dict[str, Any], samples: list[float], **extra: Any) -> None:
        """Marks ``row`` measured: its samples (figure units) and extra figures."""
        self.record.update(row, status="ok", samples=samples)
        if extra:
            self.record.extra(row, **extra)

    def stage(
        self, seconds: float, row: dict[str, Any], what: str, **on_hang: Any
    ) -> harness.Watchdog:
        """A watchdog for one step: past ``seconds`` the row records a hang and the case
        ends. ``on_hang`` gives the fields to set instead of the default status."""
        fields = on_hang or {"status": "hang", "reason": f"{what}: nothing after {seconds:g} s"}
        return harness.Watchdog(seconds, lambda: self.record.update(row, **fields))


def call_with_timeout(fn: Callable[[], Any], timeout: float) -> tuple[str, Any, float]:
    """Runs ``fn`` in a daemon thread: ("ok", value, s), ("raised", exc, s) or
    ("hang", None, timeout). A hung call is abandoned, not stopped."""
    box: dict[str, Any] = {}

    def target() -> None:
        t0 = harness.now()
        try:
            box["value"] = fn()
            box["state"] = "ok"
        except BaseException as exc:
            box["value"] = exc
            box["state"] = "raised"
        box["elapsed"] = harness.now() - t0

    thread = threading.Thread(target=target, name="bench-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or "state" not in box:
        return "hang", None, timeout
    return box["state"], box["value"], box["elapsed"]


def call_one(
    handle: peers.Handle, fn: Callable[[Any], Any], arg: Any, timeout: float | None = None
) -> Any:
    """One task through the pool: ``submit`` where the peer has it, else a map of one."""
    try:
        pending = handle.submit(fn, arg)
    except peers.NotSupported:
        return handle.map(fn, [arg])[0]
    return pending.result(timeout)


def describe_exc(exc: BaseException, limit: int = 140) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def mpnb_rows(rows: list[dict[str, Any]], variant: str | None = None) -> list[dict[str, Any]]:
    return [
        r for r in rows if r["peer"] in peers.MPNB and (variant is None or r["variant"] == variant)
    ]


def find(rows: list[dict[str, Any]], peer: str, variant: str) -> dict[str, Any] | None:
    for r in rows:
        if r["peer"] == peer and r["variant"] == variant:
            return r
    return None


def median(row: dict[str, Any] | None) -> float | None:
    if not row or row.get("status") != "ok" or not row.get("samples"):
        return None
    stats = harness.Stats.of(row["samples"])
    return stats.median if stats else None
