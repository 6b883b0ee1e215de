"""``%%mp_pool`` and ``%mp_pool``: parallel cells on the warm pool.

``%%mp_pool [options] for NAME[, NAME...] in EXPR`` runs the cell once per item of
``EXPR``, with the loop names bound, like a comprehension; the value of the cell's last
expression for each item is collected in input order into a list stored in the
notebook under ``--out`` (default ``mp_results``). Without ``for ... in ...`` the cell
runs once in each of ``-n`` workers (SPMD), with ``mp_rank`` and ``mp_size`` defined.

The names the cell reads from the notebook are sent with each run (functions, classes
and data by value, modules by reference), so a changed value is seen at once and
nothing of an earlier run stays behind in the warm workers.
"""

from __future__ import annotations

import os
import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .cell import ParallelCellError

__all__ = ["PoolMagics", "DEFAULT_OUT", "DEFAULT_MAX_ITEMS", "ParallelCellError", "cores"]

# Where results go when ``--out`` is not given.
DEFAULT_OUT = "mp_results"
# Most items a run reads from its input when ``--max-items`` is not given.
DEFAULT_MAX_ITEMS = 1_000_000

_LOOP = re.compile(r"(?:^|\s)for\s+(?P<target>.+?)\s+in\s+(?P<expr>.+)$", re.S)

USAGE = (
    "write  %%mp_pool [options] for x in items  (one run per item) or "
    "%%mp_pool -n 4  (one run per worker, with mp_rank and mp_size)"
)
LINE_USAGE = "write  %mp_pool [-n N [--force]] [--start-method M] [--restart | --shutdown]"


def cores() -> int:
    """The cores this process may run on (``os.process_cpu_count()`` where it exists)."""
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return int(count or 1)


def _parse(magic: Any, options: str, name: str, usage: str) -> Any:
    """The parsed options; a ``UsageError`` naming the problem, never a traceback."""
    try:
        return parse_argstring(magic, options)
    except UsageError as exc:
        raise UsageError(f"{name}: {exc}. {usage}") from None
    except ValueError as exc:  # shlex: an unbalanced quote or a lone backslash
        raise UsageError(
            f"{name}: cannot read the options {options.strip()!r}: {exc}; close every "
            f"quote and escape no line end. {usage}"
        ) from None


def _check_processes(name: str, processes: int | None, force: bool) -> None:
    """``-n`` is 1 or more, and no more than the cores unless ``--force``."""
    if processes is None:
        return
    if processes < 1:
        raise UsageError(f"{name}: -n/--processes must be 1 or more, not {processes}")
    if processes > cores() and not force:
        raise UsageError(
            f"{name}: -n {processes} is more than the {cores()} cores this kernel may use: "
            f"the extra workers would only wait their turn and stay warm. Write -n "
            f"{cores()} or less, or add --force to start {processes} anyway"
        )


def _remote(args: Any) -> bool:
    """Whether ``--cluster`` names a Dask cluster (whose size is not this machine's)."""
    return bool(args.cluster) and args.cluster != "here"


def _split_line(line: str) -> tuple[str, str | None, str | None]:
    """Options, loop target and iterable expression of the magic's line."""
    match = _LOOP.search(line)
    if match is None:
        if re.search(r"(?:^|\s)for\s", line):
            problem = "" if re.search(r"\sin(?:\s|$)", line) else " (no 'in')"
            raise UsageError(f"%%mp_pool: cannot read the loop in {line!r}{problem}: {USAGE}")
        return line, None, None
    target, expr = match.group("target").strip(), match.group("expr").strip()
    try:
        compile(f"for {target} in ():\n    pass", "<mp_pool>", "exec")
    except SyntaxError:
        raise UsageError(
            f"%%mp_pool: {target!r} is not a loop target: use names, "
            f"as in 'for x in ...' or 'for i, row in ...'"
        ) from None
    try:
        compile(expr, "<mp_pool>", "eval")
    except SyntaxError:
        raise UsageError(
            f"%%mp_pool: {expr!r} is not an expression: write the items "
            f"after 'in', as in 'for x in range(10)'"
        ) from None
    return line[: match.start()], target, expr


