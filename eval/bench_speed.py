"""Speed benchmark: vcm presets against Pillow's AVIF, WebP, JPEG and JPEG XL.

    python -m vcm_eval.bench_speed --out runs/speed [--threads 2] [--repeats 5]
    python -m vcm_eval.bench_speed --out runs/speed-gpu --device cuda --batches 1,32

For 640x480 and 1280x720 photos (COCO val2017 images from ../shared/data resized, or
scikit-image's astronaut when the data is absent) and each preset: encode (and, apart, the
preset's photo-alone texture layers as the encoder schedules them, and the generator's encoder
alone), layer-0 decode,
analytics-point decode (what the integrations decode by default), all-layer decode; median of
``--repeats`` runs after one warm-up, with the torch thread count recorded. Baselines run in
the same process at a mid quality, so the ratios in ``speed.json`` (ours / AVIF encode)
compare like with like on one machine. Also the cost per
image of the training transform (encode + decode, and decode only when the stream cache
already holds the image), and the peak RSS of the process.

``--device cuda`` runs the generator on the GPU and measures throughput instead: images/s of
``encode_batch`` and layer-0 ``decode_batch`` over batches of distinct photos of one size
(``--batches``); quantisation, entropy coding and the AVIF texture layers stay on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vcm_eval.codecs import AvifCodec, JpegCodec, JxlCodec, WebpCodec
from vcm_eval.paths import REPO_ROOT
from vcm_plugin import Codec
from vcm_plugin.codec.api import photo_jobs
from vcm_plugin.codec.layers import Geometry, semantic_image
from vcm_plugin.codec.presets import get_preset

SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}
BASELINE_QUALITY = {"avif": 30, "webp": 50, "jpeg": 50, "jxl": 50}


def photos(size: tuple[int, int], count: int = 1) -> list[np.ndarray]:
    """``count`` distinct photos resized to ``size`` (COCO val2017, or skimage's samples)."""
    coco = REPO_ROOT.parent / "shared" / "data" / "coco-val2017" / "images"
    paths = sorted(coco.rglob("*.jpg")) if coco.is_dir() else []
    if paths:
        images = [Image.open(paths[i % len(paths)]).convert("RGB") for i in range(count)]
    else:
        from skimage import data

        samples = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
        images = [Image.fromarray(samples[i % len(samples)]) for i in range(count)]
    return [np.asarray(im.resize(size, Image.Resampling.LANCZOS)) for im in images]


def photo(size: tuple[int, int]) -> np.ndarray:
    return photos(size)[0]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: lazy imports, weight loading, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def photo_layers_seconds(preset: str, img: np.ndarray, repeats: int) -> float:
    """The preset's photo-alone layers (AVIF textures) encoded as ``Codec.encode_batch``
    schedules them (one job per coder, as many at once as torch has threads), without the
    generator."""
    jobs = photo_jobs(get_preset(preset))
    if not jobs:
        return 0.0

    def encode_all() -> None:
        with ThreadPoolExecutor(max(1, min(len(jobs), torch.get_num_threads()))) as pool:
            list(pool.map(lambda job: job(img), jobs))

    return median_seconds(encode_all, repeats)


def generator_seconds(codec: Codec, img: np.ndarray, repeats: int) -> float:
    """The generator's encoder alone on the photo's semantic image, as ``encode`` runs it
    (the codec's one torch thread): the part of the encode no texture setting changes."""
    backend = codec._backend_of(codec.preset)
    geometry = Geometry.of(img.shape[1], img.shape[0], codec.preset.semantic_scale, backend.factor)
    semantic = semantic_image(img.astype(np.float64), geometry)
    return median_seconds(lambda: backend.encode_batch([semantic]), repeats)


def bench_vcm(preset: str, img: np.ndarray, repeats: int, device: str = "cpu") -> dict:
    codec = Codec.from_preset(preset, device=device)
    blob = codec.encode(img)
    info = codec.inspect(blob)
    pixels = img.shape[0] * img.shape[1]
    return {
        "encode_s": median_seconds(lambda: codec.encode(img), repeats),
        "encode_photo_layers_s": photo_layers_seconds(preset, img, repeats),
        "encode_generator_s": generator_seconds(codec, img, repeats),
        "decode_layer0_s": median_seconds(lambda: codec.decode(blob, layers=1), repeats),
        "decode_analytics_s": median_seconds(
            lambda: codec.decode(blob, layers="analytics"), repeats
        ),
        "decode_all_s": median_seconds(lambda: codec.decode(blob), repeats),
        "layer0_bpp": len(codec.truncate(blob, 1)) * 8 / pixels,
        "all_bpp": len(blob) * 8 / pixels,
        "num_layers": info.num_layers,
        "peak_rss_mb": peak_rss_mb(),
    }


def bench_transform(preset: str, img: np.ndarray, repeats: int) -> dict:
    """The training transform's cost per image, without and with a warm stream cache."""
    from vcm_plugin.integrations._core import StreamCache
    from vcm_plugin.integrations.generic import vcm_roundtrip

    cache = StreamCache()
    vcm_roundtrip(img, layers=1, preset=preset, cache=cache)
    return {
        "no_cache_s": median_seconds(lambda: vcm_roundtrip(img, layers=1, preset=preset), repeats),
        "cached_s": median_seconds(
            lambda: vcm_roundtrip(img, layers=1, preset=preset, cache=cache), repeats
        ),
    }


def bench_baselines(img: np.ndarray, repeats: int) -> dict:
    out = {}
    for codec in (AvifCodec(), WebpCodec(), JpegCodec(), JxlCodec()):
        q = BASELINE_QUALITY[codec.name]
        data = codec.encode(img, q)
        out[codec.name] = {
            "quality": q,
            "bpp": len(data) * 8 / (img.shape[0] * img.shape[1]),
            "encode_s": median_seconds(lambda c=codec, q=q: c.encode(img, q), repeats),
            "decode_s": median_seconds(lambda c=codec, d=data: c.decode(d), repeats),
        }
    return out


def bench_throughput(
    preset: str, size: tuple[int, int], batch: int, repeats: int, device: str
) -> dict:
    """images/s of batched encode and layer-0 decode on ``device`` (median of ``repeats``)."""
    codec = Codec.from_preset(preset, device=device)
    images = photos(size, batch)
    blobs = codec.encode_batch(images)

    def synced(fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            out = fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return out

        return call

    encode_s = median_seconds(synced(lambda: codec.encode_batch(images)), repeats)
    decode_s = median_seconds(synced(lambda: codec.decode_batch(blobs, layers=1)), repeats)
    return {
        "batch": batch,
        "encode_s": encode_s,
        "decode_layer0_s": decode_s,
        "encode_images_per_s": batch / encode_s,
        "decode_layer0_images_per_s": batch / decode_s,
    }


def run_device(
    presets: list[str], repeats: int, threads: int, device: str, batches: list[int]
) -> dict:
    torch.set_num_threads(threads)
    report = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": cpu_name(),
        "throughput": [],
    }
    for name, size in SIZES.items():
        for preset in presets:
            for batch in batches:
                row = bench_throughput(preset, size, batch, repeats, device)
                report["throughput"].append({"size": name, "preset": preset, **row})
                print(
                    f"{name} {preset} batch {batch}: encode "
                    f"{row['encode_images_per_s']:.1f} img/s, layer-0 decode "
                    f"{row['decode_layer0_images_per_s']:.1f} img/s",
                    flush=True,
                )
    return report


def throughput_table(report: dict) -> str:
    lines = [
        f"device: {report['device']} ({report['gpu'] or report['cpu']})",
        "",
        "| size | preset | batch | encode images/s | layer-0 decode images/s |",
        "|---|---|---|---|---|",
    ]
    for r in report["throughput"]:
        lines.append(
            f"| {r['size']} | {r['preset']} | {r['batch']} | "
            f"{r['encode_images_per_s']:.1f} | {r['decode_layer0_images_per_s']:.1f} |"
        )
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(presets: list[str], repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    report = {
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "sizes": {},
    }
    for name, size in SIZES.items():
        img = photo(size)
        entry = {"baselines": bench_baselines(img, repeats), "presets": {}}
        avif = entry["baselines"]["avif"]["encode_s"]
        for preset in presets:
            row = bench_vcm(preset, img, repeats)
            row["encode_over_avif_encode"] = row["encode_s"] / avif
            row["photo_layers_over_avif_encode"] = row["encode_photo_layers_s"] / avif
            row["generator_over_avif_encode"] = row["encode_generator_s"] / avif
            row["decode_layer0_over_avif_encode"] = row["decode_layer0_s"] / avif
            row["decode_analytics_over_avif_encode"] = row["decode_analytics_s"] / avif
            row["transform"] = bench_transform(preset, img, repeats)
            entry["presets"][preset] = row
        report["sizes"][name] = entry
    if torch.cuda.is_available():  # reported when a GPU is present; this CPU machine has none
        report["gpu"] = torch.cuda.get_device_name(0)
    return report


def table(report: dict) -> str:
    lines = [
        "| size | preset | encode s | layer-0 decode s | analytics-point decode s | "
        "all-layer decode s | encode / AVIF enc | photo layers alone / AVIF enc | "
        "generator encoder alone / AVIF enc | "
        "layer-0 dec / AVIF enc | analytics dec / AVIF enc | transform s (no cache / cached) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, entry in report["sizes"].items():
        for preset, r in entry["presets"].items():
            t = r["transform"]
            lines.append(
                f"| {size} | {preset} | {r['encode_s']:.3f} | {r['decode_layer0_s']:.3f} | "
                f"{r['decode_analytics_s']:.3f} | "
                f"{r['decode_all_s']:.3f} | {r['encode_over_avif_encode']:.2f} | "
                f"{r['photo_layers_over_avif_encode']:.2f} | "
                f"{r['generator_over_avif_encode']:.2f} | "
                f"{r['decode_layer0_over_avif_encode']:.2f} | "
                f"{r['decode_analytics_over_avif_encode']:.2f} | "
                f"{t['no_cache_s']:.3f} / {t['cached_s']:.3f} |"
            )
        for name, b in entry["baselines"].items():
            lines.append(
                f"| {size} | {name} q{b['quality']} | {b['encode_s']:.3f} | "
                f"{b['decode_s']:.3f} | | | | | | | | |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--presets", default="tae,fast")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device", default="cpu", help="cpu: latency table against the baselines; cuda: throughput"
    )
    parser.add_argument("--batches", default="1,32", help="batch sizes for --device cuda")
    args = parser.parse_args(argv)
    presets = args.presets.split(",")
    if args.device == "cpu":
        report = run(presets, args.repeats, args.threads)
        text = table(report)
    else:
        batches = [int(b) for b in args.batches.split(",")]
        report = run_device(presets, args.repeats, args.threads, args.device, batches)
        text = throughput_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(report, indent=2))
    (args.out / "speed.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
