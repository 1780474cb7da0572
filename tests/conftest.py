"""Shared fixtures: real photos (skimage ships some; ../shared/data holds the evaluation sets),
and the markers of pyproject.toml turned into skips that say what is missing:
``needs_shared("data/kodak", ...)`` (paths under ../shared, none: the folder itself) and
``needs_framework("ultralytics", ...)`` (import names). A test using a fixture that reads
../shared is marked ``needs_shared`` here, so ``-m "not needs_shared"`` deselects it too."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("VCM_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
#: fixtures that read ../shared: their tests count as ``needs_shared``
SHARED_FIXTURES = ("shared_dir", "kodak")

# ultralytics reads these once, at first import: offline, no auto-installs, settings in a temp dir
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="vcm-yolo-"))


def missing_shared(paths: tuple[str, ...] = ()) -> str | None:
    """Why a test reading ``paths`` (relative to ../shared; none: ../shared itself) cannot run
    here, or None when they are all there."""
    missing = [str(SHARED / p) for p in (paths or ("",)) if not (SHARED / p).exists()]
    if not missing:
        return None
    return (
        f"needs {', '.join(dict.fromkeys(missing))}: the data sets and models of ../shared "
        "are missing (VCM_SHARED_DIR names another copy)"
    )


@functools.cache
def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing or broken
        return False


def missing_frameworks(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if not _installed(m)]


@pytest.hookimpl(tryfirst=True)  # before -m selection, which then sees the added markers
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if not item.get_closest_marker("needs_shared") and any(
            f in item.fixturenames for f in SHARED_FIXTURES
        ):
            item.add_marker(pytest.mark.needs_shared)
        paths = tuple(p for m in item.iter_markers("needs_shared") for p in m.args or ("",))
        reason = missing_shared(paths) if paths else None
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
        modules = [
            n for m in item.iter_markers("needs_framework") for n in missing_frameworks(m.args)
        ]
        if modules:
            item.add_marker(
                pytest.mark.skip(
                    reason=f"needs {', '.join(dict.fromkeys(modules))}, not installed here "
                    "(pip install -e '.[dev]' installs the test frameworks)"
                )
            )


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    reason = missing_shared()
    if reason:
        pytest.skip(reason)
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


class RtspServer:
    """``tests/rtsp_server.py`` (GStreamer's RTSP server, system python3) on a fixed port:
    ``start()`` again after ``kill()`` is the camera coming back at the same address."""

    SCRIPT = Path(__file__).with_name("rtsp_server.py")

    def __init__(self, fps: int = 10) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.fps = fps
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RtspServer:
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(self.SCRIPT), str(self.port), "/cam", str(self.fps)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        line = self.proc.stdout.readline()  # "ready", or the error that stopped it
        if line.strip() != "ready":
            self.kill()
            raise RuntimeError(f"RTSP server did not start: {line}{self.proc.stdout.read()}")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()


@pytest.fixture
def rtsp_server():
    """A real RTSP camera (10 frames/s, 320x240); skipped with the reason where GStreamer's
    RTSP server is not installed (.ci/run installs it)."""
    probe = (
        subprocess.run(
            ["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
            capture_output=True,
            text=True,
        )
        if Path("/usr/bin/python3").exists()
        else None
    )
    if probe is None or probe.returncode:
        pytest.skip(
            "GStreamer's RTSP server is not installed (apt-get install python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good; .ci/run does)"
        )
    server = RtspServer().start()
    yield server
    server.kill()
