"""Code as a notebook cell defines it: in a ``__main__`` that no child can import."""

from __future__ import annotations

import textwrap
import types


def cell(source: str) -> types.SimpleNamespace:
    """Execute ``source`` in a fresh interactive-like ``__main__``; return its names.

    The module is not in ``sys.modules`` and has no ``__file__``: exactly what a
    child process cannot import, as with a kernel's interactive namespace.
    """
    module = types.ModuleType("__main__")
    exec(compile(textwrap.dedent(source), "<cell>", "exec"), module.__dict__)
    return types.SimpleNamespace(
        **{k: v for k, v in module.__dict__.items() if not k.startswith("__")}
    )
