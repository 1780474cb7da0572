"""Which texture coder: candidate texture stacks against one AVIF, as a person climbs them.

    python -m vcm_eval.texture_ablation --data ../shared/data/kodak --out runs/texture-ablation

For each candidate (a stack of texture layers at rising qualities) and each image, the bytes a
viewer holds at each layer of the stack (the union of the layers fetched so far) and the
picture's PSNR, HaarPSI and SSIMULACRA2 there; then the BD-rate of that climb against one
Pillow AVIF (speed 6, one thread) per quality, per metric, over all images. Candidates:

* ``simulcast``: 0.3's viewer layers, one standalone AVIF per quality (holding a point means
  holding every AVIF below it too);
* ``layered-...``: one layered AVIF (``vcm_plugin.codec.layered_avif``: libaom codes each
  layer against the one before), in 4:2:0 or 4:4:4, at libaom speed 4 to 8 (libavif codes
  7 and up in libaom's real-time mode), with one or two threads, and several quality ladders.

The shipped ``tae`` chain is the candidate ``layered-444-s6`` with its preset's qualities.
Stream headers are left out (the same for every candidate). Writes ``texture-ablation.json``
and ``texture-ablation.png`` (the climbs, one panel per metric) in ``--out`` and prints a
table.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vcm_eval.bd_rate import bd_rate
from vcm_eval.tasks.quality import ssimulacra2
from vcm_plugin.codec import layered_avif
from vcm_plugin.codec.imagefile import read_rgb
from vcm_plugin.codec.measure import psnr
from vcm_plugin.codec.presets import get_preset

METRICS = ("psnr", "haarpsi", "ssimulacra2")
#: The anchor: Pillow AVIF at these qualities, speed 6.
ANCHOR_QUALITIES = (10, 25, 45, 60, 75, 85)
Climb = Callable[[np.ndarray], list[tuple[int, np.ndarray]]]  # (bytes held, picture) per layer


def _avif(img: np.ndarray, quality: int) -> tuple[int, np.ndarray]:
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="AVIF", quality=quality, speed=6, max_threads=1)
    with Image.open(io.BytesIO(buffer.getvalue())) as im:
        return len(buffer.getvalue()), np.asarray(im.convert("RGB"))


def simulcast(qualities: tuple[int, ...]) -> Climb:
    def climb(img: np.ndarray) -> list[tuple[int, np.ndarray]]:
        out, held = [], 0
        for quality in qualities:
            size, picture = _avif(img, quality)
            held += size
            out.append((held, picture))
        return out

    return climb


def layered(qualities: tuple[int, ...], pixel_format: str, speed: int, threads: int = 1) -> Climb:
    def climb(img: np.ndarray) -> list[tuple[int, np.ndarray]]:
        pieces = layered_avif.encode(img, qualities, speed, pixel_format, threads)
        h, w = img.shape[:2]
        return [
            (
                sum(len(p) for p in pieces[: j + 1]),
                layered_avif.decode(pieces[: j + 1], len(qualities), w, h),
            )
            for j in range(len(qualities))
        ]

    return climb


def candidates() -> dict[str, Climb]:
    tae = get_preset("tae").texture_qualities
    return {
        "simulcast (0.3: q5/20/35/50/75)": simulcast((5, 20, 35, 50, 75)),
        f"layered-420-s6 {tae}": layered(tae, "420", 6),
        f"layered-444-s6 {tae} (shipped)": layered(tae, "444", 6),
        f"layered-444-s5 {tae}": layered(tae, "444", 5),
        f"layered-444-s4 {tae}": layered(tae, "444", 4),
        f"layered-444-s6 {tae}, 2 threads": layered(tae, "444", 6, threads=2),
        f"layered-444-s7 {tae} (real-time mode), 2 threads": layered(tae, "444", 7, threads=2),
        f"layered-420-s8 {tae} (real-time mode), 2 threads": layered(tae, "420", 8, threads=2),
        "layered-444-s6 (35, 55, 75)": layered((35, 55, 75), "444", 6),
        "layered-444-s6 (30, 45, 60, 75)": layered((30, 45, 60, 75), "444", 6),
        "layered-444-s6 (10, 30, 50, 75)": layered((10, 30, 50, 75), "444", 6),
    }


class Scorer:
    def __init__(self) -> None:
        import piq
        import torch

        self.piq, self.torch = piq, torch

    def __call__(self, ref: np.ndarray, img: np.ndarray) -> np.ndarray:
        t = self.torch
        x = t.from_numpy(np.array(ref)).permute(2, 0, 1)[None].float() / 255
        y = t.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
        with t.inference_mode():
            haar = float(self.piq.haarpsi(x, y, data_range=1.0))
        return np.array([psnr(ref, img), haar, ssimulacra2(ref, img)])


def curve(images: list[np.ndarray], climb: Climb, score: Scorer) -> tuple[list, np.ndarray, float]:
    """bpp and mean metrics per layer over ``images``, and encode seconds per image."""
    pixels = sum(i.shape[0] * i.shape[1] for i in images)
    held, quality, seconds = None, None, 0.0
    for img in images:
        start = time.perf_counter()
        points = climb(img)
        seconds += time.perf_counter() - start
        sizes = np.array([n for n, _ in points], dtype=float)
        metrics = np.array([score(img, picture) for _, picture in points])
        held = sizes if held is None else held + sizes
        quality = metrics if quality is None else quality + metrics
    return list(held * 8 / pixels), quality / len(images), seconds / len(images)


def plot(report: dict, path: Path) -> None:
    """One panel per metric: each candidate's climb (bytes held at each layer) and the AVIF
    anchor, bpp on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(16, 5), dpi=110)
    for ax, metric in zip(axes, METRICS, strict=True):
        anchor = report["anchor"]
        ax.plot(anchor["bpp"], anchor[metric], "D-", color="C1", lw=2, label="AVIF (one image)")
        for i, row in enumerate(report["candidates"]):
            shipped = "shipped" in row["candidate"]
            ax.plot(
                row["bpp"],
                row[metric],
                "o-" if shipped else ".--",
                color="C3" if shipped else f"C{(i + 4) % 10}",
                lw=2.4 if shipped else 1.0,
                label=row["candidate"],
            )
        ax.set_xscale("log")
        ax.set_xlabel("bpp a viewer holds (log)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"texture stacks climbed against one AVIF ({report['images']} images)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder of images")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() in {".png", ".jpg"})
    images = [read_rgb(p) for p in paths[: args.limit]]
    score = Scorer()
    anchor_bpp, anchor_metrics, _ = curve(
        images,
        lambda img: [_avif(img, q) for q in ANCHOR_QUALITIES],
        score,
    )
    rows = []
    for name, climb in tqdm(candidates().items(), desc="texture candidates"):
        bpp, metrics, seconds = curve(images, climb, score)
        bd = {
            m: bd_rate(anchor_bpp, anchor_metrics[:, i], bpp, metrics[:, i])
            for i, m in enumerate(METRICS)
        }
        rows.append(
            {
                "candidate": name,
                "bpp": bpp,
                **{m: list(metrics[:, i]) for i, m in enumerate(METRICS)},
                "bd_rate_vs_avif": bd,
                "encode_s_per_image": seconds,
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "data": str(args.data),
        "images": len(images),
        "anchor": {
            "bpp": anchor_bpp,
            **{m: list(anchor_metrics[:, i]) for i, m in enumerate(METRICS)},
        },
        "candidates": rows,
    }
    (args.out / "texture-ablation.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "texture-ablation.png")
    print("| candidate | bpp held per layer | BD vs AVIF: PSNR / HaarPSI / SSIMULACRA2 | enc s |")
    print("|---|---|---|---|")
    for r in rows:
        bd = " / ".join(
            "n/a" if r["bd_rate_vs_avif"][m] is None else f"{r['bd_rate_vs_avif'][m]:+.1f} %"
            for m in METRICS
        )
        bpp = ", ".join(f"{b:.3f}" for b in r["bpp"])
        print(f"| {r['candidate']} | {bpp} | {bd} | {r['encode_s_per_image']:.2f} |")


if __name__ == "__main__":
    main()
