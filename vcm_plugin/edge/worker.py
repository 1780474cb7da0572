"""Analytics worker: lease new frames, fetch only their semantic layer, detect, store JSON.

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
from vcm_plugin.edge.client import EdgeClient, ServerUnavailable
from vcm_plugin.edge.detect import Box
from vcm_plugin.errors import VCMError

log = logging.getLogger("vcm.edge.worker")


class Worker:
    """One loop: claim -> GET the first ``layers`` layers (layer 0 by default) -> detect ->
    PUT detections. ``bytes_read`` per frame is recorded in the result."""

    def __init__(self, client: EdgeClient, detector: Callable[[np.ndarray], list[Box]],
                 layers: int = 1, batch: int = 4, lease: float = 120.0) -> None:
        self.client, self.detector = client, detector
        self.layers, self.batch, self.lease = layers, batch, lease
        self.codec = Codec()
        self.done = 0

    def __repr__(self) -> str:
        return f"Worker({self.client.url!r}, layers={self.layers}, detector={self.detector!r})"

    def process(self, frame_id: str) -> dict:
        t0 = time.perf_counter()
        resp = self.client.frame(frame_id, layers=self.layers)
        t1 = time.perf_counter()
        try:
            img = self.codec.decode(resp.body, layers=self.layers)
        except VCMError:  # the server checks and quarantines it: never leased again
            if self.layers == 1:
                self.client.report_undecodable(frame_id)
            raise
        t2 = time.perf_counter()
        boxes = self.detector(img)
        t3 = time.perf_counter()
        result = {"model": getattr(self.detector, "name", repr(self.detector)),
                  "layers": self.layers, "bytes_read": len(resp.body),
                  "width": int(img.shape[1]), "height": int(img.shape[0]),
                  "fetch_s": t1 - t0, "decode_s": t2 - t1, "inference_s": t3 - t2,
                  "boxes": boxes}
        self.client.put_detections(frame_id, result)
        return result

    def run(self, max_frames: int | None = None, idle_exit: float | None = None,
            wait: float = 20.0) -> int:
        """Work until ``max_frames`` are done or nothing new came for ``idle_exit`` s
        (both None: forever). Returns the number of frames analysed."""
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
                    result = self.process(item["id"])
                except ServerUnavailable:
                    raise
                except VCMError as exc:  # e.g. the frame vanished; its lease just lapses
                    log.warning("frame %s skipped: %s", item["id"], exc)
                    continue
                self.done += 1
                names = Counter(b["name"] for b in result["boxes"])
                print(f"{item['id']}: {len(result['boxes'])} boxes "
                      f"{dict(names.most_common(4))} from {result['bytes_read']} B "
                      f"(layers={self.layers}) in {result['inference_s'] * 1000:.0f} ms",
                      flush=True)
            idle_since = time.monotonic()
        return self.done
