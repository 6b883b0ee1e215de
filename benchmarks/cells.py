"""The task functions again, defined the way a notebook defines them.

``define()`` runs ``CELL`` in an IPython ``InteractiveShell`` inside the current
interpreter (each case is its own interpreter): the functions then live in the shell's
user module, which stands in ``sys.modules['__main__']`` as in a Jupyter kernel. That
module has no file and no spec, so a child process cannot import them by name: only a
library that ships functions by value can run them under spawn or forkserver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The same functions as ``benchmarks.tasks``, written as a user would in a cell.
CELL = """
import os, time

def noop():
    pass

def inc(x):
    return x + 1

def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total
"""

_shell: Any = None


def define() -> dict[str, Callable[..., Any]]:
    """Run ``CELL`` as a notebook cell; returns its functions by name."""
    global _shell
    from IPython.core.interactiveshell import InteractiveShell

    if _shell is None:
        _shell = InteractiveShell.instance()
    result = _shell.run_cell(CELL, store_history=False, silent=True)
    if not result.success:
        raise RuntimeError(f"the cell failed: {result.error_before_exec or result.error_in_exec!r}")
    namespace = _shell.user_ns
    functions = {name: namespace[name] for name in ("noop", "inc", "spin")}
    assert functions["inc"].__module__ == "__main__", functions["inc"].__module__
    return functions
