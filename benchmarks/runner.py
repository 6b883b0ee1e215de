"""Runs the cases one after another, each in its own interpreter, and reports."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from . import harness, peers, report
from .workloads import WORKLOADS, Workload

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
#: how long leftovers of a finished case get to exit on their own before being killed
LEFTOVER_GRACE = 3.0
# A case runs as ``python -c``, so its __main__ has no file and no module name, as in a
# Jupyter kernel: spawn and forkserver children have no main module to import again.
CASE_MAIN = "import sys; from benchmarks.case import main; sys.exit(main(sys.argv))"
#: seconds between two looks at what a running case maps in /dev/shm
SHM_POLL = 1.0
#: lines of a failed case's log kept in the JSON
LOG_TAIL = 12


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="mpnb against the stdlib and other process-pool libraries, side by side.",
    )
    parser.add_argument("--only", help="workloads to run, e.g. W3,W7 (default: all)")
    parser.add_argument("--peers", help="peers to run, e.g. mpnb,mp:fork (default: all)")
    parser.add_argument(
        "--repeat",
        type=int,
        help="timed repeats per case (default: per "
        "workload); a slow peer stops earlier, at the time budget",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and a smaller time budget per case"
    )
    parser.add_argument("--list", action="store_true", help="list workloads and peers, run nothing")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="print the tables of a results file, run nothing",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    known = set(WORKLOADS)
    args.workloads = [w.strip().upper() for w in args.only.split(",")] if args.only else list(known)
    unknown = [w for w in args.workloads if w not in known]
    if unknown:
        parser.error(f"unknown workload {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    args.workloads = [w for w in WORKLOADS if w in args.workloads]
    args.peer_names = [p.strip() for p in args.peers.split(",")] if args.peers else None
    if args.peer_names:
        bad = [p for p in args.peer_names if p not in peers.ALL]
        if bad:
            parser.error(f"unknown peer {', '.join(bad)}; known: {', '.join(peers.ALL)}")
    return args


def _repeat(wl: Workload, args: argparse.Namespace) -> tuple[int, float]:
    if args.repeat:
        return args.repeat, wl.budget * max(1.0, args.repeat / wl.repeat)
    if args.quick:
        return max(2, wl.repeat // 2), wl.budget / 2
    return wl.repeat, wl.budget


def _last_error(log: str) -> str:
    for line in reversed(log.splitlines()):
        line = line.strip()
        if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b", line):
            return line[:200]
    return ""


def _leftovers(token: str) -> list[str]:
    """Processes of the case still alive after it exited: waited for, then killed."""
    deadline = time.monotonic() + LEFTOVER_GRACE
    found = harness.marked_processes(token)
    while found and time.monotonic() < deadline:
        time.sleep(0.2)
        found = harness.marked_processes(token)
    if not found:
        return []
    labels = [harness.describe(p) for p in found]
    harness.kill_all(found)
    return labels


def _stop_case(proc: subprocess.Popen[bytes], token: str) -> int:
    """Kills a case's process group and every process carrying its marker."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    rc = proc.wait()
    harness.kill_all(harness.marked_processes(token))
    return rc


def _busy() -> float:
    """CPU seconds the whole machine has been busy."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _reaped_cpu() -> float:
    """CPU seconds of this process's children that were waited for, and of theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[pid] = t.user + t.system
    return out


def _shm_leaks(seen: set[str]) -> list[str]:
    """Entries of /dev/shm that the case's processes were seen using, still there after
    the case ended and its leftovers were killed, and used by nobody now.

    Reported, never removed: the machine is shared with other programs.
    """
    paths = {os.path.join(harness.SHM_DIR, name) for name in seen}
    paths = {p for p in paths if os.path.exists(p)}
    if not paths:
        return []
    in_use = harness.paths_in_use(paths)
    return sorted(os.path.basename(p) for p in paths - in_use)


