"""A parallel cell as the parent sends it: its code, the notebook names it reads, and
the error that names a failed item.

``split_cell`` compiles the cell as its statements and its last expression, under the
file name the parent's ``linecache`` holds its source by, so a worker's traceback shows
the cell's lines. ``notebook_names`` picks the values of the names the cell reads
(functions, classes and data by value, modules by reference). Shared by the magic
(``mpnb.magics.pool``) and the run (``mpnb.magics.runner``); what a worker does with
them is ``mpnb.magics.cell_task``.
"""

from __future__ import annotations

import ast
import builtins
import textwrap
import types
from typing import Any

from IPython.core.error import UsageError

__all__ = ["ParallelCellError", "split_cell", "names_read", "notebook_names"]


class ParallelCellError(RuntimeError):
    """An item of a parallel cell failed; ``__cause__`` is its exception, whose own
    ``__cause__`` is the worker's traceback (``mpnb.RemoteTraceback``)."""

    def __init__(self, message: str, index: int, item_repr: str) -> None:
        super().__init__(message)
        self.index, self.item_repr = index, item_repr

    def _render_traceback_(self) -> list[str]:
        """One block: the worker's traceback (cell lines included), then this message."""
        from ..errors import RemoteTraceback

        remote = getattr(self.__cause__, "__cause__", None)
        lines = remote._render_traceback_() if isinstance(remote, RemoteTraceback) else []
        return lines + [f"{type(self).__name__}: {self}"]


def split_cell(cell: str, filename: str) -> tuple[types.CodeType, types.CodeType | None]:
    """The cell compiled as its statements and its last expression (or ``None``), with
    the cell's own line numbers, under ``filename``."""
    source = textwrap.dedent(cell)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UsageError(f"%%mp_pool: the cell does not parse: {exc}") from None
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        expr = tree.body.pop()
        assert isinstance(expr, ast.Expr)
        last = compile(ast.Expression(expr.value), filename, "eval")
    return compile(tree, filename, "exec"), last


def names_read(source: str) -> set[str]:
    """Every name ``source`` reads or binds (a superset of what it needs)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source or "pass")):
        if isinstance(node, ast.Name):
            names.add(node.id)
    return names


def notebook_names(shell: Any, sources: list[str], exclude: set[str]) -> dict[str, Any]:
    """The notebook's values of the names ``sources`` read (not builtins, not ``exclude``)."""
    names: set[str] = set()
    for source in sources:
        names |= names_read(source)
    user_ns = shell.user_ns
    found = {}
    for name in sorted(names - exclude):
        if (
            name in user_ns
            and not name.startswith("_")
            and not (hasattr(builtins, name) and user_ns[name] is getattr(builtins, name))
        ):
            value = user_ns[name]
            if isinstance(value, types.ModuleType) or not _is_ipython_machinery(value):
                found[name] = value
    return found


def _is_ipython_machinery(value: Any) -> bool:
    module = getattr(type(value), "__module__", "") or ""
    return module.startswith(("IPython.", "ipykernel.")) and not isinstance(value, type)
