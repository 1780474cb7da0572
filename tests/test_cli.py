"""The `vcm` command: one-line errors and warnings, exit codes, and files in, files out without
ruining a picture (issue 20): formats by name, no silent overwrite, umask modes, no invented
directories, no traceback on a closed pipe."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vcm_plugin import Codec
from vcm_plugin.cli import build_parser, main

FAST = "fast"  # the DCT preset (named "default" before the preset rename): no weights, quick


def vcm(*args, cwd=None, **kwargs):
    """``vcm ARGS`` in a child process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "vcm_plugin.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        **kwargs,
    )


def run(capsys, *args) -> tuple[int, str]:
    """``vcm ARGS`` in this process (faster): exit status and stderr."""
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def one_error_line(stderr: str) -> bool:
    lines = stderr.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("vcm: error:") and "Traceback" not in stderr


@pytest.fixture
def stream(tmp_path, photo) -> Path:
    path = tmp_path / "in.vcm"
    path.write_bytes(Codec.from_preset(FAST).encode(photo[:64, :80]))
    return path


def test_encode_info_decode(tmp_path, photo):
    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    stream = tmp_path / "out.vcm"
    assert vcm("encode", src, stream, "--preset", FAST).returncode == 0
    info = json.loads(vcm("info", stream).stdout)
    assert info["preset"] == FAST and info["width"] == photo.shape[1]
    assert len(info["layer_bytes"]) == info["num_layers"] >= 4
    # the JSON is StreamInfo.as_dict(): the keys and order `vcm info` has always printed
    assert list(info) == [
        "width",
        "height",
        "backend",
        "preset",
        "version",
        "num_layers",
        "complete_layers",
        "decodable_points",
        "header_bytes",
        "layer_bytes",
        "layer_offsets",
        "layer_roles",
        "point_layers",
        "point_bytes",
        "analytics_point",
        "viewer_points",
        "total_bytes",
        "config_hash",
    ]
    typed = Codec().inspect(stream.read_bytes())
    assert info == typed.as_dict() and typed["num_layers"] == typed.num_layers
    result = vcm("decode", stream, tmp_path / "l1.png", "--layers", "1")
    assert result.returncode == 0, result.stderr
    decoded = np.asarray(Image.open(tmp_path / "l1.png"))
    assert decoded.shape == photo.shape


def test_16_bit_gray_png_keeps_its_picture(tmp_path):
    """The issue's case: a 16-bit gray PNG used to come out ~99 % white."""
    y, x = np.mgrid[0:32, 0:48]
    gray16 = (x * 1300 + y * 150).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    assert (
        vcm("encode", tmp_path / "gray16.png", tmp_path / "g.vcm", "--preset", FAST).returncode == 0
    )
    assert vcm("decode", tmp_path / "g.vcm", tmp_path / "g.png").returncode == 0
    gray8 = np.round(gray16 / 257).astype(np.uint8)
    codec = Codec.from_preset(FAST)
    reference = codec.encode(np.repeat(gray8[:, :, None], 3, axis=2))
    assert (tmp_path / "g.vcm").read_bytes() == reference
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "g.png")), codec.decode(reference)
    )


def test_garbage_gives_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.vcm"
    bad.write_bytes(bytes(range(256)) * 3)
    result = vcm("decode", bad, tmp_path / "x.png")
    assert result.returncode == 1 and one_error_line(result.stderr), result.stderr
    for args in (
        ("info", bad),
        ("decode", tmp_path / "missing.vcm", tmp_path / "y.png"),
        ("encode", bad, tmp_path / "z.vcm"),
    ):
        status, err = run(capsys, *args)
        assert status == 1 and one_error_line(err), err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "z.vcm").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("decode", "in.vcm", "x.png", "--layers", "abc"),
        ("encode", "in.png", "x.vcm", "--preset", "bogus"),
        ("decode", "in.vcm"),
        ("frobnicate",),
        (),
        ("edge", "bench"),
    ],
)
def test_usage_errors_exit_1_with_one_line(capsys, args):
    """README: errors exit 1. Usage errors are errors too: same line, same status."""
    status, err = run(capsys, *args)
    assert status == 1 and one_error_line(err), err
    assert "--help" in err and "usage:" not in err


def test_usage_error_in_a_real_process():
    result = vcm("decode", "in.vcm", "x.png", "--layers", "abc")
    assert result.returncode == 1 and result.stderr == (
        "vcm: error: argument --layers: layers must be 'analytics' or a layer count >= 1, "
        "got 'abc' (see 'vcm decode --help')\n"
    )


def test_help_describes_every_argument():
    parser = build_parser()
    assert "edge" in parser.description
    pending = [parser]
    while pending:
        p = pending.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
                assert all(c.help for c in action._choices_actions), p.prog
            elif not isinstance(action, argparse._HelpAction):
                assert action.help, f"{p.prog} {action.dest} has no help text"
    demo = build_parser().parse_args(["demo"])
    assert str(demo.out) == "vcm-demo"
    assert "vcm-demo" in vcm("demo", "--help").stdout


