"""Issue 14 on the edge: the camera's first upload holds the analytics point (or the longest
prefix within ``--max-bytes``), and the worker reads that point's view by default, within
the analytics role's layer limit."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from PIL import Image

from vcm_plugin import Codec
from vcm_plugin.codec.layerspec import parse_point
from vcm_plugin.edge.auth import add_token
from vcm_plugin.edge.camera import Camera
from vcm_plugin.edge.client import EdgeClient, ServerError
from vcm_plugin.edge.sources import Frame
from vcm_plugin.edge.testing import ServerProcess, vcm_command
from vcm_plugin.edge.worker import Worker
from vcm_plugin.errors import VCMError


@pytest.fixture(scope="module")
def img(photo) -> np.ndarray:
    return np.ascontiguousarray(photo[:128, :160])


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_preset("tae", device="cpu")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge-point")
    f = tmp / "tokens.json"
    tokens = {
        "camera": add_token(f, "cam", "camera", ["*"]),
        "analytics": add_token(f, "worker", "analytics"),
        "viewer": add_token(f, "alice", "viewer"),
    }
    srv = ServerProcess(tmp / "store", tmp / "server.log", args=("--tokens-file", str(f))).start()
    try:
        yield srv, tokens, tmp
    finally:
        srv.stop()


def _client(env, role: str) -> EdgeClient:
    srv, tokens, _ = env
    return EdgeClient(srv.url, role=role, token=tokens[role], retry_for=5)


def test_first_upload_holds_the_analytics_point(env, img, codec):
    camera = Camera(_client(env, "camera"), "pointcam", codec, texture="never")
    camera.run(iter([Frame("a", img)]))
    ((key, (blob, _)),) = camera.streams.items()
    info = codec.inspect(blob)  # what the camera sends: the climb, latent layers absent
    k = info.analytics_point
    assert 1 < k < info.num_layers  # tae: the texture chain's first layer, viewer layers above
    assert [n > 0 for n in info.layer_bytes] == [i >= k - 1 for i in range(info.num_layers)]
    stored = _client(env, "viewer").info(key.id)
    assert stored["stored_layers"] == k
    assert stored["bytes"] == info.layer_offsets[k - 1] + info.layer_bytes[k - 1]
    # exactly what analytics reads: the analytics point's view, byte for byte
    assert camera.stats.first_bytes == stored["bytes"] == info.point_bytes[k - 1]
    np.testing.assert_array_equal(
        codec.decode(blob[: stored["bytes"]]), codec.decode(codec.view(blob, layers=k))
    )


def test_max_bytes_keeps_the_longest_prefix_that_fits(env, img, codec):
    blob = codec.encode(img)
    info = codec.inspect(blob)
    ends = [o + n for o, n in zip(info.layer_offsets, info.layer_bytes, strict=True)]
    climb = codec.view(blob, info.num_layers)  # what the camera sends when the budget allows
    k = info.analytics_point
    first = codec.inspect(climb).point_bytes[k - 1]  # header + the analytics layer
    # a budget that holds the analytics point: the climb, its prefix through that point
    fits = Camera(_client(env, "camera"), "budgetcam", codec, max_bytes=first)
    assert fits.climb(img) == climb and fits.first_upload(climb) == k
    big = Camera(_client(env, "camera"), "budgetcam", codec, max_bytes=len(climb) - 1)
    assert big.first_upload(climb) == info.num_layers - 1  # beyond the analytics point too
    # below it: the whole stream, whose latent points come first
    budget = ends[1] + (ends[2] - ends[1]) // 2  # between points 2 and 3
    assert budget < first
    camera = Camera(_client(env, "camera"), "budgetcam", codec, texture="never", max_bytes=budget)
    assert camera.climb(img) == blob and camera.first_upload(blob) == 2
    with pytest.raises(VCMError, match="below the frame's smallest operating point"):
        Camera(_client(env, "camera"), "budgetcam", codec, max_bytes=ends[0] - 1).first_upload(blob)
    camera.run(iter([Frame("a", img)]))
    ((key, (sent, _)),) = camera.streams.items()
    assert sent == blob
    stored = _client(env, "viewer").info(key.id)
    assert stored["stored_layers"] == 2 and stored["bytes"] == ends[1] <= budget
    # truncate(max_bytes=) keeps those layers at least (its header lists fewer layers, so it
    # is smaller and may fit one more)
    assert codec.inspect(codec.truncate(sent, max_bytes=budget)).num_layers >= 2


def test_max_bytes_below_layer0_is_a_one_line_error(env, img, tmp_path):
    srv, tokens, _ = env
    Image.fromarray(img).save(tmp_path / "f.png")
    (tmp_path / "cam.token").write_text(tokens["camera"])
    r = subprocess.run(
        vcm_command(
            "edge",
            "push",
            str(tmp_path / "f.png"),
            "--cam",
            "tiny",
            "--server",
            srv.url,
            "--max-bytes",
            "100",
            "--threads",
            "1",
            "--token-file",
            str(tmp_path / "cam.token"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vcm: error: --max-bytes 100 is below")
    assert _client(env, "viewer").frames("tiny") == []


def test_worker_reads_the_analytics_point_by_default(env, img, codec):
    camera = Camera(_client(env, "camera"), "workcam", codec)  # texture follows: complete
    camera.run(iter([Frame("a", img)]))
    ((key, (blob, _)),) = camera.streams.items()
    info = codec.inspect(blob)
    k = info.analytics_point
    viewer = _client(env, "viewer")
    assert viewer.info(key.id)["complete"]
    seen: list[np.ndarray] = []

    def detector(picture: np.ndarray) -> list:
        seen.append(picture)
        return []

    worker = Worker(_client(env, "analytics"), detector, batch=8)
    assert worker.layers == "analytics"
    assert worker.run(max_frames=8, idle_exit=2.0) >= 1
    det = viewer.detections(key.id)
    assert det["layers"] == k
    assert det["bytes_read"] == info.point_bytes[k - 1]
    assert viewer.info(key.id)["served_bytes"] == {"worker": info.point_bytes[k - 1]}
    assert any(np.array_equal(s, codec.decode(blob, layers="analytics")) for s in seen)
    # the analytics token may read its point but nothing above it
    analytics = _client(env, "analytics")
    assert analytics.view(key.id, k).body == codec.view(blob, "analytics")
    with pytest.raises(ServerError) as err:
        analytics.view(key.id, k + 1)
    assert err.value.status == 403


def test_worker_point_for_a_cut_first_upload():
    """A first upload cut below the analytics point: the worker reads what is stored."""
    w = Worker(EdgeClient("http://127.0.0.1:9"), lambda im: [])
    assert w.point({"analytics_point": 5, "stored_layers": 3}) == 3
    assert w.point({"analytics_point": 5, "stored_layers": 11}) == 5
    assert (
        Worker(EdgeClient("http://127.0.0.1:9"), lambda im: [], layers="2").point(
            {"analytics_point": 5, "stored_layers": 11}
        )
        == 2
    )
    for bad in ("0", "-1", "x", "1.5", "٣"):
        with pytest.raises(VCMError):
            parse_point(bad)
