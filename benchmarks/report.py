"""Tables, ratios and goals, from the rows of a run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import peers
from .harness import Stats
from .workloads import Target, Workload

#: longest reason printed in a table cell; the JSON keeps the whole text
REASON_WIDTH = 100


def num(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if spec == "s":
        return str(value)
    if spec == "d":
        return str(int(value))
    if spec == ".3g" and abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if spec == ".3g" and abs(value) >= 1e4:
        return f"{value / 1e3:.3g}k"
    if spec == ".3g" and abs(value) >= 100:
        return f"{value:.0f}"
    return format(value, spec)


def add_stats(row: dict[str, Any]) -> None:
    stats = Stats.of(row.get("samples") or []) if row.get("status") == "ok" else None
    if stats:
        row.update(median=stats.median, min=stats.min, max=stats.max, n=stats.n)


def _best_word(wl: Workload) -> str:
    return f"{'lowest' if wl.better == 'lower' else 'highest'} {wl.unit}"


def ratios(wl: Workload, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """mpnb / best peer for each variant; best = the best median of the other parallel
    peers (not serial), by the workload's direction."""
    if not wl.ratio or wl.better not in ("lower", "higher"):
        return []
    out = []
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for variant in variants:
        others = [
            r
            for r in rows
            if r["variant"] == variant
            and r.get("median") is not None
            and r["peer"] not in peers.MPNB
            and r["peer"] != "serial"
        ]
        if not others:
            continue
        pick = min if wl.better == "lower" else max
        best = pick(others, key=lambda r: r["median"])
        for r in rows:
            if r["variant"] != variant or r["peer"] not in peers.MPNB:
                continue
            mine = r.get("median")
            out.append(
                {
                    "variant": variant,
                    "peer": r["peer"],
                    "label": r.get("label", r["peer"]),
                    "mpnb": mine,
                    "best_peer": best["peer"],
                    "best": best["median"],
                    "ratio": None if mine is None or not best["median"] else mine / best["median"],
                    "status": r.get("status"),
                    "reason": r.get("reason"),
                }
            )
    return out


def _table(headers: list[str], lines: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(headers)
    ]

    # the last column (notes) is not padded
    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths)) + (
            "  " + cells[-1] if cells[-1] else ""
        )

    rule = fmt(["-" * w for w in widths[:-1]] + [""])
    return [fmt(headers), rule] + [fmt(line) for line in lines]


def _reason(row: dict[str, Any]) -> str:
    text = " ".join(str(row.get("reason") or "").split())
    if row.get("leftovers"):
        text = (text + "; " if text else "") + f"left behind: {', '.join(row['leftovers'])}"
    if row.get("shm_leaked"):
        text = (text + "; " if text else "") + f"/dev/shm left: {', '.join(row['shm_leaked'])}"
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 3] + "..."


def _extra(row: dict[str, Any], key: str) -> Any:
    return row.get("extra", {}).get(key, row.get(key))


def table(wl: Workload, rows: list[dict[str, Any]]) -> list[str]:
    out = [f"{wl.id}  {wl.title}"]
    if wl.better in ("lower", "higher"):
        out[0] += f"  [{wl.unit}, {wl.better} is better]"
    multi = len({r["variant"] for r in rows}) > 1
    headers = ["peer"] + (["variant"] if multi else [])
    if wl.better == "outcome":
        headers += [h for _, h, _ in wl.columns]
    else:
        headers += ["median", "min", "max", "n"] + [h for _, h, _ in wl.columns]
    headers += ["others' CPU", "notes"]
    lines = []
    for r in rows:
        cells = [r.get("label", r["peer"])] + ([r["variant"]] if multi else [])
        status = r.get("status")
        if wl.better != "outcome":
            if status == "ok":
                cells += [
                    num(r.get("median")),
                    num(r.get("min")),
                    num(r.get("max")),
                    str(r.get("n", "")),
                ]
            else:
                cells += [status or "?", "", "", ""]
        if status in ("ok", "hang") or wl.better == "outcome":
            cells += [
                num(_extra(r, key), spec) if status == "ok" or _extra(r, key) is not None else ""
                for key, _, spec in wl.columns
            ]
        else:
            cells += ["" for _ in wl.columns]
        if wl.better == "outcome" and status not in ("ok",):
            cells[len(cells) - len(wl.columns)] = status or "?"
        cells.append(f"{r['others_cpu_pct']}%" if r.get("others_cpu_pct") is not None else "")
        cells.append(
            _reason(r) if status != "ok" or r.get("leftovers") or r.get("shm_leaked") else ""
        )
        lines.append(cells)
    out += ["  " + line for line in _table(headers, lines)]
    rs = ratios(wl, rows)
    if rs:
        out.append(
            f"  ratio mpnb / best peer (best = {_best_word(wl)}, serial excluded; "
            f"{'below' if wl.better == 'lower' else 'above'} 1 favours mpnb):"
        )
        for r in rs:
            if r["ratio"] is None:
                out.append(f"    {r['variant']:<10} {r['label']:<22} n/a ({r['status']})")
            else:
                out.append(
                    f"    {r['variant']:<10} {r['label']:<22} {r['ratio']:.3g}  "
                    f"(mpnb {num(r['mpnb'])} vs {r['best_peer']} {num(r['best'])})"
                )
    if wl.targets:
        out.append("  goals:")
        for t in wl.targets(rows):
            out.append(f"    [{verdict(t)}] {t.text}: {t.measured}")
    if wl.note:
        out.append(f"  note: {wl.note}")
    out.append(
        "  others' CPU: what the rest of the machine used during the case, as a share of all cores"
    )
    return out


def verdict(t: Target) -> str:
    return "n/a " if t.passed is None else ("pass" if t.passed else "FAIL")


def summary(results: Iterable[tuple[Workload, list[dict[str, Any]]]]) -> list[str]:
    lines: list[list[str]] = []
    goals: list[str] = []
    for wl, rows in results:
        for r in ratios(wl, rows):
            lines.append(
                [
                    wl.id,
                    r["variant"],
                    r["label"],
                    num(r["mpnb"]) if r["ratio"] is not None else (r["status"] or "?"),
                    f"{r['best_peer']} {num(r['best'])}",
                    num(r["ratio"]),
                    wl.unit,
                ]
            )
        if wl.targets:
            goals += [f"  [{verdict(t)}] {wl.id} {t.text}: {t.measured}" for t in wl.targets(rows)]
    out = ["Summary: mpnb against the best peer"]
    if lines:
        out += [
            "  " + line
            for line in _table(
                ["id", "variant", "mpnb", "median", "best peer, median", "ratio", "unit"], lines
            )
        ]
    out.append("Goals (BENCHMARKS.md):")
    return out + goals
