"""The interface every task implements.

Why this split: the runner owns codecs, workers and outputs; a task only knows its data
layout, its model and its metric. ``score`` runs per image (in worker processes) and returns
small picklable results; ``aggregate`` turns one operating point's results over the whole set
into numbers (dataset-level metrics such as mAP or accumulated IoU cannot be averaged per
image).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vcm_eval.datasets import Item

__all__ = ["Task"]


class Task:
    """Base class: subclasses set ``name``, ``metric``, ``higher_is_better``."""

    name: str = ""
    metric: str = ""
    higher_is_better: bool = True
    #: which vcm operating points the task scores: "all", or "viewer" (a person's views)
    vcm_points: str = "all"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})

    def items(self, data: Path, limit: int | None) -> list[Item]:
        """Read the data set (sorted by file name, first ``limit``)."""
        raise NotImplementedError

    def setup(self) -> None:
        """Load the model; called once per process before the first ``score``."""

    def score(self, item: Item, img: np.ndarray) -> dict[str, Any]:
        """Evaluate one (decoded) image. Keys not starting with ``_`` go to per_image.csv."""
        raise NotImplementedError

    def aggregate(self, items: list[Item], results: list[dict[str, Any]]) -> dict[str, float]:
        """Set-level metrics for one operating point; must contain ``self.metric``."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line naming the model used (goes into summary.json)."""
        return type(self).__name__

    def secondary_metrics(self) -> dict[str, bool]:
        """Metrics of ``aggregate`` besides ``self.metric`` that get their own curve analysis
        (BD-rates, rates at accuracy levels, a plot): name → higher is better."""
        return {}

    def levels_note(self, metric: str) -> str | None:
        """Why ``metric`` has no accuracy levels relative to its uncompressed value (``None``:
        it has them)."""
        return None
