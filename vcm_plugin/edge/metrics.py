"""Service counters: bytes served per layer and per client, frames, latencies.

Kept in memory (they describe this process's life); ``/metrics`` serves them as JSON or in
the Prometheus text format so the usual scrapers work.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict, deque

import numpy as np

#: Distinct client names kept apart in the counters; later names add to ``OTHER``.
MAX_CLIENTS = 64
OTHER = "_other"


def label(value: str) -> str:
    """A Prometheus label value, escaped as the text format requires (backslash, quote,
    newline), so a client name can never break the scrape."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Samples:
    """A bounded window of recent values with count/mean/p50/p95/max: enough for latency."""

    def __init__(self, window: int = 4096) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        """Record one value; a NaN or infinity is dropped (it would poison every mean)."""
        if not math.isfinite(value):
            return
        self.values.append(float(value))
        self.count += 1
        self.total += float(value)

    def summary(self) -> dict:
        if not self.values:
            return {"count": 0}
        v = np.asarray(self.values)
        return {
            "count": self.count,
            "mean": self.total / self.count,
            "p50": float(np.percentile(v, 50)),
            "p95": float(np.percentile(v, 95)),
            "max": float(v.max()),
        }


class Metrics:
    """Everything ``/metrics`` reports; mutated only on the event loop thread."""

    def __init__(self, max_layers: int = 16) -> None:
        self.started = time.time()
        self.served_per_layer = [0] * max_layers
        self.served_by_client: Counter[str] = Counter()
        self.frames: Counter[str] = Counter()
        self.upload_bytes = 0
        self.requests: Counter[str] = Counter()
        self.request_latency: dict[str, Samples] = defaultdict(Samples)
        self.analytics_latency = Samples()
        self.inference = Samples()
        self.analytics_bytes_read = 0
        self.analytics_point_bytes = 0  # analytics-point views of the analysed frames

    def served(self, client: str, per_layer: list[int]) -> str:
        """Count bytes served; returns the client label used (``_other`` once
        :data:`MAX_CLIENTS` names are taken, so the label set stays bounded)."""
        if client not in self.served_by_client and len(self.served_by_client) >= MAX_CLIENTS:
            client = OTHER
        for i, n in enumerate(per_layer):
            self.served_per_layer[i] += n
        self.served_by_client[client] += sum(per_layer)
        return client

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests[f"{route} {status}"] += 1
        self.request_latency[route].add(seconds)

    def snapshot(self, **extra) -> dict:
        last = max((i for i, n in enumerate(self.served_per_layer) if n), default=-1)
        return {
            "uptime_s": time.time() - self.started,
            "frames": dict(self.frames),
            "upload_bytes": self.upload_bytes,
            "bytes_served_per_layer": self.served_per_layer[: last + 1],
            "bytes_served_by_client": dict(self.served_by_client),
            "analytics": {
                "latency_s": self.analytics_latency.summary(),
                "inference_s": self.inference.summary(),
                "bytes_read": self.analytics_bytes_read,
                "point_bytes": self.analytics_point_bytes,
            },
            "requests": dict(self.requests),
            "request_latency_s": {k: v.summary() for k, v in self.request_latency.items()},
            **extra,
        }

    def prometheus(self, **gauges: float) -> str:
        """The same numbers in the Prometheus text exposition format."""
        lines = ["# TYPE vcm_edge_bytes_served_total counter"]
        lines += [
            f'vcm_edge_bytes_served_total{{layer="{i}"}} {n}'
            for i, n in enumerate(self.served_per_layer)
            if n
        ]
        lines.append("# TYPE vcm_edge_client_bytes_served_total counter")
        lines += [
            f'vcm_edge_client_bytes_served_total{{client="{label(c)}"}} {n}'
            for c, n in sorted(self.served_by_client.items())
        ]
        lines.append("# TYPE vcm_edge_frames_total counter")
        lines += [
            f'vcm_edge_frames_total{{event="{label(e)}"}} {n}'
            for e, n in sorted(self.frames.items())
        ]
        lines.append("# TYPE vcm_edge_upload_bytes_total counter")
        lines.append(f"vcm_edge_upload_bytes_total {self.upload_bytes}")
        for name, s in (
            ("analytics_latency_seconds", self.analytics_latency),
            ("inference_seconds", self.inference),
        ):
            summ = s.summary()
            lines.append(f"# TYPE vcm_edge_{name} summary")
            if summ["count"]:
                lines.append(f'vcm_edge_{name}{{quantile="0.5"}} {summ["p50"]}')
                lines.append(f'vcm_edge_{name}{{quantile="0.95"}} {summ["p95"]}')
            lines.append(f"vcm_edge_{name}_count {s.count}")
            lines.append(f"vcm_edge_{name}_sum {s.total}")
        for name, value in gauges.items():
            lines.append(f"# TYPE vcm_edge_{name} gauge")
            lines.append(f"vcm_edge_{name} {value}")
        return "\n".join(lines) + "\n"
