"""The speed and determinism instruments measure what the codec does: the photo-alone layers
that vcm_eval.bench_speed times are the layers a stream carries, and vcm_eval.thread_drift
reports every generator point."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from vcm_eval import thread_drift
from vcm_plugin import Codec
from vcm_plugin.codec import container
from vcm_plugin.codec.api import photo_jobs
from vcm_plugin.codec.presets import get_preset


def _photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[40:104, 140:236])


@pytest.mark.parametrize(("preset", "jobs", "layers"), [("tae", 1, 3), ("tae-0.3", 7, 7)])
def test_photo_jobs_write_the_streams_trailing_layers(preset, jobs, layers):
    img = _photo()
    blob = Codec.from_preset(preset).encode(img)
    header = container.parse_header(blob, container.NO_PIXEL_LIMIT)
    coders = photo_jobs(get_preset(preset))
    assert len(coders) == jobs  # tae: one layered encode; 0.3: one AVIF per layer
    payloads = [payload for job in coders for payload in job(img)]
    assert len(payloads) == layers
    tail = range(header.num_layers - layers, header.num_layers)
    for payload, index in zip(payloads, tail, strict=True):
        assert payload == container.layer_payload(blob, header, index)


def test_fast_preset_has_no_photo_alone_layers():
    assert photo_jobs(get_preset("fast")) == []  # its textures are coded against layer 0


def test_thread_drift_reports_every_generator_point(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(_photo()).save(folder / "a.png")
    out = tmp_path / "drift.json"
    thread_drift.main(["--data", str(folder), "--threads", "1,1", "--out", str(out)])
    rows = json.loads(out.read_text())
    roles = Codec().inspect(Codec().encode(_photo())).layer_roles
    generator = [k for k, r in enumerate(roles, 1) if r in thread_drift.GENERATOR_ROLES]
    assert [r["point"] for r in rows] == generator and len(generator) == 3
    assert all(r["max_levels"] == 0 and r["share"] == 0.0 for r in rows)  # same count: same
    assert "largest: 0 levels" in capsys.readouterr().out
