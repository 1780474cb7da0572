"""Bounded load test: 500 uploads over loopback from 8 concurrent clients; stops by itself.

Runs with authentication on (a camera token for the load cameras, as in production), and
prints frames/s and latency percentiles (the figures quoted in docs/edge.md and the README)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from vcm_plugin import Codec
from vcm_plugin.edge.auth import add_token
from vcm_plugin.edge.client import EdgeClient
from vcm_plugin.edge.loadtest import run_load
from vcm_plugin.edge.testing import ServerProcess

UPLOADS = 500
CONCURRENCY = 8


def test_500_uploads_over_loopback(tmp_path, shared_dir):
    paths = sorted((shared_dir / "data" / "coco-val2017" / "images").glob("*.jpg"))[:2]
    codec = Codec()
    streams = [codec.encode(np.asarray(Image.open(p).convert("RGB"))) for p in paths]
    tokens = tmp_path / "tokens.json"
    camera = add_token(tokens, "load-cams", "camera", ["load*", "split*"])
    admin = add_token(tokens, "ops", "admin")
    with ServerProcess(
        tmp_path / "store", tmp_path / "server.log", args=("--tokens-file", str(tokens))
    ) as srv:
        result = run_load(srv.url, streams, n=UPLOADS, concurrency=CONCURRENCY, token=camera)
        split = run_load(
            srv.url,
            streams,
            n=100,
            concurrency=4,
            cam_prefix="split",
            layers_first=True,
            token=camera,
        )  # layer 0, then texture
        assert (
            run_load(srv.url, streams[:1], n=2, concurrency=1, cam_prefix="other", token=camera)[
                "uploads"
            ]
            == 0
        )  # the token's cameras only
        client = EdgeClient(srv.url, token=admin)
        stored = sum(len(client.frames(f"load{c}")) for c in range(CONCURRENCY))
        complete = [f["complete"] for c in range(4) for f in client.frames(f"split{c}")]
        server_side = client.metrics()["request_latency_s"]["POST /cameras/{cam}/frames"]
    print("\nload test:", json.dumps({**result, "server_p95_ms": server_side["p95"] * 1000}))
    print("layer 0 first, texture later:", json.dumps(split))
    assert result["errors"] == [] and split["errors"] == []
    assert result["uploads"] == UPLOADS and stored == UPLOADS
    assert len(complete) == 100 and all(complete)
    assert result["frames_per_s"] > 5  # a floor that only a broken server misses
    files = list((tmp_path / "store").rglob("*.vcm"))
    assert len(files) == UPLOADS + 100 and not list((tmp_path / "store").rglob("*.part"))
