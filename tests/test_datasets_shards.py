"""``vcm encode-dataset`` with the local engine: shard format and index, resuming after a kill,
re-encoding a corrupted shard, and the error contract (VCMError / exit 1, no traceback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from datasets_helpers import REPO, make_voc, make_yolo, snapshot

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec.presets import DEFAULT_PRESET
from vcm_plugin.datasets import encode_dataset

pytestmark = pytest.mark.needs_shared("data/coco128", "data/voc2012-seg-val")


@pytest.fixture(scope="module")
def yolo6(tmp_path_factory) -> Path:
    return make_yolo(tmp_path_factory.mktemp("yolo6"))


@pytest.fixture(scope="module")
def encoded(yolo6, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("shards") / "out"
    report = encode_dataset(yolo6, dst, shard_size=2, workers=2, progress=False)
    assert report["encoded"] == ["shard-00000", "shard-00001", "shard-00002"]
    assert report["skipped"] == [] and report["images"] == 6
    return dst


def test_shards_index_and_members(encoded, yolo6):
    index = json.loads((encoded / "index.json").read_text())
    assert index["layout"] == "yolo" and index["num_samples"] == 6 and index["shard_size"] == 2
    assert "names" in index["meta"]["data.yaml"]
    codec = Codec()
    keys = []
    for shard in index["shards"]:
        tar_path = encoded / shard["shard"]
        data = tar_path.read_bytes()
        assert shard["size"] == len(data)
        manifest = json.loads(tar_path.with_suffix(".json").read_text())
        assert manifest == shard
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
            for m in shard["members"]:
                keys.append(m["key"])
                blob = tar.extractfile(f"{m['key']}.vcm").read()
                # the index's byte range is the stream
                assert data[m["offset"] : m["offset"] + m["length"]] == blob
                info = codec.inspect(blob)
                assert m["layer_bytes"] == info.layer_bytes
                assert m["layer_offsets"] == info.layer_offsets
                assert (m["width"], m["height"]) == (info.width, info.height)
                label = yolo6 / "labels" / f"{m['key']}.txt"
                if label.is_file():
                    lab = m["labels"]["txt"]
                    assert data[lab["offset"] : lab["offset"] + lab["length"]] == label.read_bytes()
                    assert f"{m['key']}.txt" in names
        assert len(shard["members"]) == 2
    assert keys == sorted(p.stem for p in (yolo6 / "images").iterdir())
    assert len(codec.decode(blob, layers=1).shape) == 3


def test_rerun_skips_verified_shards(encoded, yolo6):
    before = snapshot(encoded)
    report = encode_dataset(yolo6, encoded, shard_size=2, workers=1, progress=False)
    assert report["encoded"] == [] and len(report["skipped"]) == 3
    assert snapshot(encoded) == before


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest"])
def test_corrupted_shard_is_detected_and_redone(encoded, yolo6, damage):
    before = snapshot(encoded)
    tar = encoded / "shard-00001.tar"
    if damage == "flip":
        data = bytearray(tar.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tar.write_bytes(bytes(data))
    elif damage == "truncate":
        tar.write_bytes(tar.read_bytes()[:1000])
    else:
        (encoded / "shard-00001.json").write_text("{not json")
    report = encode_dataset(yolo6, encoded, shard_size=2, workers=1, progress=False)
    assert report["encoded"] == ["shard-00001"]
    assert report["skipped"] == ["shard-00000", "shard-00002"]
    after = snapshot(encoded)
    for name in ("shard-00000.tar", "shard-00000.json", "shard-00002.tar", "shard-00002.json"):
        assert after[name] == before[name], name  # not rewritten
    assert after["shard-00001.tar"][1] == before["shard-00001.tar"][1]  # deterministic redo


@pytest.mark.slow
def test_changed_source_redoes_its_shard(yolo6, tmp_path):
    src = make_yolo(tmp_path / "src", n=4)
    dst = tmp_path / "out"
    encode_dataset(src, dst, shard_size=2, workers=1, progress=False)
    label = sorted((src / "labels").glob("*.txt"))[-1]
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    report = encode_dataset(src, dst, shard_size=2, workers=1, progress=False)
    assert report["encoded"] == ["shard-00001"] and report["skipped"] == ["shard-00000"]


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_shards(yolo6, tmp_path):
    dst = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vcm_plugin.cli",
            "encode-dataset",
            str(yolo6),
            str(dst),
            "--shard-size",
            "2",
            "--workers",
            "1",
            "--quiet",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    first = dst / "shard-00000.json"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run: the next shard is being encoded
    proc.wait()
    assert first.exists(), proc.stderr.read().decode()
    done = sorted(p.stem for p in dst.glob("shard-*.json"))
    assert "shard-00002" not in done, "the run finished before it was killed"
    assert not (dst / "index.json").exists()
    before = snapshot(dst)
    report = encode_dataset(yolo6, dst, shard_size=2, workers=1, progress=False)
    assert report["skipped"] == done
    assert report["encoded"] == [
        s for s in ("shard-00000", "shard-00001", "shard-00002") if s not in done
    ]
    after = snapshot(dst)
    for name in done:
        for ext in (".tar", ".json"):
            assert after[name + ext] == before[name + ext]  # same mtime, same bytes
    assert not [p for p in dst.iterdir() if p.name.endswith(".part")]  # temp files cleaned
    assert (dst / "index.json").is_file()


def test_voc_layout_keeps_masks(tmp_path):
    src = make_voc(tmp_path / "voc", n=3)
    report = encode_dataset(src, tmp_path / "out", shard_size=2, workers=1, progress=False)
    assert report["shards"] == 2
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["layout"] == "voc" and "classes.json" in index["meta"]
    m = index["shards"][0]["members"][0]
    data = (tmp_path / "out" / "shard-00000.tar").read_bytes()
    lab = m["labels"]["seg.png"]
    mask = src / "SegmentationClass" / f"{m['key']}.png"
    assert data[lab["offset"] : lab["offset"] + lab["length"]] == mask.read_bytes()


def test_plain_folder_layout(tmp_path):
    src = tmp_path / "photos" / "sub"
    src.mkdir(parents=True)
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (40 + i, 30), (i * 50, 100, 200)).save(src / f"p{i}.png")
    (src / "notes.txt").write_text("not an image")
    report = encode_dataset(
        tmp_path / "photos", tmp_path / "out", shard_size=5, workers=1, progress=False
    )
    assert report["shards"] == 1 and report["images"] == 3
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [m["key"] for m in index["shards"][0]["members"]] == ["sub/p0", "sub/p1", "sub/p2"]


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_vcmerror(yolo6, tmp_path):
    with pytest.raises(VCMError, match="does not exist"):
        encode_dataset(tmp_path / "missing", tmp_path / "out")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(VCMError, match="not a directory"):
        encode_dataset(yolo6, afile)
    assert afile.read_text() == "mine"
    with pytest.raises(VCMError, match="shard size"):
        encode_dataset(yolo6, tmp_path / "out", shard_size=0)
    with pytest.raises(VCMError, match="unknown layout"):
        encode_dataset(yolo6, tmp_path / "out", layout="coco")
    with pytest.raises(VCMError, match="not in VOC layout"):
        encode_dataset(yolo6, tmp_path / "out", layout="voc")
    with pytest.raises(VCMError, match="unknown engine"):
        encode_dataset(yolo6, tmp_path / "out", engine="spark")
    with pytest.raises(VCMError, match="workers"):
        encode_dataset(yolo6, tmp_path / "out", workers=0)
    with pytest.raises(VCMError, match="unknown preset"):
        encode_dataset(yolo6, tmp_path / "out", preset="nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VCMError, match="no images found"):
        encode_dataset(empty, tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    with pytest.raises(VCMError, match="not empty"):
        encode_dataset(yolo6, busy)
    assert [p.name for p in busy.iterdir()] == ["thesis.tex"]
    assert not (tmp_path / "out").exists()  # nothing written before the checks pass


def test_options_object_and_library_wording(yolo6, tmp_path):
    from vcm_plugin.datasets import EncodeOptions

    assert EncodeOptions(preset="default").checked().preset == DEFAULT_PRESET  # alias resolved
    with pytest.raises(VCMError, match="applies only to the ray engine") as err:
        encode_dataset(yolo6, tmp_path / "out", EncodeOptions(ray_address="auto"))
    assert "--" not in str(err.value)  # the library speaks of engines, the CLI of flags
    with pytest.raises(VCMError, match="shard size"):  # keywords override the options' fields
        encode_dataset(yolo6, tmp_path / "out", EncodeOptions(shard_size=2), shard_size=0)
    assert not (tmp_path / "out").exists()


def test_other_configuration_in_dst_is_refused(encoded, yolo6):
    with pytest.raises(VCMError, match="shard_size=2"):
        encode_dataset(yolo6, encoded, shard_size=3, progress=False)


def test_ray_missing_is_a_clear_error(yolo6, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(VCMError, match="pip install 'vcm_plugin\\[ray\\]'"):
        encode_dataset(yolo6, tmp_path / "out", engine="ray", shard_size=6, progress=False)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vcm_plugin.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )


def test_cli_errors_exit_nonzero_without_traceback(yolo6, tmp_path):
    r = _cli("encode-dataset", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert r.returncode == 1 and "vcm: error: source" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("encode-dataset", str(yolo6), str(tmp_path / "out"), "--shard-size", "0")
    assert r.returncode == 1 and "shard size must be an integer >= 1" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("encode-dataset", str(yolo6), str(tmp_path / "out"), "--ray-address", "auto")
    assert r.returncode == 1 and "--ray-address needs --engine ray" in r.stderr
