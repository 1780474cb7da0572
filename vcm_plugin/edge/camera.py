"""Camera side: encode frames once, upload the analytics point at once, the viewer points
later or when a viewer asks for it.

What goes up the link is the climb: the stream's top point as a view (``Codec.view``), the
header and the layers a person's best picture needs. For ``tae`` that is the texture chain
(analytics point, then the viewer points, each refining the one before) with the latent
layers absent: analytics at the edge reads the analytics point, no one there reads the latent
points, so the first upload is exactly the analytics point's bytes. For ``fast`` (every layer
needs the ones before) the view is the whole stream. A ``max_bytes`` budget below the
analytics point sends the whole stream instead, whose cheap latent points come first.

Why the analytics point first: analytics reads that point (``Codec.inspect()
["analytics_point"]``), so it must be on the server with the frame's first upload, not wait
behind the texture. Why a priority queue: on a thin uplink the first upload of the next frame
must not wait behind the texture of the previous one, so analytics latency stays one upload.
``max_bytes`` caps the first upload (the longest prefix that fits) for a link with a budget.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from vcm_plugin.codec import container
from vcm_plugin.codec.api import Codec
from vcm_plugin.edge.client import EdgeClient, ServerError, ServerUnavailable
from vcm_plugin.edge.sources import Frame
from vcm_plugin.edge.store import FrameKey
from vcm_plugin.errors import VCMError

log = logging.getLogger("vcm.edge.camera")
TEXTURE_MODES = ("after", "on-request", "never")


def _span(header: container.Header, start: int, stop: int) -> str:
    """'layers 3-5 of 0-5': the layers (numbered from 0, as in the container) in
    ``[start, stop)`` that have bytes (a view's absent ones aside)."""
    held = [i for i in range(start, stop) if header.lengths[i]]
    span = f"{held[0]}-{held[-1]}" if held else "none"
    return f"layers {span} of 0-{header.num_layers - 1}"


@dataclass(order=True)
class _Job:
    priority: int  # 0 = first upload, 1 = texture asked for by a viewer, 2 = texture "after"
    seq: int
    key: FrameKey = field(compare=False)
    layers: int = field(compare=False)  # upload the stream up to this many layers


@dataclass
class PushStats:
    """Bytes by upload: ``first_bytes`` went up with each frame (header and layers through
    the analytics point, or what ``max_bytes`` allows), ``texture_bytes`` later;
    ``layer0_bytes`` is the header and the first layer with bytes alone (layer 0, or the
    analytics layer of a view of the climb), for comparison."""

    frames: int = 0
    first_bytes: int = 0
    layer0_bytes: int = 0
    texture_bytes: int = 0
    total_bytes: int = 0
    first_latency: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        lat = np.asarray(self.first_latency or [0.0])
        return {
            "frames": self.frames,
            "first_bytes": self.first_bytes,
            "layer0_bytes": self.layer0_bytes,
            "texture_bytes": self.texture_bytes,
            "total_bytes": self.total_bytes,
            "first_fraction": self.first_bytes / max(1, self.total_bytes),
            "first_upload_p95_ms": float(np.percentile(lat, 95) * 1000),
        }


class Camera:
    """Encodes on the calling thread; one uploader thread drains a priority queue; in
    ``on-request`` mode a poller thread turns viewers' requests into texture jobs."""

    def __init__(
        self,
        client: EdgeClient,
        cam: str,
        codec: Codec | None = None,
        texture: str = "after",
        keep: int = 512,
        max_bytes: int | None = None,
        objects: Callable[[np.ndarray], list[list[float]]] | None = None,
    ) -> None:
        if texture not in TEXTURE_MODES:
            raise VCMError(f"texture mode must be one of {TEXTURE_MODES}, got {texture!r}")
        if max_bytes is not None and max_bytes < 1:
            raise VCMError(f"max-bytes must be a positive number of bytes, got {max_bytes}")
        self.client, self.cam, self.texture = client, cam, texture
        self.max_bytes = max_bytes
        self.codec = codec or Codec()
        # a detector on the camera (``taskmodels.detect.object_finder``): each frame's
        # analytics point spends its bits on the boxes it finds
        self.objects = objects
        self.keep = keep
        # each kept frame's stream and its header, parsed once when it was encoded: the
        # uploads and the texture requests read the layer table from here
        self.streams: OrderedDict[FrameKey, tuple[bytes, container.Header]] = OrderedDict()
        self.stats = PushStats()
        self._heap: list[_Job] = []
        self._cv = threading.Condition()
        self._seq = 0
        self._closing = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._last_ts = 0

    def __repr__(self) -> str:
        return (
            f"Camera({self.cam!r}, server={self.client.url!r}, texture={self.texture!r}, "
            f"max_bytes={self.max_bytes})"
        )

    def stop(self) -> None:
        """End :meth:`run` early (after the upload in flight): Ctrl-C, or a test."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()

    def _put(self, priority: int, key: FrameKey, layers: int) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, _Job(priority, self._seq, key, layers))
            self._cv.notify_all()

    def _timestamp(self, ts: int | None = None) -> int:
        """The frame's key: its capture time (now if it has none), kept strictly increasing
        so that two frames never share a key (a source that restarts its clock, a burst)."""
        self._last_ts = max(self._last_ts + 1, time.time_ns() // 1000 if ts is None else ts)
        return self._last_ts

    def first_upload(self, blob: bytes) -> int:
        """Layers of a frame's first upload of ``blob`` (``Codec.first_upload``: through the
        analytics point, or the highest point within ``max_bytes``)."""
        return self.codec.first_upload(blob, self.max_bytes)

    def climb(self, img: np.ndarray) -> bytes:
        """The stream the camera sends for one frame (``Codec.uplink``)."""
        objects = None if self.objects is None else self.objects(img)
        return self.codec.uplink(self.codec.encode(img, objects=objects), self.max_bytes)

    def capture(self, img: np.ndarray, ts: int | None = None) -> FrameKey:
        """Encode one frame and queue its first upload (and, in ``after`` mode, the rest);
        ``ts`` is its capture time in microseconds since the epoch (default: now)."""
        key = FrameKey(self.cam, self._timestamp(ts))
        blob = self.climb(img)
        first = self.first_upload(blob)
        header = container.parse_header(blob, self.codec.max_pixels)
        with self._cv:
            self.streams[key] = (blob, header)
            while len(self.streams) > self.keep:
                self.streams.popitem(last=False)
        self._put(0, key, first)
        if self.texture == "after" and header.num_layers > first:
            self._put(2, key, header.num_layers)
        return key

    def _upload(self, job: _Job) -> None:
        with self._cv:
            kept = self.streams.get(job.key)
        if kept is None:
            log.warning("frame %s no longer kept; texture request dropped", job.key)
            return
        blob, header = kept
        if job.priority == 0:
            t0 = time.perf_counter()
            data = blob[: header.prefix_end(job.layers)]
            self.client.upload(self.cam, job.key.ts, data)
            self.stats.first_latency.append(time.perf_counter() - t0)
            self.stats.frames += 1
            self.stats.first_bytes += len(data)
            self.stats.layer0_bytes += header.head_end()
            self.stats.total_bytes += len(blob)
            print(
                f"{job.key}: {_span(header, 0, job.layers)}, {len(data)} B uploaded "
                f"({len(blob)} B in all)",
                flush=True,
            )
        else:
            info = self.client.info(job.key.id)
            offset, end = info["bytes"], header.prefix_end(job.layers)
            if offset >= end:
                return
            try:
                self.client.append(job.key.id, offset, blob[offset:end])
            except ServerError as exc:
                if exc.status != 409:  # 409: another upload of this frame won the race
                    raise
            self.stats.texture_bytes += end - offset
            stored = max(
                k for k in range(1, header.num_layers + 1) if header.prefix_end(k) <= offset
            )
            print(
                f"{job.key}: {_span(header, stored, job.layers)}, {end - offset} B uploaded",
                flush=True,
            )

    def _uploader(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._closing:
                    self._cv.wait()
                if not self._heap:
                    return
                job = heapq.heappop(self._heap)
            try:
                self._upload(job)
            except (ServerUnavailable, ServerError) as exc:
                self._error = exc
                with self._cv:
                    self._closing = True
                    self._heap.clear()
                    self._cv.notify_all()
                return
            finally:
                with self._cv:
                    self._cv.notify_all()

    def _poll_requests(self) -> None:
        while not self._stop.is_set():
            try:
                wanted = self.client.wanted(self.cam, wait=2.0)
            except (ServerUnavailable, ServerError) as exc:
                log.warning("texture requests: %s", exc)
                continue
            for item in wanted:
                key = FrameKey.parse(item["id"])
                with self._cv:
                    kept = self.streams.get(key)
                if kept is not None:
                    self._put(1, key, kept[1].num_layers)

    def run(self, frames: Iterator[Frame], linger: float = 0.0) -> dict:
        """Push every frame; then drain the queue (and, ``on-request``, answer viewers'
        requests for ``linger`` seconds; negative = until interrupted)."""
        uploader = threading.Thread(target=self._uploader, name="edge-upload", daemon=True)
        uploader.start()
        poller = None
        if self.texture == "on-request":
            poller = threading.Thread(target=self._poll_requests, name="edge-requests", daemon=True)
            poller.start()
        interrupted = False
        try:
            for frame in frames:
                if self._error or self._stop.is_set():
                    break
                self.capture(frame.rgb, frame.ts)
            end = time.monotonic() + linger if linger >= 0 else float("inf")
            with self._cv:
                while (self._heap or time.monotonic() < end) and not (
                    self._error or self._stop.is_set()
                ):
                    self._cv.wait(0.2)
        except BaseException:  # Ctrl-C: drop what is queued, do not wait for retries
            interrupted = True
            with self._cv:
                self._heap.clear()
            raise
        finally:
            self._stop.set()
            with self._cv:
                self._closing = True
                self._cv.notify_all()
            uploader.join(1.0 if interrupted else None)
            if poller is not None:
                poller.join(timeout=5)
        if self._error:
            raise self._error
        return self.stats.summary()