@pytest.mark.parametrize(
    ("name", "extra", "pil_format"),
    [
        ("o.png", (), "PNG"),
        ("o.jpg", (), "JPEG"),
        ("o.JPEG", (), "JPEG"),
        ("o.webp", (), "WEBP"),
        ("o.tif", (), "TIFF"),
        ("o.tiff", (), "TIFF"),
        ("o.bmp", (), "BMP"),
        ("o.png", ("--format", "jpeg"), "JPEG"),
        ("noext", ("--format", "tiff"), "TIFF"),
    ],
)
def test_decode_writes_the_format_its_name_asks_for(
    tmp_path, capsys, stream, name, extra, pil_format
):
    out = tmp_path / name
    status, err = run(capsys, "decode", stream, out, *extra)
    assert status == 0, err
    with Image.open(out) as im:
        assert im.format == pil_format and im.mode == "RGB"
        picture = np.asarray(im)
    reference = Codec().decode(stream.read_bytes())
    if pil_format in ("JPEG",):
        assert np.abs(picture.astype(int) - reference).mean() < 3  # quality 95
    else:
        np.testing.assert_array_equal(picture, reference)  # WebP is written lossless


@pytest.mark.parametrize("name", ["out", "out.jpe", "out.vcm", "out.gif"])
def test_decode_refuses_a_name_without_an_image_format(tmp_path, capsys, stream, name):
    status, err = run(capsys, "decode", stream, tmp_path / name)
    assert status == 1 and one_error_line(err) and "--format" in err
    assert not (tmp_path / name).exists()


def test_output_never_replaces_the_input(tmp_path, capsys, stream, photo):
    before = stream.read_bytes()
    status, err = run(capsys, "decode", stream, stream, "--format", "png", "--overwrite")
    assert status == 1 and "input" in err
    (tmp_path / "link.png").symlink_to(stream)  # another name for the same file
    os.link(stream, tmp_path / "hard.png")
    for other in ("link.png", "hard.png"):
        status, err = run(capsys, "decode", stream, tmp_path / other, "--overwrite")
        assert status == 1 and one_error_line(err) and "input" in err
    Image.fromarray(photo).save(tmp_path / "img.png")
    status, err = run(
        capsys,
        "encode",
        tmp_path / "img.png",
        tmp_path / "img.png",
        "--overwrite",
        "--preset",
        FAST,
    )
    assert status == 1 and "input" in err
    assert stream.read_bytes() == before and Image.open(tmp_path / "img.png").format == "PNG"


def test_never_overwrites_without_flag(tmp_path, capsys, photo):
    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    target = tmp_path / "keep.vcm"
    target.write_bytes(b"precious")
    status, err = run(capsys, "encode", src, target, "--preset", FAST)
    assert status == 1 and "--overwrite" in err
    assert target.read_bytes() == b"precious"
    assert run(capsys, "encode", src, target, "--overwrite", "--preset", FAST)[0] == 0
    assert target.read_bytes() != b"precious"


def test_missing_output_directory_needs_parents(tmp_path, capsys, stream, photo):
    Image.fromarray(photo).save(tmp_path / "in.png")
    cases = [
        ("decode", stream, tmp_path / "new" / "a" / "o.png"),
        ("encode", tmp_path / "in.png", tmp_path / "new2" / "o.vcm", "--preset", FAST),
        ("demo", "--out", tmp_path / "new3" / "demo", "--preset", FAST),
    ]
    for args in cases:
        status, err = run(capsys, *args)
        assert status == 1 and one_error_line(err) and "--parents" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "in.vcm"]
    status, err = run(capsys, *cases[0], "--parents")
    assert status == 0 and (tmp_path / "new" / "a" / "o.png").is_file(), err
    status, err = run(capsys, "decode", stream, tmp_path / "in.png" / "o.png")
    assert status == 1 and "not a directory" in err


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_output_modes_follow_the_umask(tmp_path, capsys, stream, umask):
    old = os.umask(umask)
    try:
        status, err = run(capsys, "decode", stream, tmp_path / "o.png")
        assert status == 0, err
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "black.png")
        status, err = run(
            capsys, "encode", tmp_path / "black.png", tmp_path / "o.vcm", "--preset", FAST
        )
        assert status == 0, err
    finally:
        os.umask(old)
    for name in ("o.png", "o.vcm"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_truncated_stream_warns_in_one_line(tmp_path, stream):
    info = Codec().inspect(stream.read_bytes())
    cut = tmp_path / "cut.vcm"
    cut.write_bytes(stream.read_bytes()[: info.layer_offsets[2] + 3])  # inside layer 3
    result = vcm("decode", cut, tmp_path / "cut.png")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"vcm: warning: stream truncated: decoded 2 of {info.num_layers} layers"
    ]


def test_closed_stdout_ends_quietly(stream):
    """`vcm info x.vcm | head -c 10`: the reader is gone before vcm writes; no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "vcm_plugin.cli", "info", str(stream)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1 and result.stderr == ""


def test_rgba_input_refused(tmp_path, capsys):
    src = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(src)
    status, err = run(capsys, "encode", src, tmp_path / "o.vcm")
    assert status == 1 and "alpha" in err


def test_demo_writes_report_and_sheet(tmp_path):
    result = vcm("demo", "--out", tmp_path / "demo", "--preset", FAST)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    rows = report["layers"]
    assert len(rows) >= 4
    assert [r["layers"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(a["bpp"] < b["bpp"] for a, b in zip(rows, rows[1:], strict=False))
    assert rows[-1]["psnr_db"] > rows[0]["psnr_db"]
    for k in range(1, len(rows) + 1):
        assert (tmp_path / "demo" / f"layers_{k}.png").is_file()
    sheet = Image.open(io.BytesIO((tmp_path / "demo" / "contact_sheet.png").read_bytes()))
    tiles = len(rows) + 1  # the original, then one per point
    assert tiles > 4 and sheet.width <= 4 * 326  # a grid four tiles wide, not one long row
    assert sheet.height >= 2 * 320
