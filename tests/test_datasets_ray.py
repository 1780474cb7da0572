"""The Ray engines on a local 2-CPU Ray instance started here: ``encode-dataset`` writes the
same bytes as the local process pool, and ``vcm_eval.rate_accuracy --engine ray`` gives the local
run's ``summary.json``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets_helpers import SHARED, make_yolo

from vcm_plugin.datasets import encode_dataset

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = [
    pytest.mark.needs_framework("ray"),
    pytest.mark.needs_shared("data/coco128", "data/kodak"),
]


@pytest.fixture(scope="module")
def ray_local():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_ray_shards_identical_to_local(ray_local, tmp_path):
    src = make_yolo(tmp_path / "src", n=6)
    local = encode_dataset(src, tmp_path / "local", shard_size=2, workers=2, progress=False)
    remote = encode_dataset(src, tmp_path / "ray", engine="ray", shard_size=2, progress=False)
    assert remote["encoded"] == local["encoded"] == ["shard-00000", "shard-00001", "shard-00002"]
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ray").iterdir())
    for name in names:  # tars, manifests, index: byte for byte
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), (
            name
        )
    assert ray_local.is_initialized()  # the engine reused the running instance
    again = encode_dataset(src, tmp_path / "ray", engine="ray", shard_size=2, progress=False)
    assert again["encoded"] == [] and len(again["skipped"]) == 3


@pytest.mark.slow
def test_rate_accuracy_ray_equals_local(ray_local, tmp_path):
    from PIL import Image

    from vcm_eval.rate_accuracy import main

    data = tmp_path / "kodak3"
    data.mkdir()
    for p in sorted((SHARED / "data" / "kodak").glob("*.png"))[:3]:
        with Image.open(p) as im:  # small copies keep the run cheap
            im.convert("RGB").resize((256, 170)).save(data / p.name)
    common = [
        "--task",
        "quality",
        "--data",
        str(data),
        "--codecs",
        "vcm,jpeg",
        "--qualities",
        "jpeg=15,40,80",
        "--metric",
        "psnr",
        "--quiet",
    ]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    a = json.loads((tmp_path / "local" / "summary.json").read_text())
    b = json.loads((tmp_path / "ray" / "summary.json").read_text())
    volatile = {"seconds", "command", "code_version"}
    assert {k: v for k, v in a.items() if k not in volatile} == {
        k: v for k, v in b.items() if k not in volatile
    }
    assert a["num_images"] == 3 and len(a["curves"]["vcm"]) >= 3
    assert (tmp_path / "local" / "per_image.csv").read_text() == (
        tmp_path / "ray" / "per_image.csv"
    ).read_text()
    assert np.isfinite(a["curves"]["jpeg"][0]["metric"])


def test_rate_accuracy_ray_address_needs_ray_engine(tmp_path):
    from vcm_eval.rate_accuracy import main

    assert (
        main(
            [
                "--task",
                "quality",
                "--data",
                str(SHARED / "data" / "kodak"),
                "--codecs",
                "jpeg",
                "--qualities",
                "jpeg=50",
                "--limit",
                "1",
                "--quiet",
                "--out",
                str(tmp_path / "x"),
                "--ray-address",
                "auto",
            ]
        )
        == 2
    )
