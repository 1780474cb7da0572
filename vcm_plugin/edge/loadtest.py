"""Bounded upload load test: N uploads of pre-encoded streams from C concurrent clients.

Why pre-encoded: the figure of interest is the service (validation, durable write, index),
not the camera's encoder, which runs on the camera. Stops by itself after N uploads.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from vcm_plugin.edge.client import EdgeClient
from vcm_plugin.errors import VCMError

BENCH_PREFIX = "bench-"  # `vcm edge bench` cameras: bench-0, bench-1, ... (easy to find and delete)


def check_bench_store(
    url: str, allow_live: bool = False, prefix: str = BENCH_PREFIX, token: str | None = None
) -> str:
    """The server's store URL, after refusing (unless ``allow_live``) a store that holds
    frames of cameras other than the bench's own: the load test's frames would stay there,
    and a running worker would analyse them ahead of the real ones."""
    client = EdgeClient(url, role="loadtest", retry_for=10.0, token=token)
    try:
        health = client.health()
        if "store" not in health:  # a bare /health: the server wants a token
            raise VCMError(
                f"{url} requires a token: give --token-file PATH (a camera token "
                f"for cameras {prefix}*) or set $VCM_EDGE_TOKEN"
            )
        store = health["store"]
        cameras = client.request("GET", "/cameras").json()["cameras"]
    finally:
        client.close()
    live = [c["id"] for c in cameras if not c["id"].startswith(prefix)]
    if live and not allow_live:
        shown = ", ".join(live[:5]) + (", ..." if len(live) > 5 else "")
        raise VCMError(
            f"the store of {url} ({store}) holds frames of other cameras ({shown}); "
            "a load test would add its frames there for the worker to analyse. "
            "Run it against a scratch server (vcm edge serve --store "
            "/tmp/vcm-bench-store --port 8751, then --server "
            "http://127.0.0.1:8751) or pass --allow-live-store"
        )
    return store


def run_load(
    url: str,
    streams: list[bytes],
    n: int = 500,
    concurrency: int = 8,
    cam_prefix: str = "load",
    layers_first: bool = False,
    token: str | None = None,
) -> dict:
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
        client = EdgeClient(url, role="loadtest", retry_for=30.0, token=token)
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
    return {
        "uploads": done,
        "requested": n,
        "concurrency": concurrency,
        "seconds": seconds,
        "frames_per_s": done / seconds,
        "mb_per_s": sum(len(streams[i % len(streams)]) for i in range(done)) / seconds / 1e6,
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p95": float(np.percentile(lat, 95)),
            "max": float(lat.max()),
        },
        "errors": errors,
    }
