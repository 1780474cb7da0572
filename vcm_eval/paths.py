"""Where default model weights live (DESIGN §8): ``$VCM_WEIGHTS_DIR``, else ``../shared/models``
next to the repository root."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def weights_dir() -> Path:
    env = os.environ.get("VCM_WEIGHTS_DIR")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "models"
