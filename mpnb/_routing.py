"""Where a piece of work's output goes: the seam between the core and ``output``.

A leaf module. The core asks it for an opaque, picklable *route* when work is handed
to another process (a process starts, a pool task is submitted) and, in the child,
enters that route around the work. In the parent, ``drain()`` publishes the output
children wrote so far: call it when a result arrives or a process was joined, before
handing it on, so the work's output comes before what follows it. What a route means
is decided by whichever ``Router`` is installed: ``mpnb.output`` installs one that
sends a child's output to the notebook cell that started the work. With no router
installed every call is a cheap no-op, so the core never depends on IPython.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Router", "set_router", "capture", "enter", "leave", "drain"]


class Router(Protocol):
    def capture(self) -> Any:
        """In the parent: a picklable route for work started now (or ``None``)."""

    def enter(self, route: Any) -> None:
        """In the child: output written from now on follows ``route``."""

    def leave(self) -> None:
        """In the child: flush what was written under the current route."""

    def drain(self, process: Any = None) -> None:
        """In the parent: publish what children (or ``process``) wrote so far."""


_router: Router | None = None


def set_router(router: Router | None) -> Router | None:
    """Install ``router`` (``None`` removes it); returns the previous one."""
    global _router
    previous, _router = _router, router
    return previous


def capture() -> Any:
    return None if _router is None else _router.capture()


def enter(route: Any) -> None:
    if _router is not None and route is not None:
        _router.enter(route)


def leave() -> None:
    if _router is not None:
        _router.leave()


def drain(process: Any = None) -> None:
    if _router is not None:
        _router.drain(process)
