"""Streams written by earlier releases keep decoding: in 0.1.0 the DCT preset was called
"default" (now "fast"), and the generator preset's texture layers coded residuals (now
"tae-residual"); 0.2.0's generator preset (stream version 3, four texture layers) is now
"tae-0.2"; 0.3.0's (standalone AVIF texture layers, a simulcast) is now "tae-0.3". The files
in tests/data/compat were written by those releases and are never regenerated."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from vcm_plugin import Codec
from vcm_plugin.codec.presets import DEFAULT_PRESET, get_preset

DATA = Path(__file__).resolve().parent / "data"
OLD = {
    "fast": DATA / "compat" / "v0.1.0-default-48x64-photo.vcm",
    "tae-residual": DATA / "compat" / "v0.1.0-tae-48x64-photo.vcm",
    "tae-0.2": DATA / "compat" / "v0.2.0-tae-48x64-photo.vcm",
    "tae-0.3": DATA / "compat" / "v0.3.0-tae-48x64-photo.vcm",
}
#: sha256 (first 16 hex digits) of the pixels 0.3.0 decoded from its stream at each texture
#: point (AVIF decoding is bit-exact, so these hold on every machine).
V03_TEXTURE_PIXELS = {
    5: "d9873845e9154b2f",
    6: "29f363dc8d1558b8",
    7: "64b96596db03a0ba",
    8: "ffa9b9608c330aa9",
    9: "24351f7f9971eb7f",
    10: "b84a7b1d55518d2b",
    11: "53e1f9271d5a2d35",
}


def _make_malformed():
    spec = importlib.util.spec_from_file_location("make_malformed", DATA / "make_malformed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset", sorted(OLD))
def test_old_streams_decode_every_layer(preset):
    blob = OLD[preset].read_bytes()
    codec = Codec(device="cpu")  # the default preset decodes streams of every preset
    info = codec.inspect(blob)
    assert info.preset == preset and (info.width, info.height) == (64, 48)
    if preset in ("tae-0.2", "tae-0.3"):  # version 3: standalone texture layers
        assert info.version == 3 and info.point_layers[-1] == [info.num_layers - 1]
    else:
        assert info.version == 2
        assert info.point_layers[-1] == list(range(info.num_layers))
    for k in range(1, info.num_layers + 1):
        assert codec.decode(blob, layers=k).shape == (48, 64, 3)


@pytest.mark.parametrize("preset", sorted(OLD))
def test_old_streams_are_what_this_release_writes(preset):
    """Byte-identical re-encode of the image 0.1.0 encoded: same rules, same config hash."""
    mm = _make_malformed()
    img = mm.seed_image(48, 64, "photo")
    assert Codec.from_preset(preset, device="cpu").encode(img) == OLD[preset].read_bytes()


def test_v03_texture_points_decode_to_the_pixels_03_decoded():
    blob = OLD["tae-0.3"].read_bytes()
    codec = Codec(device="cpu")
    for k, digest in V03_TEXTURE_PIXELS.items():
        pixels = codec.decode(blob, layers=k).tobytes()
        assert hashlib.sha256(pixels).hexdigest()[:16] == digest, k


def test_default_is_the_generator_and_default_is_an_alias():
    assert DEFAULT_PRESET == "tae"
    assert Codec(device="cpu").preset.name == "tae"
    assert get_preset("default") is get_preset("tae")
    assert Codec.from_preset("fast", device="cpu").preset.backend == "dct"


def test_default_codec_roundtrip_without_shared(monkeypatch, tmp_path):
    """The generator preset works with no $VCM_WEIGHTS_DIR, no ../shared and no user cache."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "VCM_WEIGHTS_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # an empty user cache dir
    code = (
        "import numpy as np; from vcm_plugin import Codec; "
        "img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8); "
        "c = Codec(device='cpu'); b = c.encode(img); "
        "print(c.preset.name, c.decode(b).shape)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["tae", "(40,", "56,", "3)"]
