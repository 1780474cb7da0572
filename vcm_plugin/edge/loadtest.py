"""Bounded upload load test: N uploads of pre-encoded streams from C concurrent clients.

Why pre-encoded: the figure of interest is the service (validation, durable write, index),
not the camera's encoder, which runs on the camera. Stops by itself after N uploads.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from vcm_plugin.edge.client import EdgeClient


def run_load(url: str, streams: list[bytes], n: int = 500, concurrency: int = 8,
             cam_prefix: str = "load", layers_first: bool = False) -> dict:
    """Upload ``n`` frames (stream ``i % len(streams)``) from ``concurrency`` threads, each
    its own camera and keep-alive connection; returns frames/s and latency percentiles.
    ``layers_first`` sends layer 0 and then the texture layers as two requests per frame."""
    from vcm_plugin.codec import container
    from vcm_plugin.codec.api import MAX_IMAGE_PIXELS

    ends = [container.parse_header(s, MAX_IMAGE_PIXELS).prefix_end(1) for s in streams]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    base_ts = time.time_ns() // 1000

    def client_loop(c: int) -> None:
        client = EdgeClient(url, role="loadtest", retry_for=30.0)
        cam = f"{cam_prefix}{c}"
        try:
            for i in range(c, n, concurrency):
                blob = streams[i % len(streams)]
                t0 = time.perf_counter()
                if layers_first:
                    end = ends[i % len(streams)]
                    reply = client.upload(cam, base_ts + i, blob[:end])
                    client.append(reply["id"], end, blob[end:])
                else:
                    client.upload(cam, base_ts + i, blob)
                latencies[c].append(time.perf_counter() - t0)
        except Exception as exc:  # reported, not raised: the summary says what failed
            errors.append(f"{cam}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    lat = np.asarray([x for per in latencies for x in per] or [0.0]) * 1000
    done = sum(len(per) for per in latencies)
    return {"uploads": done, "requested": n, "concurrency": concurrency,
            "seconds": seconds, "frames_per_s": done / seconds,
            "mb_per_s": sum(len(streams[i % len(streams)]) for i in range(done)) / seconds / 1e6,
            "latency_ms": {"p50": float(np.percentile(lat, 50)),
                           "p95": float(np.percentile(lat, 95)), "max": float(lat.max())},
            "errors": errors}
