"""``vcm edge index-bench``: the index at scale (issue 21).

Why synthetic rows: a million real encodes would take days on a small machine and measure the
codec, not the index. Rows carry a real container header (the layer table of one encoded
frame), so the server serves them exactly as it would real frames' metadata; no image data
is written. Measured: query latency percentiles (camera + time window; class filter, with and
without a camera), the server's start-up against the filled index (against an empty one for
comparison), and real uploads through a server using the index.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from vcm_plugin.codec import container
from vcm_plugin.codec.api import Codec
from vcm_plugin.edge.index import HOUR_US, BoxRow, FrameQuery, FrameRow, Index, open_index

CLASSES = ("person", "car", "truck", "bicycle", "dog", "bus", "motorcycle", "backpack")
WEIGHTS = (0.45, 0.25, 0.08, 0.06, 0.05, 0.04, 0.04, 0.03)
SPACING_US = 1_000_000  # one frame per second per camera


def _header() -> bytes:
    from skimage import data

    blob = Codec.from_preset("fast").encode(data.astronaut()[:96, :128])
    return blob[: container.parse_header(blob, 10**8).size]


def fill(
    index: Index,
    frames: int,
    cameras: int,
    seed: int = 0,
    batch: int = 20_000,
    start_us: int = 1_700_000_000 * 10**6,
) -> dict:
    """``frames`` synthetic frames over ``cameras`` cameras, ~3 boxes each (Poisson)."""
    rng = random.Random(seed)
    header = _header()
    h = container.parse_header(header, 10**8)
    size = h.prefix_end(h.num_layers)
    t0 = time.perf_counter()
    rows, boxes, done, nboxes = [], [], 0, 0
    per_cam = (frames + cameras - 1) // cameras
    for i in range(per_cam):
        for c in range(cameras):
            if done >= frames:
                break
            ts = start_us + i * SPACING_US + c
            cam = f"cam{c:03d}"
            rows.append(
                FrameRow(
                    cam,
                    ts,
                    header,
                    h.num_layers,
                    h.num_layers,
                    size,
                    5,
                    ts / 1e6,
                    ts / 1e6,
                    "analysed",
                )
            )
            k = min(12, int(np.random.default_rng(done).poisson(3)))
            bs = [
                BoxRow(
                    rng.choices(CLASSES, WEIGHTS)[0],
                    round(rng.uniform(0.25, 1.0), 3),
                    (10.0, 20.0, 110.0, 220.0),
                )
                for _ in range(k)
            ]
            boxes.append((cam, ts, bs))
            nboxes += k
            done += 1
            if len(rows) >= batch:
                index.bulk_insert(rows, boxes)
                rows, boxes = [], []
    if rows:
        index.bulk_insert(rows, boxes)
    return {
        "frames": done,
        "boxes": nboxes,
        "fill_s": round(time.perf_counter() - t0, 1),
        "span_hours": round(per_cam * SPACING_US / HOUR_US, 2),
    }


def _pct(samples: list[float]) -> dict:
    a = np.asarray(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "max_ms": round(float(a.max()), 2),
        "n": len(samples),
    }


def time_queries(
    index: Index,
    cameras: int,
    span_us: int,
    n: int,
    seed: int = 1,
    start_us: int = 1_700_000_000 * 10**6,
) -> dict:
    """Latency of the queries users ask, each a page of 100, oldest first (``order=asc``:
    the order docs/edge.md's figures were measured in; the default newest-first pages walk
    the same indexes backwards and are not measured here)."""
    rng = random.Random(seed)
    kinds = {
        "camera_time_window": lambda: FrameQuery(
            cam=f"cam{rng.randrange(cameras):03d}",
            since=(s := start_us + rng.randrange(max(1, span_us - HOUR_US))),
            until=s + HOUR_US,
            limit=100,
            newest_first=False,
        ),
        "class_filter": lambda: FrameQuery(
            cls=rng.choice(CLASSES),
            since=start_us + rng.randrange(span_us),
            limit=100,
            newest_first=False,
        ),
        "camera_class_window": lambda: FrameQuery(
            cam=f"cam{rng.randrange(cameras):03d}",
            cls=rng.choice(CLASSES),
            min_score=0.5,
            since=(s := start_us + rng.randrange(max(1, span_us - HOUR_US))),
            until=s + HOUR_US,
            limit=100,
            newest_first=False,
        ),
    }
    out = {}
    for name, make in kinds.items():
        samples = []
        for _ in range(n):
            q = make()
            t0 = time.perf_counter()
            rows, cursor = index.frames(q)
            if cursor is not None:  # the next page too: keyset, as cheap as the first
                index.frames(FrameQuery(**{**q.__dict__, "cursor": cursor}))
            samples.append((time.perf_counter() - t0) / (2 if cursor is not None else 1))
        out[name] = _pct(samples)
    samples = []
    for _ in range(max(10, n // 10)):
        t0 = time.perf_counter()
        index.class_counts(
            cam=f"cam{rng.randrange(cameras):03d}", since=start_us, until=start_us + span_us
        )
        samples.append(time.perf_counter() - t0)
    out["hourly_class_counts_one_camera"] = _pct(samples)
    return out


def start_up_seconds(db: str | None, store_dir: Path) -> float:
    """Seconds from process start to "serving" for a server on this index."""
    from vcm_plugin.edge.testing import ServerProcess

    args = ("--db", db) if db else ()
    t0 = time.perf_counter()
    srv = ServerProcess(
        store_dir, store_dir.parent / f"srv-{time.time_ns()}.log", args=args
    ).start()
    took = time.perf_counter() - t0
    srv.stop()
    return round(took, 2)


def upload_throughput(
    db: str | None, store_dir: Path, images: Path, n: int, concurrency: int
) -> dict:
    from vcm_plugin.edge.auth import add_token
    from vcm_plugin.edge.loadtest import run_load
    from vcm_plugin.edge.sources import iter_frames
    from vcm_plugin.edge.testing import ServerProcess

    codec = Codec()
    streams = [codec.encode(f.rgb) for f in iter_frames(images, limit=4)]
    # with authentication on, as a deployment runs: one camera token for the bench's cameras
    tokens = store_dir.parent / "upload-tokens.json"
    token = add_token(tokens, "bench", "camera", ["up-*"])
    args = ("--tokens-file", str(tokens), *(("--db", db) if db else ()))
    with ServerProcess(store_dir, store_dir.parent / "upload-srv.log", args=args) as srv:
        result = run_load(
            srv.url, streams, n=n, concurrency=concurrency, cam_prefix="up-", token=token
        )
    return {k: result[k] for k in result if k not in ("errors",)} | {
        "errors": len(result.get("errors", []))
    }


def run_index_bench(
    db: str | None,
    frames: int = 1_000_000,
    cameras: int = 50,
    queries: int = 300,
    images: Path | None = None,
    uploads: int = 500,
    concurrency: int = 8,
    keep: bool = False,
) -> dict:
    """Fill a scratch index, time queries, start-up and (with ``images``) uploads."""
    scratch = Path(tempfile.mkdtemp(prefix="vcm-index-bench-"))
    if db is None:
        db = str(scratch / "index.sqlite3")
    if db.startswith(("postgresql://", "postgres://")):
        _reset_postgres(db)
    elif os.path.exists(db):
        raise SystemExit(f"vcm: error: {db} exists; index-bench fills a new scratch file")
    result: dict = {"db": "postgresql" if db.startswith("postgres") else "sqlite"}
    store = scratch / "store"
    store.mkdir()
    # the reference: a server on an empty store with the default (SQLite) index
    result["start_up_s_empty_sqlite"] = start_up_seconds(None, scratch / "empty-store")
    index = open_index(db, str(store), str(store), True)
    try:
        result["fill"] = fill(index, frames, cameras)
        span = int(result["fill"]["span_hours"] * HOUR_US)
        result["queries"] = time_queries(index, cameras, span, queries)
        result["totals"] = index.totals()
    finally:
        index.close()
    result["start_up_s_filled"] = start_up_seconds(db, store)
    if images is None:
        default = Path("../shared/data/coco-val2017/images")
        images = default if default.is_dir() else None
    if images is not None and uploads > 0:
        result["uploads_with_index"] = upload_throughput(db, store, images, uploads, concurrency)
    if not keep and not db.startswith("postgres"):
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    else:
        result["scratch"] = str(scratch)
    return result


def _reset_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("events", "detections", "class_hours", "cameras", "frames", "schema_version"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
