"""Issue 17, authentication: bearer tokens by role against a real server process.

The authorisation matrix (every route x every role, plus no token and a wrong token), the
camera's own-ids rule, the analytics role's layer limit, identity taken from the token (not
the client's header), cross-origin refusal, and the tokens file's own checks."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec import container
from vcm_plugin.edge.auth import TokenTable, add_token
from vcm_plugin.edge.server import ROUTE_ROLES
from vcm_plugin.edge.testing import ServerProcess, http_call, vcm_command

FAST = "fast"
ROLES = ("camera", "camera2", "analytics", "viewer", "admin")


@pytest.fixture(scope="module")
def stream(photo) -> bytes:
    """The generator preset: texture layers above its analytics point, so the analytics
    role's limit has something to refuse."""
    return Codec.from_preset("tae", device="cpu").encode(photo[:96, :128])


@pytest.fixture(scope="module")
def points(stream) -> tuple[int, int]:
    """(analytics point A, layer count N) of the test stream; A < N by construction."""
    info = Codec.from_preset("tae", device="cpu").inspect(stream)
    a, n = info.analytics_point, info.num_layers
    assert a < n, f"preset tae has no layer above its analytics point ({a} of {n})"
    return a, n


@pytest.fixture(scope="module")
def env(tmp_path_factory, stream):
    """A server with one token per role; frames cam1-1 (complete) and cam1-2 (layer 0)."""
    tmp = tmp_path_factory.mktemp("edge-auth")
    tokens_file = tmp / "tokens.json"
    tokens = {
        "camera": add_token(tokens_file, "cam1-box", "camera", ["cam1"]),
        "camera2": add_token(tokens_file, "cam2-box", "camera", ["cam2", "bench-*"]),
        "analytics": add_token(tokens_file, "worker-a", "analytics"),
        "viewer": add_token(tokens_file, "alice", "viewer"),
        "admin": add_token(tokens_file, "ops", "admin"),
    }
    assert oct(tokens_file.stat().st_mode & 0o777) == "0o600"
    srv = ServerProcess(
        tmp / "store", tmp / "server.log", args=("--tokens-file", str(tokens_file))
    ).start()
    end1 = container.parse_header(stream, 10**8).prefix_end(1)
    for ts, body in ((1, stream), (2, stream[:end1])):
        status, _, text = http_call(
            srv.url, "POST", f"/cameras/cam1/frames?ts={ts}", tokens["camera"], body=body
        )
        assert status == 201, text
    try:
        yield srv, tokens, end1
    finally:
        srv.stop()


def _cases(n: int, end1: int) -> list[tuple[str, str, bytes | None, set[str]]]:
    """(method, path, body, roles allowed) for every route of the service."""
    det = json.dumps(
        {"boxes": [{"xyxy": [1, 2, 30, 40], "conf": 0.9, "name": "person"}], "inference_s": 0.01}
    ).encode()
    event = json.dumps(
        {"cam": "cam1", "rule": "door", "class": "person", "start": 1, "end": 1,
         "best": "cam1-1", "score": 0.9}
    ).encode()  # fmt: skip
    return [
        ("POST", "/events", event, {"analytics"}),
        ("GET", "/events?cam=cam1&class=person", None, {"viewer", "admin"}),
        ("GET", "/events/cam1-1", None, {"viewer", "admin"}),  # 404 for those allowed
        ("GET", "/events/cam1-1/snapshot", None, {"viewer", "admin"}),
        ("GET", "/events/cam1-1/clip", None, {"viewer", "admin"}),
        ("GET", "/", None, {"*"}),
        ("GET", "/viewer.js", None, {"*"}),
        ("GET", "/health", None, {"*"}),
        ("POST", "/cameras/cam1/frames?ts=1", b"STREAM", {"camera"}),
        ("POST", "/cameras/cam2/frames?ts=1", b"STREAM", {"camera2"}),
        ("POST", f"/frames/cam1-2/layers?offset={end1}", b"TEXTURE", {"camera"}),
        ("GET", "/cameras/cam1/wanted?wait=0", None, {"camera"}),
        ("GET", "/cameras", None, {"camera", "camera2", "viewer", "admin"}),
        ("GET", "/cameras/cam1/frames", None, {"camera", "viewer", "admin"}),
        ("GET", "/frames?cam=cam1&class=person&min_score=0.5", None, {"viewer", "admin"}),
        ("GET", "/stats/classes?cam=cam1", None, {"viewer", "admin"}),
        ("GET", "/frames/cam1-1", None, {"analytics", "viewer", "admin"}),
        ("GET", "/frames/cam1-1?layers=1", None, {"analytics", "viewer", "admin"}),
        ("GET", f"/frames/cam1-1?layers={n}", None, {"viewer", "admin"}),  # texture layers
        ("GET", f"/frames/cam1-1?layers={n}&view=1", None, {"viewer", "admin"}),
        ("HEAD", f"/frames/cam1-1?layers={n}", None, {"viewer", "admin"}),
        ("GET", "/frames/cam1-1/image?layers=1", None, {"analytics", "viewer", "admin"}),
        ("GET", f"/frames/cam1-1/image?layers={n}", None, {"viewer", "admin"}),
        ("GET", "/frames/cam1-1/info", None, {"camera", "analytics", "viewer", "admin"}),
        ("GET", "/frames/cam1-1/detections", None, {"analytics", "viewer", "admin"}),
        ("PUT", "/frames/cam1-1/detections", det, {"analytics"}),
        ("POST", "/analytics/claim?wait=0", None, {"analytics"}),
        ("POST", "/frames/cam1-1/undecodable", b"", {"analytics"}),
        ("POST", "/admin/retention", None, {"admin"}),
        ("GET", "/metrics", None, {"admin"}),
        ("GET", "/metrics?format=prometheus", None, {"admin"}),
        ("DELETE", "/frames/cam1-999", None, {"admin"}),  # absent: admin gets 404, not 403
    ]


