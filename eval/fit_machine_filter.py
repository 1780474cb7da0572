"""Fit the machine filter (``vcm_eval.machine_filter``) on BSDS500 photos.

    python -m vcm_eval.fit_machine_filter --data ../shared/data/train-bsds500 \
        --out runs/machine-filter

Pictures: each photo as the ``tae`` preset decodes it at its latent points and at the first
layer of its texture chain, plus that layer at other qualities (the chain's coder, libaom
4:4:4 speed 6): the range of pictures a detector reads. Loss, no labels: YOLOv5n's three
head-input feature maps on the filtered picture against those on the photo (mean squared
error over each map's mean square), plus 0.1 x the pixel L1. Fitting uses BSDS500's ``train``
and ``test`` photos; ``val`` picks the checkpoint (the lowest loss over its pictures), so no
evaluation set is seen. Writes ``machine_filter.pt`` (the chosen weights), ``fit.json`` (loss
curve, seconds) and ``fit.png`` in ``--out``; ``runs/machine-filter`` is where the eval codecs
``vcm-machine`` and ``avif-machine`` look for the weights.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vcm_eval.machine_filter import MachineFilter
from vcm_plugin.codec import layered_avif
from vcm_plugin.codec.api import Codec
from vcm_plugin.codec.imagefile import read_rgb
from vcm_plugin.taskmodels.detect import default_weights
from vcm_plugin.taskmodels.yolov5_legacy import load_yolov5_checkpoint

#: Qualities of the chain's first layer fitted besides the preset's own.
EXTRA_QUALITIES = (15, 25, 45, 60)
CROP = 256
VAL_CROP = 320


@functools.cache
def _codec() -> Codec:
    torch.set_num_threads(1)  # one per pool process: two processes on two cores
    return Codec.from_preset("tae")


def degraded(path: Path) -> np.ndarray:
    """(P + 1, H, W, 3) uint8: the photo, then each picture a detector may read of it."""
    photo = read_rgb(path)
    codec = _codec()
    stream = codec.encode(photo)
    points = [codec.decode(stream, layers=k) for k in range(1, codec.preset.analytics_point + 1)]
    h, w = photo.shape[:2]
    for quality in EXTRA_QUALITIES:
        pieces = layered_avif.encode(photo, (quality, 80), 6, "444")
        points.append(layered_avif.decode(pieces[:1], 2, w, h))
    return np.stack([photo, *points])


def prepare(paths: list[Path], cache: Path) -> np.ndarray:
    if cache.is_file():
        return np.load(cache)["stacks"]
    with Pool(2) as pool:
        stacks = list(tqdm(pool.imap(degraded, paths), total=len(paths), desc=f"{cache.stem}"))
    # BSDS500 is 481x321 or 321x481: turn every photo landscape so they stack
    stacks = np.stack([s if s.shape[2] > s.shape[1] else s.transpose(0, 2, 1, 3) for s in stacks])
    np.savez(cache, stacks=stacks)
    return stacks


class Features:
    """YOLOv5n's head-input maps (P3, P4, P5) of a (B, 3, H, W) [0, 1] batch."""

    def __init__(self) -> None:
        self.model, _ = load_yolov5_checkpoint(default_weights())
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.maps: list[torch.Tensor] = []
        self.model.model[-1].register_forward_pre_hook(self._keep)

    def _keep(self, _module: torch.nn.Module, inputs: tuple) -> None:
        self.maps = list(inputs[0])

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.model(x)
        return self.maps


def loss_of(
    features: Features, net: MachineFilter, photo: torch.Tensor, picture: torch.Tensor
) -> torch.Tensor:
    with torch.no_grad():
        target = features(photo)
    out = net(picture)
    maps = features(out)
    feature = sum(
        ((m - t) ** 2).mean() / (t**2).mean().clamp_min(1e-6)
        for m, t in zip(maps, target, strict=True)
    )
    return feature + 0.1 * (out - photo).abs().mean()


def to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255


