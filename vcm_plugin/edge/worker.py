"""Analytics worker: lease new frames, fetch only their analytics point, detect, store JSON;
with masks, drop the boxes in masked areas first; with rules, report events
(:mod:`vcm_plugin.edge.events`).

The analytics point (``Codec.inspect().analytics_point``, sent by the server with each
claim) is read as a view: the header and the layers that point needs, nothing else.

Why a separate process talking HTTP: analytics scales out (run several workers; leases
keep them from doing the same frame twice, and a crashed worker's frames come back when its
lease expires) and the bytes it pulls are exactly what a remote analytics box would pull.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from vcm_plugin.codec.api import Codec
from vcm_plugin.codec.layerspec import parse_point
from vcm_plugin.codec.presets import ANALYTICS
from vcm_plugin.edge.client import EdgeClient
from vcm_plugin.edge.events import EventEngine, Polygon, Rule, for_camera, unmasked
from vcm_plugin.edge.store import FrameKey
from vcm_plugin.errors import VCMError
from vcm_plugin.taskmodels.detect import Box

log = logging.getLogger("vcm.edge.worker")


class Worker:
    """One loop: claim -> GET the view of operating point ``layers`` (default: each frame's
    analytics point, or the highest point below it that is stored) -> detect -> PUT
    detections. ``bytes_read`` per frame is recorded in the result."""

    def __init__(
        self,
        client: EdgeClient,
        detector: Callable[[np.ndarray], list[Box]],
        layers: int | str = ANALYTICS,
        batch: int = 4,
        lease: float = 120.0,
        rules: dict[str, list[Rule]] | None = None,
        masks: dict[str, list[Polygon]] | None = None,
    ) -> None:
        """``rules`` and ``masks`` per camera id (``*``: any other camera). Rules read frames
        in capture order per camera, so one worker should serve the cameras that have rules
        (a second worker's frames are not seen by the first one's rules)."""
        self.client, self.detector = client, detector
        self.events = EventEngine(rules) if rules else None
        self.masks = masks or {}
        self.layers, self.batch, self.lease = parse_point(layers), batch, lease
        self.codec = Codec()
        self.done = 0

    def __repr__(self) -> str:
        return f"Worker({self.client.url!r}, layers={self.layers}, detector={self.detector!r})"

    def point(self, item: dict) -> int:
        """The operating point to read for one claimed frame (its claim entry)."""
        if self.layers != ANALYTICS:
            return int(self.layers)
        point = int(item.get("analytics_point", 1))
        stored = item.get("stored_layers")
        return max(1, min(point, int(stored))) if stored is not None else point

    def process(self, frame_id: str, item: dict | None = None) -> dict:
        k = self.point(item or {"id": frame_id})
        t0 = time.perf_counter()
        resp = self.client.view(frame_id, layers=k)
        t1 = time.perf_counter()
        try:
            img = self.codec.decode(resp.body, layers=k)
        except VCMError:  # the server checks and quarantines it: never leased again
            if self.layers == ANALYTICS:
                self.client.report_undecodable(frame_id)
            raise
        t2 = time.perf_counter()
        boxes = self.detector(img)
        t3 = time.perf_counter()
        height, width = img.shape[:2]
        cam = FrameKey.parse(frame_id).cam
        kept = unmasked(boxes, for_camera(self.masks, cam), width, height)
        result = {
            "model": getattr(self.detector, "name", repr(self.detector)),
            "layers": k,
            "bytes_read": len(resp.body),
            "width": int(img.shape[1]),
            "height": int(img.shape[0]),
            "fetch_s": t1 - t0,
            "decode_s": t2 - t1,
            "inference_s": t3 - t2,
            "boxes": kept,
        }
        if len(kept) < len(boxes):
            result["masked"] = len(boxes) - len(kept)
        self.client.put_detections(frame_id, result)
        if self.events is not None:
            key = FrameKey.parse(frame_id)
            for kind, event in self.events.observe(key.cam, key.ts, kept, width, height):
                self.client.save_event(event.doc())
                print(f"event {kind}: {event.id} {event.cls} {event.score:.2f}", flush=True)
        return result

    def close_events(self) -> None:
        """End the events still open (the worker is stopping): the server learns they ended."""
        if self.events is not None:
            for event in self.events.close_all():
                self.client.save_event(event.doc())

    def run(
        self, max_frames: int | None = None, idle_exit: float | None = None, wait: float = 20.0
    ) -> int:
        """Work until ``max_frames`` are done or nothing new came for ``idle_exit`` s
        (both None: forever), then end the events still open. Returns the number of frames
        analysed."""
        idle_since = time.monotonic()
        while max_frames is None or self.done < max_frames:
            poll = wait if idle_exit is None else max(0.1, min(wait, idle_exit))
            n = self.batch if max_frames is None else min(self.batch, max_frames - self.done)
            claimed = self.client.claim(n, wait=poll, lease=self.lease)
            if not claimed:
                if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                    break
                continue
            for item in claimed:
                try:
                    result = self.process(item["id"], item)
                except VCMError as exc:  # e.g. the frame vanished; its lease just lapses
                    log.warning("frame %s skipped: %s", item["id"], exc)
                    continue
                self.done += 1
                names = Counter(b["name"] for b in result["boxes"])
                print(
                    f"{item['id']}: {len(result['boxes'])} boxes "
                    f"{dict(names.most_common(4))} from {result['bytes_read']} B "
                    f"(layers={result['layers']}) in {result['inference_s'] * 1000:.0f} ms",
                    flush=True,
                )
            idle_since = time.monotonic()
        self.close_events()
        return self.done
