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
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from vcm_plugin.codec.api import MAX_IMAGE_PIXELS
from vcm_plugin.codec.container import HEADER_PROBE, parse_header
from vcm_plugin.codec.files import replace_durably, write_atomic
from vcm_plugin.edge.stream import Layout
from vcm_plugin.errors import VCMError

_CAM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
_STEM = re.compile(r"[0-9]{16}")
#: A frame id: camera, '-', the timestamp in ASCII digits without leading zeros (one spelling
#: per frame: ``int()`` would also take '٣', ' 7 ', '1_000' and '007').
_ID = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_-]{0,63})-(0|[1-9][0-9]{0,15})")
FRAME = ".vcm"
DETECTIONS = ".json"
QUARANTINE = ".quarantine"  # why a frame that does not decode is kept out of analytics
SUFFIXES = (FRAME, DETECTIONS, QUARANTINE)
#: seconds without a write after which an upload's temp file is a killed process's leftover,
#: where no server says otherwise (``vcm edge reindex``): twice the default body timeout
STALE_PART_S = 120.0
#: where a local store's uploads stream before their rename into a camera folder (hidden, so
#: never taken for a camera): sweeping leftovers lists this folder, not every frame
PARTS = ".vcm-parts"


def check_camera(cam: str) -> str:
    if not _CAM.fullmatch(cam or ""):
        raise VCMError(
            f"bad camera id {cam!r}: use 1-64 letters, digits, '_' or '-' (not starting with '-')"
        )
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
        m = _ID.fullmatch(frame_id or "")
        if m is None:
            raise VCMError(
                f"bad frame id {frame_id[:100]!r}: expected CAMERA-TIMESTAMP (the "
                "timestamp in ASCII digits, no leading zeros)"
            )
        return cls(m.group(1), int(m.group(2)))

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
        self.fs.makedirs(folder, exist_ok=True)
        if self.local:  # the package's one rule, directory fsync included: an acknowledged
            write_atomic(final, data, mode=0o644)  # frame survives power loss
        else:
            self._publish_remote(final, lambda tmp: self.fs.pipe_file(tmp, data))
        with self._lock:
            self.bytes_written += len(data)

    def _publish_remote(self, final: str, put: Callable[[str], object]) -> None:
        """A remote filesystem: ``put`` writes a hidden temp name beside ``final``, which is
        then moved over it (readers never list or see the half-written one)."""
        folder, name = final.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.part"
        self.fs.makedirs(folder, exist_ok=True)
        try:
            put(tmp)
            self.fs.mv(tmp, final)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)

    def begin(self, key: FrameKey, copy_from: int = 0) -> Upload:
        """A temp file for an upload that streams in (:class:`Upload`); ``copy_from`` bytes of
        the stored frame are copied first (an append rewrites prefix + new layers)."""
        return Upload(self, key, copy_from)

    def delete(self, key: FrameKey) -> int:
        """Remove a frame and its side files; returns the bytes freed."""
        freed = 0
        for suffix in SUFFIXES:
            path = self.path(key, suffix)
            try:
                freed += int(self.fs.size(path))
                self.fs.rm(path)
            except FileNotFoundError:
                continue
        return freed

    def write_json(self, key: FrameKey, obj: dict, suffix: str = DETECTIONS) -> None:
        self.write(key, json.dumps(obj, separators=(",", ":"), allow_nan=False).encode(), suffix)

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
        header = parse_header(probe, MAX_IMAGE_PIXELS)
        size = self.size(key)
        layers = max(
            (k for k in range(1, header.num_layers + 1) if header.prefix_end(k) <= size), default=0
        )
        if layers == 0:
            raise VCMError(f"frame {key} is shorter than its layer 0 ({size} bytes)")
        return Layout(header, layers)

    def size(self, key: FrameKey) -> int:
        return int(self.fs.size(self.path(key)))

    def read_json(self, key: FrameKey, suffix: str = DETECTIONS) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.path(key, suffix)))
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

    def frames(
        self, cam: str, since: int | None = None, until: int | None = None, suffix: str = FRAME
    ) -> list[FrameKey]:
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

    def stale_parts(self, older_than: float, everywhere: bool = False) -> list[tuple[str, int]]:
        """Temp files (``*.part``) untouched for ``older_than`` seconds, with their sizes:
        what a process killed mid-upload left (its ``abort`` never ran). A live upload writes
        at least every ``body_timeout`` seconds, so a longer silence means no one will finish
        it. Only the ``PARTS`` folder, whose listing does not grow with the frames (a
        server's start-up and retention passes); ``everywhere`` also the camera folders,
        where temp files beside the frames come from 0.3 and from atomic side-file writes
        (``vcm edge reindex``, which walks every frame anyway)."""
        now, out = time.time(), []
        folders = [f"{self.root}/{PARTS}"]
        if everywhere:
            folders += [f"{self.root}/{cam}" for cam in self.cameras()]
        for folder in folders:
            try:
                listed = self.fs.ls(folder, detail=False)
            except FileNotFoundError:
                continue
            for p in listed:
                if not p.endswith(".part"):
                    continue
                try:
                    age = now - self.fs.modified(p).timestamp()
                    size = int(self.fs.size(p))
                except (FileNotFoundError, NotImplementedError):
                    continue
                if age > older_than:
                    out.append((p, size))
        return out

    def remove_stale_parts(self, older_than: float, everywhere: bool = False) -> tuple[int, int]:
        """Delete :meth:`stale_parts`; returns (files, bytes) removed."""
        files = freed = 0
        for path, size in self.stale_parts(older_than, everywhere):
            try:
                self.fs.rm(path)
            except FileNotFoundError:  # another server sharing the store got it first
                continue
            files, freed = files + 1, freed + size
        return files, freed


