"""Where a camera's pictures come from: a folder of images, one image, a video file, or any
FFmpeg source (an RTSP/HTTP/RTMP/SRT URL, a V4L2 device) read through PyAV.

Each picture comes as a :class:`Frame` with its capture time. For a video or a live source the
capture time is the stream's own clock (the frame's presentation time) anchored to the wall
clock when the source's first frame arrived, so frames keep the spacing the camera gave them
even when the encoder runs behind; images have none (the camera stamps them when it takes
them, as before).

A live source (a URL or a device) is read on its own thread that keeps only the newest frame
due, as an NVR's detect stream does: a camera that encodes more slowly than the source's frame
rate skips frames instead of falling ever further behind, and the RTSP socket is drained so
the camera does not drop the connection. When a live source ends or fails it is opened again
with back-off (1, 2, 4 ... up to 30 s), forever: cameras reboot and links drop, and the push
should still be running when they come back. A file is read once, every frame in order.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcm_plugin.codec.imagefile import read_rgb
from vcm_plugin.errors import VCMError

log = logging.getLogger("vcm.edge.sources")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
RECONNECT_MAX_S = 30.0
OPEN_TIMEOUT_S = 10.0  # PyAV's open and read timeouts: a dead camera is noticed, not waited on
READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Frame:
    """One picture from a source: ``name`` for messages, ``rgb`` (H, W, 3) uint8 and
    ``ts``, the capture time in microseconds since the epoch (None: the camera stamps it)."""

    name: str
    rgb: np.ndarray
    ts: int | None = None


def is_live(source: str | Path) -> bool:
    """A URL other than ``file://`` or a V4L2 device: read on a thread, reconnected."""
    text = str(source)
    if _URL.match(text):
        return not text.lower().startswith("file://")
    return text.startswith("/dev/video")


def iter_frames(
    source: str | Path,
    every: int = 1,
    limit: int | None = None,
    fps: float | None = None,
    reconnect_max_s: float = RECONNECT_MAX_S,
) -> Iterator[Frame]:
    """The frames of ``source``: every ``every``-th, at most ``fps`` per second of capture
    time (video and live sources), at most ``limit`` in all."""
    if every < 1:
        raise VCMError(f"every must be a positive number of frames, got {every}")
    if fps is not None and not fps > 0:
        raise VCMError(f"fps must be a positive number of frames per second, got {fps}")
    if limit is not None and limit < 1:
        raise VCMError(f"limit must be a positive number of frames, got {limit}")
    if is_live(source):
        frames: Iterator[Frame] = _LiveReader(str(source), every, fps, reconnect_max_s).frames()
    else:
        path = Path(str(source).removeprefix("file://"))
        if path.is_dir():
            paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not paths:
                raise VCMError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
            frames = _every((Frame(p.name, read_rgb(p)) for p in paths), every)
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            frames = (Frame(p.name, read_rgb(p)) for p in [path])
        elif path.is_file():
            frames = _paced(_read_av(str(path), path.name), every, fps)
        else:
            raise VCMError(
                f"{source} is neither a folder of images, an image, a video file nor a "
                "camera URL (rtsp://, http://, ...) or device (/dev/video0)"
            )
    try:
        for count, frame in enumerate(frames):
            if limit is not None and count >= limit:
                return
            yield frame
    finally:
        frames.close()  # a live reader's thread stops with it


def _every(frames: Iterator[Frame], every: int) -> Iterator[Frame]:
    for i, frame in enumerate(frames):
        if i % every == 0:
            yield frame


def _paced(frames: Iterator[Frame], every: int, fps: float | None) -> Iterator[Frame]:
    """Every ``every``-th frame, then at most ``fps`` per second of capture time."""
    pace = _Pace(fps)
    for frame in _every(frames, every):
        if pace.due(frame.ts):
            yield frame


