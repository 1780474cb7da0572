"""vcm command line: encode, decode, info, demo, encode-dataset, weights fetch, edge.

Every error, usage errors included, prints one line (``vcm: error: ...``) to stderr and exits
with status 1; a warning prints one ``vcm: warning: ...`` line. Outputs are written to a
temporary name and renamed, with the umask's permissions; an existing output is never replaced
without ``--overwrite``, the input never, and a missing output directory is an error unless
``--parents`` is given. A reader that closes stdout early (``vcm info x.vcm | head``) ends the
command quietly with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import NoReturn

import numpy as np

from vcm_plugin.codec.files import write_atomic
from vcm_plugin.codec.imagefile import read_rgb
from vcm_plugin.codec.measure import psnr
from vcm_plugin.errors import Unavailable, VCMError

# decode's output formats: Pillow format name and save options (JPEG near-transparent, WebP
# lossless: the decoded picture is what was asked for, not a second lossy generation of it)
IMAGE_FORMATS = {
    "png": ("PNG", {}),
    "jpeg": ("JPEG", {"quality": 95}),
    "webp": ("WEBP", {"lossless": True}),
    "tiff": ("TIFF", {}),
    "bmp": ("BMP", {}),
}
FORMAT_BY_SUFFIX = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".webp": "webp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".bmp": "bmp",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors like every other error: one line, status 1."""

    def error(self, message: str) -> NoReturn:
        raise VCMError(f"{message} (see '{self.prog} --help')")


def _check_parent(path: Path, parents: bool) -> None:
    parent = path.absolute().parent
    if parents or parent.is_dir():
        return
    what = "is not a directory" if parent.exists() else "does not exist"
    raise VCMError(f"{parent} {what}; create it first or pass --parents")


def _check_output(output: Path, source: Path, overwrite: bool, parents: bool) -> None:
    """Refuse, before any work is done, to ruin a file or to invent directories."""
    if output.is_dir():
        raise VCMError(f"{output} is a directory; name the output file")
    if output.exists() and source.exists() and os.path.samefile(output, source):
        raise VCMError(f"{output} is the input file; write the output elsewhere")
    if output.exists() and not overwrite:
        raise VCMError(f"{output} exists; pass --overwrite to replace it")
    _check_parent(output, parents)


def _write_output(path: Path, data: bytes, parents: bool) -> None:
    if parents:
        path.absolute().parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def _image_bytes(img: np.ndarray, fmt: str = "png") -> bytes:
    import io

    from PIL import Image

    pil_format, options = IMAGE_FORMATS[fmt]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=pil_format, **options)
    return buf.getvalue()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VCMError(f"cannot read {path}: {exc.strerror or exc}") from None


def cmd_encode(args) -> None:
    from vcm_plugin import Codec

    _check_output(args.output, args.input, args.overwrite, args.parents)
    img = read_rgb(args.input)
    codec = Codec.from_preset(args.preset)
    objects = None
    if args.objects is not None:
        from vcm_plugin.taskmodels.detect import object_finder

        objects = object_finder(args.objects)(img)
    blob = codec.encode(img, objects=objects)
    if args.max_bytes is not None:  # rate control: the longest prefix that fits the budget
        blob = codec.truncate(blob, max_bytes=args.max_bytes)
    _write_output(args.output, blob, args.parents)
    info = codec.inspect(blob)
    print(
        f"{args.output}: {len(blob)} bytes, {info.num_layers} layers {info.layer_bytes}",
        file=sys.stderr,
    )


def output_format(output: Path, requested: str | None) -> str:
    """The image format decode writes: ``--format``, else the output name's extension."""
    if requested:
        return requested
    suffix = output.suffix.lower()
    if suffix not in FORMAT_BY_SUFFIX:
        raise VCMError(
            f"cannot tell an image format from the name {output.name!r}: use "
            f"{', '.join(FORMAT_BY_SUFFIX)} or pass --format"
        )
    return FORMAT_BY_SUFFIX[suffix]


