"""Camera input (issue 27): ``vcm edge push rtsp://...`` against a real RTSP server
(GStreamer's, started by the test), with frame-rate control, capture times and reconnection."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from vcm_plugin.edge.sources import iter_frames, redact
from vcm_plugin.edge.testing import ServerProcess, http_call, vcm_command


def test_redact_hides_only_the_password():
    assert redact("rtsp://admin:s3cr%40t@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert redact("rtsp://10.0.0.5/h264") == "rtsp://10.0.0.5/h264"
    assert redact("http://user@host/x") == "http://user@host/x"
    assert redact("/dev/video0") == "/dev/video0"


def test_live_source_frames_paced_on_capture_time(rtsp_server):
    url = rtsp_server.url.replace("rtsp://", "rtsp://admin:secret@")
    frames = list(iter_frames(url, fps=2, limit=4))
    assert len(frames) == 4
    assert all(f.rgb.shape == (240, 320, 3) and f.rgb.dtype.name == "uint8" for f in frames)
    assert all("secret" not in f.name and "admin:***@" in f.name for f in frames)
    gaps = [b.ts - a.ts for a, b in zip(frames, frames[1:], strict=False)]
    # the camera's clock: 10 frames/s, so at most 2 per second means >= 500 ms apart, and on
    # the camera's 100 ms grid (a slow consumer takes the newest due frame, never an older one)
    assert all(g >= 499_000 for g in gaps), gaps
    assert all(abs(g - round(g / 100_000) * 100_000) <= 1_000 for g in gaps), gaps
    assert abs(frames[-1].ts / 1e6 - time.time()) < 30  # anchored to the wall clock


def _frames_of(url: str, cam: str) -> list[dict]:
    status, _, body = http_call(url, "GET", f"/cameras/{cam}/frames?order=asc&limit=100")
    assert status == 200, body
    return json.loads(body)["frames"]


@pytest.mark.slow
def test_push_from_rtsp_camera_reconnects_and_keeps_capture_times(rtsp_server, tmp_path, caplog):
    log = tmp_path / "push.log"
    url = rtsp_server.url.replace("rtsp://", "rtsp://admin:secret@")
    with ServerProcess(tmp_path / "store", tmp_path / "serve.log") as server:
        with open(log, "wb") as out:
            push = subprocess.Popen(
                vcm_command(
                    "edge",
                    "push",
                    url,
                    "--server",
                    server.url,
                    "--cam",
                    "door",
                    "--fps",
                    "1",
                    "--limit",
                    "6",
                    "--preset",
                    "fast",
                    "--texture",
                    "never",
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 120
            while len(_frames_of(server.url, "door")) < 2:
                assert push.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            rtsp_server.kill()  # the camera reboots
            while "reconnecting" not in log.read_text():
                assert push.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            before = len(_frames_of(server.url, "door"))
            assert before < 6
            rtsp_server.start()  # back at the same address
            assert push.wait(120) == 0, log.read_text()
        finally:
            if push.poll() is None:
                push.kill()
        frames = _frames_of(server.url, "door")
    text = log.read_text()
    assert len(frames) == 6, text
    assert "secret" not in text and "admin:***@" in text
    ts = [f["ts"] for f in frames]
    assert all(b - a >= 999_000 for a, b in zip(ts, ts[1:], strict=False)), ts  # --fps 1
    assert json.loads(text.strip().splitlines()[-1])["frames"] == 6