def test_authorisation_matrix(env, stream, points):
    srv, tokens, end1 = env
    cases = _cases(points[1], end1)
    # every route of the server is in the matrix (a new route cannot skip it)
    routes = {(m, p.split("?")[0]) for m, p, *_ in cases}
    for method, route in ROUTE_ROLES:
        concrete = route.replace("{cam}", "cam1").replace("{id}", "cam1-1")
        assert any(
            m == method
            and (
                p == concrete
                or p.replace("cam2", "cam1")
                .replace("cam1-2", "cam1-1")
                .replace("cam1-999", "cam1-1")
                == concrete
            )
            for m, p in routes
        ), (method, route)
    failures = []
    for method, path, body, allowed in cases:
        if body == b"STREAM":
            body = stream
        elif body == b"TEXTURE":
            body = stream[end1:]
        for who in (*ROLES, None, "wrong"):
            token = {None: None, "wrong": "x" * 40}.get(who, tokens.get(who))
            status, headers, text = http_call(srv.url, method, path, token, body=body)
            ok = "*" in allowed or who in allowed
            if ok:
                good = status not in (401, 403) and status < 500
            elif who in (None, "wrong"):
                good = status == 401 and headers.get("www-authenticate", "").startswith("Bearer")
            else:
                good = status == 403
            if not good:
                failures.append(f"{method} {path} as {who}: {status} {text[:120]!r}")
    assert not failures, "\n".join(failures)


def test_camera_writes_only_its_own_ids(env, stream):
    srv, tokens, end1 = env
    status, _, text = http_call(
        srv.url, "POST", "/cameras/cam2/frames?ts=5", tokens["camera"], body=stream
    )
    assert status == 403 and b"cam2" in text
    status, _, _ = http_call(
        srv.url, "POST", "/cameras/bench-3/frames?ts=5", tokens["camera2"], body=stream
    )  # a prefix pattern
    assert status == 201
    status, _, _ = http_call(
        srv.url, "POST", "/cameras/benchx/frames?ts=5", tokens["camera2"], body=stream
    )
    assert status == 403
    # and its info/list rights are its own cameras too
    assert http_call(srv.url, "GET", "/cameras/bench-3/frames", tokens["camera"])[0] == 403
    assert http_call(srv.url, "GET", "/frames/bench-3-5/info", tokens["camera"])[0] == 403
    assert http_call(srv.url, "GET", "/frames/bench-3-5/info", tokens["camera2"])[0] == 200