def cmd_decode(args) -> None:
    from vcm_plugin import Codec

    fmt = output_format(args.output, args.format)
    _check_output(args.output, args.input, args.overwrite, args.parents)
    img = Codec().decode(_read_bytes(args.input), layers=args.layers)
    _write_output(args.output, _image_bytes(img, fmt), args.parents)


def cmd_info(args) -> None:
    from vcm_plugin import Codec

    print(json.dumps(Codec().inspect(_read_bytes(args.input)).as_dict(), indent=2))


def contact_sheet(
    images: list[np.ndarray], labels: list[str], width: int = 320, columns: int = 4
) -> np.ndarray:
    """A grid of labelled tiles (``columns`` per row, each ``width`` pixels wide), read left
    to right and top to bottom: the demo's climb, one tile per operating point, with the
    bytes a reader holds for it and its quality under each picture. Labels may have two lines
    (``\\n``)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    band = 38  # two lines of text
    tiles = []
    for img, label in zip(images, labels, strict=True):
        tile = Image.fromarray(img)
        tile = tile.resize((width, max(1, round(img.shape[0] * width / img.shape[1]))))
        canvas = Image.new("RGB", (tile.width, tile.height + band), "white")
        canvas.paste(tile, (0, band))
        ImageDraw.Draw(canvas).multiline_text((4, 3), label, fill="black", font=font, spacing=3)
        tiles.append(canvas)
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    cell_h = max(t.height for t in tiles)
    gap = 6
    sheet = Image.new("RGB", (columns * (width + gap) - gap, rows * (cell_h + gap) - gap), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * (width + gap), (i // columns) * (cell_h + gap)))
    return np.asarray(sheet)


def cmd_demo(args) -> None:
    from skimage import data

    from vcm_plugin import Codec

    out = args.out
    if out.exists() and not out.is_dir():
        raise VCMError(f"{out} exists and is not a directory")
    _check_parent(out, args.parents)
    original = data.astronaut()
    codec = Codec.from_preset(args.preset)
    start = time.perf_counter()
    blob = codec.encode(original)
    encode_s = time.perf_counter() - start
    info = codec.inspect(blob)
    pixels = original.shape[0] * original.shape[1]
    out.mkdir(parents=True, exist_ok=True)
    rows, images, labels = [], [original], ["original\n(the photo, uncompressed)"]
    for k in range(1, info.num_layers + 1):
        start = time.perf_counter()
        img = codec.decode(blob, layers=k)
        decode_s = time.perf_counter() - start
        size = info.point_bytes[k - 1]  # what a reader fetches: header + needed layers
        role = info.layer_roles[k - 1]
        audience = "person" if k in info.viewer_points else "analytics"
        if k == info.analytics_point:
            audience = "analytics point"
        rows.append(
            {
                "layers": k,
                "role": role,
                "audience": audience,
                "needs_layers": info.point_layers[k - 1],
                "layer_bytes": info.layer_bytes[k - 1],
                "total_bytes": size,
                "bpp": size * 8 / pixels,
                "psnr_db": psnr(img, original),
                "decode_s": decode_s,
            }
        )
        write_atomic(out / f"layers_{k}.png", _image_bytes(img))
        images.append(img)
        labels.append(
            f"layers={k}: {audience}\n{size:,} B held, {size * 8 / pixels:.3f} bpp, "
            f"{rows[-1]['psnr_db']:.1f} dB"
        )
    write_atomic(out / "astronaut.vcm", blob)
    write_atomic(out / "contact_sheet.png", _image_bytes(contact_sheet(images, labels)))
    report = {
        "image": "skimage.data.astronaut",
        "width": original.shape[1],
        "height": original.shape[0],
        "preset": codec.preset.name,
        "encode_s": encode_s,
        "layers": rows,
    }
    write_atomic(out / "report.json", json.dumps(report, indent=2).encode())
    for row in rows:
        print(
            f"layers={row['layers']} ({row['audience']}, needs {row['needs_layers']}): "
            f"{row['total_bytes']:7d} B  {row['bpp']:.3f} bpp  {row['psnr_db']:.2f} dB"
        )
    print(f"wrote {out}/ (layers_*.png, contact_sheet.png, report.json, astronaut.vcm)")


def cmd_encode_dataset(args) -> None:
    from vcm_plugin.datasets import encode_dataset

    if args.ray_address is not None and args.engine != "ray":
        raise VCMError("--ray-address needs --engine ray")
    _check_parent(args.dst, args.parents)
    report = encode_dataset(
        args.src,
        args.dst,
        preset=args.preset,
        engine=args.engine,
        shard_size=args.shard_size,
        workers=args.workers,
        ray_address=args.ray_address,
        layout=args.layout,
        progress=not args.quiet,
    )
    print(
        f"{args.dst}: {report['images']} images in {report['shards']} shards "
        f"({len(report['encoded'])} encoded, {len(report['skipped'])} already done) "
        f"in {report['seconds']:.1f} s with the {report['engine']} engine",
        file=sys.stderr,
    )


def cmd_weights_fetch(args) -> None:
    from vcm_plugin.codec import weights

    for path in weights.fetch(args.model, dest=args.dest, base_url=args.base_url):
        print(path)


PARENTS_HELP = "create missing parent directories of the output (default: refuse)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _point(text: str) -> int | str:
    """``--layers``: a layer count or the name of the preset's analytics point."""
    from vcm_plugin.codec.layerspec import parse_point

    try:
        return parse_point(text)
    except VCMError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _encode_command(sub: argparse._SubParsersAction) -> None:
    """``vcm encode`` and its arguments."""
    from vcm_plugin.codec.presets import DEFAULT_PRESET, PRESETS

    preset_help = f"codec preset (default: {DEFAULT_PRESET})"
    p = sub.add_parser(
        "encode",
        help="image -> layered .vcm stream",
        description="Encode an image file (8/16-bit, gray, palette, CMYK; EXIF "
        "orientation applied; alpha refused) into a layered .vcm stream.",
    )
    p.add_argument("input", type=Path, help="image file Pillow can read")
    p.add_argument("output", type=Path, help="stream to write (.vcm)")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help=preset_help)
    p.add_argument(
        "--max-bytes",
        type=_positive_int,
        default=None,
        metavar="N",
        help="byte budget: keep the longest prefix of layers that fits in N bytes "
        "(an error if even layer 0 does not)",
    )
    p.add_argument(
        "--objects",
        metavar="MODEL",
        default=None,
        help="a detector (yolov5n from VCM_WEIGHTS_DIR, a .pt path, or module:factory): the "
        "analytics point spends its bits on the boxes it finds; the viewer points keep the "
        "whole picture (tae)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--parents", action="store_true", help=PARENTS_HELP)
    p.set_defaults(func=cmd_encode)


