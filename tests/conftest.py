"""Shared fixtures: real photos (skimage ships some; ../shared/data holds the evaluation sets)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"

# ultralytics reads these once, at first import: offline, no auto-installs, settings in a temp dir
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="vcm-yolo-"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"../shared is missing (expected at {SHARED})"
    return SHARED


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A 200x240 crop of a real photo."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[40:240, 100:340])


@pytest.fixture(scope="session")
def kodak(shared_dir) -> np.ndarray:
    from PIL import Image

    path = sorted((shared_dir / "data" / "kodak").glob("*.png"))[0]
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def pg_server():
    """A throw-away PostgreSQL server (initdb + pg_ctl) per test module; skipped with the
    reason where none can be started."""
    from vcm_plugin import VCMError
    from vcm_plugin.edge.testing import PostgresServer

    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"psycopg not installed ({exc}); .ci/run installs the dev extra")
    try:
        server = PostgresServer().start()
    except VCMError as exc:
        pytest.skip(f"no PostgreSQL server can be started here: {exc}")
    yield server
    server.cleanup()
