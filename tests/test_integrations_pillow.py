"""The Pillow plugin: ``Image.open("x.vcm")`` decodes, ``img.save("x.vcm")`` encodes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VCM_SHARED_DIR", REPO.parent / "shared"))
pytestmark = pytest.mark.needs_shared("data/kodak")


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
    n = codec.inspect(blob).num_layers
    assert n >= 2

    with Image.open(path) as im:  # the analytics point, asked for by name
        assert im.format == "VCM" and im.size == (192, 128) and im.mode == "RGB"
        point = codec.inspect(blob).analytics_point
        assert im.info["analytics_point"] == point
        im.layers = "analytics"
        np.testing.assert_array_equal(np.asarray(im), codec.decode(blob, layers="analytics"))
        assert im.info["layers_decoded"] == point

    with Image.open(path) as im:  # by default every layer: the best picture, as Pillow does
        assert im.info["num_layers"] == n
        np.testing.assert_array_equal(np.asarray(im), codec.decode(blob))
        assert im.info["layers_decoded"] == n and im.info["preset"] == "tae"
        assert im.info["point_layers"] == codec.inspect(blob).point_layers
        # a person's view: the texture chain, from the analytics point's layer up
        assert im.info["point_layers"][-1] == list(range(point - 1, n))

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
    assert Codec().inspect(buf.getvalue()).num_layers == 2

    for mode in ("L", "P", "CMYK"):
        p = tmp_path / f"{mode}.vcm"
        kodak.convert(mode).save(p)
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.size == kodak.size
            im.load()

    with pytest.raises(VCMError, match="valid: preset, layers") as err:
        kodak.save(tmp_path / "bad.vcm", quality=50)
    assert "layers=k" in str(err.value)
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


def test_pillow_plugin_refuses_transparency_like_the_codec(kodak, tmp_path):
    from PIL import Image

    import vcm_plugin.integrations.pillow  # noqa: F401
    from vcm_plugin import Codec, VCMError

    with pytest.raises(VCMError, match="alpha"):  # what the codec does with an RGBA array
        Codec("fast").encode(np.asarray(kodak.convert("RGBA")))
    p_transparent = kodak.convert("P")
    p_transparent.info["transparency"] = 0
    for im in (kodak.convert("RGBA"), kodak.convert("LA"), p_transparent):
        with pytest.raises(VCMError, match=f"alpha channel \\(mode {im.mode}\\)"):
            im.save(tmp_path / "alpha.vcm", preset="fast")
    kodak.convert("RGBA").convert("RGB").save(tmp_path / "ok.vcm", preset="fast")
    assert Image.open(tmp_path / "ok.vcm").size == kodak.size


def test_pillow_plugin_truncated_file_raises_unless_load_truncated_images(kodak, tmp_path):
    from PIL import Image, ImageFile

    import vcm_plugin.integrations.pillow  # noqa: F401
    from vcm_plugin import Codec
    from vcm_plugin.codec.api import TruncatedStreamWarning

    codec = Codec("fast")
    blob = codec.encode(np.asarray(kodak))
    info = codec.inspect(blob)
    cut = tmp_path / "cut.vcm"
    cut.write_bytes(blob[: info.layer_offsets[3] + 5])  # 3 complete layers of 5

    with Image.open(cut) as im, pytest.raises(OSError, match="image file is truncated"):
        im.layers = None  # every layer: the fast preset's analytics point is layer 0
        im.load()
    # a PNG cut short behaves the same way: Pillow's own rule
    png = tmp_path / "cut.png"
    kodak.save(png)
    png.write_bytes(png.read_bytes()[:-200])
    with Image.open(png) as im, pytest.raises(OSError, match="truncated"):
        im.load()

    with Image.open(cut) as im:  # the layers asked for are complete: no error
        im.layers = 2
        np.testing.assert_array_equal(np.asarray(im), codec.decode(blob, layers=2))

    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(cut) as im, pytest.warns(TruncatedStreamWarning, match="3 of the 5"):
            im.layers = None
            im.load()
        assert im.info["layers_decoded"] == 3
        np.testing.assert_array_equal(np.asarray(im), codec.decode(blob, layers=3))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_pillow_plugin_applies_exif_orientation_before_encoding(kodak, tmp_path):
    from PIL import Image, ImageOps

    import vcm_plugin.integrations.pillow  # noqa: F401

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    jpg = tmp_path / "rotated.jpg"
    kodak.save(jpg, exif=exif, quality=95)
    with Image.open(jpg) as im:
        upright = ImageOps.exif_transpose(im)
        im.save(tmp_path / "rotated.vcm", preset="fast")
    with Image.open(tmp_path / "rotated.vcm") as out:
        out.layers = None  # the full picture, not the analytics point
        assert out.size == upright.size == kodak.size[::-1]
        err = np.abs(np.asarray(out, dtype=float) - np.asarray(upright, dtype=float)).mean()
        assert err < 12  # the same picture, upright (a sideways one differs by far more)


def test_pillow_plugin_draft_and_thumbnail_keep_the_chosen_point(kodak, tmp_path):
    from PIL import Image

    import vcm_plugin.integrations.pillow  # noqa: F401

    path = tmp_path / "k.vcm"
    kodak.save(path, preset="fast")
    with Image.open(path) as im:
        assert im.draft("RGB", (48, 32)) is None  # documented: no cheaper draft decode
        im.thumbnail((48, 32))  # the analytics point, as without the thumbnail
        assert im.size == (48, 32) and im.info["layers_decoded"] == im.info["analytics_point"]
    with Image.open(path) as im:
        im.layers = None  # every layer
        im.thumbnail((48, 32))
        assert im.info["layers_decoded"] == 5
    with Image.open(path) as im:
        im.layers = 1  # the way to decode fewer layers
        im.thumbnail((48, 32))
        assert im.info["layers_decoded"] == 1
    with Image.open(path) as im:
        im.layers = None
        assert im.reduce(2).size == (96, 64) and im.info["layers_decoded"] == 5
