"""One smoke run of each task on 1-2 real images (default preset), plus the command line's
error contract. Needs ../shared/data and the task models, and the task frameworks for the
smoke runs; where one is missing the tests skip and say which (tests/conftest.py)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vcm_eval.bd_rate import bd_rate
from vcm_eval.paths import REPO_ROOT
from vcm_eval.rate_accuracy import main
from vcm_eval.report import bd_table, results_table

DATA = REPO_ROOT.parent / "shared" / "data"
CODECS = "vcm,jpeg,webp,avif,jxl"
pytestmark = pytest.mark.needs_shared(
    "data/coco-val2017",
    "data/coco-panoptic-val2017",
    "data/300w-helen-test",
    "data/kodak",
    "models/yolov5n.pt",
)

CASES = {  # data set, images, extra arguments
    "detection": ("coco-val2017", 2, []),
    "segmentation": ("coco-panoptic-val2017", 2, []),
    "landmarks": ("300w-helen-test", 2, ["--workers", "2"]),  # also covers the process pool
    # one Kodak photo: four picture metrics on every point make it the slowest case
    "quality": ("kodak", 1, ["--metric", "ms-ssim"]),
}


def _check_outputs(out: Path, task: str, images: int) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task
    assert {"metric", "higher_is_better", "curves", "bd_rate_vs"} <= summary.keys()
    assert set(summary["curves"]) == set(CODECS.split(","))
    for name, pts in summary["curves"].items():
        assert len(pts) >= (3 if name == "vcm" else 4), name  # tae's viewer points: three
        for p in pts:
            assert {"setting", "bpp", "metric"} <= p.keys()
            assert p["bpp"] > 0 and p["metric"] == p["metric"]  # not NaN
    # every point for the model tasks; a person's views (the viewer points) for quality
    from vcm_plugin.codec.api import layer_roles
    from vcm_plugin.codec.presets import get_preset

    roles = layer_roles(get_preset(summary["preset"]))
    first = roles.index("texture") + 1 if task == "quality" else 1
    settings = [p["setting"] for p in summary["curves"]["vcm"]]
    assert settings[0] == f"layers={first}"
    if task == "quality":  # every viewer point, up to the whole stream
        assert settings == [f"layers={k}" for k in range(first, len(roles) + 1)]
    assert set(summary["bd_rate_vs"]) == {"jpeg", "webp", "avif", "jxl"}
    vcm = summary["curves"]["vcm"]
    for name, value in summary["bd_rate_vs"].items():  # recomputable from the curves alone
        pts = summary["curves"][name]
        again = bd_rate(
            [p["bpp"] for p in pts],
            [p["metric"] for p in pts],
            [p["bpp"] for p in vcm],
            [p["metric"] for p in vcm],
            higher_is_better=summary["higher_is_better"],
        )
        assert value == (None if again is None else pytest.approx(again, abs=1e-3))
    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    n_points = sum(len(p) for p in summary["curves"].values())
    assert len(rows) == images * (n_points + 1)  # + the uncompressed original
    assert {r["image"] for r in rows} and all(float(r["bpp"]) > 0 for r in rows)
    assert task in bd_table([summary])  # report renders and re-checks every BD-rate
    png = (out / "rate_accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    _check_levels(summary, out)
    return summary


SECONDARY = {
    "detection": set(),
    "landmarks": set(),
    "segmentation": {
        "person IoU",
        "mask fidelity (selfie)",
        "mask fidelity (selfie-landscape)",
        "mask fidelity (pose)",
    },
    "quality": {"haarpsi", "ssimulacra2", "psnr"},
}  # primary ms-ssim in CASES


def _check_levels(summary: dict, out: Path) -> None:
    """The rate-at-accuracy keys (issue 13) for the primary metric and every secondary one."""
    levels = ["0.8", "0.9", "0.95"]
    assert summary["accuracy_levels"] == [0.8, 0.9, 0.95]
    assert list(summary["accuracy_targets"]) == levels
    assert set(summary["rate_at_accuracy"]) == set(CODECS.split(","))
    for v in summary["rate_at_accuracy"].values():
        assert list(v) == levels and all(x is None or x > 0 for x in v.values())
    assert set(summary["rate_ratio_vs"]) == {"jpeg", "webp", "avif", "jxl"}
    for name, v in summary["rate_ratio_vs"].items():
        for k in levels:
            vcm, base = summary["rate_at_accuracy"]["vcm"][k], summary["rate_at_accuracy"][name][k]
            assert v[k] == (None if vcm is None or base is None else pytest.approx(vcm / base))
    assert "extended" in summary["settings_probe"]
    by = summary["by_metric"]
    assert set(by) == {summary["metric"]} | SECONDARY[summary["task"]]
    assert by[summary["metric"]]["rate_at_accuracy"] == summary["rate_at_accuracy"]
    for r in by.values():
        assert {"bd_rate_vs", "rate_at_accuracy", "rate_ratio_vs", "targets"} <= r.keys()
        assert set(r["bd_rate_vs"]) == {"jpeg", "webp", "avif", "jxl"}
    assert len(list(out.glob("rate_accuracy_*.png"))) == len(by) - 1  # one plot per metric
    assert summary["task"] in results_table([summary])  # README table renders, re-checks


@pytest.mark.parametrize("task", list(CASES))
@pytest.mark.slow
@pytest.mark.needs_framework(
    "ultralytics",
    "pycocotools",
    "mediapipe",
    "dlib",
    "face_recognition_models",
    "piq",
    "ssimulacra2",
    "pillow_jxl",
)
def test_smoke_run(task: str, tmp_path: Path) -> None:
    data, images, extra = CASES[task]
    out = tmp_path / task
    rc = main(
        [
            "--task",
            task,
            "--data",
            str(DATA / data),
            "--codecs",
            CODECS,
            "--out",
            str(out),
            "--limit",
            str(images),
            "--num-settings",
            "6",
            "--quiet",
            *extra,
        ]
    )
    assert rc == 0
    s = _check_outputs(out, task, images)
    assert s["num_images"] == images
    if task == "quality":
        assert s["metric"] == "ms-ssim" and s["higher_is_better"]
        assert s["by_metric"]["psnr"]["targets"] == {} and s["by_metric"]["psnr"]["levels_note"]
        assert s["original"]["ssimulacra2"] == pytest.approx(100.0)
    if task == "segmentation":
        assert s["metric"] == "mask fidelity" and s["original"]["metric"] == 1.0
        assert 0 <= s["original"]["person IoU"] <= 1
    if task == "landmarks":
        assert s["metric"] == "NME" and not s["higher_is_better"]
        assert 0 < s["original"]["metric"] < 15  # dlib on clean HELEN faces: a few per cent


def test_limit_takes_first_files_in_sorted_order(tmp_path: Path) -> None:
    out = tmp_path / "q"
    assert (
        main(
            [
                "--task",
                "quality",
                "--data",
                str(DATA / "kodak"),
                "--codecs",
                "jpeg",
                "--out",
                str(out),
                "--limit",
                "2",
                "--qualities",
                "jpeg=10,50,90",
                "--quiet",
            ]
        )
        == 0
    )
    with (out / "per_image.csv").open() as f:
        images = {r["image"] for r in csv.DictReader(f)}
    assert images == set(sorted(p.stem for p in (DATA / "kodak").glob("*.png"))[:2])
    summary = json.loads((out / "summary.json").read_text())
    assert [p["setting"] for p in summary["curves"]["jpeg"]] == ["q=10", "q=50", "q=90"]
    assert summary["bd_rate_vs"] == {}  # no vcm curve, nothing to compare


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--task", "nope", "--data", "{kodak}"], "unknown task"),
        (["--task", "quality", "--data", "{kodak}", "--codecs", "vcm,bmp"], "unknown codec"),
        (["--task", "quality", "--data", "/nonexistent/dir"], "does not exist"),
        (["--task", "detection", "--data", "{kodak}"], "data.yaml"),  # wrong layout
        (["--task", "segmentation", "--data", "{kodak}"], "JPEGImages"),
        (["--task", "detection", "--data", "{kodak}", "--imgsz", "500"], "--imgsz"),
    ],
)
def test_bad_input_is_one_line_error(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{kodak}", str(DATA / "kodak")) for a in argv]
    rc = main([*argv, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and needle in err[0] and err[0].startswith("error:")


def test_cli_error_has_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vcm_eval.rate_accuracy",
            "--task",
            "quality",
            "--data",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
