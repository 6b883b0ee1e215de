"""Install mpnb's pickler into the standard library, and send process objects with it.

``install`` makes ``multiprocessing.reduction.ForkingPickler`` (and ``reduction.dump``,
which writes a process object at start-up) use mpnb's pickler: every multiprocessing
object of this process then sends cell-defined code by value. mpnb's children always
install it, so they can send such objects back and to each other; ``%load_ext mpnb``
installs it in the kernel. Counted: each ``install`` needs one ``uninstall``.

``reduce_process``: a process object is pickled by mpnb's pickler even when the
standard library starts it; loading it in the child installs the pickler there.
"""

from __future__ import annotations

import threading
from multiprocessing import reduction
from multiprocessing.process import BaseProcess
from typing import Any

from .arrays import segments_released_on_error
from .diagnose import PICKLING_ERRORS, SerializationError, describe_unpicklable, fails
from .pickler import PROTOCOL, Pickled, dump, dumps

__all__ = ["install", "uninstall", "installed", "reduce_process"]


_install_lock = threading.Lock()
_install_count = 0
_saved: dict[str, Any] = {}


def _forking_dumps(cls: type, obj: Any, protocol: int | None = None) -> bytes | memoryview:
    return dumps(obj, protocol)


def _forking_dump(obj: Any, file: Any, protocol: int | None = None) -> None:
    if isinstance(obj, BaseProcess):  # a process object being started
        obj = _ProcessEnvelope(obj)
    dump(obj, file, protocol)


def reduce_process(process: BaseProcess) -> tuple[Any, tuple[Any, ...]]:
    """Reduce a process object so that the child installs this pickler first.

    The process (its class, target, args) is pickled by this module's pickler even
    when the standard library's pickler starts it; unpickling it in the child installs
    the pickler there, so the child can send dynamic objects back.
    """
    parts = object.__reduce_ex__(process, PROTOCOL)
    try:
        with segments_released_on_error():
            payload = dumps(parts[:3])
    except SerializationError:
        raise
    except PICKLING_ERRORS as exc:
        raise _explain_process(process, exc) from exc
    return _rebuild_process, (Pickled(payload),)


def _explain_process(process: BaseProcess, exc: BaseException) -> SerializationError:
    parts = (
        ("target", getattr(process, "_target", None)),
        ("args", tuple(getattr(process, "_args", ()))),
        ("kwargs", dict(getattr(process, "_kwargs", {}))),
    )
    for root, value in parts:
        if fails(value) is not None:
            error = describe_unpicklable(value, root)
            break
    else:
        error = describe_unpicklable(process, type(process).__name__, exc)
    error.args = (f"{process.name}: {error.args[0]}",)
    return error


def _rebuild_process(parts: tuple[Any, ...]) -> BaseProcess:
    install()
    make, args, state = parts
    process = make(*args)
    if state:
        process.__dict__.update(state)
    return process


class _ProcessEnvelope:
    __slots__ = ("process",)

    def __init__(self, process: BaseProcess) -> None:
        self.process = process

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return reduce_process(self.process)


def install() -> None:
    """Make the standard library's ``ForkingPickler`` send dynamic code by value.

    Counted: each ``install`` needs one ``uninstall``. Affects every multiprocessing
    object in this process (queues, pipes, pools, managers, process start-up).
    """
    global _install_count
    with _install_lock:
        _install_count += 1
        if _install_count > 1:
            return
        fp = reduction.ForkingPickler
        _saved["dumps"] = fp.__dict__["dumps"]
        _saved["dump"] = reduction.dump
        # Patched in place. Any bytes-like object is what the standard library's callers
        # need; typeshed says ``memoryview``.
        fp.dumps = classmethod(_forking_dumps)  # type: ignore[method-assign,assignment]
        reduction.dump = _forking_dump


def uninstall() -> None:
    """Undo one ``install``; the last one restores the standard library's pickler."""
    global _install_count
    with _install_lock:
        if _install_count == 0:
            return
        _install_count -= 1
        if _install_count:
            return
        reduction.ForkingPickler.dumps = _saved.pop("dumps")  # type: ignore[method-assign]
        reduction.dump = _saved.pop("dump")


def installed() -> bool:
    """Whether the standard library's pickler currently sends dynamic code by value."""
    return _install_count > 0
