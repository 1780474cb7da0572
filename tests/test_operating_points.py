"""Named operating points: the analytics point, the viewer points, rate control by bytes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec.presets import PRESETS


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[96:256:2, 128:320:2])


@pytest.fixture(scope="module")
def stream(photo) -> bytes:
    return Codec(device="cpu").encode(photo)


def test_every_preset_names_an_analytics_point_inside_its_layers():
    for preset in PRESETS.values():
        assert 1 <= preset.analytics_point <= preset.num_layers, preset.name


def test_inspect_names_the_analytics_and_viewer_points(stream):
    codec = Codec(device="cpu")
    info = codec.inspect(stream)
    point = info.analytics_point
    assert point == codec.preset.analytics_point
    assert info.viewer_points, "the default preset has points meant for a person"
    roles = info.layer_roles
    assert all(roles[k - 1] == "texture" for k in info.viewer_points)
    assert point not in info.viewer_points or roles[point - 1] == "texture"
    np.testing.assert_array_equal(
        codec.decode(stream, layers="analytics"), codec.decode(stream, layers=point)
    )
    view = codec.view(stream, "analytics")
    assert view == codec.view(stream, point)
    assert len(view) == info.point_bytes[point - 1]
    with pytest.raises(VCMError, match="'analytics'"):
        codec.decode(stream, layers="semantic")


def test_analytics_on_a_stream_cut_below_it_decodes_the_highest_point_there(stream):
    codec = Codec(device="cpu")
    point = codec.inspect(stream).analytics_point
    if point == 1:
        pytest.skip("the analytics point is layer 0: nothing below it")
    cut = codec.truncate(stream, layers=point - 1)
    np.testing.assert_array_equal(
        codec.decode(cut, layers="analytics"), codec.decode(cut, layers=point - 1)
    )


def test_readers_fetch_only_the_layers_of_the_analytics_point(stream, tmp_path):
    from vcm_plugin.integrations._core import read_stream

    codec = Codec(device="cpu")
    info = codec.inspect(stream)
    point = info.analytics_point
    path = tmp_path / "x.vcm"
    path.write_bytes(stream)
    fetched = read_stream(path, "analytics")
    assert fetched == codec.view(stream, point) == read_stream(stream, "analytics")
    assert len(fetched) == info.point_bytes[point - 1] <= len(stream)


def test_integrations_default_to_the_analytics_point(photo):
    from vcm_plugin.integrations._core import roundtrip_point

    codec = Codec(device="cpu")
    got = roundtrip_point(photo)
    out = got.image
    blob = codec.encode(photo)
    point = codec.inspect(blob).analytics_point
    assert got.layers == point
    assert got.bytes == codec.inspect(blob).point_bytes[point - 1]
    np.testing.assert_array_equal(out, codec.decode(blob, layers=point))


def test_truncate_to_a_byte_budget_keeps_the_longest_prefix_that_fits(stream):
    codec = Codec(device="cpu")
    info = codec.inspect(stream)
    ends = [info.header_bytes]  # prefix sizes grow layer by layer
    for k in range(1, info.num_layers + 1):
        ends.append(len(codec.truncate(stream, layers=k)))
    for k in range(1, info.num_layers + 1):
        budget = ends[k] + (ends[k + 1] - ends[k]) // 2 if k < info.num_layers else ends[k]
        kept = codec.truncate(stream, max_bytes=budget)
        assert len(kept) <= budget and codec.inspect(kept).num_layers == k
    with pytest.raises(VCMError, match="below the smallest"):
        codec.truncate(stream, max_bytes=ends[1] - 1)


def test_cli_encode_max_bytes(tmp_path, photo):
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    full = tmp_path / "full.vcm"
    run = [sys.executable, "-m", "vcm_plugin.cli", "encode", str(src)]
    assert subprocess.run([*run, str(full)], capture_output=True).returncode == 0
    codec = Codec(device="cpu")
    blob = full.read_bytes()
    budget = len(codec.truncate(blob, layers=3)) + 1
    small = tmp_path / "small.vcm"
    done = subprocess.run(
        [*run, str(small), "--max-bytes", str(budget)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert small.read_bytes() == codec.truncate(blob, layers=3)
    bad = subprocess.run(
        [*run, str(tmp_path / "no.vcm"), "--max-bytes", "5"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "below the smallest operating point" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "no.vcm").exists()
    dec = subprocess.run(
        [
            sys.executable,
            "-m",
            "vcm_plugin.cli",
            "decode",
            str(full),
            str(tmp_path / "a.png"),
            "--layers",
            "analytics",
        ],
        capture_output=True,
        text=True,
    )
    assert dec.returncode == 0, dec.stderr
    point = codec.inspect(blob).analytics_point
    with Image.open(tmp_path / "a.png") as im:
        np.testing.assert_array_equal(np.asarray(im), codec.decode(blob, layers=point))
