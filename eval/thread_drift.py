"""How far a decoded generator point moves between torch thread counts: the measurement behind
the determinism bound (README, Assumptions; ``tests/test_determinism.py`` asserts the bound).

    python -m vcm_eval.thread_drift --data ../shared/data/kodak --images 4

Each photo is encoded once with the preset; every operating point whose pixels are the
generator's output (layer roles semantic, splits, refinement: the points decoded on the
caller's threads) is decoded at each thread count, and the largest grey-level difference and
the share of differing values against the first count are reported per point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vcm_plugin import Codec
from vcm_plugin.codec.imagefile import read_rgb

#: layer roles whose decoded pixels are the generator's output (``StreamInfo.layer_roles``)
GENERATOR_ROLES = ("semantic", "splits", "refinement")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def drift(codec: Codec, image: np.ndarray, threads: list[int]) -> list[dict]:
    """Per generator point: the largest difference and the share of differing values between
    the decode at ``threads[0]`` and at each other count."""
    blob = codec.encode(image)
    roles = codec.inspect(blob).layer_roles
    points = [k for k, role in enumerate(roles, 1) if role in GENERATOR_ROLES]
    before = torch.get_num_threads()
    decoded: dict[int, dict[int, np.ndarray]] = {}
    try:
        for n in threads:
            torch.set_num_threads(n)
            decoded[n] = {k: codec.decode(blob, layers=k).astype(np.int16) for k in points}
    finally:
        torch.set_num_threads(before)
    rows = []
    for n in threads[1:]:
        for k in points:
            diff = np.abs(decoded[threads[0]][k] - decoded[n][k])
            rows.append(
                {
                    "threads": [threads[0], n],
                    "point": k,
                    "max_levels": int(diff.max()),
                    "share": float((diff > 0).mean()),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of photos")
    parser.add_argument("--images", type=int, default=4, help="first N photos, sorted by name")
    parser.add_argument("--preset", default="tae")
    parser.add_argument("--threads", default="1,2", help="thread counts, the first the reference")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    paths = paths[: args.images]
    if not paths:
        parser.error(f"no photos under {args.data}")
    threads = [int(t) for t in args.threads.split(",")]
    codec = Codec.from_preset(args.preset)
    report = []
    for path in tqdm(paths, desc="thread drift", unit="img"):
        for row in drift(codec, read_rgb(path), threads):
            report.append({"image": path.name, **row})
    print("| image | threads | point | max levels | share of values |")
    print("|---|---|---|---|---|")
    for r in report:
        print(
            f"| {r['image']} | {r['threads'][0]} vs {r['threads'][1]} | {r['point']} | "
            f"{r['max_levels']} | {r['share']:.4%} |"
        )
    worst = max(report, key=lambda r: (r["max_levels"], r["share"]))
    print(
        f"largest: {worst['max_levels']} levels; largest share "
        f"{max(r['share'] for r in report):.4%}"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
