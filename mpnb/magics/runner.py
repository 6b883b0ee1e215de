"""Running one ``%%mp_pool`` cell: build the run, feed the warm pool, collect results."""

from __future__ import annotations

import functools
import multiprocessing
from typing import Any

from IPython.core.error import UsageError

from ..errors import PoolTimeoutError, RemoteTraceback
from . import warm
from .cell import ParallelCellError, notebook_names, split_cell, take_items
from .cell_task import SKIPPED, CellSpec, ItemFailed, RunControl, run_chunk

__all__ = ["run_parallel_cell"]


def _cell_filename(shell: Any, cell: str) -> str:
    """A filename under which the parent's linecache holds the cell's source, so a
    worker's traceback shows the cell's lines (``Cell In[n]`` in Jupyter)."""
    compiler = getattr(shell, "compile", None)
    if compiler is not None and hasattr(compiler, "cache"):
        return compiler.cache(cell, shell.execution_count)
    return "<mp_pool cell>"


def _items(shell: Any, expr: str, max_items: int) -> list[Any]:
    try:
        return take_items(shell.ev(expr), max_items, expr)
    except UsageError:
        raise
    except Exception as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(f"(while %%mp_pool evaluated its items: {expr})")
        raise


def run_parallel_cell(
    shell: Any, cell: str, target: str | None, expr: str | None, args: Any
) -> list[Any]:
    filename = _cell_filename(shell, cell)
    body, last = split_cell(cell, filename)
    if target is None:
        items: list[Any] = list(range(args.processes))
        loop_names: set[str] = {"mp_rank", "mp_size"}
    else:
        items = _items(shell, expr or "", args.max_items)
        loop_names = set(_target_names(target))
    namespace = notebook_names(shell, [cell], loop_names)
    control = RunControl(len(items))
    spec = CellSpec(
        body=body,
        last=last,
        filename=filename,
        loop_target=target,
        namespace=namespace,
        control=control.name,
        keep_going=args.keep_going,
        size=len(items),
    )
    try:
        cluster = getattr(args, "cluster", None)
        pool = warm.get_pool(args.processes, args.start_method, cluster)
        if target is None and len(items) > warm.describe()["processes"]:
            pool = warm.get_pool(len(items), args.start_method, cluster)
        return _collect(pool, spec, items, args, control)
    finally:
        control.close()


def _target_names(target: str) -> list[str]:
    import ast

    loop = ast.parse(f"for {target} in ():\n    pass").body[0]
    assert isinstance(loop, ast.For)
    return [n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)]


def _collect(
    pool: Any, spec: CellSpec, items: list[Any], args: Any, control: RunControl
) -> list[Any]:
    # The world first: unpickling it in a worker applies it (modules re-imported, cwd and
    # sys.path set) before the cell's names are unpickled.
    task = functools.partial(run_chunk, warm.world_sync(), spec)
    chunksize = 1 if spec.loop_target is None else (args.chunksize or _chunksize(len(items), pool))
    indexed = list(enumerate(items))
    chunks = [indexed[i : i + chunksize] for i in range(0, len(indexed), chunksize)]
    mapper = pool.imap_unordered if args.unordered else pool.imap
    bar = None
    if not args.no_progress and spec.loop_target is not None:
        from ..progress import ProgressBar

        bar = ProgressBar(len(items), "mp_pool")
    results: list[Any] = []
    failures: list[ItemFailed] = []
    ok = False
    try:
        iterator = mapper(task, chunks, 1)
        for value in _values(pool, iterator, len(chunks), args.timeout, len(items), results):
            if value is SKIPPED:
                continue
            if isinstance(value, ItemFailed):
                failures.append(value)
                if bar is not None:
                    bar.update(1, failed=1)
                if not spec.keep_going:
                    raise _item_error(value, spec)
                results.append(value.error)
            else:
                if bar is not None:
                    bar.update(1)
                results.append(value)
        ok = True
    finally:
        if not ok:
            control.cancel()
        if bar is not None:
            bar.close(failed=not ok or bool(failures))
    if failures:
        listed = ", ".join(f"{f.index} ({f.item_repr})" for f in failures[:10])
        print(
            f"%%mp_pool: {len(failures)} of {len(items)} items failed: {listed}; "
            f"their exceptions are in the results"
        )
    return results


def _values(
    pool: Any,
    iterator: Any,
    n_chunks: int,
    timeout: float | None,
    total: int,
    results: list[Any],
) -> Any:
    for _ in range(n_chunks):
        try:
            chunk = iterator.next(timeout)
        except multiprocessing.TimeoutError:
            # Cancel the rest and stop the workers still running items, as an interrupt
            # does (the warm pool runs nothing else), so the next run starts at once.
            core = getattr(pool, "_core", None) or getattr(pool, "_engine", None)
            if core is not None:
                core.interrupt()
            raise PoolTimeoutError(
                f"%%mp_pool: no result within --timeout {timeout} s; "
                f"{len(results)} of {total} items done, the others were stopped"
            ) from None
        yield from chunk


def _chunksize(n: int, pool: Any) -> int:
    workers = warm.describe()["processes"] or 1
    chunks, extra = divmod(n, workers * 4)
    return max(1, chunks + bool(extra))


def _item_error(failed: ItemFailed, spec: CellSpec) -> ParallelCellError:
    what = (
        f"rank {failed.index}"
        if spec.loop_target is None
        else f"item {failed.index} ({spec.loop_target} = {failed.item_repr})"
    )
    cause = failed.error
    error = ParallelCellError(
        f"{what} raised {type(cause).__name__}: {cause}; the other items "
        f"were cancelled (use --keep-going to run them all)",
        failed.index,
        failed.item_repr,
    )
    cause.__cause__ = RemoteTraceback(
        failed.frames, f" (in the worker, {what})", f"{type(cause).__name__}: {cause}"
    )
    error.__cause__ = cause
    return error
