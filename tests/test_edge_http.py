"""Issue 17, HTTP semantics checked against RFC 9110: HEAD, strong ETags, 304, If-Range,
Last-Modified, Cache-Control, Range on streams (and ``Accept-Ranges: none`` on images),
invalid ranges ignored, and a size probe that never asks a camera for its texture."""

from __future__ import annotations

import json

import pytest

from vcm_plugin import Codec
from vcm_plugin.codec import container
from vcm_plugin.edge.auth import add_token
from vcm_plugin.edge.server import ROUTE_ROLES
from vcm_plugin.edge.testing import ServerProcess, http_call

FAST = "fast"


@pytest.fixture(scope="module")
def env(tmp_path_factory, photo):
    tmp = tmp_path_factory.mktemp("edge-http")
    f = tmp / "tokens.json"
    tokens = {
        "camera": add_token(f, "cam", "camera", ["web", "lazy"]),
        "viewer": add_token(f, "viewer", "viewer"),
        "admin": add_token(f, "admin", "admin"),
    }
    blob = Codec.from_preset(FAST).encode(photo[:96, :128])
    end1 = container.parse_header(blob, 10**8).prefix_end(1)
    with ServerProcess(tmp / "store", tmp / "server.log", args=("--tokens-file", str(f))) as srv:
        for cam, body in (("web", blob), ("lazy", blob[:end1])):
            assert (
                http_call(
                    srv.url, "POST", f"/cameras/{cam}/frames?ts=1", tokens["camera"], body=body
                )[0]
                == 201
            )
        yield srv, tokens, blob, end1


def get(env, path, headers=None, method="GET", who="viewer"):
    srv, tokens, *_ = env
    return http_call(srv.url, method, path, tokens[who], headers)


def served(env, fid: str) -> int:
    return sum(json.loads(get(env, f"/frames/{fid}/info")[2])["served_bytes"].values())


def test_every_route_is_in_the_module_docstring():
    """The route table is one list (ROUTES); the module's docstring, what a reader sees first,
    must name each route too."""
    from vcm_plugin.edge import server

    for method, route, handler, _ in server.ROUTES:
        assert route in server.__doc__, (method, route, handler)


def test_head_answers_wherever_get_does(env):
    paths = {
        "/": "viewer",
        "/viewer.js": "viewer",
        "/health": "viewer",
        "/cameras": "viewer",
        "/cameras/web/frames": "viewer",
        "/cameras/web/wanted": "camera",
        "/frames/web-1": "viewer",
        "/frames/web-1/image": "viewer",
        "/frames/web-1/info": "viewer",
        "/frames/web-1/detections": "viewer",
        "/metrics": "admin",
        "/frames": "viewer",
        "/stats/classes": "viewer",
        "/events": "viewer",
        "/events/web-1-door": "viewer",  # 404 (no such event), but not 405
        "/events/web-1-door/snapshot": "viewer",
        "/events/web-1-door/clip": "viewer",
    }
    gets = {route for method, route in ROUTE_ROLES if method == "GET"}
    assert len(gets) == len(paths)
    for path, who in paths.items():
        status, headers, body = get(env, path, method="HEAD", who=who)
        assert status != 405 and status < 500 and body == b"", (path, status)


def test_head_of_a_stream_reads_nothing_and_matches_get(env):
    srv, tokens, blob, end1 = env
    before = served(env, "web-1")
    status, head, body = get(env, "/frames/web-1", method="HEAD")
    assert status == 200 and body == b"" and int(head["content-length"]) == len(blob)
    assert served(env, "web-1") == before  # HEAD serves no bytes
    status, full, body = get(env, "/frames/web-1")
    assert body == blob
    for name in ("etag", "last-modified", "cache-control", "accept-ranges", "x-vcm-layers"):
        assert head[name] == full[name], name
    assert served(env, "web-1") == before + len(blob)


