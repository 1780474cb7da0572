"""Issue 30: ``Codec.encode(img, objects=...)``: the analytics point (the texture chain's first
layer) spends its bits on the objects, the viewer points code the whole photo, and decoders
read the stream as any other."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec import layered_avif
from vcm_plugin.codec.measure import psnr
from vcm_plugin.codec.roi import OBJECT_GROW, OBJECT_MARGIN, object_region

#: her head and shoulders in skimage's astronaut, (x0, y0, x1, y1)
PERSON = (150.0, 20.0, 360.0, 300.0)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_preset("tae", device="cpu")


@pytest.fixture(scope="module")
def streams(codec, astronaut) -> tuple[bytes, bytes]:
    return codec.encode(astronaut), codec.encode(astronaut, objects=[PERSON])


def test_object_region_grows_boxes_and_keeps_masks():
    region = object_region([(100, 100, 200, 150)], 300, 400)
    dx, dy = OBJECT_GROW * 100 + OBJECT_MARGIN, OBJECT_GROW * 50 + OBJECT_MARGIN
    rows, cols = np.nonzero(region)
    assert (cols.min(), cols.max() + 1) == (round(100 - dx), round(200 + dx))
    assert (rows.min(), rows.max() + 1) == (round(100 - dy), round(150 + dy))
    mask = np.zeros((300, 400), np.float32)
    mask[10:20, 30:40] = 0.5
    assert np.array_equal(object_region(mask, 300, 400), mask)
    assert not object_region([], 300, 400).any()  # no object: nothing to keep sharp
    with pytest.raises(VCMError, match="empty"):
        object_region([(5, 5, 5, 9)], 300, 400)


def test_analytics_point_spends_less_and_keeps_the_objects(codec, astronaut, streams):
    plain, focused = streams
    a, b = codec.inspect(plain), codec.inspect(focused)
    k = a.analytics_point
    assert b.point_bytes[k - 1] < 0.8 * a.point_bytes[k - 1]
    x0, y0, x1, y1 = (int(v) for v in PERSON)
    inside = (slice(y0, y1), slice(x0, x1))
    pa, pb = codec.decode(plain, layers=k), codec.decode(focused, layers=k)
    # the objects are as sharp as at the plain point; the background is not
    assert psnr(astronaut[inside], pb[inside]) > psnr(astronaut[inside], pa[inside]) - 0.3
    assert psnr(astronaut, pb) < psnr(astronaut, pa) - 0.5


def test_viewer_points_code_the_whole_photo(codec, astronaut, streams):
    plain, focused = streams
    info = codec.inspect(focused)
    top = info.viewer_points[-1]
    assert psnr(astronaut, codec.decode(focused, layers=top)) > (
        psnr(astronaut, codec.decode(plain, layers=top)) - 0.3
    )
    # the climb a person makes: analytics point, then the top viewer point, costs no more
    assert info.point_bytes[top - 1] < 1.05 * codec.inspect(plain).point_bytes[top - 1]
    # the latent layers do not see the objects: they are the same bytes
    for k in range(1, info.analytics_point):
        assert codec.view(focused, layers=k) == codec.view(plain, layers=k)


def test_batch_equals_single_and_none_means_plain(codec, astronaut, streams):
    plain, focused = streams
    small = astronaut[:64, :96]
    got = codec.encode_batch([astronaut, small], objects=[[PERSON], None])
    assert got == [focused, codec.encode(small)]
    mask = object_region([PERSON], *astronaut.shape[:2])
    assert codec.encode(astronaut, objects=mask) == focused


def test_objects_need_a_texture_chain_and_one_list_per_image(codec, astronaut):
    with pytest.raises(VCMError, match="objects= needs a preset"):
        Codec.from_preset("fast").encode(astronaut, objects=[PERSON])
    with pytest.raises(VCMError, match="1 object lists for 2 images"):
        codec.encode_batch([astronaut, astronaut], objects=[[PERSON]])
    with pytest.raises(VCMError, match="roi must be"):
        codec.encode(astronaut, objects="everything")


def test_layered_encode_refuses_a_first_picture_of_another_size(astronaut):
    with pytest.raises(VCMError, match="first layer's picture"):
        layered_avif.encode(astronaut, (35, 60), 6, "444", first=astronaut[:100])


def test_eval_codec_sends_the_detectors_objects(astronaut):
    from vcm_eval.codecs import make_codec
    from vcm_plugin.taskmodels.detect import default_weights

    if not default_weights().is_file():
        pytest.skip("yolov5n.pt not found (VCM_WEIGHTS_DIR)")
    plain, objects = make_codec("vcm", "tae"), make_codec("vcm-objects", "tae")
    boxes = objects.find(astronaut)
    assert boxes  # YOLOv5n finds her
    blob = objects.encode(astronaut)
    assert blob == objects.codec.encode(astronaut, objects=boxes)
    k = objects.codec.inspect(blob).analytics_point
    assert len(objects.codec.view(blob, layers=k)) < len(
        plain.codec.view(plain.encode(astronaut), layers=k)
    )


def test_camera_encodes_each_frame_with_its_detectors_objects(codec, astronaut, streams):
    from vcm_plugin.edge.camera import Camera
    from vcm_plugin.edge.client import EdgeClient

    seen = []

    def finder(img: np.ndarray) -> list[list[float]]:
        seen.append(img.shape)
        return [list(PERSON)]

    client = EdgeClient("http://127.0.0.1:9", role="camera")
    camera = Camera(client, "cam1", codec, objects=finder)
    assert camera.climb(astronaut) == codec.uplink(streams[1])
    assert seen == [astronaut.shape]


def test_cli_encodes_with_a_detectors_objects(tmp_path, astronaut, capsys):
    from PIL import Image

    from vcm_plugin.cli import main
    from vcm_plugin.taskmodels.detect import default_weights, object_finder

    if not default_weights().is_file():
        pytest.skip("yolov5n.pt not found (VCM_WEIGHTS_DIR)")
    src = tmp_path / "a.png"
    Image.fromarray(astronaut).save(src)
    assert main(["encode", str(src), str(tmp_path / "a.vcm"), "--objects", "yolov5n"]) == 0
    codec = Codec.from_preset("tae")
    wanted = codec.encode(astronaut, objects=object_finder("yolov5n")(astronaut))
    assert (tmp_path / "a.vcm").read_bytes() == wanted
    capsys.readouterr()
    rc = main(["encode", str(src), str(tmp_path / "b.vcm"), "--objects", str(tmp_path / "no.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "detector weights not found" in err[0]
    assert not (tmp_path / "b.vcm").exists()
