"""``%mp_monitor``: the process dashboard (``mpnb.dashboard``) as a line magic."""

from __future__ import annotations

import time

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

__all__ = ["MonitorMagics"]

# How long the terminal view samples before printing, so CPU % means something.
_TERMINAL_WINDOW = 0.5


@magics_class
class MonitorMagics(Magics):
    """Magics that show what mpnb's processes are doing."""

    @magic_arguments()
    @argument(
        "-i", "--interval", type=float, default=None, help="seconds between updates (default 0.5)"
    )
    @argument(
        "-n",
        "--history",
        type=int,
        default=None,
        help="how many finished processes stay listed (default 50)",
    )
    @argument(
        "--stop",
        action="store_true",
        help="stop every live dashboard; each keeps its last snapshot",
    )
    @line_magic
    def mp_monitor(self, line: str = "") -> None:
        """Show a live dashboard of the processes and pools mpnb started.

        One row per process (pool workers under their pool): pid, state, exit code
        with its signal, CPU %, memory, run time and task; per-core CPU; pool
        progress. It updates in the background while cells run. A new dashboard
        stops the previous one. In terminal IPython it prints a text table once.
        """
        args = parse_argstring(self.mp_monitor, line)
        if args.stop:
            if args.interval is not None or args.history is not None:
                raise UsageError("%mp_monitor --stop takes no other option")
            from ..dashboard.sampler import stop_all

            stop_all()
            return
        interval = 0.5 if args.interval is None else args.interval
        if not interval > 0:
            raise UsageError(f"--interval must be a positive number of seconds, not {interval}")
        from ..dashboard.sampler import DEFAULT_HISTORY, Sampler

        history = DEFAULT_HISTORY if args.history is None else args.history
        if history < 0:
            raise UsageError(f"--history must be 0 or more, not {history}")

        if getattr(self.shell, "kernel", None) is None:
            from ..dashboard.views import render_text

            sampler = Sampler(interval, history=history)
            sampler.sample()
            time.sleep(min(interval, _TERMINAL_WINDOW))
            print(render_text(sampler.sample()))
            return
        from IPython.display import display

        from ..dashboard.widget import monitor

        display(monitor(interval, history))