def run_case(
    wl: Workload,
    peer: str,
    variant: str,
    repeat: int,
    budget: float,
    params: dict[str, Any],
    logdir: Path,
) -> list[dict[str, Any]]:
    token = uuid.uuid4().hex
    name = f"{wl.id}-{peer.replace(':', '-')}-{variant}"
    result_path = logdir / f"{name}.json"
    log_path = logdir / f"{name}.log"
    spec = {
        "workload": wl.id,
        "peer": peer,
        "variant": variant,
        "repeat": repeat,
        "budget": budget,
        "timeout": wl.timeout,
        "params": params,
    }
    env = dict(os.environ)
    env[harness.TOKEN_ENV] = token
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["PYTHONUNBUFFERED"] = "1"
    # Cases run as on a user's machine, where Python caches compiled modules: with
    # PYTHONDONTWRITEBYTECODE (set on some CI machines) every spawn and forkserver child,
    # of every peer, would compile the benchmark's task module again at each start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    shm_seen: set[str] = set()
    tree_cpu: dict[int, float] = {}
    load = os.getloadavg()[0]
    busy0, reaped0 = _busy(), _reaped_cpu()
    t0 = time.perf_counter()
    timed_out = False
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", CASE_MAIN, json.dumps(spec), str(result_path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = t0 + wl.timeout
        while True:
            try:
                rc = proc.wait(SHM_POLL)
                break
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:
                # Ctrl-C on the runner: the case is in a session of its own and did not
                # get the signal; stop it and whatever it started, then stop.
                _stop_case(proc, token)
                raise
            # What the case's processes map in /dev/shm, to tell its leaks from others'.
            tree = [proc.pid] + [p.pid for p in harness.descendants(proc.pid)]
            shm_seen |= harness.shm_names_used(tree)
            tree_cpu.update(_cpu_of(tree))
            if time.perf_counter() > deadline:
                timed_out = True
                rc = _stop_case(proc, token)
                break
    wall = time.perf_counter() - t0
    # The rest of the machine's CPU use meanwhile, as a share of all its cores: how noisy
    # the figures of this case are. Processes shorter than a poll are missed, so the
    # share reads high for cases that start many short processes (W1).
    own = max(_reaped_cpu() - reaped0, sum(tree_cpu.values()))
    others = max(0.0, _busy() - busy0 - own) / wall / (os.cpu_count() or 1)
    rows: list[dict[str, Any]] = []
    if result_path.exists():
        try:
            rows = json.loads(result_path.read_text())
        except ValueError:
            rows = []
    leftovers = _leftovers(token)
    shm = _shm_leaks(shm_seen)
    log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    if not rows:
        rows = [{"variant": variant, "status": "running"}]
    for row in rows:
        if timed_out and row.get("status") == "running":
            row.update(status="hang", reason=f"case killed after {wl.timeout:g} s")
        elif row.get("status") == "running":
            row.update(status="fail", reason=f"case exited with {rc}")
        if row.get("status") in ("fail", "hang") and not row.get("traceback"):
            last = _last_error(log_text)
            if last and last not in (row.get("reason") or ""):
                row["reason"] = f"{row.get('reason', '')}; log: {last}".lstrip("; ")
        if row.get("status") != "ok" and log_text.strip():
            row["log_tail"] = "\n".join(log_text.splitlines()[-LOG_TAIL:])[-600:]
        row.update(
            peer=peer,
            case_variant=variant,
            leftovers=leftovers,
            orphans=len(leftovers),
            shm_leaked=shm,
            wall_s=round(wall, 2),
            load1=round(load, 2),
            others_cpu_pct=round(others * 100),
            exit_code=rc,
        )
        row.setdefault("label", peer)
        report.add_stats(row)
    return rows


def _progress(wl: Workload, rows: list[dict[str, Any]]) -> str:
    parts = []
    for r in rows:
        if r.get("status") == "ok" and r.get("median") is not None:
            text = f"{report.num(r['median'])} {wl.unit} (n={r['n']})"
        elif r.get("status") == "ok":
            text = str(r.get("outcome", "ok"))
        else:
            text = f"{r.get('status')}: {str(r.get('reason', ''))[:70]}"
        parts.append(text if len(rows) == 1 else f"{r['variant']}: {text}")
    return "; ".join(parts)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in (
        "mpnb",
        "cloudpickle",
        "loky",
        "joblib",
        "multiprocess",
        "dill",
        "mpire",
        "dask",
        "distributed",
        "numpy",
        "psutil",
        "ipython",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()) or "host"