class Upload:
    """One upload on its way into the store: bytes are appended to a temp file as they
    arrive (memory stays one chunk), then :meth:`commit` makes it visible atomically and
    durably, or :meth:`abort` removes it. A local store writes the temp file in the store's
    ``PARTS`` folder (same filesystem, so the rename is atomic); any other filesystem spools
    to a local temp file and moves it in with ``put_file`` + ``mv``."""

    def __init__(self, store: FrameStore, key: FrameKey, copy_from: int = 0) -> None:
        import tempfile

        self.store, self.key, self.size = store, key, 0
        final = store.path(key)
        self.folder = final.rsplit("/", 1)[0]
        if store.local:  # same filesystem as the frame: the rename stays atomic
            os.makedirs(self.folder, exist_ok=True)
            os.makedirs(f"{store.root}/{PARTS}", exist_ok=True)
            self.tmp = f"{store.root}/{PARTS}/{key.cam}-{key.ts:016d}.{uuid.uuid4().hex}.part"
            self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        else:
            self.fd, self.tmp = tempfile.mkstemp(prefix="vcm-upload-", suffix=".part")
        try:
            if copy_from:
                for start in range(0, copy_from, 1 << 20):
                    self.write(store.read(key, start, min(copy_from, start + (1 << 20))))
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)

    def read(self, start: int, stop: int) -> bytes:
        """Bytes already written (to compare a re-sent upload with the stored frame)."""
        return os.pread(self.fd, stop - start, start) if self.fd >= 0 else b""

    def commit(self) -> None:
        store, final = self.store, self.store.path(self.key)
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            if store.local:  # the rename itself durable: the frame survives power loss
                replace_durably(self.tmp, final)
            else:
                store._publish_remote(final, lambda remote: store.fs.put_file(self.tmp, remote))
        finally:
            self.abort()
        with store._lock:
            store.bytes_written += self.size

    def abort(self) -> None:
        """Drop the temp file (after commit: only the local spool of a remote store)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
