"""Reading runs back: ``Run`` for notebooks, the HTML page, and side-by-side comparison of runs."""

from schoolroom.analysis.run import Run

__all__ = ["Run"]