def _compact(value: Any) -> Any:
    """Floats to 4 significant digits, tracebacks left to the logs: a small file."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _dump(value: Any, depth: int = 0) -> str:
    """JSON with one line per row: indented down to the rows, compact below."""
    if depth >= 4 or not isinstance(value, (dict, list)) or not value:
        return json.dumps(value, default=str)
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {_dump(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    return "[\n" + ",\n".join(f"{inner}{_dump(v, depth + 1)}" for v in value) + f"\n{pad}]"


def save(outdir: Path, meta: dict[str, Any], measured: dict[str, Any]) -> Path:
    """Writes ``<date>-<host>.json`` (merged with an earlier run of the same day and host,
    workload by workload) and ``latest.json``."""
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"{dt.date.today().isoformat()}-{_host()}.json"
    data: dict[str, Any] = {"meta": {}, "workloads": {}}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            pass
    data["meta"] = meta  # of the latest run; each workload says when it was measured
    data.setdefault("workloads", {}).update(measured)
    data["workloads"] = dict(sorted(data["workloads"].items(), key=lambda i: int(i[0][1:])))
    text = _dump(_compact(data)) + "\n"
    for target in (path, outdir / "latest.json"):
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for wl in WORKLOADS.values():
            names = list(
                dict.fromkeys(f"{p}{'' if v == 'import' else '/' + v}" for p, v in wl.cases)
            )
            print(f"{wl.id:<4} {wl.title}\n     [{wl.unit or 'outcome'}] {', '.join(names)}")
        return 0
    if args.report:
        return print_saved(args.report, args.workloads)
    logdir = Path(tempfile.mkdtemp(prefix="mpnb-bench-"))
    print(
        f"mpnb benchmarks on {_host()} ({os.cpu_count()} cores), Python "
        f"{platform.python_version()}; logs in {logdir}",
        flush=True,
    )
    started = time.time()
    measured: dict[str, Any] = {}
    done: list[tuple[Workload, list[dict[str, Any]]]] = []
    param_cache: dict[Callable[[], dict[str, Any]], dict[str, Any]] = {}
    for wid in args.workloads:
        wl = WORKLOADS[wid]
        repeat, budget = _repeat(wl, args)
        if wl.params and wl.params not in param_cache:
            param_cache[wl.params] = wl.params()
        params = param_cache.get(wl.params, {}) if wl.params else {}
        print(f"\n== {wl.id} {wl.title}", flush=True)
        rows: list[dict[str, Any]] = []
        for peer, variant in wl.cases:
            if args.peer_names and peer not in args.peer_names:
                continue
            case_rows = run_case(wl, peer, variant, repeat, budget, params, logdir)
            print(
                f"   {peer:<20} {variant:<8} {_progress(wl, case_rows)}  "
                f"[{case_rows[0]['wall_s']:.1f} s, others' CPU "
                f"{case_rows[0]['others_cpu_pct']}%]",
                flush=True,
            )
            rows += case_rows
        print("\n" + "\n".join(report.table(wl, rows)), flush=True)
        done.append((wl, rows))
        measured[wl.id] = {
            "title": wl.title,
            "unit": wl.unit,
            "better": wl.better,
            "note": wl.note,
            "measured_at": dt.datetime.now().isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "repeat": repeat,
            "budget_s": budget,
            "params": params,
            "rows": rows,
            "ratios": report.ratios(wl, rows),
            "goals": [
                {"goal": t.text, "measured": t.measured, "passed": t.passed}
                for t in (wl.targets(rows) if wl.targets else [])
            ],
        }
    print("\n" + "\n".join(report.summary(done)))
    duration = time.time() - started
    print(f"\n{len(args.workloads)} workloads in {duration / 60:.1f} min", flush=True)
    if not args.no_save:
        meta = {
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "host": _host(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "commit": _git_commit(),
            "versions": _versions(),
            "args": {
                "only": args.only,
                "peers": args.peers,
                "repeat": args.repeat,
                "quick": args.quick,
            },
            "duration_s": round(duration, 1),
            "note": "a shared, noisy 2-core machine: compare ratios of one run, not absolute "
            "times across runs",
        }
        path = save(args.out, meta, measured)
        print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if _kept_logs(done):
        print(f"logs of the cases that failed or hung: {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0


def print_saved(path: Path, only: list[str]) -> int:
    data = json.loads(path.read_text())
    meta = data.get("meta", {})
    print(
        f"{path}: {meta.get('date', '?')} on {meta.get('host', '?')} "
        f"({meta.get('cpus', '?')} cores), commit {meta.get('commit', '?')}"
    )
    done = []
    for wid, saved in data.get("workloads", {}).items():
        if wid not in WORKLOADS or wid not in only:
            continue
        wl, rows = WORKLOADS[wid], saved["rows"]
        print(f"\n({saved.get('measured_at', '?')})\n" + "\n".join(report.table(wl, rows)))
        done.append((wl, rows))
    print("\n" + "\n".join(report.summary(done)))
    return 0


def _kept_logs(done: list[tuple[Workload, list[dict[str, Any]]]]) -> bool:
    """Logs are kept when a case failed or hung, so it can be looked at."""
    return any(r.get("status") in ("fail", "hang") for _, rows in done for r in rows)
