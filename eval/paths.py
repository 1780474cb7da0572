"""The repository root, for the eval's default data paths (``../shared/data`` beside it).

Model weights are looked up by :func:`vcm_plugin.codec.weights.models_dir`."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
