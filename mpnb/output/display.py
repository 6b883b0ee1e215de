"""Rich output from a routed child: ``display(...)`` and matplotlib figures in the cell.

In a routed child (``mpnb.output.child``), ``IPython.display.display`` of anything with
rich reprs (a DataFrame's HTML, ``HTML``, ``Markdown``, ``Image``, ``SVG``, ``JSON``, a
matplotlib figure), ``update_display``, a ``DisplayHandle``'s ``update()`` and
``clear_output`` send their MIME bundles through the child's output stream
(``protocol.display``): the kernel publishes them as ``display_data`` /
``update_display_data`` in the cell that started the work, after the text the process
wrote before them. The user imports nothing more than ``IPython.display``.

How: ``install`` runs in every routed child and costs nothing there. It watches for
the import of IPython's display functions (``_compat.DISPLAY_MODULE``) and, when the
child imports them, puts this module's ``display``, ``publish_display_data`` and
``clear_output`` in their place, so every later ``from IPython.display import display``
gets them (a forked child of the kernel, whose IPython is loaded already, gets them at
once). matplotlib gets the backend ``mpnb.output.figures`` through ``MPLBACKEND``, read
when the child imports matplotlib. No IPython, no matplotlib is imported in a child that
does not use them.

A display id a child makes is its own: ``display(..., display_id="progress")`` in two
workers gives two outputs, each updated by its own worker (the id is made unique per
process before it leaves); an id the child did not make (a handle from the kernel) is
sent unchanged. An ipywidget cannot live in a child (its model would need the kernel's
comms): its text repr is shown with a one-line note (``WIDGET_NOTE``).
"""

from __future__ import annotations

import builtins
import os
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

from .. import _compat
from .imports import after_import

__all__ = [
    "FIGURE_FORMATS",
    "MPL_BACKEND",
    "WIDGET_MIME",
    "WIDGET_NOTE",
    "SendDisplay",
    "install",
    "installed",
    "display",
    "publish_display_data",
    "clear_output",
    "figure_formats",
    "figure_bundle",
]

#: ``send(msg_type, content)``: hand one display message to the child's output stream;
#: ``False`` when it could not go (no relay any more).
SendDisplay = Callable[[str, dict[str, Any]], bool]

#: The figure formats a child sends unless the kernel or ``mpnb.output.configure`` asks
#: for others.
FIGURE_FORMATS: tuple[str, ...] = ("png",)
#: The formats a child can send: matplotlib's name -> MIME type.
_FIGURE_MIME = {"png": "image/png", "svg": "image/svg+xml", "jpeg": "image/jpeg"}
#: The matplotlib backend of routed children.
MPL_BACKEND = "module://mpnb.output.figures"
#: The MIME type of an ipywidget's view.
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    "(an ipywidget made in a child process shows as text: its model would need the "
    "kernel's comms; make widgets in the kernel, or send values back to it)"
)

_send: SendDisplay | None = None
_formats: tuple[str, ...] = FIGURE_FORMATS
_formatter: Any = None
_ids_pid: int | None = None
_ids_nonce = ""
_own_ids: set[str] = set()


def installed() -> bool:
    """Whether this process sends its display messages to a kernel."""
    return _send is not None


def figure_formats() -> tuple[str, ...]:
    """The formats this child sends a matplotlib figure in."""
    return _formats


def install(send: SendDisplay, formats: Sequence[str] | None = None) -> None:
    """In a routed child: display calls and matplotlib send MIME bundles with ``send``.

    Imports nothing: IPython's display functions are replaced when the child imports
    them, matplotlib picks the backend from ``MPLBACKEND`` when it is imported.
    """
    global _send, _formats
    _send = send
    _formats = tuple(f for f in (formats or FIGURE_FORMATS) if f in _FIGURE_MIME) or FIGURE_FORMATS
    current = os.environ.get("MPLBACKEND", "")
    if not current or "inline" in current or current == MPL_BACKEND:
        os.environ["MPLBACKEND"] = MPL_BACKEND
        _switch_loaded_matplotlib()
    _compat.detach_comms()  # a forked kernel's: its sockets are the kernel's
    if not hasattr(builtins, "display"):  # as in the kernel, where IPython puts it there
        builtins.display = display  # type: ignore[attr-defined]
    # At once in a child forked from a process that has IPython loaded.
    after_import(_compat.DISPLAY_MODULE, _patch)


def _switch_loaded_matplotlib() -> None:
    """A forked child with matplotlib loaded (the kernel's inline backend): use ours."""
    matplotlib = sys.modules.get("matplotlib")
    if matplotlib is None:
        return
    try:
        matplotlib.use(MPL_BACKEND, force=True)
    except Exception:  # an old or odd matplotlib: figures then only show on display()
        pass


def _patch(module: Any) -> None:
    """Put this module's display functions into IPython's display module (and the
    modules that re-exported them already)."""
    originals = {name: getattr(module, name, None) for name in _compat.DISPLAY_FUNCTIONS}
    mine = {
        "display": display,
        "publish_display_data": publish_display_data,
        "clear_output": clear_output,
    }
    for name in ("IPython.display", "IPython.core.display", _compat.DISPLAY_MODULE):
        target = sys.modules.get(name)
        if target is None:
            continue
        for attr, func in mine.items():
            if getattr(target, attr, None) is originals[attr]:
                setattr(target, attr, func)
    if _compat.shell_display_formatter() is None:
        _rebind(originals, mine)