def _decode_command(sub: argparse._SubParsersAction) -> None:
    """``vcm decode`` and its arguments."""
    p = sub.add_parser(
        "decode",
        help=".vcm stream -> image file",
        description="Decode a .vcm stream (or its first K layers) into an image "
        "in the format OUTPUT's extension names: PNG, JPEG (quality 95), WebP "
        "(lossless), TIFF or BMP.",
    )
    p.add_argument("input", type=Path, help=".vcm stream to decode")
    p.add_argument(
        "output",
        type=Path,
        help=f"image to write; its extension ({', '.join(FORMAT_BY_SUFFIX)}) "
        "picks the format unless --format is given",
    )
    p.add_argument(
        "--layers",
        type=_point,
        default=None,
        help="operating point to decode: a layer count K or 'analytics' (the "
        "preset's analytics point); default: the highest the stream holds",
    )
    p.add_argument(
        "--format",
        choices=sorted(IMAGE_FORMATS),
        default=None,
        help="image format to write, whatever OUTPUT's extension",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--parents", action="store_true", help=PARENTS_HELP)
    p.set_defaults(func=cmd_decode)


def _info_command(sub: argparse._SubParsersAction) -> None:
    """``vcm info`` and its arguments."""
    p = sub.add_parser("info", help="print a stream's header as JSON")
    p.add_argument("input", type=Path, help=".vcm stream to describe")
    p.set_defaults(func=cmd_info)


def _demo_command(sub: argparse._SubParsersAction) -> None:
    """``vcm demo`` and its arguments."""
    from vcm_plugin.codec.presets import DEFAULT_PRESET, PRESETS

    preset_help = f"codec preset (default: {DEFAULT_PRESET})"
    p = sub.add_parser(
        "demo",
        help="encode a sample photo, decode every layer count",
        description="Encode skimage's astronaut photo, decode it at every layer "
        "count and write layers_K.png, contact_sheet.png, report.json and "
        "astronaut.vcm into the output folder (replacing its own earlier files).",
    )
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help=preset_help)
    p.add_argument(
        "--out", type=Path, default=Path("vcm-demo"), help="output folder (default: ./vcm-demo)"
    )
    p.add_argument("--parents", action="store_true", help=PARENTS_HELP)
    p.set_defaults(func=cmd_demo)