def test_analytics_reads_only_the_analytics_layers(env, stream, points):
    srv, tokens, end1 = env
    a, n = points
    end_a = container.parse_header(stream, 10**8).prefix_end(a)
    t = tokens["analytics"]
    status, headers, body = http_call(srv.url, "GET", "/frames/cam1-1", t)
    assert status == 200 and body == stream[:end_a] and headers["x-vcm-layers"] == str(a)
    assert http_call(srv.url, "GET", f"/frames/cam1-1?layers={a}&view=1", t)[0] == 200
    for path in (
        f"/frames/cam1-1?layers={a + 1}",
        f"/frames/cam1-1/image?layers={n}",
        f"/frames/cam1-1?layers={n}&view=1",
    ):
        assert http_call(srv.url, "GET", path, t)[0] == 403, path
    # a Range cannot reach past the analytics layers either: the representation ends there
    status, headers, body = http_call(
        srv.url, "GET", "/frames/cam1-1", t, {"Range": f"bytes={end_a - 10}-{len(stream)}"}
    )
    assert status == 206 and body == stream[end_a - 10 : end_a]
    assert headers["content-range"] == f"bytes {end_a - 10}-{end_a - 1}/{end_a}"
    # no layers= means what the role may read: the analytics picture for this token
    status, headers, _ = http_call(srv.url, "GET", "/frames/cam1-1/image", t)
    assert status == 200 and headers["x-vcm-layers"] == str(a)
    # ?wait= does not lift the limit
    status, headers, body = http_call(srv.url, "GET", "/frames/cam1-1?wait=1", t)
    assert status == 200 and len(body) == end_a


def test_identity_for_byte_accounting_comes_from_the_token(env):
    srv, tokens, end1 = env
    before = json.loads(http_call(srv.url, "GET", "/frames/cam1-1/info", tokens["viewer"])[2])
    http_call(
        srv.url, "GET", "/frames/cam1-1?layers=1", tokens["analytics"], {"X-VCM-Client": "viewer"}
    )  # a header cannot change who read the bytes
    info = json.loads(http_call(srv.url, "GET", "/frames/cam1-1/info", tokens["viewer"])[2])
    grown = {k: v - before["served_bytes"].get(k, 0) for k, v in info["served_bytes"].items()}
    assert grown.get("worker-a") == end1 and not grown.get("viewer")
    metrics = json.loads(http_call(srv.url, "GET", "/metrics", tokens["admin"])[2])
    assert metrics["bytes_served_by_client"]["worker-a"] >= end1
    assert "viewer" not in metrics["bytes_served_by_client"]


def test_cross_origin_browser_requests_are_refused(env, stream):
    srv, tokens, end1 = env
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    status, headers, _ = http_call(
        srv.url, "POST", "/cameras/cam1/frames?ts=77", tokens["camera"], evil, stream
    )
    assert status == 403 and "access-control-allow-origin" not in headers
    assert (
        http_call(srv.url, "POST", "/analytics/claim?wait=0", tokens["analytics"], evil)[0] == 403
    )
    assert http_call(srv.url, "GET", "/frames/cam1-77/info", tokens["viewer"])[0] == 404
    assert (
        http_call(srv.url, "GET", "/cameras", tokens["viewer"], {"Sec-Fetch-Site": "cross-site"})[0]
        == 403
    )
    assert http_call(srv.url, "GET", "/cameras", tokens["viewer"], {"Origin": "null"})[0] == 403
    # the page's own origin is fine
    own = {"Origin": srv.url, "Sec-Fetch-Site": "same-origin"}
    assert http_call(srv.url, "GET", "/cameras", tokens["viewer"], own)[0] == 200
    status, headers, _ = http_call(srv.url, "OPTIONS", "/cameras", None, evil)
    assert "access-control-allow-origin" not in headers  # no CORS, no preflight success


