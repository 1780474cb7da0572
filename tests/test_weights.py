"""Weight lookup and `vcm weights fetch` against a local HTTP server (no internet here)."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading

import pytest

from vcm_plugin import VCMError
from vcm_plugin.codec import weights


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_fetch_verifies_and_installs(server, tmp_path, shared_dir):
    root, url = server
    for name in ("taef2_encoder.pth", "taef2_decoder.pth"):
        shutil.copy(shared_dir / "models" / name, root / name)
    dest = tmp_path / "cache"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vcm_plugin.cli",
            "weights",
            "fetch",
            "taef2",
            "--dest",
            str(dest),
            "--base-url",
            url,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for wf in weights.REGISTRY["taef2"]:
        assert weights.sha256_of(dest / wf.name) == wf.sha256


def test_fetch_rejects_bad_hash(server, tmp_path):
    root, url = server
    for wf in weights.REGISTRY["taef2"]:
        (root / wf.name).write_bytes(b"not the weights")
    dest = tmp_path / "cache"
    with pytest.raises(VCMError, match="sha256"):
        weights.fetch("taef2", dest=dest, base_url=url)
    assert not any(dest.iterdir()), "a file that failed verification was left behind"


def test_fetch_unreachable(tmp_path):
    with pytest.raises(VCMError, match="could not download"):
        weights.fetch("taef2", dest=tmp_path, base_url="http://127.0.0.1:9/")


def test_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("VCM_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(VCMError) as raised:
        weights.find("taef2")
    message = str(raised.value)
    assert "VCM_WEIGHTS_DIR" in message and "taef2_decoder.pth" in message
    assert "vcm weights fetch" in message


def test_weights_ship_in_the_package(monkeypatch, tmp_path):
    """No $VCM_WEIGHTS_DIR, an empty user cache: the package's own verified copies are used."""
    monkeypatch.delenv("VCM_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(weights, "cache_dir", lambda: tmp_path / "empty-cache")
    paths = weights.find("taef2")
    assert {p.parent for p in paths.values()} == {weights.package_dir()}
    assert (weights.package_dir() / "LICENSE.taesd-MIT.txt").read_text().startswith("MIT")


def test_user_cache_overrides_package(monkeypatch, tmp_path, shared_dir):
    monkeypatch.delenv("VCM_WEIGHTS_DIR", raising=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    for wf in weights.REGISTRY["taef2"]:
        shutil.copy(shared_dir / "models" / wf.name, cache / wf.name)
    monkeypatch.setattr(weights, "cache_dir", lambda: cache)
    assert {p.parent for p in weights.find("taef2").values()} == {cache}


def test_corrupt_weights_are_refused(monkeypatch, tmp_path, shared_dir):
    for wf in weights.REGISTRY["taef2"]:
        shutil.copy(shared_dir / "models" / wf.name, tmp_path / wf.name)
    with open(tmp_path / "taef2_decoder.pth", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\xff" * 8)
    monkeypatch.setenv("VCM_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(VCMError, match="taef2_decoder.pth: sha256"):
        weights.find("taef2")
