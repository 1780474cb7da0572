"""Frame store: complete layered streams on any fsspec filesystem.

Layout: ``ROOT/<camera>/<timestamp µs, 16 digits>.vcm`` (+ ``.json`` for detections), so a
directory listing is the index by camera and time. Every write goes to a hidden temp file that
is renamed into place, so a crash mid-write never leaves a torn frame visible; reads take byte
ranges, so layer 0 is served without reading the texture layers.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from vcm_plugin.edge.stream import HEADER_PROBE, Layout, read_header
from vcm_plugin.errors import VCMError

_CAM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
_STEM = re.compile(r"\d{16}")
FRAME = ".vcm"
DETECTIONS = ".json"


def check_camera(cam: str) -> str:
    if not _CAM.fullmatch(cam or ""):
        raise VCMError(f"bad camera id {cam!r}: use 1-64 letters, digits, '_' or '-' "
                       "(not starting with '-')")
    return cam


@dataclass(frozen=True, order=True)
class FrameKey:
    """A frame is named by its camera and capture time (µs since the epoch): ``cam-ts``."""

    cam: str
    ts: int

    def __post_init__(self) -> None:
        check_camera(self.cam)
        if not 0 <= self.ts < 10**16:
            raise VCMError(f"bad timestamp {self.ts}: microseconds since the epoch expected")

    @property
    def id(self) -> str:
        return f"{self.cam}-{self.ts}"

    @classmethod
    def parse(cls, frame_id: str) -> FrameKey:
        cam, _, ts = frame_id.rpartition("-")
        if not cam or not ts.isdigit():
            raise VCMError(f"bad frame id {frame_id!r}: expected CAMERA-TIMESTAMP")
        return cls(cam, int(ts))

    def __str__(self) -> str:
        return self.id


class FrameStore:
    """Atomic writes, byte-range reads and listing over one fsspec root.

    Thread-safe: the server calls it from an executor. ``bytes_read`` counts payload bytes
    returned by :meth:`read` (header probes are counted apart, in ``probe_bytes``).
    """

    def __init__(self, url: str | os.PathLike[str]) -> None:
        self.url = str(url)
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ValueError, ImportError) as exc:
            raise VCMError(f"cannot open store {self.url!r}: {exc}") from None
        self.root = self.root.rstrip("/") or "/"
        self.local = isinstance(self.fs, LocalFileSystem)
        self.fs.makedirs(self.root, exist_ok=True)
        self._lock = threading.Lock()
        self.bytes_read = 0
        self.bytes_written = 0
        self.probe_bytes = 0

    def __repr__(self) -> str:
        return f"FrameStore({self.url!r})"

    def path(self, key: FrameKey, suffix: str = FRAME) -> str:
        return f"{self.root}/{key.cam}/{key.ts:016d}{suffix}"

    # -- writing -------------------------------------------------------------------------
    def write(self, key: FrameKey, data: bytes, suffix: str = FRAME) -> None:
        """Write all of ``data`` or nothing: temp file, flush to disk, rename over the name."""
        final = self.path(key, suffix)
        folder = final.rsplit("/", 1)[0]
        tmp = f"{folder}/.{key.ts:016d}{suffix}.{uuid.uuid4().hex}.part"
        self.fs.makedirs(folder, exist_ok=True)
        try:
            if self.local:
                self._write_local(tmp, final, data)
            else:
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, final)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
        with self._lock:
            self.bytes_written += len(data)

    @staticmethod
    def _write_local(tmp: str, final: str, data: bytes) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dir_fd = os.open(os.path.dirname(final), os.O_RDONLY)
        try:  # make the rename itself durable: an acknowledged frame survives power loss
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def write_json(self, key: FrameKey, obj: dict) -> None:
        self.write(key, json.dumps(obj, separators=(",", ":")).encode(), DETECTIONS)

    # -- reading -------------------------------------------------------------------------
    def read(self, key: FrameKey, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of a stored frame, read by range (not the whole file)."""
        try:
            data = self.fs.cat_file(self.path(key), start=start, end=end)
        except FileNotFoundError:
            raise VCMError(f"frame {key} not found") from None
        with self._lock:
            self.bytes_read += len(data)
        return data

    def layout(self, key: FrameKey) -> Layout:
        """The stored frame's layer table, from a small range read of its header."""
        try:
            probe = self.fs.cat_file(self.path(key), start=0, end=HEADER_PROBE)
        except FileNotFoundError:
            raise VCMError(f"frame {key} not found") from None
        with self._lock:
            self.probe_bytes += len(probe)
        header = read_header(probe)
        size = self.size(key)
        layers = max((k for k in range(1, header.num_layers + 1)
                      if header.prefix_end(k) <= size), default=0)
        if layers == 0:
            raise VCMError(f"frame {key} is shorter than its layer 0 ({size} bytes)")
        return Layout(header, layers)

    def size(self, key: FrameKey) -> int:
        return int(self.fs.size(self.path(key)))

    def read_json(self, key: FrameKey) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.path(key, DETECTIONS)))
        except FileNotFoundError:
            return None

    def has(self, key: FrameKey, suffix: str = FRAME) -> bool:
        return self.fs.exists(self.path(key, suffix))

    def mtime(self, key: FrameKey) -> float:
        try:
            return float(self.fs.modified(self.path(key)).timestamp())
        except (NotImplementedError, FileNotFoundError, AttributeError):
            return time.time()

    # -- index ---------------------------------------------------------------------------
    def cameras(self) -> list[str]:
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))
        return sorted(n for n in names if _CAM.fullmatch(n))

    def frames(self, cam: str, since: int | None = None, until: int | None = None,
               suffix: str = FRAME) -> list[FrameKey]:
        """Visible frames of one camera, oldest first; temp files are never listed."""
        folder = f"{self.root}/{check_camera(cam)}"
        if not self.fs.exists(folder):
            return []
        keys = []
        for p in self.fs.ls(folder, detail=False):
            name = p.rsplit("/", 1)[-1]
            stem = name[: -len(suffix)] if name.endswith(suffix) else ""
            if _STEM.fullmatch(stem):
                ts = int(stem)
                if (since is None or ts >= since) and (until is None or ts <= until):
                    keys.append(FrameKey(cam, ts))
        return sorted(keys)

    def all_frames(self) -> list[FrameKey]:
        return [k for cam in self.cameras() for k in self.frames(cam)]