def test_open_mode_refuses_foreign_host_and_non_loopback(tmp_path, stream):
    """Without tokens the service is open to local programs only: it will not listen on a
    public address, and a DNS-rebinding page (Host: evil.example) is refused."""
    r = subprocess.run(
        vcm_command(
            "edge", "serve", "--store", str(tmp_path / "s"), "--host", "0.0.0.0", "--port", "0"
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stderr.startswith("vcm: error: refusing to listen on 0.0.0.0")
    assert len(r.stderr.strip().splitlines()) == 1
    with ServerProcess(tmp_path / "store", tmp_path / "server.log") as srv:
        port = srv.url.rsplit(":", 1)[1]
        assert (
            http_call(srv.url, "GET", "/cameras", headers={"Host": f"evil.example:{port}"})[0]
            == 403
        )
        assert (
            http_call(srv.url, "GET", "/cameras", headers={"Host": f"localhost:{port}"})[0] == 200
        )
        status, _, _ = http_call(
            srv.url,
            "POST",
            "/cameras/c/frames?ts=1",
            body=stream,
            headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
        )
        assert status == 403
        assert http_call(srv.url, "GET", "/cameras/c/frames")[2] == b'{"frames": []}'


def test_tokens_file_rules(tmp_path):
    f = tmp_path / "tokens.json"
    token = add_token(f, "cam", "camera", ["lobby"])
    table = TokenTable.load(f)
    principal = table.lookup(token)
    assert principal.name == "cam" and principal.owns("lobby") and not principal.owns("lobby2")
    assert table.lookup(token + "x") is None and table.lookup("") is None
    # at rest only the digest (issue 27, item 6): a copy of the file lets no one in
    assert token not in f.read_text() and '"sha256"' in f.read_text()
    # a file holding tokens themselves must not be readable by others, however the key is
    # spelled (0.3 matched the text '"token"', so "\u0074oken" got past)
    for key in ('"token"', '"\\u0074oken"'):
        plain = tmp_path / "plain.json"
        plain.write_text(f'{{"tokens": [{{"name": "a", "role": "viewer", {key}: "{"z" * 40}"}}]}}')
        os.chmod(plain, 0o600)
        assert TokenTable.load(plain).lookup("z" * 40).name == "a"
        os.chmod(plain, 0o644)
        with pytest.raises(VCMError, match="readable by other users"):
            TokenTable.load(plain)
    bad = [
        {"tokens": [{"name": "a", "role": "root", "token": "x" * 20}]},
        {"tokens": [{"name": "a", "role": "viewer", "token": "short"}]},
        {"tokens": [{"name": "a", "role": "camera", "token": "x" * 20}]},  # no cameras
        {"tokens": [{"name": "a", "role": "viewer", "token": "x" * 20, "cameras": ["c"]}]},
        {"tokens": [{"name": 'a"}', "role": "viewer", "token": "x" * 20}]},
        {
            "tokens": [
                {"name": "a", "role": "viewer", "token": "x" * 20},
                {"name": "b", "role": "admin", "token": "x" * 20},
            ]
        },  # same token twice
        {"tokens": []},
    ]
    for doc in bad:
        with pytest.raises(VCMError):
            TokenTable.parse(doc)
    digest_only = TokenTable.parse(
        {
            "tokens": [
                {
                    "name": "v",
                    "role": "viewer",
                    "sha256": __import__("hashlib").sha256(b"y" * 20).hexdigest(),
                }
            ]
        }
    )
    assert digest_only.lookup("y" * 20).name == "v"


@pytest.mark.slow
def test_tokens_are_never_command_line_arguments():
    """Clients take --token-file or the environment; there is no --token option to leak a
    secret into ps output."""
    for sub in ("serve", "worker", "push", "bench"):
        r = subprocess.run(
            vcm_command("edge", sub, "--help"), capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0
        assert "--token " not in r.stdout and "--token\n" not in r.stdout
        assert ("--tokens-file" if sub == "serve" else "--token-file") in r.stdout


def test_bench_with_and_without_a_token(env, tmp_path, capsys, photo, monkeypatch):
    """`vcm edge bench` against a service with tokens: a one-line error without a token, and
    the bench cameras' uploads with a camera token for bench-* (from $VCM_EDGE_TOKEN)."""
    from PIL import Image

    from vcm_plugin.cli import main

    srv, tokens, end1 = env
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(photo[:48, :64]).save(frames / "f.png")
    bench = [
        "edge",
        "bench",
        str(frames),
        "--n",
        "4",
        "--concurrency",
        "2",
        "--distinct",
        "1",
        "--preset",
        FAST,
        "--server",
        srv.url,
        "--allow-live-store",
    ]
    monkeypatch.delenv("VCM_EDGE_TOKEN", raising=False)
    monkeypatch.delenv("VCM_EDGE_TOKEN_FILE", raising=False)
    assert main(bench) == 1
    err = capsys.readouterr().err
    assert err.startswith("vcm: error:") and err.count("\n") == 1 and "--token-file" in err
    monkeypatch.setenv("VCM_EDGE_TOKEN", tokens["camera2"])
    assert main(bench) == 0
    listed = json.loads(http_call(srv.url, "GET", "/cameras", tokens["viewer"])[2])
    assert {"id": "bench-0", "frames": 2} in listed["cameras"]
