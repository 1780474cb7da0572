"""``vcm_eval.bench_training``: the plumbing of the training-speed benchmark, not its numbers.

A tiny run (8 coco128 images, 64 px, 2 epochs, the ``fast`` preset, 2 DataLoader workers)
trains a real ultralytics detector in three modes and must write the JSON the issue names, the
plot and the table; the transform timings must arrive from the worker processes. No assertion
compares times with each other or with a threshold: only that they exist and are positive.
Bad input must fail with a VCMError before anything is trained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vcm_eval.bench_training import main, parse_layers_arg, run
from vcm_plugin.errors import VCMError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VCM_SHARED_DIR", REPO.parent / "shared"))
COCO128 = SHARED / "data" / "coco128"
N_IMAGES = 8
EPOCHS = 2


@pytest.mark.slow
@pytest.mark.needs_shared("data/coco128")
@pytest.mark.needs_framework("ultralytics", "albumentations", "matplotlib")
def test_bench_training_writes_json_plot_and_table(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(
        [
            "--data",
            str(COCO128),
            "--epochs",
            str(EPOCHS),
            "--out",
            str(out),
            "--limit",
            str(N_IMAGES),
            "--imgsz",
            "64",
            "--batch",
            "4",
            "--modes",
            "none,jpeg,vcm-cache,vcm-points",
            "--preset",
            "fast",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    report = json.loads((out / "bench_training.json").read_text())
    assert report["device"] == "cpu"
    assert report["settings"]["images"] == N_IMAGES and report["settings"]["workers"] == 2
    assert list(report["modes"]) == ["none", "jpeg", "vcm-cache", "vcm-points"]
    for mode, m in report["modes"].items():
        assert len(m["epoch_s"]) == EPOCHS and all(t > 0 for t in m["epoch_s"]), mode
        assert len(m["transform_s"]) == EPOCHS and len(m["transform_calls"]) == EPOCHS, mode
        # kept on the CPU, where ultralytics would set 0 (it caps them at the CPU count)
        assert m["workers"] == min(2, os.cpu_count() or 1), mode
    none = report["modes"]["none"]
    assert none["transform_s"] == [0.0] * EPOCHS and none["transform_calls"] == [0] * EPOCHS
    for mode in ("jpeg", "vcm-cache", "vcm-points"):
        m = report["modes"][mode]
        # the calls ran in the worker processes and reached the log; workers prefetch across
        # epoch ends, so only the sum over the epochs is certain: every sample of every epoch
        # was compressed (vcm-cache: each mosaic's four loads) before the last epoch ended
        assert sum(m["transform_s"]) > 0, mode
        assert sum(m["transform_calls"]) >= EPOCHS * N_IMAGES, mode
    # one stream per distinct picture: the second epoch decoded, it did not encode again
    assert report["modes"]["vcm-cache"]["cache_streams"] == N_IMAGES
    assert report["modes"]["vcm-cache"]["cache_points"] == 0
    # vcm-points: also the picture of the drawn point (fast's analytics point, a latent one)
    points = report["modes"]["vcm-points"]
    assert points["cache_streams"] == N_IMAGES and points["cache_points"] == N_IMAGES
    png = (out / "bench_training.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "bench_training.md").read_text()
    assert all(f"| {mode} |" in table for mode in report["modes"])
    lines = capsys.readouterr().out.splitlines()
    for mode in report["modes"]:  # one progress line per mode and epoch
        assert sum(line.startswith(f"{mode}: epoch ") for line in lines) == EPOCHS


def _yolo_dir(root: Path, images: int) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(images):
        (root / "images" / f"{i}.jpg").write_bytes(b"")
    return root


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"data": "missing"}, "does not exist"),
        ({"data": "empty"}, "no images found"),
        ({"data": "flat"}, "not in YOLO layout"),
        ({"modes": ["none", "webp"]}, "unknown mode(s) webp; known modes: none, jpeg"),
        ({"modes": []}, "--modes is empty"),
        ({"epochs": 0}, "--epochs must be >= 1"),
        ({"limit": 0}, "--limit must be >= 1"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
    ],
)
def test_bench_training_bad_input_raises_vcmerror(tmp_path, kwargs, needle):
    data = {
        "missing": lambda: tmp_path / "nowhere",
        "empty": lambda: _yolo_dir(tmp_path / "empty", 0),
        "flat": lambda: tmp_path,  # images, but no images/ + labels/
        None: lambda: _yolo_dir(tmp_path / "ok", 1),
    }[kwargs.pop("data", None)]()
    (tmp_path / "photo.jpg").write_bytes(b"")
    with pytest.raises(VCMError) as err:
        run(data, tmp_path / "out", **kwargs)
    assert needle in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_bench_training_layers_option():
    assert parse_layers_arg("analytics") == "analytics"
    assert parse_layers_arg("all") is None
    assert parse_layers_arg("2") == 2
    assert parse_layers_arg("1-4") == (1, 4)
    with pytest.raises(VCMError, match="--layers must be"):
        parse_layers_arg("two")
    with pytest.raises(VCMError, match="range must satisfy"):
        parse_layers_arg("4-1")


def test_bench_training_command_reports_bad_input_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vcm_eval.bench_training",
            "--data",
            str(tmp_path / "nowhere"),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --data {tmp_path / 'nowhere'} does not exist"
    )
    assert "Traceback" not in proc.stderr