@magics_class
class PoolMagics(Magics):
    """Parallel cells on the warm pool."""

    @magic_arguments()
    @argument(
        "-n",
        "--processes",
        type=int,
        default=None,
        help="workers in the warm pool (default: its size, else one per core); "
        "with no loop, the number of ranks; more than the cores needs --force",
    )
    @argument(
        "--force",
        action="store_true",
        help="allow -n above the number of cores",
    )
    @argument(
        "-o",
        "--out",
        default=DEFAULT_OUT,
        help=f"notebook name for the list of results (default {DEFAULT_OUT})",
    )
    @argument(
        "--chunksize",
        type=int,
        default=None,
        help="items sent to a worker at a time (default: computed)",
    )
    @argument(
        "--unordered",
        action="store_true",
        help="collect results as they complete, not in input order",
    )
    @argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for each next result; then the run stops (its items "
        "still running are stopped) and raises mpnb.errors.PoolTimeoutError, both "
        "TimeoutError and multiprocessing.TimeoutError",
    )
    @argument(
        "--max-items",
        type=int,
        default=DEFAULT_MAX_ITEMS,
        help=f"most items read from the input (default {DEFAULT_MAX_ITEMS:,}); "
        "a longer or endless input is an error",
    )
    @argument(
        "--keep-going",
        action="store_true",
        help="run every item; failed items give their exception in the results",
    )
    @argument("--no-progress", action="store_true", help="no progress bar")
    @argument(
        "--start-method",
        choices=("spawn", "forkserver", "fork"),
        default=None,
        help="start method of the warm pool (restarts it if it differs)",
    )
    @argument(
        "--cluster",
        default=None,
        help="run on a Dask cluster: its scheduler address (tcp://host:8786) or 'local' "
        "(a cluster on this machine); moves the warm pool there ('here' moves it back); "
        'needs pip install "mpnb[dask]"',
    )
    @cell_magic
    def mp_pool(self, line: str, cell: str) -> None:
        """Run a cell in parallel on the warm pool.

        %%mp_pool [options] for NAME[, NAME...] in EXPR
            run the cell once per item of EXPR with NAME bound to it; the value of
            the cell's last expression for each item goes, in input order, into a
            list named by --out (default mp_results).
        %%mp_pool -n N [options]
            run the cell once in each of N workers, with mp_rank (0..N-1) and
            mp_size (N) defined; results are collected the same way.

        Names the cell reads from the notebook travel with each run: functions,
        classes and data by value, modules by reference. By default the first
        failing item stops the run, cancels the rest and raises naming the item;
        --keep-going runs every item instead. The cell is no function: its last
        expression is the item's value (no return, yield or await at its top level).
        """
        options, target, expr = _split_line(line)
        args = _parse(self.mp_pool, options, "%%mp_pool", USAGE)
        self._check(args, target)
        if not cell.strip():
            raise UsageError(
                "%%mp_pool: the cell is empty: write the code to run "
                "for each item below the magic's line"
            )
        from .runner import run_parallel_cell

        shell = self.shell
        assert shell is not None  # a magic runs in a shell
        shell.user_ns[args.out] = run_parallel_cell(shell, cell, target, expr, args)

    @staticmethod
    def _check(args: Any, target: str | None) -> None:
        _check_processes("%%mp_pool", args.processes, args.force or _remote(args))
        if args.max_items < 1:
            raise UsageError(f"%%mp_pool: --max-items must be 1 or more, not {args.max_items}")
        if args.chunksize is not None and args.chunksize < 1:
            raise UsageError(f"%%mp_pool: --chunksize must be 1 or more, not {args.chunksize}")
        if args.timeout is not None and not args.timeout > 0:
            raise UsageError(
                f"%%mp_pool: --timeout must be a positive number of seconds, not {args.timeout}"
            )
        if not args.out.isidentifier():
            raise UsageError(f"%%mp_pool: --out {args.out!r} is not a Python name")
        if target is None and (args.unordered or args.chunksize):
            raise UsageError(
                "%%mp_pool: --unordered and --chunksize need a loop: "
                "%%mp_pool --unordered for x in items"
            )
        if target is None and args.processes is None:
            raise UsageError(f"%%mp_pool: nothing to run in parallel: {USAGE}")

    @magic_arguments()
    @argument(
        "-n",
        "--processes",
        type=int,
        default=None,
        help="resize the warm pool to this many workers (more than the cores needs --force)",
    )
    @argument("--force", action="store_true", help="allow -n above the number of cores")
    @argument(
        "--start-method",
        choices=("spawn", "forkserver", "fork"),
        default=None,
        help="restart the warm pool with this start method",
    )
    @argument(
        "--cluster",
        default=None,
        help="run on a Dask cluster: its scheduler address (tcp://host:8786) or 'local' "
        "(a cluster on this machine); moves the warm pool there ('here' moves it back); "
        'needs pip install "mpnb[dask]"',
    )
    @argument("--restart", action="store_true", help="replace every worker")
    @argument("--shutdown", action="store_true", help="stop the warm pool")
    @line_magic("mp_pool")  # type: ignore[arg-type]  # IPython types its argument as Never
    def mp_pool_line(self, line: str = "") -> Any:
        """Show, resize, restart or stop the warm pool behind %%mp_pool.

        %mp_pool                 size, start method and workers (busy or idle)
        %mp_pool -n 4            resize to 4 workers (--force: above the cores)
        %mp_pool --restart       fresh workers, same size
        %mp_pool --shutdown      stop the workers
        """
        from . import warm

        args = _parse(self.mp_pool_line, line, "%mp_pool", LINE_USAGE)
        if args.shutdown and (args.restart or args.processes or args.start_method or args.cluster):
            raise UsageError("%mp_pool: --shutdown takes no other option")
        _check_processes("%mp_pool", args.processes, args.force or _remote(args))
        if args.shutdown:
            warm.shutdown()
        elif args.restart:
            running = warm.describe()
            if (args.processes or running["processes"]) == running["processes"] and (
                args.start_method or running["start_method"]
            ) == running["start_method"]:
                warm.restart()
            else:  # another size or method: a new pool anyway
                warm.get_pool(args.processes, args.start_method)
        elif args.processes or args.start_method or args.cluster:
            warm.get_pool(args.processes, args.start_method, args.cluster)
        return WarmPoolView(warm.describe())


