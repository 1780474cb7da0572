"""Events (issue 27 item 3): rules over the worker's detections, masks, the events API, the
full-quality snapshot asked from an on-request camera, and notifications to a real webhook
receiver (HMAC checked) and a real MQTT broker (Debian's mosquitto, started here)."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin.edge.events import EventEngine, inside, load_masks, load_rules, unmasked
from vcm_plugin.edge.testing import ServerProcess, http_call, vcm_command
from vcm_plugin.errors import VCMError

S = 1_000_000  # one second of capture time in microseconds


def _write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_rules_and_masks_files_are_checked(tmp_path):
    rules = load_rules(
        _write(tmp_path / "r.json", {"door": [{"name": "p", "classes": ["person"]}]})
    )
    assert rules["door"][0].min_frames == 1 and rules["door"][0].zone is None
    (tmp_path / "r.yaml").write_text(
        "'*':\n  - name: car-in-drive\n    classes: [car]\n    min_score: 0.6\n"
        "    zone: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]\n    min_frames: 3\n"
    )
    rule = load_rules(tmp_path / "r.yaml")["*"][0]
    assert rule.classes == {"car"} and rule.min_frames == 3 and len(rule.zone) == 4
    bad = [
        ({"door": [{"classes": ["person"]}]}, "name must be"),
        ({"door": [{"name": "p", "classes": []}]}, "classes must be"),
        ({"door": [{"name": "p", "classes": ["x"], "min_score": 2}]}, "min_score must be in"),
        ({"door": [{"name": "p", "classes": ["x"], "zone": [[0, 0], [1, 1]]}]}, "at least 3"),
        ({"door": [{"name": "p", "classes": ["x"], "colour": "red"}]}, "unknown key"),
        ({"door": [{"name": "p", "classes": ["x"]}, {"name": "p", "classes": ["y"]}]}, "unique"),
        ({"bad cam!": []}, "camera"),
    ]
    for doc, message in bad:
        with pytest.raises(VCMError, match=message):
            load_rules(_write(tmp_path / "bad.json", doc))
    (tmp_path / "junk.json").write_text("{nope")
    with pytest.raises(VCMError, match="does not parse"):
        load_rules(tmp_path / "junk.json")
    with pytest.raises(VCMError, match="cannot read"):
        load_masks(tmp_path / "missing.json")


def test_zone_and_mask_use_the_bottom_centre():
    square = ((0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0))
    assert inside((0.5, 0.9), square) and not inside((0.5, 0.2), square)
    boxes = [
        {"name": "person", "conf": 0.9, "xyxy": [0, 0, 100, 40]},  # feet at y = 0.4: kept
        {"name": "person", "conf": 0.9, "xyxy": [0, 50, 100, 90]},  # feet at y = 0.9: masked
    ]
    assert unmasked(boxes, [square], 100, 100) == boxes[:1]


def _boxes(score: float | None, y1: float = 90) -> list[dict]:
    if score is None:
        return [{"name": "cat", "conf": 0.99, "xyxy": [0, 0, 10, 10]}]
    return [{"name": "person", "conf": score, "xyxy": [10, 10, 50, y1]}]


def test_engine_min_frames_post_window_and_cooldown(tmp_path):
    rules = load_rules(
        _write(
            tmp_path / "r.json",
            {
                "door": [
                    {
                        "name": "p",
                        "classes": ["person"],
                        "min_score": 0.5,
                        "zone": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]],
                        "min_frames": 2,
                        "cooldown_s": 10,
                        "post_s": 3,
                    }
                ]
            },
        )
    )
    eng = EventEngine(rules)

    def see(t: float, boxes):
        return [
            (k, e.id, e.best, e.score) for k, e in eng.observe("door", int(t * S), boxes, 100, 100)
        ]

    assert see(0, _boxes(0.6)) == []  # one frame is not an event yet
    assert see(1, _boxes(0.4)) == []  # below min_score: the run breaks
    assert see(2, _boxes(0.6, y1=30)) == []  # outside the zone
    assert see(3, _boxes(0.6)) == []
    assert see(4, _boxes(0.7)) == [("new", "door-3000000-p", 4 * S, 0.7)]
    assert see(5, _boxes(0.9)) == [("update", "door-3000000-p", 5 * S, 0.9)]
    assert see(6, _boxes(0.8)) == []  # still open, not a better frame
    assert see(7, _boxes(None)) == []  # no match, but within post_s of the last match
    assert see(8, _boxes(0.6)) == []  # back within the window: the same event goes on
    assert see(9, _boxes(None)) == []
    assert see(11.5, _boxes(None)) == [("end", "door-3000000-p", 5 * S, 0.9)]  # 8 + 3 s
    assert see(5, _boxes(0.9)) == []  # a late frame is ignored
    assert see(12, _boxes(0.9)) == [] and see(13, _boxes(0.9)) == []  # cooldown
    assert see(17, _boxes(0.9)) == []  # the last match was at 8 s: quiet until 18 s
    assert see(18, _boxes(0.9))[0][:2] == ("new", "door-12000000-p")  # run since 12 s
    assert [e.ended for e in eng.close_all()] == [True]
    assert eng.observe("yard", 1, _boxes(0.9), 100, 100) == []  # no rules for that camera


# -- service --------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Hook(BaseHTTPRequestHandler):
    got: list[tuple[bytes, str]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.got.append((body, self.headers.get("X-VCM-Signature", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def mosquitto(tmp_path):
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
    yield port
    proc.kill()
    proc.wait()


@pytest.mark.slow
@pytest.mark.needs_shared("models/yolov5n.pt")
def test_worker_rules_make_an_event_with_snapshot_webhook_and_mqtt(tmp_path, photo, mosquitto):
    import paho.mqtt.client as mqtt
    from skimage import data

    from vcm_plugin.codec.api import Codec
    from vcm_plugin.edge.camera import Camera
    from vcm_plugin.edge.client import EdgeClient

    secret = b"0123456789abcdef-secret"
    (tmp_path / "hook.secret").write_bytes(secret + b"\n")
    _Hook.got = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    received: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    subscribed = threading.Event()
    sub.on_connect = lambda c, *a: c.subscribe("vcm/events", qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, msg: received.append(msg.payload)
    sub.connect("127.0.0.1", mosquitto)
    sub.loop_start()
    assert subscribed.wait(20)
    rules = _write(
        tmp_path / "rules.json",
        {"door": [{"name": "person", "classes": ["person"], "min_score": 0.4, "min_frames": 2,
                   "pre_s": 1, "post_s": 5}]},
    )  # fmt: skip
    args = (
        "--webhook", f"http://127.0.0.1:{hook.server_port}/hook",
        "--webhook-secret-file", str(tmp_path / "hook.secret"),
        "--mqtt", f"mqtt://127.0.0.1:{mosquitto}/vcm/events",
    )  # fmt: skip
    person = np.ascontiguousarray(data.astronaut()[::2, ::2])  # a person, 256x256
    empty = np.ascontiguousarray(data.coffee()[::2, ::2])  # a cup on a table
    t0 = 1_700_000_000 * S
    script = [(0, person), (1, person), (2, person), (3, empty), (10, empty)]
    stop = []
    try:
        with ServerProcess(tmp_path / "store", tmp_path / "serve.log", args=args) as srv:
            camera = Camera(
                EdgeClient(srv.url, role="camera"), "door", Codec(), texture="on-request",
            )  # fmt: skip
            frames = iter(())
            run = threading.Thread(target=camera.run, args=(frames,), kwargs={"linger": 120.0})
            for t, img in script:
                camera.capture(img, t0 + t * S)
            run.start()  # uploads the analytics points, then answers texture requests
            stop.append(camera.stop)
            deadline = time.monotonic() + 60
            while camera.stats.frames < len(script):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            worker = subprocess.run(
                vcm_command(
                    "edge", "worker", "--server", srv.url, "--rules", str(rules),
                    "--max-frames", str(len(script)), "--threads", "1",
                ),
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert worker.returncode == 0, worker.stderr[-2000:]
            assert "event new: door-1700000000000000-person" in worker.stdout, worker.stdout
            status, _, body = http_call(srv.url, "GET", "/events?cam=door")
            assert status == 200
            events = json.loads(body)["events"]
            assert len(events) == 1, events
            ev = events[0]
            assert ev["class"] == "person" and ev["ended"] and ev["start"] == t0
            assert ev["end"] == t0 + 2 * S and ev["frames"] == 3
            assert json.loads(http_call(srv.url, "GET", "/events?class=car")[2])["events"] == []
            status, headers, png = http_call(srv.url, "GET", ev["snapshot"] + "?wait=60")
            assert status == 200 and headers["content-type"] == "image/png", png[:200]
            n = json.loads(http_call(srv.url, "GET", f"/frames/{ev['best']}/info")[2])
            assert n["stored_layers"] == n["num_layers"]  # the camera sent the full quality
            # the window [start - pre_s, end + post_s] was asked for: frames 0..3 s, not 10 s
            info = {
                t: json.loads(http_call(srv.url, "GET", f"/frames/door-{t0 + t * S}/info")[2])
                for t, _ in script
            }
            deadline = time.monotonic() + 60
            while not all(info[t]["stored_layers"] == info[t]["num_layers"] for t in (0, 1, 2, 3)):
                assert time.monotonic() < deadline, info
                time.sleep(0.5)
                info = {
                    t: json.loads(http_call(srv.url, "GET", f"/frames/door-{t0 + t * S}/info")[2])
                    for t, _ in script
                }
            assert info[10]["stored_layers"] < info[10]["num_layers"]
            status, headers, mp4 = http_call(srv.url, "GET", f"/events/{ev['id']}/clip")
            assert status == 200 and headers["content-type"] == "video/mp4"
            assert headers["x-vcm-frames"] == "4"  # 0..3 s: [start - 1 s, end + 5 s]
            clip = _mp4_frames(mp4)
            assert [f.shape for f in clip] == [(256, 256, 3)] * 4
            assert [round(t, 3) for t in _mp4_times(mp4)] == [0.0, 1.0, 2.0, 3.0]
            # full quality: the clip's first frame is close to the photo itself
            assert np.abs(clip[0].astype(int) - person.astype(int)).mean() < 12
            camera.stop()
            run.join(30)
            assert http_call(srv.url, "GET", "/events/door-1-x")[0] == 404
            deadline = time.monotonic() + 30
            while len(_Hook.got) < 2 or len(received) < 2:
                assert time.monotonic() < deadline, (_Hook.got, received)
                time.sleep(0.1)
            metrics = json.loads(http_call(srv.url, "GET", "/metrics")[2])
            assert metrics["notifications_sent"] == 2 * len(_Hook.got)  # webhook + MQTT each
            assert metrics["notifications_failed"] == metrics["notifications_dropped"] == 0
            log = (tmp_path / "serve.log").read_text()
    finally:
        for fn in stop:
            fn()
        hook.shutdown()
        sub.loop_stop()
    kinds = [json.loads(b)["type"] for b, _ in _Hook.got]
    assert kinds[0] == "new" and kinds[-1] == "end", kinds
    for body, signature in _Hook.got:
        assert signature == "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        assert json.loads(body)["event"]["id"] == ev["id"]
    assert [json.loads(m) for m in received] == [json.loads(b) for b, _ in _Hook.got]
    assert secret.decode() not in log


def _mp4_frames(data: bytes) -> list[np.ndarray]:
    import io

    import av

    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _mp4_times(data: bytes) -> list[float]:
    import io

    import av

    with av.open(io.BytesIO(data)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def test_bad_events_are_refused_with_400(tmp_path):
    with ServerProcess(tmp_path / "store", tmp_path / "serve.log") as srv:
        good = {"cam": "door", "rule": "p", "class": "person", "start": 5, "end": 9,
                "best": "door-7", "score": 0.9}  # fmt: skip
        cases = [
            ({**good, "best": "door-11"}, "best must be a frame of the event"),
            ({**good, "best": "yard-7"}, "best must be the id"),
            ({**good, "end": 1}, "before its start"),
            ({**good, "class": "\ud800"}, "printable"),
            ({**good, "score": "high"}, "score must be a number"),
            ({**good, "rule": "a b"}, "rule must be a name"),
            ({**good, "start": 10**40}, "an integer of 41 digits"),
            ([], "JSON object"),
        ]
        for doc, message in cases:
            status, _, body = http_call(
                srv.url, "POST", "/events", body=json.dumps(doc).encode(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            assert status == 400, (doc, status, body)
            assert message in body.decode(), (message, body)
        status, _, body = http_call(srv.url, "POST", "/events", body=json.dumps(good).encode())
        assert status == 201 and json.loads(body)["id"] == "door-5-p"
        assert http_call(srv.url, "POST", "/events", body=json.dumps(good).encode())[0] == 200
        status, _, body = http_call(srv.url, "GET", "/events/door-5-p/snapshot")
        assert status == 404 and b"no longer stored" in body
        status, _, body = http_call(srv.url, "GET", "/events/door-5-p/clip")
        assert status == 404 and b"no frames" in body
        assert http_call(srv.url, "GET", "/events?cursor=%%%")[0] == 400
        for i in range(3):
            doc = {**good, "start": 100 + i, "end": 100 + i, "best": f"door-{100 + i}"}
            http_call(srv.url, "POST", "/events", body=json.dumps(doc).encode())
        page = json.loads(http_call(srv.url, "GET", "/events?limit=2")[2])
        assert [e["start"] for e in page["events"]] == [102, 101]
        rest = json.loads(
            http_call(srv.url, "GET", f"/events?limit=2&cursor={page['next_cursor']}")[2]
        )
        assert [e["start"] for e in rest["events"]] == [100, 5] and rest["next_cursor"] is None


def test_retention_file_is_checked(tmp_path):
    from vcm_plugin.edge.state import CameraRetention, load_retention

    got = load_retention(
        _write(tmp_path / "r.json", {"door": {"days": 2, "event_days": 30}, "*": {"days": 7}})
    )
    assert got == {"door": CameraRetention(2.0, 30.0), "*": CameraRetention(7.0, 7.0)}
    for doc, message in [
        ({"door": {"days": 0}}, "positive number of days"),
        ({"door": {"days": 5, "event_days": 1}}, "at least days"),
        ({"door": {"event_days": 5}}, "must be"),
        ({"door": {"days": 1, "hours": 5}}, "must be"),
        ({"door": {"days": True}}, "positive number"),
    ]:
        with pytest.raises(VCMError, match=message):
            load_retention(_write(tmp_path / "bad.json", doc))
