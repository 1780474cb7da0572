"""The Pillow plugin: ``Image.open("x.vcm")`` decodes, ``img.save("x.vcm")`` encodes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VCM_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="module")
def kodak():
    from PIL import Image

    path = sorted((SHARED / "data" / "kodak").glob("*.png"))[0]
    with Image.open(path) as im:
        return im.convert("RGB").resize((192, 128))


def test_pillow_plugin_save_open_all_and_fewer_layers(kodak, tmp_path):
    from PIL import Image

    import vcm_plugin.integrations.pillow  # noqa: F401  (registers the format)
    from vcm_plugin import Codec

    assert Image.registered_extensions()[".vcm"] == "VCM"
    assert Image.MIME["VCM"] == "image/x-vcm"
    path = tmp_path / "kodim.vcm"
    kodak.save(path)  # format picked from the extension
    blob = path.read_bytes()
    codec = Codec()
    n = codec.inspect(blob)["num_layers"]
    assert n >= 2

    with Image.open(path) as im:  # every layer by default
        assert im.format == "VCM" and im.size == (192, 128) and im.mode == "RGB"
        assert im.info["num_layers"] == n
        np.testing.assert_array_equal(np.asarray(im), codec.decode(blob))
        assert im.info["layers_decoded"] == n and im.info["preset"] == "tae"
        assert im.info["point_layers"] == codec.inspect(blob)["point_layers"]
        assert im.info["point_layers"][-1] == [n - 1]  # a person's view: one texture layer

    with Image.open(path) as im:  # the documented way to ask for fewer
        im.layers = 1
        sem = np.asarray(im)
        assert im.info["layers_decoded"] == 1
    np.testing.assert_array_equal(sem, codec.decode(blob, layers=1))

    from vcm_plugin.integrations.pillow import open_vcm

    two = open_vcm(path, layers=2)
    np.testing.assert_array_equal(np.asarray(two), codec.decode(blob, layers=2))


def test_pillow_plugin_save_options_modes_and_files_objects(kodak, tmp_path):
    from PIL import Image, UnidentifiedImageError

    import vcm_plugin.integrations.pillow  # noqa: F401
    from vcm_plugin import Codec, VCMError

    buf = io.BytesIO()
    kodak.save(buf, format="VCM", layers=2)  # keep only the first two layers
    buf.seek(0)
    with Image.open(buf) as im:
        assert im.info["num_layers"] == 2
        im.load()
    assert Codec().inspect(buf.getvalue())["num_layers"] == 2

    for mode in ("L", "RGBA", "P"):
        p = tmp_path / f"{mode}.vcm"
        kodak.convert(mode).save(p)
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.size == kodak.size
            im.load()

    with pytest.raises(VCMError, match="quality"):
        kodak.save(tmp_path / "bad.vcm", quality=50)
    with pytest.raises(VCMError, match="preset"):
        kodak.save(tmp_path / "bad.vcm", preset="no-such")

    # a corrupt header is not a VCM image; ordinary formats are untouched
    good = (tmp_path / "L.vcm").read_bytes()
    bad = good[:10] + bytes([good[10] ^ 0xFF]) + good[11:]
    from vcm_plugin.integrations.pillow import VCMImageFile

    with pytest.raises(SyntaxError, match="not a valid VCM stream"):
        VCMImageFile(io.BytesIO(bad))  # how a Pillow plugin declines a file
    # (once ultralytics is imported it patches Image.open to retry unknown files with pi-heif,
    # which is not installed here: ImportError instead of UnidentifiedImageError)
    with pytest.raises((UnidentifiedImageError, ImportError)):
        Image.open(io.BytesIO(bad))
    png = io.BytesIO()
    kodak.save(png, format="PNG")
    png.seek(0)
    assert Image.open(png).format == "PNG"
