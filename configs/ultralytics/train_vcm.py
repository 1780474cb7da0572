"""Example: train a YOLO detector on VCM-decoded images, or measure what that costs.

    # the Albumentations way (one line added to an ordinary train call)
    python configs/ultralytics/train_vcm.py --mode augment --epochs 1 --imgsz 320
    # the trainer way, options from configs/ultralytics/vcm.yaml
    python configs/ultralytics/train_vcm.py --mode trainer --epochs 1 --imgsz 320
    # extra seconds per training image (dataset loading only, no model), with/without cache
    python configs/ultralytics/train_vcm.py --measure 32 --imgsz 640

Runs offline on a CPU: set YOLO_OFFLINE=1 and use a ``*.yaml`` model (untrained) or a local
``.pt``. Labels caches are written next to the data, as ultralytics always does.
"""

from __future__ import annotations

import argparse
import os
import time
from copy import copy
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "coco128" / "data.yaml"


def train(args: argparse.Namespace) -> None:
    from ultralytics import YOLO

    from vcm_plugin.integrations.ultralytics import VCMCompression, VCMTrainer

    model = YOLO(args.model)
    common = dict(
        data=str(args.data),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        device="cpu",
        workers=args.workers,
        plots=False,
        project=str(args.project),
    )
    if args.mode == "augment":
        # ultralytics hands its Albumentations hook BGR images: say so
        model.train(
            **common,
            name="vcm-augment",
            augmentations=[VCMCompression(layers=(1, 4), p=0.5, channel_order="bgr")],
        )
    else:
        model.train(**common, name="vcm-trainer", trainer=VCMTrainer, vcm=str(HERE / "vcm.yaml"))


def measure(args: argparse.Namespace) -> None:
    """Seconds per training sample spent in the dataset (load + augment), with and without VCM.

    The model step is identical in every case, so the difference is the transform's cost.
    """
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from vcm_plugin.integrations import reset_stats, stats
    from vcm_plugin.integrations._core import resolve_cache
    from vcm_plugin.integrations.ultralytics import VCMOptions, install_vcm

    cfg = get_cfg(overrides=dict(imgsz=args.imgsz, data=str(args.data)))
    data = check_det_dataset(str(args.data))
    n = args.measure

    def run(options: VCMOptions | None, passes: int = 1, mosaic: bool = True) -> list[float]:
        ds = build_yolo_dataset(cfg, data["train"], 16, data, mode="train", stride=32)
        if not mosaic:
            ds.close_mosaic(hyp=copy(cfg))  # close_mosaic edits the hyp it gets
        if options is not None:
            install_vcm(ds, options)
        out = []
        for _ in range(passes):
            t0 = time.perf_counter()
            for i in range(n):
                ds[i % len(ds)]
            out.append((time.perf_counter() - t0) / n)
        return out

    rows = []
    for mosaic in (True, False):
        base = run(None, mosaic=mosaic)[0]
        reset_stats()
        nocache = run(VCMOptions(layers=(1, 4), cache=False), mosaic=mosaic)[0]
        s = stats()
        per_rt = (s["encode_s"] + s["decode_s"]) / max(1, s["images"])
        reset_stats()
        resolve_cache(True).clear()  # the memory cache is process-wide: start cold
        cold, warm = run(VCMOptions(layers=(1, 4), cache=True), passes=2, mosaic=mosaic)
        final = run(VCMOptions(layers=(1, 4), stage="final"), mosaic=mosaic)[0]
        rows.append((mosaic, base, nocache, cold, warm, final, per_rt))
    print(f"imgsz={args.imgsz}, {n} samples, CPU threads={os.cpu_count()}")
    print(
        "mosaic  base s/img  +load(no cache)  +load(cache, 1st)  +load(cache, later)  "
        "+final  codec s/round-trip"
    )
    for mosaic, base, nocache, cold, warm, final, per_rt in rows:
        print(
            f"{mosaic!s:6}  {base:10.4f}  {nocache - base:+15.4f}  {cold - base:+17.4f}  "
            f"{warm - base:+19.4f}  {final - base:+6.4f}  {per_rt:18.4f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=("augment", "trainer"), default="trainer")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", default="yolov8n.yaml")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--project", type=Path, default=Path("runs/vcm"))
    ap.add_argument(
        "--measure",
        type=int,
        default=0,
        help="measure the per-image cost over this many samples instead of training",
    )
    args = ap.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if args.measure:
        measure(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