class _Pace:
    """Frame-rate control on capture time: a frame is due when at least one period has passed
    since the last one taken (half a millisecond of slack for clock rounding)."""

    def __init__(self, fps: float | None) -> None:
        self.period_us = None if fps is None else 1e6 / fps
        self.next_us: float | None = None

    def due(self, ts: int | None) -> bool:
        if self.period_us is None or ts is None:
            return True
        if self.next_us is None or ts >= self.next_us + self.period_us:
            self.next_us = ts + self.period_us  # the first frame, or far behind: start again
        elif ts >= self.next_us - 500:
            self.next_us += self.period_us
        else:
            return False
        return True


def redact(url: str) -> str:
    """``url`` without its password (``rtsp://user:***@host/...``): for names and logs."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", url)


def _open_av(url: str):
    """The source opened with PyAV: RTSP over TCP (what NVRs default to: no lost packets
    behind a NAT), V4L2 for ``/dev/video*``."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is in the edge extra
        raise VCMError(
            "video and camera sources need PyAV: pip install 'vcm_plugin[edge]'"
        ) from exc
    options = {"rtsp_transport": "tcp"} if url.lower().startswith(("rtsp://", "rtsps://")) else {}
    fmt = "v4l2" if url.startswith("/dev/video") else None
    try:
        return av.open(url, format=fmt, options=options, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))
    except (av.FFmpegError, OSError) as exc:
        raise VCMError(
            f"cannot open {redact(url)} as a video or camera source (FFmpeg: {_said(exc)})"
        ) from exc


def _read_av(url: str, name: str) -> Iterator[Frame]:
    """Decoded frames of one opening of ``url``; ``ts`` = the wall clock when the first frame
    came + the frame's presentation time since that frame."""
    import av

    container = _open_av(url)
    try:
        if not container.streams.video:
            raise VCMError(f"{redact(url)} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base_us: int | None = None  # the wall clock at the first frame, less its time
        for i, picture in enumerate(container.decode(stream)):
            t_us = None if picture.time is None else round(picture.time * 1e6)
            if base_us is None:
                base_us = time.time_ns() // 1000 - (t_us or 0)
            ts = None if t_us is None else base_us + t_us
            yield Frame(f"{name}#{i}", picture.to_ndarray(format="rgb24"), ts)
    except av.FFmpegError as exc:
        raise VCMError(f"reading {redact(url)} failed (FFmpeg: {_said(exc)})") from exc
    finally:
        container.close()


def _said(exc: Exception) -> str:
    """FFmpeg's words without the URL PyAV appends (it may hold a password)."""
    return getattr(exc, "strerror", None) or type(exc).__name__


class _LiveReader:
    """Reads a live source on a thread, keeps the newest due frame, reopens on failure."""

    def __init__(self, url: str, every: int, fps: float | None, reconnect_max_s: float) -> None:
        self.url, self.every, self.fps = url, every, fps
        self.reconnect_max_s = reconnect_max_s
        self.name = redact(url)
        self._cv = threading.Condition()
        self._newest: Frame | None = None
        self._stop = threading.Event()
        self.skipped = 0

    def _read(self) -> None:
        delay = 1.0
        pace = _Pace(self.fps)
        count = 0
        while not self._stop.is_set():
            got = False
            try:
                for frame in _read_av(self.url, self.name):
                    if self._stop.is_set():
                        return
                    got = True
                    count += 1
                    if (count - 1) % self.every or not pace.due(frame.ts):
                        continue
                    with self._cv:
                        if self._newest is not None:
                            self.skipped += 1
                        self._newest = frame
                        self._cv.notify_all()
                if got:
                    delay = 1.0
                log.warning("%s: stream ended; reconnecting in %.0f s", self.name, delay)
            except VCMError as exc:
                if got:
                    delay = 1.0
                log.warning("%s; reconnecting in %.0f s", exc, delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.reconnect_max_s)

    def frames(self) -> Iterator[Frame]:
        thread = threading.Thread(target=self._read, name="edge-source", daemon=True)
        thread.start()
        try:
            while True:
                with self._cv:
                    while self._newest is None:
                        self._cv.wait()
                    frame, self._newest = self._newest, None
                yield frame
        finally:
            self._stop.set()
            if self.skipped:
                log.info(
                    "%s: %d frame(s) skipped while the encoder was busy", self.name, self.skipped
                )