def _rebind(originals: dict[str, Any], mine: dict[str, Any]) -> None:
    """Where IPython's functions were bound before ``_patch`` (a process target's
    globals, unpickled before the child set up its output), put ours instead.

    Only in a child without an IPython shell: there IPython's ``display`` would print.
    """
    import gc

    pairs = [(func, mine[name]) for name, func in originals.items() if func is not None]
    for func, replacement in pairs:
        for holder in gc.get_referrers(func):
            if holder is originals:
                continue
            if isinstance(holder, dict):
                if str(holder.get("__name__", "")).startswith("IPython"):
                    continue  # IPython's own modules: done above, or its internals
                for key, value in list(holder.items()):
                    if value is func:
                        holder[key] = replacement
            elif isinstance(holder, types.CellType):
                holder.cell_contents = replacement


# -- the display functions ------------------------------------------------------------------


def display(
    *objs: Any,
    include: Any = None,
    exclude: Any = None,
    metadata: dict[str, Any] | None = None,
    transient: dict[str, Any] | None = None,
    display_id: Any = None,
    raw: bool = False,
    clear: bool = False,
    **kwargs: Any,
) -> Any:
    """``IPython.display.display`` in a routed child: the same arguments and result
    (a ``DisplayHandle`` when ``display_id`` is given), sent to the starting cell."""
    transient = dict(transient or {})
    if display_id:
        if display_id is True:
            display_id = os.urandom(16).hex()
        transient["display_id"] = display_id
    update = bool(kwargs.get("update"))
    if update and "display_id" not in transient:
        raise TypeError("display_id required for update_display")
    if not objs and display_id:  # an empty output to update later
        objs, raw = ({},), True
    if clear:
        clear_output(wait=True)
    for obj in objs:
        if raw:
            data, md = dict(obj), dict(metadata or {})
        else:
            data, md = _display_formatter().format(obj, include=include, exclude=exclude)
            if not data:  # _ipython_display_ took over, or nothing to show
                continue
            if metadata:
                _merge(md, metadata)
        publish_display_data(data, md, transient=transient, update=update)
    if display_id:
        return _compat.display_handle(display_id)
    return None


def publish_display_data(
    data: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    *,
    transient: dict[str, Any] | None = None,
    update: bool = False,
    **kwargs: Any,
) -> None:
    """Send one MIME bundle to the starting cell (``update``: replace the outputs of
    its display id)."""
    data = _without_widget(dict(data))
    transient = dict(transient or {})
    if "display_id" in transient:
        transient["display_id"] = _own_id(str(transient["display_id"]), update)
    content = {"data": data, "metadata": dict(metadata or {}), "transient": transient}
    _deliver("update_display_data" if update else "display_data", content)


def clear_output(wait: bool = False) -> None:
    """Clear the starting cell's output (``wait``: when the next output comes)."""
    _deliver("clear_output", {"wait": bool(wait)})


def _deliver(msg_type: str, content: dict[str, Any]) -> None:
    send = _send
    if send is not None and send(msg_type, content):
        return
    if msg_type != "clear_output":  # no relay (any more): the text, where print goes
        text = content["data"].get("text/plain")
        if text:
            print(text)


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    """IPython's metadata merge: a dict under the same key is updated, the rest replaced."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key].update(value)
        else:
            into[key] = value


def _without_widget(data: dict[str, Any]) -> dict[str, Any]:
    """An ipywidget's bundle becomes its text and the note that says why."""
    if WIDGET_MIME not in data:
        return data
    text = str(data.get("text/plain") or "ipywidget")
    return {"text/plain": f"{text}\n{WIDGET_NOTE}"}


def _own_id(display_id: str, update: bool) -> str:
    """The id that leaves this process: unique to it for ids it made."""
    global _ids_pid, _ids_nonce
    pid = os.getpid()
    if _ids_pid != pid:  # a new process (also a forked one): ids of its own
        _ids_pid, _ids_nonce = pid, os.urandom(4).hex()
        _own_ids.clear()
    if update and display_id not in _own_ids:
        return display_id  # made elsewhere (the kernel): update that one
    _own_ids.add(display_id)
    return f"{display_id}.mpnb-{pid}-{_ids_nonce}"


# -- formatting -----------------------------------------------------------------------------


def _display_formatter() -> Any:
    """The formatter of this process's IPython shell (a forked kernel's), else one of
    our own that also knows matplotlib figures (made once)."""
    global _formatter
    shell_formatter = _compat.shell_display_formatter()
    if shell_formatter is not None:
        return shell_formatter
    if _formatter is None:
        _formatter = _compat.new_display_formatter()
        for fmt in _formats:
            _compat.add_formatter(
                _formatter, _FIGURE_MIME[fmt], "matplotlib.figure", "Figure", _printer(fmt)
            )
    return _formatter


def _printer(fmt: str) -> Callable[[Any], Any]:
    def print_figure(figure: Any) -> Any:
        return _figure_data(figure, fmt)

    return print_figure


def _figure_data(figure: Any, fmt: str) -> Any:
    """``figure`` in ``fmt``: bytes for images, text for SVG (``None``: an empty one)."""
    import io

    if not figure.axes and not figure.lines:  # nothing drawn (as the inline backend)
        return None
    buf = io.BytesIO()
    figure.savefig(buf, format=fmt, bbox_inches="tight")
    data = buf.getvalue()
    return data.decode("utf-8") if fmt == "svg" else data


def figure_bundle(figure: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A matplotlib figure's MIME bundle in this child's formats, and its metadata."""
    data: dict[str, Any] = {"text/plain": repr(figure)}
    for fmt in _formats:
        found = _figure_data(figure, fmt)
        if found is not None:
            data[_FIGURE_MIME[fmt]] = found
    return data, {}