class WarmPoolView:
    """What ``%mp_pool`` shows: the warm pool's state, as text and HTML."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def _rows(self) -> list[tuple[str, str, str]]:
        return [
            (w["name"], str(w["pid"]), "alive" if w["alive"] else "exited")
            for w in self.state["workers"]
        ]

    def __repr__(self) -> str:
        s = self.state
        if not s["running"]:
            return "warm pool: not running (the next %%mp_pool starts it)"
        head = f"warm pool: {s['processes']} workers, start method {s['start_method']}"
        if s.get("cluster"):
            head = f"warm pool: {s['processes']} tasks at once on the Dask cluster {s['cluster']}"
        return "\n".join([head] + [f"  {n:<28} pid {p:<8} {st}" for n, p, st in self._rows()])

    def _repr_html_(self) -> str:
        import html

        s = self.state
        if not s["running"]:
            return "<p>warm pool: not running (the next <code>%%mp_pool</code> starts it)</p>"
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{p}</td><td>{st}</td></tr>"
            for n, p, st in self._rows()
        )
        return (
            f"<p>warm pool: {s['processes']} workers, start method "
            f"<code>{s['start_method']}</code></p><table><tr><th>worker</th>"
            f"<th>pid</th><th>state</th></tr>{rows}</table>"
        )