def validate(features: Features, net: MachineFilter, stacks: np.ndarray) -> float:
    h, w = stacks.shape[2:4]
    top, left = (h - VAL_CROP) // 2, (w - VAL_CROP) // 2
    crops = stacks[:, :, top : top + VAL_CROP, left : left + VAL_CROP]
    total, count = 0.0, 0
    with torch.no_grad():
        for stack in crops:
            photo = to_tensor(stack[:1]).expand(len(stack) - 1, -1, -1, -1)
            total += float(loss_of(features, net, photo, to_tensor(stack[1:]))) * (len(stack) - 1)
            count += len(stack) - 1
    return total / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="train-bsds500")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--every", type=int, default=250, help="validate every N steps")
    parser.add_argument("--limit", type=int, default=None, help="photos per split (a trial)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    fit_paths = sorted((args.data / "train").glob("*.jpg")) + sorted(
        (args.data / "test").glob("*.jpg")
    )
    val_paths = sorted((args.data / "val").glob("*.jpg"))
    if args.limit:
        fit_paths, val_paths = fit_paths[: args.limit], val_paths[: max(1, args.limit // 4)]
    start = time.perf_counter()
    fit = prepare(fit_paths, args.out / f"fit-{len(fit_paths)}.npz")
    val = prepare(val_paths, args.out / f"val-{len(val_paths)}.npz")
    prepare_s = time.perf_counter() - start

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    features, net = Features(), MachineFilter()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.steps)
    history = [{"step": 0, "val_loss": validate(features, net, val)}]
    best = (history[0]["val_loss"], {k: v.clone() for k, v in net.state_dict().items()})
    h, w = fit.shape[2:4]
    start = time.perf_counter()
    bar = tqdm(range(1, args.steps + 1), desc="fit")
    for step in bar:
        images = rng.integers(len(fit), size=args.batch)
        pictures = rng.integers(1, fit.shape[1], size=args.batch)
        tops, lefts = (
            rng.integers(h - CROP + 1, size=args.batch),
            rng.integers(w - CROP + 1, size=args.batch),
        )
        flips = rng.random(args.batch) < 0.5
        pairs = [
            fit[i, [0, p], t : t + CROP, left : left + CROP]
            for i, p, t, left in zip(images, pictures, tops, lefts, strict=True)
        ]
        pairs = np.stack(
            [pair[:, :, ::-1] if f else pair for pair, f in zip(pairs, flips, strict=True)]
        )
        loss = loss_of(features, net, to_tensor(pairs[:, 0]), to_tensor(pairs[:, 1]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        bar.set_postfix(loss=f"{float(loss):.4f}")
        if step % args.every == 0 or step == args.steps:
            val_loss = validate(features, net, val)
            history.append({"step": step, "val_loss": val_loss, "train_loss": float(loss)})
            tqdm.write(f"step {step}: val loss {val_loss:.4f}")
            if val_loss < best[0]:
                best = (val_loss, {k: v.clone() for k, v in net.state_dict().items()})
    fit_s = time.perf_counter() - start
    torch.save(best[1], args.out / "machine_filter.pt")
    report = {
        "fit_photos": len(fit_paths),
        "val_photos": len(val_paths),
        "pictures_per_photo": int(fit.shape[1] - 1),
        "steps": args.steps,
        "batch": args.batch,
        "crop": CROP,
        "prepare_s": prepare_s,
        "fit_s": fit_s,
        "torch_threads": torch.get_num_threads(),
        "best_val_loss": best[0],
        "history": history,
    }
    (args.out / "fit.json").write_text(json.dumps(report, indent=2))
    plot(history, args.out / "fit.png")
    print(
        f"best val loss {best[0]:.4f} (identity {history[0]['val_loss']:.4f}); "
        f"prepare {prepare_s:.0f} s, fit {fit_s:.0f} s -> {args.out / 'machine_filter.pt'}"
    )


def plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in history], [r["val_loss"] for r in history], "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (BSDS500 val)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
