"""Run CPython's own multiprocessing test suite against mpnb.

    python tests/conformance/run.py [--modes dropin,ext] [--methods forkserver,spawn,fork]
                                    [-j 2] [--run-timeout 1500] [--test-timeout 180]
                                    [-k SUBSTRING ...] [--keep]

Modes (see generate.py): ``dropin`` (the suite with mpnb as the module under test) and
``ext`` (the unchanged suite with mpnb's pickler installed, as ``%load_ext mpnb`` does).
Each mode x start method is one run: a fresh interpreter (driver.py) in its own process
group, working directory and TMPDIR, under a hard time limit. A test that hangs past
--test-timeout, or kills its interpreter, is an error; the run goes on with the tests
after it in a new interpreter.

The README's ``## Deliberate differences from multiprocessing`` list is the only list of
expected failures: a listed test that fails is "deliberate"; one that passes is a
stale entry (an error). Anything else that fails or errors, any name mpnb lacks (see
generate.py), and any process, /dev/shm entry or temporary file left behind make the
exit status non-zero. Results (with tracebacks) and logs go to the build folder.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import generate  # noqa: E402

README = ROOT / "README.md"
SECTION = "## Deliberate differences from multiprocessing"
MODE_WORDS = {"drop-in": "dropin", "extension": "ext"}

# Tests that cannot run against a third-party package at all, whatever mpnb does. Not
# differences of mpnb's: they are skipped in the named mode and reported as such.
NOT_APPLICABLE = {
    (
        "dropin",
        "TestFlags.test_flags",
    ): "starts `python -E -S`: without site-packages neither mpnb nor cloudpickle can be imported",
}

OUTCOMES = ("pass", "fail", "error", "skip", "xfail", "xpass")


# -- README --------------------------------------------------------------------------------
@dataclass
class Entry:
    test_id: str
    modes: tuple
    reason: str


def parse_readme(path: Path = README) -> list:
    """The bullets of the README section; each names test ids in backquotes.

    A bullet applies to both modes unless it says ``(drop-in mode)`` or
    ``(extension mode)``.
    """
    text = path.read_text(encoding="utf-8")
    if SECTION not in text:
        raise SystemExit(f"{path}: no {SECTION!r} section")
    body = text.split(SECTION, 1)[1]
    body = re.split(r"^## ", body, maxsplit=1, flags=re.M)[0]
    bullets = re.findall(r"^- (.*(?:\n(?!- |\n).*)*)", body, flags=re.M)
    entries = []
    for bullet in bullets:
        bullet = " ".join(bullet.split())
        ids = re.findall(r"`([A-Z_]\w*\.test\w*)`", bullet)
        modes = tuple(v for k, v in MODE_WORDS.items() if f"({k} mode" in bullet) or tuple(
            MODE_WORDS.values()
        )
        for test_id in ids:
            entries.append(Entry(test_id, modes, bullet))
    return entries


# -- one run -------------------------------------------------------------------------------
@dataclass
class RunResult:
    mode: str
    method: str
    wall: float = 0.0
    outcomes: dict = field(default_factory=dict)  # id -> (outcome, detail)
    crashed: list = field(default_factory=list)  # ids running when the driver died
    leftovers: list = field(default_factory=list)  # processes, files left behind
    notes: list = field(default_factory=list)
    killed: bool = False  # an interpreter was killed in a test (a hang)


def _group_members(pgid: int) -> list:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            members.append((int(entry), cmd))
    return members


def _reap_group(pgid: int, grace: float) -> list:
    """Wait up to grace for the group to empty; kill and return what stayed."""
    deadline = time.monotonic() + grace
    while True:
        members = _group_members(pgid)
        if not members or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if members:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return members


def _read_events(path: Path):
    outcomes, started, done = {}, [], False
    if not path.exists():
        return outcomes, started, done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if "start" in event:
            started.append(event["start"])
        elif "done" in event:
            done = True
        else:
            # A failing subtest is reported before its test ends: it stays.
            old = outcomes.get(event["id"])
            if old is None or old[0] not in ("fail", "error"):
                outcomes[event["id"]] = (event["outcome"], event.get("detail", ""))
    return outcomes, started, done


def run_one(mode: str, method: str, build_dir: Path, work_root: Path, args) -> RunResult:
    result = RunResult(mode, method)
    work = work_root / f"{mode}-{method}"
    tmp = work / "tmp"
    cwd = work / "cwd"
    tmp.mkdir(parents=True)
    cwd.mkdir()
    events = work / "events.jsonl"
    log = work / "log.txt"
    skip_file = work / "skip.txt"
    na = {tid for (m, tid) in NOT_APPLICABLE if m == mode}
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(build_dir), PYTHONFAULTHANDLER="1")
    env.pop("PYTHONSTARTUP", None)
    module = generate.module_name(mode, method)
    start = time.monotonic()
    deadline = start + args.run_timeout
    outcomes: dict = {}
    for attempt in range(args.max_restarts + 1):
        outcomes, started, _ = _read_events(events)
        skip_file.write_text("\n".join(sorted(set(outcomes) | set(result.crashed) | na)))
        cmd = [
            sys.executable,
            str(HERE / "driver.py"),
            str(build_dir),
            module,
            str(events),
            "--skip",
            str(skip_file),
            "--test-timeout",
            str(args.test_timeout),
        ]
        cmd += [f"-k{k}" for k in args.only]
        with open(log, "a", encoding="utf-8") as logf:
            logf.write(f"\n=== attempt {attempt}: {' '.join(cmd)}\n")
            logf.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdout=logf,
                stderr=logf,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            timed_out = False
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                # The test process first, so its resource tracker (same group) sees the
                # pipe close and unlinks what was registered; then the rest.
                proc.kill()
                proc.wait()
        left = _reap_group(proc.pid, grace=5.0)
        for pid, cmdline in left:
            result.leftovers.append(
                f"process {pid} still running after the run (killed): {cmdline[:200]}"
            )
        outcomes, started, done = _read_events(events)
        if done:
            break
        running = [t for t in started if t not in outcomes and t not in result.crashed]
        if timed_out:
            result.notes.append(f"hard run timeout ({args.run_timeout:.0f}s) hit")
            result.crashed.extend(running[-1:] or ["<run timeout>"])
            break
        if running:
            result.crashed.append(running[-1])
            result.notes.append(
                f"interpreter exited (rc {proc.returncode}) during "
                f"{running[-1]}; restarted after it"
            )
        else:
            result.notes.append(
                f"interpreter exited (rc {proc.returncode}) outside a test; see the log"
            )
            result.crashed.append("<driver>")
            break
    # A test that hung or killed its interpreter runs once more, alone, in a fresh one.
    # CPython's own suite has timing-dependent tests: ``WithThreadsTestPool.test_terminate``
    # hangs now and then on a loaded machine inside the standard library's ThreadPool
    # alone. It counts as passed only if that second run passes, and the report says so.
    killed = [tid for tid in result.crashed if not tid.startswith("<")]
    result.killed = bool(killed)
    for number, tid in enumerate(killed):
        outcome = _run_alone(tid, module, work / f"retry-{number}.jsonl", cwd, env, args)
        if outcome == "pass":
            result.crashed.remove(tid)
            outcomes[tid] = ("pass", "")
            result.notes.append(f"{tid} timed out or was killed once; passed when run again alone")
    result.wall = time.monotonic() - start
    result.outcomes = outcomes
    for tid in result.crashed:
        result.outcomes[tid] = ("error", "timed out or killed the interpreter; see the log")
    for tid in na:
        if not args.only or any(k in tid for k in args.only):
            result.outcomes[tid] = ("skip", "not applicable: " + NOT_APPLICABLE[(mode, tid)])
    # Full results and the log, for reading the tracebacks (the build folder is ignored).
    (build_dir / f"results-{mode}-{method}.json").write_text(
        json.dumps(
            {tid: {"outcome": o, "detail": d} for tid, (o, d) in sorted(result.outcomes.items())},
            indent=1,
        )
    )
    shutil.copyfile(log, build_dir / f"log-{mode}-{method}.txt")
    # What the suite left in its working directory and TMPDIR. An interpreter killed in a
    # test cannot remove multiprocessing's own temporary folder (``pymp-*``): a note then.
    for folder in (tmp, cwd):
        for leftover in sorted(folder.iterdir()):
            what = f"left in its {folder.name} folder: {leftover.name}"
            if killed and leftover.name.startswith("pymp-"):
                result.notes.append(what + " (by the interpreter killed in a test)")
            else:
                result.leftovers.append(what)
    return result


def _run_alone(tid: str, module: str, events: Path, cwd: Path, env: dict, args) -> str:
    """The outcome of test ``tid`` run alone in a fresh interpreter (``error`` if it
    hangs again or kills it)."""
    cmd = [
        sys.executable,
        str(HERE / "driver.py"),
        str(env["PYTHONPATH"]),
        module,
        str(events),
        "--test-timeout",
        str(args.test_timeout),
        f"-k{tid}",
    ]
    with open(events.with_suffix(".log"), "w", encoding="utf-8") as logf:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=logf,
            stderr=logf,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=args.test_timeout + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _reap_group(proc.pid, grace=5.0)
    outcomes, _, _ = _read_events(events)
    return str(outcomes.get(tid, ("error", ""))[0])


# -- /dev/shm ------------------------------------------------------------------------------
def _shm_entries() -> set:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def _shm_holders(names: set) -> dict:
    """Which live processes map or hold open /dev/shm/<name>."""
    holders: dict = {}
    paths = {f"/dev/shm/{n}": n for n in names}
    if not paths:
        return holders
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        seen = set()
        try:
            with open(f"/proc/{entry}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.rstrip("\n").split(maxsplit=5)
                    path = parts[-1].replace(" (deleted)", "") if len(parts) == 6 else ""
                    if path in paths:
                        seen.add(paths[path])
            for fd in os.listdir(f"/proc/{entry}/fd"):
                try:
                    target = os.readlink(f"/proc/{entry}/fd/{fd}")
                except OSError:
                    continue
                if target in paths:
                    seen.add(paths[target])
        except OSError:
            continue
        for name in seen:
            holders.setdefault(name, []).append(int(entry))
    return holders


# -- report --------------------------------------------------------------------------------
def _last_line(detail: str) -> str:
    lines = [ln.strip() for ln in detail.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def summarize(results: list, entries: list, report: dict) -> int:
    status = 0
    print()
    print(
        f"{'mode':7} {'method':10} {'ran':>5} {'passed':>6} {'failed':>6} {'errors':>6} "
        f"{'skipped':>7} {'deliberate':>10} {'stale':>5} {'wall':>7}"
    )
    problems = []
    for r in results:
        counts = dict.fromkeys(OUTCOMES, 0)
        deliberate, stale, unexpected = [], [], []
        listed = {e.test_id for e in entries if r.mode in e.modes}
        for tid, (outcome, detail) in sorted(r.outcomes.items()):
            counts[outcome] += 1
            if tid in listed:
                if outcome in ("fail", "error"):
                    deliberate.append(tid)
                elif outcome == "pass":
                    stale.append(tid)
            elif outcome in ("fail", "error", "xpass"):
                unexpected.append((tid, outcome, detail))
        ran = sum(counts[o] for o in OUTCOMES if o != "skip")
        print(
            f"{r.mode:7} {r.method:10} {ran:5} {counts['pass'] + counts['xfail']:6} "
            f"{counts['fail']:6} {counts['error'] + counts['xpass']:6} {counts['skip']:7} "
            f"{len(deliberate):10} {len(stale):5} {r.wall:6.0f}s"
        )
        label = f"[{r.mode}/{r.method}]"
        for tid, outcome, detail in unexpected:
            problems.append(f"{label} {outcome.upper()}: {tid}: {_last_line(detail)}")
        for tid in stale:
            problems.append(f"{label} STALE README entry (passes now): {tid}")
        for leftover in r.leftovers:
            problems.append(f"{label} LEFT BEHIND: {leftover}")
        for note in r.notes:
            problems.append(f"{label} note: {note}")
        if unexpected or stale or r.leftovers:
            status = 1
    if any(r.mode == "dropin" for r in results):
        for name in report.get("missing_names", []):
            problems.append(f"[dropin] MISSING in mpnb (the stdlib's used instead): {name}")
            status = 1
    print()
    for line in problems:
        print(line)
    return status


def main() -> int:
    # Started in the background by a shell (``make conformance &``), this process ignores
    # SIGINT and so would every interpreter it starts: CPython's tests of interrupts
    # need it heard (an exec'd child gets the default back from a handler, not from
    # SIG_IGN).
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="dropin,ext")
    parser.add_argument("--methods", default="forkserver,spawn,fork")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=1500.0,
        help="hard limit for one mode x method run, seconds",
    )
    parser.add_argument(
        "--test-timeout",
        type=float,
        default=180.0,
        help="limit for one test (faulthandler dumps the stacks), seconds",
    )
    parser.add_argument("--max-restarts", type=int, default=10)
    parser.add_argument("--build-dir", default=str(ROOT / "build" / "conformance"))
    parser.add_argument(
        "-k",
        dest="only",
        action="append",
        default=[],
        help="run only the test ids containing this (repeatable)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the runs' working folders (their path is printed)"
    )
    args = parser.parse_args()

    modes = [m for m in args.modes.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]
    for m in modes:
        if m not in generate.MODES:
            parser.error(f"unknown mode {m!r}")
    for m in methods:
        if m not in generate.METHODS:
            parser.error(f"unknown start method {m!r}")

    entries = parse_readme()
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    build_dir = Path(args.build_dir).resolve() / tag
    report = generate.generate(build_dir).as_dict()
    print(
        f"CPython {sys.version.split()[0]}: {generate.stdlib_test_dir()}/_test_multiprocessing.py"
    )
    print(f"generated into {build_dir}")
    for key, title in (
        ("mpnb_modules", "mapped to mpnb"),
        ("stdlib_modules", "kept on the stdlib (no importable mpnb.X)"),
        ("bookkeeping", "harness bookkeeping kept on the stdlib"),
        ("stdlib_patch_targets", "mock.patch targets kept on the stdlib"),
    ):
        if report[key]:
            print(f"  {title}: {', '.join(report[key])}")
    print(f"README deliberate differences: {len(entries)} test id(s)", flush=True)

    shm_before = _shm_entries()
    work_root = Path(tempfile.mkdtemp(prefix="mpnb-conformance-"))
    runs = [(mode, method) for mode in modes for method in methods]
    results: list = []
    t0 = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(run_one, mode, method, build_dir, work_root, args)
                for mode, method in runs
            ]
            for future in concurrent.futures.as_completed(futures):
                r = future.result()
                print(f"finished {r.mode}/{r.method} in {r.wall:.0f}s", flush=True)
                results.append(r)
        results.sort(key=lambda r: runs.index((r.mode, r.method)))
        # /dev/shm: what appeared during the runs and is still there, unless a live
        # process holds it (ours are gone by now: someone else's).
        time.sleep(1.0)
        new = _shm_entries() - shm_before
        holders = _shm_holders(new)
        shm_left = []
        for name in sorted(new):
            if name in holders:
                print(
                    f"note: /dev/shm/{name} appeared during the run, held by "
                    f"pid(s) {holders[name]}: not ours, left alone"
                )
                continue
            shm_left.append(name)
            try:
                os.unlink(f"/dev/shm/{name}")
            except FileNotFoundError:
                pass
        if shm_left and results:
            # Not attributable to one run when runs overlap: counted under the first. An
            # interpreter killed in a hung test takes its resource tracker's clean-up
            # with it (the group is killed), so then they are noted, not failed.
            what = (
                "appeared during the runs, no live process holds it; removed (on a "
                "machine shared with other programs it may be theirs)"
            )
            if any(r.killed for r in results):
                results[0].notes.extend(
                    f"/dev/shm/{n} (any run): {what}; an interpreter was killed in a test"
                    for n in shm_left
                )
            else:
                results[0].leftovers.extend(f"/dev/shm/{n} (any run): {what}" for n in shm_left)
        status = summarize(results, entries, report)
        print(
            f"\ntotal wall time {time.monotonic() - t0:.0f}s with -j {args.jobs}; "
            f"results and logs in {build_dir}"
        )
    finally:
        if args.keep:
            print(f"working folders kept in {work_root}")
        else:
            shutil.rmtree(work_root, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
