"""A parallel cell as the parent sends it: its code, the notebook names it reads, and
the error that names a failed item.

``split_cell`` compiles the cell as its statements and its last expression, under the
file name the parent's ``linecache`` holds its source by, so a worker's traceback shows
the cell's lines; ``return``, ``yield`` or ``await`` at its top level is a usage error.
``take_items`` reads the items, at most ``--max-items`` of them. ``notebook_names``
picks the values of the names the cell reads (functions, classes and data by value,
modules by reference). Shared by the magic (``mpnb.magics.pool``) and the run
(``mpnb.magics.runner``); what a worker does with them is ``mpnb.magics.cell_task``.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import textwrap
import types
from collections.abc import Iterable, Sized
from typing import Any

from IPython.core.error import UsageError

__all__ = ["ParallelCellError", "split_cell", "take_items", "names_read", "notebook_names"]

# What may not stand at the cell's top level (outside a def or lambda), and its name.
_FUNCTION_ONLY: dict[type[ast.AST], str] = {
    ast.Return: "return",
    ast.Yield: "yield",
    ast.YieldFrom: "yield from",
    ast.Await: "await",
    ast.AsyncFor: "async for",
    ast.AsyncWith: "async with",
}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


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
    _check_top_level(tree)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        expr = tree.body.pop()
        assert isinstance(expr, ast.Expr)
        last = compile(ast.Expression(expr.value), filename, "eval")
    try:
        body = compile(tree, filename, "exec")
    except SyntaxError as exc:
        raise UsageError(f"%%mp_pool: the cell does not compile: {exc}") from None
    return body, last


def _check_top_level(tree: ast.Module) -> None:
    """A ``UsageError`` for ``return``, ``yield`` or ``await`` outside a function."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        keyword = _FUNCTION_ONLY.get(type(node))
        if keyword is not None:
            line = getattr(node, "lineno", "?")
            raise UsageError(
                f"%%mp_pool: '{keyword}' at the top level of the cell (line {line}): the "
                f"cell is no function; the value of its last expression is the item's "
                f"value, so write that value as the cell's last line (e.g. 'result' "
                f"instead of 'return result')"
            )
        if not isinstance(node, _SCOPES):
            todo.extend(ast.iter_child_nodes(node))
        elif not isinstance(node, ast.Lambda):  # decorators and defaults run here
            todo.extend(node.decorator_list)
            todo.extend(d for d in node.args.defaults + node.args.kw_defaults if d)


def take_items(values: Iterable[Any], max_items: int, expr: str) -> list[Any]:
    """The items of ``values`` as a list; a ``UsageError`` if there are more than
    ``max_items`` (a sized input is checked by ``len``, an iterator by taking one more,
    so an endless one never hangs)."""
    if isinstance(values, Sized):
        if len(values) > max_items:
            raise _too_many(expr, max_items, f"{len(values)} items")
        return list(values)
    items = list(itertools.islice(values, max_items + 1))
    if len(items) > max_items:
        raise _too_many(expr, max_items, f"more than {max_items} items")
    return items


def _too_many(expr: str, max_items: int, found: str) -> UsageError:
    return UsageError(
        f"%%mp_pool: the input {expr!r} has {found}, more than --max-items {max_items} "
        f"(an endless iterator?): pass --max-items N to allow more, or bound the input "
        f"(itertools.islice(items, N))"
    )


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
