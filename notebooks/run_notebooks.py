"""Run notebooks on a real kernel and summarise, cell by cell, what they did.

    python notebooks/run_notebooks.py notebooks/quickstart.ipynb
    python notebooks/run_notebooks.py --all            # every notebook in notebooks/

Each notebook runs top to bottom with nbclient on an ipykernel started from the
interpreter running this script (not whatever kernelspec the notebook names). For each
code cell it prints the status, the time taken, and the first lines of what the cell
showed: stdout/stderr, its result, displays, its error. What the kernel or its child
processes wrote to the terminal instead of the notebook is shown too, as ``term``.
After the kernel shut down, processes it left behind are reported (and killed).

Exit status: 0 if every notebook ran clean, 1 if a cell failed, timed out, or processes
outlived the kernel, 2 if a notebook is missing or unreadable.
A cell tagged ``raises-exception`` may fail without failing the run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

HERE = Path(__file__).resolve().parent

# Lines of each output shown per cell, and the width a line is cut to.
DEFAULT_LINES = 3
WIDTH = 100
# Seconds the processes a kernel had get to exit after it shut down.
EXIT_GRACE = 5.0

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_TAG = re.compile(r"<[^>]+>")
_OBJECT_REPR = re.compile(r"^<.* object( at 0x[0-9a-f]+)?>$")
# What ipykernel itself prints to the terminal at every start: not the notebook's doing.
_KERNEL_NOISE = ("Kernel is running over TCP without encryption",)


@dataclass
class CellReport:
    index: int  # position among the notebook's cells, from 1
    source: str
    status: str  # ok, error, expected-error, timeout, not-run
    seconds: float = 0.0
    lines: list[tuple[str, str]] = field(default_factory=list)  # (label, text)
    error: str = ""


@dataclass
class NotebookReport:
    path: Path
    cells: list[CellReport] = field(default_factory=list)
    seconds: float = 0.0
    failure: str = ""  # why the run failed, empty if it did not
    leftovers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failure and not self.leftovers


# -- the kernel -------------------------------------------------------------------------


def _kernel_manager():
    """A KernelManager whose every kernel is an ipykernel on this interpreter."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    argv = [sys.executable]
    if sys.version_info >= (3, 11):
        argv.append("-Xfrozen_modules=off")
    argv += ["-m", "ipykernel_launcher", "-f", "{connection_file}"]

    class ThisInterpreter(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(
                argv=argv, display_name="Python 3", language="python", metadata={}, resource_dir=""
            )

    return KernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreter())


