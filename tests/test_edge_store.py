"""Edge store and upload validation, in process: atomic writes, byte ranges, the index."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec import container
from vcm_plugin.edge.server import HTTPProblem, parse_range
from vcm_plugin.edge.store import FrameKey, FrameStore
from vcm_plugin.edge.stream import validate_stream


@pytest.fixture(scope="module")
def blob(photo) -> bytes:
    return Codec().encode(photo)


@pytest.fixture(scope="module")
def header(blob) -> container.Header:
    return container.parse_header(blob, 10**8)


def test_frame_key_round_trip():
    key = FrameKey("front-door_2", 1_700_000_000_123_456)
    assert key.id == "front-door_2-1700000000123456"
    assert FrameKey.parse(key.id) == key
    assert FrameKey.parse("cam-0") == FrameKey("cam", 0)  # zero is spelled "0"
    for bad in (
        "nodash",
        "cam-",
        "-123",
        "a b-1",
        "cam-12x",
        "sec-\u00b2",
        "cam-\u0663",
        "cam- 7 ",
        "cam-1_000",
        "cam-007",
        "cam-+7",
        "cam-" + "9" * 17,
    ):
        with pytest.raises(VCMError):
            FrameKey.parse(bad)
    with pytest.raises(VCMError, match="camera id"):
        FrameKey("../etc", 1)


def test_validate_accepts_whole_layer_prefixes(blob, header):
    full = validate_stream(blob)
    assert full.complete and full.size == len(blob) and full.stored_layers == header.num_layers
    first = validate_stream(blob[: header.prefix_end(1)])
    assert first.stored_layers == 1 and not first.complete
    assert first.end(1) == header.prefix_end(1)


@pytest.mark.parametrize(
    "case", ["random", "crc", "cut_in_layer", "cut_in_layer0", "trailing", "header_crc", "empty"]
)
def test_validate_rejects_bad_uploads(blob, header, case):
    rng = np.random.default_rng(0)
    data = bytearray(blob)
    if case == "random":
        data = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    elif case == "crc":
        data[header.offsets[2] + 3] ^= 0x10
    elif case == "cut_in_layer":
        data = data[: header.prefix_end(2) + 5]
    elif case == "cut_in_layer0":
        data = data[: header.prefix_end(1) - 1]
    elif case == "trailing":
        data += b"\x00"
    elif case == "header_crc":
        data[12] ^= 1
    else:
        data = b""
    with pytest.raises(VCMError):
        validate_stream(bytes(data))


def test_bytes_per_layer_counts_header_into_layer0(blob, header):
    layout = validate_stream(blob)
    n = header.num_layers
    assert layout.bytes_per_layer(0, len(blob)) == [header.prefix_end(1)] + list(header.lengths[1:])
    assert sum(layout.bytes_per_layer(10, 2000)) == 1990
    assert layout.bytes_per_layer(0, header.prefix_end(1)) == [header.prefix_end(1)] + [0] * (n - 1)


def test_store_write_read_ranges_and_index(tmp_path, blob, header):
    store = FrameStore(tmp_path / "store")
    keys = [FrameKey("cam1", 2_000_000 + i) for i in range(3)] + [FrameKey("cam2", 5)]
    for key in keys:
        store.write(key, blob)
    assert store.cameras() == ["cam1", "cam2"]
    assert store.frames("cam1") == keys[:3]
    assert store.frames("cam1", since=2_000_001, until=2_000_001) == [keys[1]]
    assert store.frames("nobody") == []
    before = store.bytes_read
    end0 = header.prefix_end(1)
    assert store.read(keys[0], 0, end0) == blob[:end0]
    assert store.bytes_read - before == end0  # a range read, not the whole file
    assert store.read(keys[0]) == blob
    layout = store.layout(keys[0])
    assert layout.complete and layout.size == len(blob)
    assert store.probe_bytes < 300  # the layer table comes from a small header probe
    store.write_json(keys[0], {"boxes": []})
    assert store.read_json(keys[0]) == {"boxes": []}
    assert store.read_json(keys[1]) is None
    with pytest.raises(VCMError, match="not found"):
        store.read(FrameKey("cam1", 1))


def test_crash_mid_write_leaves_no_visible_frame(tmp_path, blob, monkeypatch):
    store = FrameStore(tmp_path)
    key = FrameKey("cam", 42)

    def crash(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        store.write(key, blob)
    monkeypatch.undo()
    assert store.frames("cam") == [] and not store.has(key)
    assert os.listdir(tmp_path / "cam") == []  # the temp file went too
    # a temp file left by a killed process is never listed as a frame
    (tmp_path / "cam" / f".{key.ts:016d}.vcm.dead.part").write_bytes(blob[:100])
    assert store.frames("cam") == []
    store.write(key, blob)
    assert store.frames("cam") == [key] and store.read(key) == blob


def test_store_on_another_fsspec_filesystem(blob, header):
    store = FrameStore("memory://vcm-edge-test")
    key = FrameKey("cam", 7)
    store.write(key, blob[: header.prefix_end(1)])
    assert store.layout(key).stored_layers == 1
    store.write(key, blob)
    assert store.layout(key).complete
    assert (
        store.read(key, header.prefix_end(1), header.prefix_end(2))
        == blob[header.prefix_end(1) : header.prefix_end(2)]
    )
    assert store.frames("cam") == [key]
    store.fs.rm(store.root, recursive=True)


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=5-", (5, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=90-200", (90, 100)),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=x-y", None),
        ("bytes=7-3", None),
        ("bytes=5-3", None),
        ("bytes= 1-2", None),
        ("bytes=-", None),
        ("bytes=\u0661-2", None),
    ],
)
def test_parse_range(value, expected):
    """RFC 9110 §14.1.1/§14.2: a range whose last position is below its first, or one that
    does not parse, is ignored (the whole representation, 200), not answered 416."""
    assert parse_range(value, 100) == expected


@pytest.mark.parametrize("value", ["bytes=100-", "bytes=-0", "bytes=100-200"])
def test_parse_range_unsatisfiable(value):
    with pytest.raises(HTTPProblem) as err:
        parse_range(value, 100)
    assert err.value.status == 416


def test_camera_sources_images_and_video(tmp_path, photo):
    import cv2

    from vcm_plugin.edge.sources import iter_frames

    video = tmp_path / "clip.avi"
    h, w = photo.shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    for i in range(6):
        writer.write(np.ascontiguousarray(np.roll(photo, 4 * i, axis=1)[..., ::-1]))
    writer.release()
    frames = list(iter_frames(video, every=2))
    assert [f.name for f in frames] == ["clip.avi#0", "clip.avi#2", "clip.avi#4"]
    assert frames[0].rgb.shape == photo.shape and frames[0].rgb.dtype == np.uint8
    assert abs(frames[0].rgb.astype(int) - photo).mean() < 12  # RGB order kept, MJPG loss
    # capture times follow the video's own clock (5 frames/s): 400 ms apart every 2nd frame
    assert [b.ts - a.ts for a, b in zip(frames, frames[1:], strict=False)] == [400_000] * 2
    # --fps on capture time: 2.5 frames/s of a 5 frames/s video is every other frame
    assert [f.name for f in iter_frames(video, fps=2.5)] == [
        "clip.avi#0",
        "clip.avi#2",
        "clip.avi#4",
    ]
    from PIL import Image

    for i in range(3):
        Image.fromarray(photo).save(tmp_path / f"f{i}.png")
    assert len(list(iter_frames(tmp_path, limit=2))) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VCMError, match="no images"):
        list(iter_frames(empty))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk")
    with pytest.raises(VCMError, match="cannot open"):
        list(iter_frames(junk))
