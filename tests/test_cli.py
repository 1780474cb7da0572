"""The `vcm` command: contracts of DESIGN section 5, one-line errors, no silent overwrite."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image


def vcm(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vcm_plugin.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_encode_info_decode(tmp_path, photo):
    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    stream = tmp_path / "out.vcm"
    assert vcm("encode", src, stream).returncode == 0
    info = json.loads(vcm("info", stream).stdout)
    assert info["preset"] == "default" and info["width"] == photo.shape[1]
    assert len(info["layer_bytes"]) == info["num_layers"] >= 4
    result = vcm("decode", stream, tmp_path / "l1.png", "--layers", "1")
    assert result.returncode == 0, result.stderr
    decoded = np.asarray(Image.open(tmp_path / "l1.png"))
    assert decoded.shape == photo.shape


def test_garbage_gives_one_line_error(tmp_path):
    bad = tmp_path / "bad.vcm"
    bad.write_bytes(bytes(range(256)) * 3)
    for args in (("decode", bad, tmp_path / "x.png"), ("info", bad),
                 ("decode", tmp_path / "missing.vcm", tmp_path / "y.png"),
                 ("encode", bad, tmp_path / "z.vcm")):
        result = vcm(*args)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vcm: error:"), result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "z.vcm").exists()


def test_never_overwrites_without_flag(tmp_path, photo):
    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    target = tmp_path / "keep.vcm"
    target.write_bytes(b"precious")
    result = vcm("encode", src, target)
    assert result.returncode == 1 and "--overwrite" in result.stderr
    assert target.read_bytes() == b"precious"
    assert vcm("encode", src, target, "--overwrite").returncode == 0
    assert target.read_bytes() != b"precious"


def test_rgba_input_refused(tmp_path):
    src = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(src)
    result = vcm("encode", src, tmp_path / "o.vcm")
    assert result.returncode == 1 and "alpha" in result.stderr


def test_demo_writes_report_and_sheet(tmp_path):
    result = vcm("demo", "--out", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    rows = report["layers"]
    assert len(rows) >= 4
    assert [r["layers"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(a["bpp"] < b["bpp"] for a, b in zip(rows, rows[1:], strict=False))
    assert rows[-1]["psnr_db"] > rows[0]["psnr_db"]
    for k in range(1, len(rows) + 1):
        assert (tmp_path / "demo" / f"layers_{k}.png").is_file()
    sheet = Image.open(tmp_path / "demo" / "contact_sheet.png")
    assert sheet.width > sheet.height
