"""Child output in the notebook cell that started the work.

In an IPython kernel, everything an mpnb child writes (``print``, ``sys.stdout`` and
``sys.stderr``, ``logging``, C code and shells writing to fds 1 and 2) appears in the
output area of the cell that started the process or submitted the task: sent as IOPub
``stream`` messages with that cell's parent header, so it lands there even after the
cell finished, and never in another cell. stderr stays stderr. Children's streams are
line-buffered and an unfinished line goes out after a tenth of a second: output
arrives without flushing. Grandchildren started through mpnb route the same way. A
traceback frame in a notebook cell reads ``Cell In[n], line k`` followed by the cell's
source line. ``display(...)`` in a child (no import needed), ``update()`` of its
handles and ``plt.show()`` send MIME bundles the same way: ``display_data`` and
``update_display_data`` in that cell, in order with the process's text.

How, by module:

- ``kernel``: the kernel side; routes are cells (their parent headers), text is
  published on IOPub, and ``mpnb._routing``'s router ``drain``s before the core hands
  a result or a joined process back, so output comes before what follows it;
- ``relay``: the kernel's socket server that rebuilds children's bytes into lines
  (``protocol``: what travels on its sockets; ``tracebacks``: cell frames relabelled);
- ``child``: the child side, installed by a start hook (``process.add_start_hook``):
  fds 1 and 2 on the relay, streams that flush themselves, a route per pool task;
- ``display``: a child's ``display`` and its other display functions, in place of
  IPython's once the child imports them (``imports``), and ``figures``: the matplotlib
  backend of children;
- ``stdlib``: what ``%load_ext mpnb`` patches in the standard library so that its
  children route the same way.

Routing is on in a kernel from ``import mpnb`` (and ``%load_ext mpnb``); it changes
nothing but where mpnb's own children write. ``deactivate()`` (or ``%unload_ext
mpnb``) turns it off. Outside a kernel (terminal IPython, scripts) children write to
the inherited fds, as with the standard library. Nothing here imports IPython or
ipykernel: it finds them in ``sys.modules``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .. import _owner
from .. import process as _process
from . import child as _child
from . import kernel as _kernel

__all__ = ["activate", "deactivate", "active", "configure"]

# The formats a child can send a matplotlib figure in.
_FIGURE_FORMATS = ("png", "svg", "jpeg")

_settings: dict[str, Any] = {"tags": True, "logging": True, "figure_formats": None}
_state_lock = threading.Lock()


def activate() -> bool:
    """Route mpnb children's output to the cells that start them.

    Returns whether routing is on: ``False`` outside an IPython kernel, where children
    keep writing to the inherited file descriptors.
    """
    with _state_lock:
        if active():
            return True
        if _kernel.start(tags=_settings["tags"]) is None:
            return False
        _process.add_start_hook(_child.start_hook)
        _owner.remove_stale()  # what killed kernels left in /tmp and /dev/shm
    return True


def deactivate() -> None:
    """Stop routing: processes started from now on write to the inherited fds.

    Children already routed keep publishing into their cells until they end.
    """
    with _state_lock:
        if _kernel.current() is None:
            return
        _process.remove_start_hook(_child.start_hook)
        _kernel.stop()


def active() -> bool:
    """Whether this process routes its mpnb children's output (or is routed itself)."""
    return _kernel.current() is not None or _child.current() is not None


def configure(
    *,
    tags: bool | None = None,
    logging: bool | None = None,
    figure_formats: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Change settings; return them all.

    ``tags``: when more than one process writes into a cell, start the text of each
    change of source with ``[stdout:<process name>]`` (default ``True``).
    ``logging``: children started from now on get the kernel's root logger (its level,
    and its handlers on sys.stdout/sys.stderr, the process name in front), so their
    records show in the cell (default ``True``).
    ``figure_formats``: the formats children started from now on send matplotlib
    figures in, some of ``'png'``, ``'svg'``, ``'jpeg'`` (default: those the kernel's
    inline backend uses, as ``set_matplotlib_formats`` chose, else ``'png'``); an empty
    sequence goes back to that default.
    """
    if logging is not None:
        _settings["logging"] = _child.LOGGING = bool(logging)
    if figure_formats is not None:
        if isinstance(figure_formats, str):
            figure_formats = (figure_formats,)
        chosen = tuple(str(f).lower() for f in figure_formats)
        unknown = [f for f in chosen if f not in _FIGURE_FORMATS]
        if unknown:
            raise ValueError(
                f"configure(figure_formats=...): unknown format(s) {unknown}; "
                f"choose among {list(_FIGURE_FORMATS)}"
            )
        _settings["figure_formats"] = _child.FIGURE_FORMATS = chosen or None
    if tags is not None:
        _settings["tags"] = bool(tags)
        side = _kernel.current()
        if side is not None:
            side.set_tags(bool(tags))
    return dict(_settings)
