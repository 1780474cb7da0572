"""What the stream costs whoever keeps, sends or climbs it, against one AVIF.

    python -m vcm_eval.stream_cost --data ../shared/data/kodak --preset tae --out runs/cost

Per image and in total (ratios of summed bytes), for the preset's stream:

* ``whole_over_avif``: the whole stream (what a store keeps) over one Pillow AVIF (speed 6)
  of the photo at the picture quality of the top viewer point (equal PSNR, found on a grid of
  AVIF qualities and interpolated in log bytes); ``whole_over_avif_same_q`` against AVIF at the
  top texture layer's own quality setting, as 0.3's figures were measured.
* ``climb_over_avif``: the bytes a person holds after the analytics point and then the top
  viewer point (the union of their layers, plus one header) over that AVIF.
* ``first_upload_over_analytics``: what a camera sends first (``vcm edge push``:
  ``Codec.uplink`` and ``Codec.first_upload``, the byte prefix through the analytics point)
  over the analytics point's own bytes (``Codec.view``).

``--objects``: every stream encoded with the objects YOLOv5n finds on the photo
(``vcm-objects`` of the harness: the analytics point spends its bits on them).

Writes ``stream-cost.json`` in ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vcm_eval.codecs import VcmCodec, VcmObjectsCodec, make_codec
from vcm_plugin import Codec
from vcm_plugin.codec import container
from vcm_plugin.codec.imagefile import read_rgb
from vcm_plugin.codec.measure import psnr

#: AVIF qualities searched for the one that matches the top viewer point's PSNR.
AVIF_GRID = tuple(range(30, 101, 5))


def avif(img: np.ndarray, quality: int) -> tuple[int, float]:
    """Bytes and PSNR of Pillow's AVIF (speed 6, one thread) at ``quality``."""
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="AVIF", quality=quality, speed=6, max_threads=1)
    with Image.open(io.BytesIO(buffer.getvalue())) as im:
        decoded = np.asarray(im.convert("RGB"))
    return len(buffer.getvalue()), psnr(decoded, img)


def avif_at_psnr(img: np.ndarray, target: float) -> float:
    """AVIF bytes at PSNR ``target``: interpolated (log bytes, linear in dB) between the grid
    qualities around it; the end of the grid when the target is outside it."""
    points = [avif(img, q) for q in AVIF_GRID]
    sizes = np.log([n for n, _ in points])
    quality = np.array([p for _, p in points])
    order = np.argsort(quality)
    return float(np.exp(np.interp(target, quality[order], sizes[order])))


def held(blob: bytes, points: list[int]) -> bytes:
    """The stream a reader holds after fetching ``points``: the union of their layers under
    one header (in a nested stream, the view of the highest)."""
    header = container.parse_header(blob, container.NO_PIXEL_LIMIT)
    needed = {i for k in points for i in header.point_layers(k)}
    payloads = [
        container.layer_payload(blob, header, i) if i in needed else b""
        for i in range(header.num_layers)
    ]
    return container.pack(
        header.backend_id,
        header.preset_id,
        header.width,
        header.height,
        header.config_hash,
        payloads,
        header.needs,
    )


def measure(codec: Codec, img: np.ndarray, encode: Callable[[np.ndarray], bytes]) -> dict:
    blob = encode(img)
    info = codec.inspect(blob)
    top = info.viewer_points[-1] if info.viewer_points else info.num_layers
    analytics = info.analytics_point
    sent = codec.uplink(blob)
    header = container.parse_header(sent, codec.max_pixels)
    first = header.prefix_end(codec.first_upload(sent))
    top_psnr = psnr(codec.decode(blob, layers=top), img)
    reference = avif_at_psnr(img, top_psnr)
    top_quality = codec.preset.texture_qualities[-1]
    same_q, _ = avif(img, top_quality)
    return {
        "pixels": int(img.shape[0] * img.shape[1]),
        "whole_bytes": info.total_bytes,
        "top_point": top,
        "top_point_bytes": info.point_bytes[top - 1],
        "top_psnr": top_psnr,
        "climb_bytes": len(held(blob, [analytics, top])),
        "analytics_point": analytics,
        "analytics_bytes": info.point_bytes[analytics - 1],
        "first_upload_bytes": first,
        "avif_bytes_at_top_psnr": reference,
        "avif_bytes_same_quality": same_q,
    }


def summarise(rows: list[dict]) -> dict:
    def total(key: str) -> float:
        return float(sum(r[key] for r in rows))

    def spread(num: str, den: str) -> list[float]:
        ratios = [r[num] / r[den] for r in rows]
        return [min(ratios), max(ratios)]

    return {
        "images": len(rows),
        "whole_over_avif": total("whole_bytes") / total("avif_bytes_at_top_psnr"),
        "whole_over_avif_range": spread("whole_bytes", "avif_bytes_at_top_psnr"),
        "whole_over_avif_same_q": total("whole_bytes") / total("avif_bytes_same_quality"),
        "climb_over_avif": total("climb_bytes") / total("avif_bytes_at_top_psnr"),
        "climb_over_avif_range": spread("climb_bytes", "avif_bytes_at_top_psnr"),
        "first_upload_over_analytics": total("first_upload_bytes") / total("analytics_bytes"),
        "first_upload_over_analytics_range": spread("first_upload_bytes", "analytics_bytes"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder of images")
    parser.add_argument("--preset", default="tae")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--objects", action="store_true", help="encode with YOLOv5n's objects (vcm-objects)"
    )
    args = parser.parse_args(argv)
    folder = args.data / "images" if (args.data / "images").is_dir() else args.data
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[
        : args.limit
    ]
    name = VcmObjectsCodec.name if args.objects else VcmCodec.name
    vcm = make_codec(name, args.preset)
    codec = vcm.codec
    rows = []
    for path in tqdm(paths, desc="stream cost", unit="img"):
        rows.append({"image": path.name, **measure(codec, read_rgb(path), vcm.encode)})
    report = {
        "preset": codec.preset.name,
        "codec": name,
        "data": str(args.data),
        **summarise(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stream-cost.json").write_text(json.dumps({**report, "per_image": rows}, indent=2))
    print("| measure | total | per image |")
    print("|---|---|---|")
    for key in ("whole_over_avif", "climb_over_avif", "first_upload_over_analytics"):
        lo, hi = report[f"{key}_range"]
        print(f"| {key} | {report[key]:.3f}x | {lo:.3f}-{hi:.3f}x |")
    print(f"| whole_over_avif_same_q | {report['whole_over_avif_same_q']:.3f}x | |")


if __name__ == "__main__":
    main()