def _become_subreaper() -> None:
    """Adopt orphaned descendants (Linux), so processes that outlive the kernel are seen."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):
            pass


def _descendants() -> set:
    import psutil

    found = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                found.add(p)
        except psutil.Error:
            pass
    return found


def _still_alive(procs: set, grace: float) -> list[str]:
    """Wait up to ``grace`` s for ``procs`` to exit; kill and describe the rest."""
    import psutil

    def alive(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + grace
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    described = []
    for p in left:
        try:
            described.append(f"pid {p.pid}: {' '.join(p.cmdline())[:WIDTH]}")
            p.kill()
        except psutil.Error:
            pass
    return described


# -- summaries --------------------------------------------------------------------------


def _cut(line: str) -> str:
    line = _ANSI.sub("", line).rstrip()
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."


def _head(text: str, n: int) -> list[str]:
    lines = [ln for ln in _ANSI.sub("", text).splitlines() if ln.strip()] or ([""] if text else [])
    shown = [_cut(ln) for ln in lines[:n]]
    if len(lines) > n:
        shown.append(f"... ({len(lines) - n} more lines)")
    return shown


def _summarise_output(out: dict, n: int) -> list[tuple[str, str]]:
    kind = out.get("output_type")
    if kind == "stream":
        return [(out.get("name", "stream"), ln) for ln in _head(out.get("text", ""), n)]
    if kind == "error":
        return [("error", _cut(f"{out.get('ename')}: {out.get('evalue')}"))]
    if kind in ("execute_result", "display_data"):
        data = out.get("data", {})
        label = "result" if kind == "execute_result" else "display"
        extra = [m for m in data if m != "text/plain"]
        tag = ""
        if "application/vnd.jupyter.widget-view+json" in data:
            tag = "[widget] "
        elif extra:
            tag = f"[{', '.join(sorted(extra))}] "
        text = data.get("text/plain", "")
        if "text/html" in data and (not text or _OBJECT_REPR.match(text.strip())):
            html = data["text/html"]
            text = _TAG.sub("", html if isinstance(html, str) else "".join(html))
        lines = _head(text, n) or [""]
        return [(label, tag + lines[0])] + [(label, ln) for ln in lines[1:]]
    return []


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return _cut(line.strip())[:60]
    return "(empty)"


# -- running ----------------------------------------------------------------------------


def run_notebook(
    path: Path,
    timeout: float = 300,
    lines: int = DEFAULT_LINES,
    keep_going: bool = False,
    output_dir: Path | None = None,
    echo: bool = True,
) -> NotebookReport:
    """Run one notebook; print each cell's summary as it finishes when ``echo``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    report = NotebookReport(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        km=_kernel_manager(),
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    code_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    say = print if echo else (lambda *a, **k: None)
    say(f"== {path} ({len(code_cells)} code cells)")

    _become_subreaper()
    before = _descendants()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mpnb-run-") as tmp:
        log_path = Path(tmp) / "kernel.log"
        with open(log_path, "wb", buffering=0) as log, open(log_path, "rb") as log_reader:
            try:
                with client.setup_kernel(
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                ):
                    client.reset_execution_trackers()
                    for index, cell in code_cells:
                        cr = CellReport(index + 1, cell.source, "ok")
                        report.cells.append(cr)
                        if report.failure and not keep_going:
                            cr.status = "not-run"
                            continue
                        c0 = time.monotonic()
                        try:
                            client.execute_cell(cell, index)
                        except CellTimeoutError:
                            cr.status, cr.error = "timeout", f"no result within {timeout:g} s"
                        except DeadKernelError as exc:
                            cr.status, cr.error = "error", f"the kernel died: {exc}"
                        except CellExecutionError as exc:
                            cr.status, cr.error = "error", f"{exc.ename}: {exc.evalue}"
                        cr.seconds = time.monotonic() - c0
                        for out in cell.get("outputs", []):
                            cr.lines += _summarise_output(out, lines)
                            if out.get("output_type") == "error" and cr.status == "ok":
                                cr.status = "expected-error"
                        term = "\n".join(
                            ln
                            for ln in log_reader.read().decode(errors="replace").splitlines()
                            if not any(noise in ln for noise in _KERNEL_NOISE)
                        )
                        cr.lines += [("term", ln) for ln in _head(term, lines)]
                        if cr.status in ("error", "timeout") and not report.failure:
                            report.failure = (
                                f"cell {cr.index} ({_first_line(cr.source)}): {cr.error}"
                            )
                        _print_cell(cr, say)
                        if cr.status == "error" and "kernel died" in cr.error:
                            break
            except Exception as exc:  # the kernel did not start, or died on the way
                if not report.failure:
                    report.failure = f"{type(exc).__name__}: {exc}"
                    say(f"   {report.failure}")
            finally:
                # nbclient leaves a kernel manager it was given running: stop it here,
                # gracefully, as a user closing the notebook would.
                if client.kc is not None:
                    client.kc.stop_channels()
                if client.km is not None and client.km.has_kernel:
                    client.km.shutdown_kernel(now=False)
    report.seconds = time.monotonic() - t0
    report.leftovers = _still_alive(_descendants() - before, EXIT_GRACE)
    for cr in report.cells:
        if cr.status == "not-run":
            _print_cell(cr, say)
    for line in report.leftovers:
        say(f"   left behind after the kernel shut down (killed): {line}")
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, output_dir / path.name)
    say(_verdict(report, len(code_cells)))
    return report


def _print_cell(cr: CellReport, say) -> None:
    mark = {
        "ok": "ok",
        "expected-error": "ok*",
        "error": "ERROR",
        "timeout": "TIMEOUT",
        "not-run": "--",
    }
    secs = f"{cr.seconds:6.2f} s" if cr.status != "not-run" else "  not run"
    say(f"[{cr.index:3}] {mark[cr.status]:<7} {secs}  {_first_line(cr.source)}")
    for label, text in cr.lines:
        say(f"      {label:>7} | {text}")
    if cr.error and not any(label == "error" for label, _ in cr.lines):
        say(f"      {'error':>7} | {_cut(cr.error)}")


def _verdict(report: NotebookReport, n_code: int) -> str:
    ran = sum(c.status != "not-run" for c in report.cells)
    if report.ok:
        return f"PASS {report.path.name}: {ran} code cells ran clean in {report.seconds:.1f} s"
    why = report.failure or f"{len(report.leftovers)} process(es) outlived the kernel"
    if report.failure and report.leftovers:
        why += f"; {len(report.leftovers)} process(es) outlived the kernel"
    skipped = n_code - ran
    tail = f" ({skipped} of {n_code} code cells not run)" if skipped else ""
    return f"FAIL {report.path.name}: {why}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run")
    parser.add_argument("--all", action="store_true", help=f"run every notebook in {HERE}")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per cell (default 300)")
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, help="lines shown per output")
    parser.add_argument(
        "--keep-going", action="store_true", help="run the cells after a failed one"
    )
    parser.add_argument("--output", type=Path, help="write the executed notebooks to this folder")
    args = parser.parse_args(argv)

    paths = list(args.notebooks)
    if args.all:
        paths += sorted(p for p in HERE.glob("*.ipynb") if p not in paths)
        if not paths:
            print(f"error: no notebooks in {HERE}", file=sys.stderr)
            return 2
    if not paths:
        parser.error("name a notebook, or use --all")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        for p in missing:
            print(f"error: notebook not found: {p}", file=sys.stderr)
        return 2

    reports = []
    for path in paths:
        try:
            reports.append(
                run_notebook(path, args.timeout, args.lines, args.keep_going, args.output)
            )
        except Exception as exc:  # unreadable notebook
            print(f"error: cannot run {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        print()
    if len(reports) > 1:
        failed = [r.path.name for r in reports if not r.ok]
        print(
            f"{len(reports) - len(failed)} of {len(reports)} notebooks passed"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
