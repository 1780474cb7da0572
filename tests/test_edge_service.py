"""The edge service for real: a server process on 127.0.0.1, camera clients pushing
concurrently, the worker process detecting on layer 0, viewers pulling texture layers."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vcm_plugin import Codec
from vcm_plugin.codec import container
from vcm_plugin.edge.camera import Camera
from vcm_plugin.edge.client import EdgeClient, ServerError, ServerUnavailable
from vcm_plugin.edge.sources import iter_frames
from vcm_plugin.edge.testing import ServerProcess, vcm_command

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CAMERAS = 3
FRAMES_PER_CAMERA = 2
# COCO photos; the worker runs the default detector, YOLOv5n from ../shared/models
pytestmark = pytest.mark.needs_shared("data/coco-val2017", "models/yolov5n.pt")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Six real COCO photos at half size (the codec and detector cost scales with pixels)."""
    src = sorted((SHARED / "data" / "coco-val2017" / "images").glob("*.jpg"))[:6]
    out = tmp_path_factory.mktemp("edge-images")
    for p in src:
        im = Image.open(p).convert("RGB")
        im.resize((im.width // 2, im.height // 2)).save(out / (p.stem + ".png"))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge-server")
    with ServerProcess(tmp / "store", tmp / "server.log") as srv:
        srv.store_dir = tmp / "store"
        yield srv


def _frames(client: EdgeClient, cam: str) -> list[dict]:
    return client.frames(cam, order="asc")


def _decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.slow
def test_concurrent_cameras_worker_reads_only_its_point_viewer_gets_all(server, images, tmp_path):
    frames = list(iter_frames(images))
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "wb") as out:  # the worker is its own process, started first
        worker = subprocess.Popen(
            vcm_command(
                "edge",
                "worker",
                "--server",
                server.url,
                "--threads",
                "1",
                "--max-frames",
                str(CAMERAS * FRAMES_PER_CAMERA + 1),
                "--batch",
                "2",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    # one more client: the real command line, in its own process
    cli = subprocess.Popen(
        vcm_command(
            "edge",
            "push",
            str(images),
            "--server",
            server.url,
            "--cam",
            "clicam",
            "--limit",
            "1",
            "--threads",
            "1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cameras = [Camera(EdgeClient(server.url, role="camera"), f"cam{c}") for c in range(CAMERAS)]
    errors: list[BaseException] = []

    def push(c: int) -> None:
        try:
            mine = frames[c * FRAMES_PER_CAMERA : (c + 1) * FRAMES_PER_CAMERA]
            cameras[c].run(iter(mine))
        except BaseException as exc:  # noqa: B036 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(c,)) for c in range(CAMERAS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    cli_summary = json.loads(out.strip().splitlines()[-1])
    assert cli_summary["frames"] == 1
    try:
        assert worker.wait(150) == 0, worker_log.read_text()
    finally:
        worker.kill()

    viewer = EdgeClient(server.url, role="viewer")
    codec = Codec()
    point_total = 0
    for cam in cameras:
        listed = _frames(viewer, cam.cam)
        assert [f["id"] for f in listed] == [k.id for k in cam.streams]
        for key, (blob, _) in cam.streams.items():
            header = container.parse_header(blob, codec.max_pixels)
            layer0 = header.prefix_end(1)
            info = codec.inspect(blob)
            k = info.analytics_point
            point = info.point_bytes[k - 1]
            point_total += point
            det = viewer.detections(key.id)
            assert det["frame"] == key.id and det["layers"] == k
            assert isinstance(det["boxes"], list)
            assert det["bytes_read"] == point  # the worker read its point and nothing else
            assert viewer.info(key.id)["served_bytes"] == {"worker": point}
            # a viewer asking for every layer gets the whole stream, which decodes
            full = viewer.frame(key.id)
            assert full.status == 200 and full.body == blob
            assert full.headers["x-vcm-layers"] == str(header.num_layers)
            png = _decode_png(viewer.image(key.id))
            assert np.array_equal(png, codec.decode(blob))
            # HTTP Range inside the layer-0 prefix
            part = viewer.frame(key.id, layers=1, byte_range=(10, 110))
            assert part.status == 206 and part.body == blob[10:110]
            assert part.headers["content-range"] == f"bytes 10-109/{layer0}"
    (cli_frame,) = _frames(viewer, "clicam")
    k = cli_frame["analytics_point"]
    assert cli_frame["complete"] and cli_frame["layer_ends"][k - 1] == cli_summary["layer0_bytes"]
    assert cli_frame["layer_ends"][k - 1] == cli_summary["first_bytes"]  # the first upload
    cli_point = cli_frame["point_bytes"][k - 1]
    assert cli_summary["first_bytes"] == cli_point  # the camera sent what analytics reads
    assert viewer.detections(cli_frame["id"])["bytes_read"] == cli_point
    assert len(viewer.frame(cli_frame["id"]).body) == cli_summary["total_bytes"]
    point_total += cli_point
    analysed = CAMERAS * FRAMES_PER_CAMERA + 1
    metrics = viewer.metrics()
    assert metrics["bytes_served_by_client"]["worker"] == point_total
    assert metrics["analytics"]["bytes_read"] == metrics["analytics"]["point_bytes"]
    assert metrics["analytics"]["latency_s"]["count"] == analysed
    assert metrics["frames"]["analysed"] == analysed
    total = sum(len(b) for cam in cameras for b, _ in cam.streams.values())
    total += cli_summary["total_bytes"]
    print(
        f"\nanalytics-point bytes fraction: {point_total / total:.3f} "
        f"({point_total} of {total} B, {analysed} frames)"
    )


def test_texture_layers_on_request(server, images):
    """A camera that keeps its texture layers uploads them when a viewer opens the frame."""
    camera = Camera(EdgeClient(server.url, role="camera"), "lazycam", texture="on-request")
    done = threading.Thread(
        target=camera.run, args=(iter_frames(images, limit=1),), kwargs={"linger": 20.0}
    )
    done.start()
    viewer = EdgeClient(server.url)
    deadline = time.monotonic() + 60
    while not _frames(viewer, "lazycam") and time.monotonic() < deadline:
        time.sleep(0.1)
    (meta,) = _frames(viewer, "lazycam")
    assert meta["stored_layers"] == meta["analytics_point"]  # through the analytics point
    blob, _ = next(iter(camera.streams.values()))
    with pytest.raises(ServerError) as err:
        viewer.frame(meta["id"], layers=meta["num_layers"])  # no wait: 409 + request recorded
    assert err.value.status == 409
    got = viewer.frame(meta["id"], wait=30)  # every layer, once the camera has sent them
    assert got.body == blob and got.headers["x-vcm-layers"] == str(meta["num_layers"])
    camera.stop()  # end the camera's linger early
    done.join(30)
    assert not done.is_alive()


def _raw_upload(url: str, path: str, body: bytes) -> tuple[int, str]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1].decode()


def test_bad_uploads_are_refused_and_store_nothing(server, photo):
    blob = Codec().encode(photo)
    header = container.parse_header(blob, 10**8)
    rng = np.random.default_rng(1)
    bad_crc = bytearray(blob)
    bad_crc[header.offsets[1] + 1] ^= 0xFF
    cases = {
        "random": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "crc": bytes(bad_crc),
        "truncated": blob[: header.prefix_end(3) - 7],
        "truncated_layer0": blob[:50],
        "empty": b"",
    }
    for name, body in cases.items():
        status, text = _raw_upload(server.url, "/cameras/badcam/frames?ts=1", body)
        assert 400 <= status < 500, (name, status, text)
        assert '"error"' in text
    status, text = _raw_upload(server.url, "/cameras/bad%20cam/frames", blob)
    assert status == 400 and "camera id" in text
    client = EdgeClient(server.url)
    assert _frames(client, "badcam") == []
    assert not (server.store_dir / "badcam").exists() or not any(
        (server.store_dir / "badcam").iterdir()
    )
    # appends are validated too: wrong offset -> 409, corrupt layer -> 400, both store nothing
    end1 = header.prefix_end(1)
    reply = client.upload("badcam", 2, blob[:end1])
    assert reply["stored_layers"] == 1
    with pytest.raises(ServerError) as err:
        client.append(reply["id"], end1 + 1, blob[end1:])
    assert err.value.status == 409
    with pytest.raises(ServerError) as err:
        client.append(reply["id"], end1, bytes(bad_crc[end1:]))
    assert err.value.status == 400 and "CRC" in str(err.value)
    assert client.info(reply["id"])["bytes"] == end1
    assert client.append(reply["id"], end1, blob[end1:])["complete"]
    assert client.upload("badcam", 2, blob[:end1])["created"] is False  # a retry is a no-op


KILLED_CLIENT = r"""
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port))
s.sendall(f"POST /cameras/killcam/frames?ts=5 HTTP/1.1\r\nHost: x\r\n"
          f"Content-Length: {n}\r\n\r\n".encode() + sys.stdin.buffer.read())
print("sent", flush=True)
time.sleep(600)
"""


def test_client_killed_mid_upload_leaves_no_frame(server, photo):
    blob = Codec().encode(photo)
    host, port = server.url.removeprefix("http://").split(":")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, host, port, str(len(blob))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    proc.stdin.write(blob[: len(blob) // 2])
    proc.stdin.close()
    assert proc.stdout.readline().strip() == b"sent"
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    client = EdgeClient(server.url)
    time.sleep(0.3)
    assert _frames(client, "killcam") == []
    folder = server.store_dir / "killcam"
    assert not folder.exists() or not any(folder.iterdir())
    assert client.upload("killcam", 5, blob)["created"] is True  # the same frame, whole


def test_restart_loses_no_acknowledged_frame_and_cameras_retry(tmp_path, photo):
    blob = Codec().encode(photo)
    end1 = container.parse_header(blob, 10**8).prefix_end(1)
    srv = ServerProcess(tmp_path / "store", tmp_path / "server.log").start()
    try:
        client = EdgeClient(srv.url, retry_for=5)
        acked = [
            client.upload("rcam", 100 + i, blob if i % 2 else blob[:end1])["id"] for i in range(6)
        ]
        srv.kill()  # SIGKILL right after the acknowledgements
        with pytest.raises(ServerUnavailable):
            EdgeClient(srv.url, retry_for=0.5).health()
        # a client keeps retrying with back-off while the server is down...
        port = int(srv.url.rsplit(":", 1)[1])
        late = EdgeClient(srv.url, retry_for=90)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(late.upload("rcam", 999, blob)))
        t.start()
        time.sleep(1.0)
        srv.port = port  # ...and succeeds once it is back on the same port
        srv.start()
        t.join(120)
        assert result.get("created") is True
        client = EdgeClient(srv.url)
        listed = {f["id"]: f for f in client.frames("rcam")}
        assert set(acked) <= set(listed)
        assert [f["ts"] for f in client.frames("rcam", since=101, until=102, order="asc")] == [
            101,
            102,
        ]
        assert {"id": "rcam", "frames": 7} in client.request("GET", "/cameras").json()["cameras"]
        for i, fid in enumerate(acked):
            assert client.frame(fid).body == (blob if i % 2 else blob[:end1])
        assert client.health()["pending_analytics"] == 7  # none analysed: all still queued
        assert client.metrics()["frames"]["recovered"] == 6
    finally:
        srv.stop()


def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run(
        vcm_command(
            "edge",
            "push",
            str(tmp_path / "missing"),
            "--cam",
            "c",
            "--server",
            "http://127.0.0.1:9",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip().startswith("vcm: error:") and len(r.stderr.strip().splitlines()) == 1


def test_viewer_fetches_one_operating_point(server, photo):
    """A texture point of the generator preset reads the header and the texture chain up to
    it: the server answers ?view=1 with exactly Codec.view's bytes and counts only those as
    served."""
    codec = Codec("tae", device="cpu")
    blob = codec.encode(photo)
    info = codec.inspect(blob)
    client = EdgeClient(server.url)
    frame = client.upload("viewcam", 5, blob)
    assert client.info(frame["id"])["point_layers"] == info.point_layers
    before = client.info(frame["id"])["served_bytes"].get("viewer", 0)
    for k in (1, 3, 4, 5):
        got = client.view(frame["id"], layers=k)
        assert got.body == codec.view(blob, layers=k)
        assert got.headers["x-vcm-view-layers"] == ",".join(map(str, info.point_layers[k - 1]))
        np.testing.assert_array_equal(codec.decode(got.body), codec.decode(blob, layers=k))
    served = client.info(frame["id"])["served_bytes"]["viewer"] - before
    assert served == sum(info.point_bytes[k - 1] for k in (1, 3, 4, 5))
    assert info.point_bytes[3] < info.total_bytes // 2  # the chain's first layer, not the rest
    png = _decode_png(client.image(frame["id"], layers=5))
    np.testing.assert_array_equal(png, codec.decode(blob, layers=5))
