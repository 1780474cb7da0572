"""What layering costs: the layered stream against single-layer encodes of the same codec.

    python -m vcm_eval.scalability --data ../shared/data/kodak --preset tae --out runs/scalability

A *single-layer* encode is the same preset cut down to its semantic palette layer alone,
coded directly at a finer step (no splits, no refinement layers): the best a non-scalable
version of this codec does at that quality. The layered stream reaches the same qualities
through its latent prefixes (layer 0 plus splits and refinements). Overhead is the
Bjøntegaard rate difference of the layered prefix curve against the single-layer curve on
PSNR (positive = the layered stream spends more bits), per the goal "≤ 10 % more bits".
The texture layers are not part of this comparison: they refine in the pixel domain, which a
single latent layer cannot reach.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vcm_eval.bd_rate import bd_rate
from vcm_plugin import Codec
from vcm_plugin.codec import presets
from vcm_plugin.codec.imagefile import read_rgb
from vcm_plugin.codec.measure import psnr


def single_layer_preset(base: presets.Preset, step: float, index: int) -> str:
    """Register a one-layer variant of ``base`` coded at ``step``; returns its name."""
    variant = dataclasses.replace(
        base,
        name=f"{base.name}-single-{step:g}",
        preset_id=200 + index,
        semantic_step=step,
        split_step=None,
        refine_steps=(),
        analytics_textures=(),
        texture_qualities=(),
        texture_coding="photo",  # no texture layer of any kind (a layered chain needs one)
        analytics_point=1,
    )
    return presets.register(variant).name


def curve(codec: Codec, images: list[np.ndarray], layers: list[int]) -> list[dict]:
    pixels = sum(i.shape[0] * i.shape[1] for i in images)
    blobs = [codec.encode(i) for i in images]
    points = []
    for k in layers:
        size = sum(len(codec.truncate(b, k)) for b in blobs)
        quality = np.mean(
            [psnr(codec.decode(b, layers=k), i) for b, i in zip(blobs, images, strict=True)]
        )
        points.append({"layers": k, "bpp": size * 8 / pixels, "psnr": float(quality)})
    return points


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder of images")
    parser.add_argument("--preset", default="tae")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[
        : args.limit
    ]
    images = [read_rgb(p) for p in paths]
    base = presets.get_preset(args.preset)
    latent_layers = 1 + (base.split_step is not None) + len(base.refine_steps)
    layered = curve(Codec(base.name), images, list(range(1, latent_layers + 1)))
    steps = [base.semantic_step, *base.refine_steps]
    steps += [steps[-1] / 1.5, steps[-1] / 2]
    single = []
    for i, step in enumerate(tqdm(steps, desc="single-layer encodes")):
        point = curve(Codec(single_layer_preset(base, step, i)), images, [1])[0]
        single.append({**point, "step": step})
    overhead = bd_rate(
        [p["bpp"] for p in single],
        [p["psnr"] for p in single],
        [p["bpp"] for p in layered],
        [p["psnr"] for p in layered],
    )
    report = {
        "preset": base.name,
        "images": len(images),
        "layered": layered,
        "single_layer": single,
        "layering_overhead_percent": overhead,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scalability.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
