"""`vcm` command line: encode, decode, info, demo, encode-dataset, weights fetch.

Errors print one line to stderr and exit with status 1 (2 for usage errors); no traceback.
Existing output files are never replaced unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vcm_plugin.codec.imagefile import read_rgb
from vcm_plugin.errors import VCMError


def _write_atomic(path: Path, data: bytes, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise VCMError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _png_bytes(img: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VCMError(f"cannot read {path}: {exc.strerror or exc}") from None


def cmd_encode(args) -> None:
    from vcm_plugin import Codec

    codec = Codec.from_preset(args.preset)
    blob = codec.encode(read_rgb(args.input))
    _write_atomic(args.output, blob, args.overwrite)
    info = codec.inspect(blob)
    print(f"{args.output}: {len(blob)} bytes, {info['num_layers']} layers "
          f"{info['layer_bytes']}", file=sys.stderr)


def cmd_decode(args) -> None:
    from vcm_plugin import Codec

    img = Codec().decode(_read_bytes(args.input), layers=args.layers)
    _write_atomic(args.output, _png_bytes(img), args.overwrite)


def cmd_info(args) -> None:
    from vcm_plugin import Codec

    print(json.dumps(Codec().inspect(_read_bytes(args.input)), indent=2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def contact_sheet(images: list[np.ndarray], labels: list[str], width: int = 320) -> np.ndarray:
    from PIL import Image, ImageDraw

    tiles = []
    for img, label in zip(images, labels, strict=True):
        tile = Image.fromarray(img)
        tile = tile.resize((width, max(1, round(img.shape[0] * width / img.shape[1]))))
        canvas = Image.new("RGB", (tile.width, tile.height + 18), "white")
        canvas.paste(tile, (0, 18))
        ImageDraw.Draw(canvas).text((4, 3), label, fill="black")
        tiles.append(canvas)
    sheet = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width
    return np.asarray(sheet)


def cmd_demo(args) -> None:
    from skimage import data

    from vcm_plugin import Codec

    original = data.astronaut()
    codec = Codec.from_preset(args.preset)
    start = time.perf_counter()
    blob = codec.encode(original)
    encode_s = time.perf_counter() - start
    info = codec.inspect(blob)
    pixels = original.shape[0] * original.shape[1]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    rows, images, labels = [], [original], ["original"]
    for k in range(1, info["num_layers"] + 1):
        start = time.perf_counter()
        img = codec.decode(blob, layers=k)
        decode_s = time.perf_counter() - start
        size = len(codec.truncate(blob, k))
        rows.append({"layers": k, "layer_bytes": info["layer_bytes"][k - 1], "total_bytes": size,
                     "bpp": size * 8 / pixels, "psnr_db": psnr(img, original),
                     "decode_s": decode_s})
        _write_atomic(out / f"layers_{k}.png", _png_bytes(img), overwrite=True)
        images.append(img)
        labels.append(f"{k} layer(s): {size * 8 / pixels:.3f} bpp, {rows[-1]['psnr_db']:.1f} dB")
    _write_atomic(out / "astronaut.vcm", blob, overwrite=True)
    _write_atomic(out / "contact_sheet.png", _png_bytes(contact_sheet(images, labels)),
                  overwrite=True)
    report = {"image": "skimage.data.astronaut", "width": original.shape[1],
              "height": original.shape[0], "preset": codec.preset.name,
              "encode_s": encode_s, "layers": rows}
    _write_atomic(out / "report.json", json.dumps(report, indent=2).encode(), overwrite=True)
    for row in rows:
        print(f"layers={row['layers']}: {row['total_bytes']:7d} B  {row['bpp']:.3f} bpp  "
              f"{row['psnr_db']:.2f} dB")
    print(f"wrote {out}/ (layers_*.png, contact_sheet.png, report.json, astronaut.vcm)")


def cmd_encode_dataset(args) -> None:
    from vcm_plugin.datasets import encode_dataset

    report = encode_dataset(args.src, args.dst, preset=args.preset, engine=args.engine,
                            shard_size=args.shard_size, workers=args.workers,
                            ray_address=args.ray_address, layout=args.layout,
                            progress=not args.quiet)
    print(f"{args.dst}: {report['images']} images in {report['shards']} shards "
          f"({len(report['encoded'])} encoded, {len(report['skipped'])} already done) "
          f"in {report['seconds']:.1f} s with the {report['engine']} engine", file=sys.stderr)


def cmd_weights_fetch(args) -> None:
    from vcm_plugin.codec import weights

    for path in weights.fetch(args.model, dest=args.dest, base_url=args.base_url):
        print(path)


def build_parser() -> argparse.ArgumentParser:
    from vcm_plugin.codec.presets import PRESETS

    parser = argparse.ArgumentParser(prog="vcm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="image -> layered .vcm stream")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--preset", default="default", choices=sorted(PRESETS))
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help=".vcm stream -> PNG")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--layers", type=int, default=None, help="layers to decode (default: all)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="print a stream's header as JSON")
    p.add_argument("input", type=Path)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="encode a sample photo, decode every layer count")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS))
    p.add_argument("--out", type=Path, default=Path("vcm-demo"))
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("encode-dataset", help="data set -> resumable shards of layered streams",
                       description="Encode a YOLO (images/ + labels/), VOC (JPEGImages/ + "
                       "SegmentationClass/) or plain image folder into tar shards of .vcm "
                       "streams with their labels and an index; a rerun skips verified shards.")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--preset", default="default", choices=sorted(PRESETS))
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: a process pool; ray: Ray tasks (default: local)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join ('auto', 'ray://host:10001'); default: start a "
                        "local instance. SRC and DST must be visible to every node")
    p.add_argument("--shard-size", type=int, default=64, help="streams per shard (default 64)")
    p.add_argument("--workers", type=int, default=None,
                   help="local pool processes / local Ray CPUs (default: all cores)")
    p.add_argument("--layout", default="auto", choices=["auto", "yolo", "voc", "folder"])
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_encode_dataset)

    p = sub.add_parser("weights", help="manage backend weights")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    f = wsub.add_parser("fetch", help="download weights with sha256 verification")
    f.add_argument("model", nargs="?", default="taef2")
    f.add_argument("--dest", type=Path, default=None, help="default: the user cache dir")
    f.add_argument("--base-url", default=None, help="mirror serving the files by name")
    f.set_defaults(func=cmd_weights_fetch)

    from vcm_plugin.edge.cli import add_commands  # `vcm edge ...`; heavy imports stay lazy

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except VCMError as exc:
        print(f"vcm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vcm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
