"""Traceback frames in a child's output, relabelled as IPython shows a cell's frames.

A child prints a frame of notebook code as ``File "/tmp/ipykernel_1/123.py", line 2``:
the file IPython compiled the cell under, which the child cannot read. The relay passes
each run of whole lines through ``relabel``, which writes such a frame as IPython does
(``Cell In[3], line 2``) and adds the cell's source line from the kernel's
``linecache`` when the child could not print it. Which files are cells, and their
labels, is the caller's ``label`` (in the kernel: ``mpnb._compat.running_cell_label``,
the same helper a pool task's ``RemoteTraceback`` uses).
"""

from __future__ import annotations

import linecache
import re
from collections.abc import Callable
from typing import Any

__all__ = ["Label", "relabel", "source_line"]

# A traceback frame as the traceback module prints it.
_FRAME = re.compile(r'^([ \t]*)File "([^"]+)", line (\d+)(.*)$')

#: ``label(filename)``: ``'Cell In[3]'`` for the file of a notebook cell, else ``None``.
Label = Callable[[str], str | None]


def relabel(text: str, label: Label, final: bool = False) -> tuple[str, str]:
    """``text`` with frames in notebook cells as IPython shows them, and the last line
    if it is such a frame and its next line has not come yet (``final``: it will not)."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    for i, line in enumerate(lines):
        match = _FRAME.match(line)
        named = label(match.group(2)) if match else None
        if not match or not named:
            out.append(line)
            continue
        following = lines[i + 1] if i + 1 < len(lines) else None
        if following is None and not final:
            return "".join(out), line
        indent, filename, lineno, rest = match.groups()
        out.append(f"{indent}{named}, line {lineno}{rest}\n")
        source = source_line(filename, int(lineno))
        if source and (following is None or following.strip() != source):
            out.append(f"{indent}  {source}\n")
    return "".join(out), ""


def source_line(filename: str, lineno: int) -> str:
    """Line ``lineno`` of ``filename`` as this process's ``linecache`` holds it, stripped
    (empty if it holds none: it never reads a file)."""
    entry: Any = linecache.cache.get(filename)
    if not entry or len(entry) < 3:
        return ""
    lines = entry[2]
    return lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
