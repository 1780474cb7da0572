"""Task registry: name → class. Each task module imports its framework lazily (in ``setup``),
so listing or validating tasks costs nothing."""

from __future__ import annotations

from typing import Any

from vcm_eval.tasks.base import Task
from vcm_eval.tasks.detection import DetectionTask
from vcm_eval.tasks.landmarks import LandmarkTask
from vcm_eval.tasks.quality import QualityTask
from vcm_eval.tasks.segmentation import SegmentationTask
from vcm_plugin import VCMError

TASKS: dict[str, type[Task]] = {
    t.name: t for t in (DetectionTask, SegmentationTask, LandmarkTask, QualityTask)
}

__all__ = ["TASKS", "Task", "make_task"]


def make_task(name: str, options: dict[str, Any] | None = None) -> Task:
    """Build a task by name; unknown names raise VCMError listing the known ones."""
    if name not in TASKS:
        raise VCMError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name](options)
