"""mpnb's IPython magics, and what a parallel cell's workers run.

- ``pool``: ``%%mp_pool`` and ``%mp_pool`` (the magics, their options, the warm pool's
  view); ``runner``: one run of a parallel cell, from the notebook's names to the
  collected results; ``cell``: the cell as the parent sends it (compiled code, the
  notebook names it reads, ``ParallelCellError``);
- ``cell_task``: what a worker runs for each item (no IPython: workers import it);
- ``warm``: the warm pool that lives across cells (``%unload_ext mpnb`` stops it);
- ``dashboard``: ``%mp_monitor``, the live dashboard of ``mpnb.dashboard``;
- ``timeline``: ``%mp_timeline``, the last run's timeline of ``mpnb.timeline``.

This package itself imports nothing: a worker loading ``cell_task`` loads no IPython.
"""

__all__: list[str] = []
