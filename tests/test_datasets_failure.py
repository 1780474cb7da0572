"""A failed ``encode-dataset`` leaves DST as it found it (issue 20: a Ray address without a
cluster left ``DST/vcm-shards.json`` behind): a DST it created is removed, parents included;
in an existing DST only its own new files go and the job file and index it replaced come
back. Shards it finished stay, so a rerun resumes instead of starting over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vcm_plugin import VCMError
from vcm_plugin.datasets import encode_dataset

FAST = "fast"  # the DCT preset (named "default" before the preset rename): no weights, quick


def folder(root: Path, names: list[str], broken: str | None = None) -> Path:
    """A plain image folder of small pictures; ``broken`` is a file that is not an image."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)).save(root / name)
    if broken:
        (root / broken).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def files(dst: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(dst.iterdir())}


def encode(src, dst, **kwargs):
    return encode_dataset(src, dst, preset=FAST, shard_size=1, workers=1, progress=False, **kwargs)


def test_failure_removes_a_dst_it_created(tmp_path):
    src = folder(tmp_path / "src", ["b.png"], broken="a.png")  # the first shard fails
    with pytest.raises(VCMError, match="a.png"):
        encode(src, tmp_path / "new" / "deeper" / "dst")
    assert not (tmp_path / "new").exists()


def test_failure_in_an_empty_dst_leaves_it_empty(tmp_path):
    src = folder(tmp_path / "src", ["b.png"], broken="a.png")
    (tmp_path / "dst").mkdir()
    with pytest.raises(VCMError):
        encode(src, tmp_path / "dst")
    assert list((tmp_path / "dst").iterdir()) == []


def test_failed_rerun_keeps_the_finished_data_set(tmp_path):
    src = folder(tmp_path / "src", ["a.png", "b.png"])
    dst = tmp_path / "dst"
    encode(src, dst)
    before = files(dst)
    folder(src, [], broken="c.png")  # a new, unreadable image: the rerun fails on it
    with pytest.raises(VCMError, match="c.png"):
        encode(src, dst)
    assert files(dst) == before  # index.json and the job file as they were, no shard-00002


def test_finished_shards_survive_for_the_rerun(tmp_path):
    src = folder(tmp_path / "src", ["a.png", "b.png"], broken="c.png")
    dst = tmp_path / "dst"
    with pytest.raises(VCMError, match="c.png"):
        encode(src, dst)
    assert sorted(files(dst)) == [
        "shard-00000.json",
        "shard-00000.tar",
        "shard-00001.json",
        "shard-00001.tar",
        "vcm-shards.json",
    ]
    (src / "c.png").unlink()
    folder(src, ["a.png", "b.png", "c.png"])
    report = encode(src, dst)
    assert report["skipped"] == ["shard-00000", "shard-00001"]
    assert report["encoded"] == ["shard-00002"]


def test_cli_ray_without_a_cluster_leaves_nothing(tmp_path):
    """The issue's case: ``--ray-address auto`` with no cluster running fails fast."""
    src = folder(tmp_path / "src", ["a.png"])
    ray_tmp = tmp_path / "ray"  # where Ray looks for a running instance: none there
    ray_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vcm_plugin.cli",
            "encode-dataset",
            str(src),
            str(tmp_path / "dst"),
            "--engine",
            "ray",
            "--ray-address",
            "auto",
            "--preset",
            FAST,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(env, RAY_TMPDIR=str(ray_tmp)),
    )
    assert result.returncode == 1 and "cannot start or reach Ray" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "dst").exists()
