"""Issue 30's machine-filter ablation (``vcm_eval.machine_filter``): an unfitted filter is the
identity, the eval codecs ``vcm-machine`` / ``avif-machine`` send the same bytes and decode
through the fitted weights (or say how to fit them), and the fitting script runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from vcm_eval import fit_machine_filter, machine_filter
from vcm_eval.codecs import make_codec
from vcm_plugin import VCMError
from vcm_plugin.taskmodels.detect import default_weights

BSDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "train-bsds500"
needs_yolo = pytest.mark.skipif(not default_weights().is_file(), reason="yolov5n.pt not found")


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``VCM_MACHINE_FILTER`` set to a file the test writes (the loader's cache cleared)."""
    path = tmp_path / "machine_filter.pt"
    monkeypatch.setenv("VCM_MACHINE_FILTER", str(path))
    machine_filter.fitted.cache_clear()
    yield path
    machine_filter.fitted.cache_clear()


def test_unfitted_filter_is_the_identity_and_keeps_odd_sizes():
    img = np.ascontiguousarray(data.astronaut()[:63, :81])
    out = machine_filter.apply(machine_filter.MachineFilter().eval(), img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out, img)


def test_bad_pictures_are_refused():
    net = machine_filter.MachineFilter().eval()
    with pytest.raises(VCMError, match="uint8"):
        machine_filter.apply(net, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(VCMError, match=r"\(H, W, 3\)"):
        machine_filter.apply(net, np.zeros((8, 8), np.uint8))


def test_missing_weights_say_how_to_fit_them(weights):
    with pytest.raises(VCMError, match="vcm_eval.fit_machine_filter"):
        make_codec("avif-machine").decode(make_codec("avif").encode(data.astronaut(), 30))


def test_machine_codecs_send_the_same_bytes_and_filter_the_pictures(weights):
    net = machine_filter.MachineFilter()
    with torch.no_grad():  # a filter that is not the identity: it adds 0.1 to every pixel
        last = net.body[-2]
        last.bias.fill_(0.1)
    torch.save(net.state_dict(), weights)
    img = np.ascontiguousarray(data.astronaut()[40:104, 140:236])
    avif, avif_machine = make_codec("avif"), make_codec("avif-machine")
    blob = avif.encode(img, 30)
    plain = avif.decode(blob)
    filtered = avif_machine.decode(blob)
    expected = np.clip(plain.astype(int) + round(0.1 * 255), 0, 255)
    assert np.abs(filtered.astype(int) - expected).max() <= 1
    vcm, vcm_machine = make_codec("vcm", "tae"), make_codec("vcm-machine", "tae")
    points, machine_points = list(vcm.points(img)), list(vcm_machine.points(img))
    assert [p.nbytes for p in points] == [p.nbytes for p in machine_points]
    assert all(
        np.array_equal(m.image, machine_filter.for_machines(p.image))
        for p, m in zip(points, machine_points, strict=True)
    )


@needs_yolo
@pytest.mark.skipif(not BSDS.is_dir(), reason="train-bsds500 not found")
def test_fitting_script_fits_and_keeps_the_best_checkpoint(tmp_path: Path):
    fit_machine_filter.main(
        ["--data", str(BSDS), "--out", str(tmp_path), "--limit", "2", "--steps", "3",
         "--every", "1", "--batch", "2"]
    )  # fmt: skip
    report = json.loads((tmp_path / "fit.json").read_text())
    assert [r["step"] for r in report["history"]] == [0, 1, 2, 3]
    assert report["best_val_loss"] == min(r["val_loss"] for r in report["history"])
    assert report["pictures_per_photo"] == 4 + len(fit_machine_filter.EXTRA_QUALITIES)
    assert (tmp_path / "fit.png").is_file()
    net = machine_filter.MachineFilter()
    net.load_state_dict(torch.load(tmp_path / "machine_filter.pt", weights_only=True))
    # the file holds the chosen checkpoint: the unfitted one (zero last layer) only if no
    # fitted step beat it, else one whose zero-initialised last layer moved
    moved = bool(net.body[-2].weight.abs().sum() > 0)
    assert moved == (report["best_val_loss"] < report["history"][0]["val_loss"])
