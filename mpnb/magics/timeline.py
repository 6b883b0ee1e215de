"""``%mp_timeline``: which worker ran which task, when, for the last run (``mpnb.timeline``)."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..timeline.render import Timeline, last_run, processes

__all__ = ["TimelineMagics"]


@magics_class
class TimelineMagics(Magics):
    """Magics that show when mpnb's workers ran what."""

    @magic_arguments()
    @argument(
        "--processes",
        action="store_true",
        help="the plain Process objects started so far (a lane each) instead",
    )
    @argument(
        "--trace",
        metavar="PATH",
        default=None,
        help="also write the timeline as a Chrome trace (JSON for Perfetto) to PATH",
    )
    @line_magic
    def mp_timeline(self, line: str = "") -> None:
        """Show the timeline of the last run: a lane per worker, a bar per task.

        The last run is what the pool that started work last (a Pool, a
        ProcessPoolExecutor, the %%mp_pool warm pool) ran since it was last idle.
        Failed tasks are red, tasks whose worker died dark red with a cross,
        cancelled ones grey; hover a bar for its item and duration. The summary names
        the slowest tasks and idle gaps. In a terminal it prints a text chart.
        """
        args = parse_argstring(self.mp_timeline, line)
        timeline: Timeline = processes() if args.processes else last_run()
        if args.trace is not None:
            try:
                timeline.to_chrome_trace(args.trace)
            except OSError as exc:
                raise UsageError(
                    f"%mp_timeline --trace: cannot write {args.trace!r}: {exc}"
                ) from exc
        from IPython.display import display

        display(timeline)
