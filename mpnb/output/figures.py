"""matplotlib's backend in a routed child: figures show in the cell that started the work.

A routed child gets ``MPLBACKEND=module://mpnb.output.figures`` (``mpnb.output.display``),
so matplotlib picks this backend when the child imports it: Agg's canvas (no GUI),
and ``plt.show()`` sends every open figure as a display item (PNG, or the formats the
kernel's inline backend or ``mpnb.output.configure(figure_formats=...)`` chose) into
that cell, then closes it, as the inline backend does. ``display(fig)`` sends it too.
Only a child that imports matplotlib imports this module.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from . import display as _display

__all__ = ["FigureCanvas", "FigureManager", "show", "show_figure"]


class FigureManager(FigureManagerBase):
    """A figure's manager: ``fig.show()`` sends the figure."""

    def show(self) -> None:
        show_figure(self.canvas.figure)


class FigureCanvas(FigureCanvasAgg):
    """Agg's canvas, managed by ``FigureManager``."""

    manager_class = FigureManager


def show_figure(figure: Any) -> None:
    """Send ``figure`` into the starting cell in this child's figure formats."""
    data, metadata = _display.figure_bundle(figure)
    if len(data) > 1:  # more than its text: it has something drawn
        _display.publish_display_data(data, metadata)


def show(block: Any = None) -> None:
    """``plt.show()``: send every open figure, then close them all."""
    numbers = plt.get_fignums()
    try:
        for number in numbers:
            show_figure(plt.figure(number))
    finally:
        for number in numbers:
            plt.close(number)