def _encode_dataset_command(sub: argparse._SubParsersAction) -> None:
    """``vcm encode-dataset`` and its arguments."""
    from vcm_plugin.codec.presets import DEFAULT_PRESET, PRESETS

    preset_help = f"codec preset (default: {DEFAULT_PRESET})"
    p = sub.add_parser(
        "encode-dataset",
        help="data set -> resumable shards of layered streams",
        description="Encode a YOLO (images/ + labels/), VOC (JPEGImages/ + "
        "SegmentationClass/) or plain image folder into tar shards of .vcm "
        "streams with their labels and an index; a rerun skips verified shards. "
        "A failed run removes what it created, except finished shards.",
    )
    p.add_argument("src", type=Path, help="data set folder to read")
    p.add_argument(
        "dst", type=Path, help="shard folder to write: new, empty, or one this command wrote"
    )
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help=preset_help)
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: a process pool; ray: Ray tasks (default: local)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join ('auto', 'ray://host:10001'); default: start a "
        "local instance. SRC and DST must be visible to every node",
    )
    p.add_argument("--shard-size", type=int, default=64, help="streams per shard (default 64)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local pool processes / local Ray CPUs (default: all cores)",
    )
    p.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "yolo", "voc", "folder"],
        help="data set layout (default: detected)",
    )
    p.add_argument("--parents", action="store_true", help="create missing parents of DST")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_encode_dataset)


def _weights_command(sub: argparse._SubParsersAction) -> None:
    """``vcm weights`` and its arguments."""
    p = sub.add_parser("weights", help="manage backend weights")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    f = wsub.add_parser("fetch", help="download weights with sha256 verification")
    f.add_argument("model", nargs="?", default="taef2", help="weights to fetch (default: taef2)")
    f.add_argument("--dest", type=Path, default=None, help="default: the user cache dir")
    f.add_argument("--base-url", default=None, help="mirror serving the files by name")
    f.set_defaults(func=cmd_weights_fetch)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vcm",
        description=__doc__.splitlines()[0],
        epilog="Errors print one 'vcm: error: ...' line and exit with status 1.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _encode_command(sub)
    _decode_command(sub)
    _info_command(sub)
    _demo_command(sub)
    _encode_dataset_command(sub)
    _weights_command(sub)

    from vcm_plugin.edge.cli import add_commands  # `vcm edge ...`; heavy imports stay lazy

    add_commands(sub)
    return parser


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. a stream cut inside a layer) as one line, not Python's source dump."""
    print(f"vcm: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line
        try:
            args = build_parser().parse_args(argv)
            args.func(args)
            sys.stdout.flush()  # a closed pipe surfaces here, not at interpreter exit
        except (VCMError, Unavailable) as exc:  # bad input, or a service that is not there
            print(f"vcm: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("vcm: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            # the reader went away (| head): Python's recipe (docs of `signal`, "Note on
            # SIGPIPE") points stdout at devnull so the exit-time flush stays quiet
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