def test_strong_etags_and_304(env):
    srv, tokens, blob, end1 = env
    status, headers, _ = get(env, "/frames/web-1?layers=1")
    etag = headers["etag"]
    assert status == 200 and etag.startswith('"') and not etag.startswith("W/")
    assert get(env, "/frames/web-1")[1]["etag"] != etag  # another representation
    before = served(env, "web-1")
    for inm in (etag, f'"nope", {etag}', f"W/{etag}", "*"):
        status, h, body = get(env, "/frames/web-1?layers=1", {"If-None-Match": inm})
        assert status == 304 and body == b"" and h["etag"] == etag, inm
    assert get(env, "/frames/web-1?layers=1", {"If-None-Match": '"other"'})[0] == 200
    assert served(env, "web-1") == before + end1  # 304s served nothing
    # images too: strong ETag, 304, no decode needed for the 304
    status, h, png = get(env, "/frames/web-1/image?layers=1")
    assert status == 200 and png.startswith(b"\x89PNG") and h["etag"].startswith('"')
    assert get(env, "/frames/web-1/image?layers=1", {"If-None-Match": h["etag"]})[0] == 304
    # If-Modified-Since with the current Last-Modified: 304 as well
    assert get(env, "/frames/web-1", {"If-Modified-Since": h["last-modified"]})[0] == 304


def test_last_modified_and_cache_control(env):
    srv, tokens, blob, end1 = env
    _, h, _ = get(env, "/frames/web-1")
    assert "immutable" in h["cache-control"] and h["last-modified"].endswith("GMT")
    _, h, _ = get(env, "/frames/lazy-1")  # "what is stored so far" may grow: revalidate
    assert h["cache-control"] == "private, no-cache" and h["x-vcm-layers"] == "1"
    _, h, _ = get(env, "/frames/lazy-1?layers=1")  # layer 0 of it never changes
    assert "immutable" in h["cache-control"]


def test_ranges_follow_rfc_9110(env):
    srv, tokens, blob, end1 = env
    _, h, _ = get(env, "/frames/web-1")
    etag, modified = h["etag"], h["last-modified"]
    status, h, body = get(env, "/frames/web-1", {"Range": "bytes=10-19"})
    assert status == 206 and body == blob[10:20]
    assert h["content-range"] == f"bytes 10-19/{len(blob)}"
    status, h, body = get(env, "/frames/web-1", {"Range": "bytes=-5"})
    assert status == 206 and body == blob[-5:]
    # invalid (last < first), malformed or multi-range: ignored -> the whole 200
    for bad in ("bytes=5-3", "bytes=abc", "bytes=0-1,4-5", "lines=1-2"):
        status, h, body = get(env, "/frames/web-1", {"Range": bad})
        assert status == 200 and body == blob, bad
    # unsatisfiable: 416 with the size
    status, h, _ = get(env, "/frames/web-1", {"Range": f"bytes={len(blob)}-"})
    assert status == 416 and h["content-range"] == f"bytes */{len(blob)}"
    # If-Range: the current strong ETag or Last-Modified date -> 206; anything else -> 200
    for validator, expected in (
        (etag, 206),
        (modified, 206),
        ('"stale"', 200),
        (f"W/{etag}", 200),
        ("Mon, 01 Jan 2001 00:00:00 GMT", 200),
    ):
        status, h, body = get(env, "/frames/web-1", {"Range": "bytes=0-9", "If-Range": validator})
        assert status == expected, validator
        assert body == (blob[:10] if expected == 206 else blob)
    # HEAD with a Range: 206 headers, no body
    status, h, body = get(env, "/frames/web-1", {"Range": "bytes=0-9"}, method="HEAD")
    assert status == 206 and body == b"" and h["content-length"] == "10"


def test_image_says_it_has_no_ranges(env):
    status, h, png = get(env, "/frames/web-1/image", {"Range": "bytes=0-9"})
    assert status == 200 and h["accept-ranges"] == "none" and len(png) > 10


def test_size_probe_never_asks_the_camera(env):
    """fsspec and friends GET/HEAD a URL to learn its size: that must not ask the camera
    for the texture; only an explicit viewer request (layers=k or wait=s) does."""
    srv, tokens, blob, end1 = env

    def wanted() -> list[str]:
        text = get(env, "/cameras/lazy/wanted?wait=0", who="camera")[2]
        return [f["id"] for f in json.loads(text)["frames"]]

    for method in ("HEAD", "GET"):
        status, h, body = get(env, "/frames/lazy-1", method=method)
        assert status == 200 and h["x-vcm-layers"] == "1"
        status, h, body = get(env, "/frames/lazy-1/image", method=method)
        assert status == 200
    status, _, _ = get(env, "/frames/lazy-1?layers=5", method="HEAD")
    assert status == 409
    assert wanted() == []
    status, h, _ = get(env, "/frames/lazy-1?layers=5")  # an explicit viewer request
    assert status == 409 and h["retry-after"] == "1"
    assert wanted() == ["lazy-1"]
