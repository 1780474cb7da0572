"""Task accuracy against bitrate: the harness (data layouts and outputs: ``eval/README.md``;
the architecture it measures: ``docs/design.md``).

    python -m vcm_eval.rate_accuracy --task {detection,segmentation,landmarks,quality} \\
        --data DIR --codecs vcm,jpeg,webp,avif,jxl --out OUT_DIR [--limit N] [--preset P] \\
        [--workers W] [--engine local|ray] [--ray-address ADDR]

Why it is shaped this way: every codec yields, per image, a list of operating points
(baselines: one per quality; vcm: one per layer count of a *single* encode); every decoded image
is scored by the task's model; a point of a curve is the set-level metric over all images at
that setting, with bpp = Σ bytes × 8 / Σ pixels of the originals. Baseline qualities are chosen
per run from a dense grid so that they span vcm's bpp range (measured on a few probe images)
and always include the codec's lowest quality. Outputs: ``summary.json``, ``per_image.csv``,
``rate_accuracy.png``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcm_eval.codecs import (
    BASELINES,
    CODEC_NAMES,
    DEFAULT_CODECS,
    BaselineCodec,
    EvalCodec,
    VcmCodec,
    check_codec_name,
    make_codec,
)
from vcm_eval.datasets import Item, load_rgb
from vcm_eval.levels import LEVELS, MetricReport, analyse_metric, level_target
from vcm_eval.tasks import TASKS, Task, make_task
from vcm_plugin import VCMError
from vcm_plugin.codec.presets import DEFAULT_PRESET
from vcm_plugin.ray_engine import check_engine

__all__ = ["RunConfig", "choose_settings", "main", "run"]

BD_METHOD = (
    "Bjontegaard delta rate of vcm vs each baseline (negative = vcm needs fewer bits): "
    "Pareto front of each curve, PCHIP of log10(bpp) over the metric, exact integral "
    "over the overlapping metric range (eval/bd_rate.py)"
)
NO_VCM_HI_BPP = 1.5  # upper bpp target for the baselines when vcm is not evaluated
LEVELS_METHOD = (
    "rate at fixed accuracy: first bpp at which a curve's Pareto front reaches "
    "L x the uncompressed metric (lower-is-better: metric <= uncompressed / L), "
    "log(bpp) interpolated linearly in the metric between the two front points "
    "around it; null when never reached (eval/levels.py); rate_ratio_vs = vcm bpp "
    "/ baseline bpp"
)


@dataclass
class RunConfig:
    """One run of the harness: what :func:`run` evaluates, where it writes. ``main`` builds it
    from the command line (``--codecs a,b`` is ``codecs=["a", "b"]``, ``--qualities
    jpeg=10,50`` is ``qualities={"jpeg": [10, 50]}``)."""

    task: str
    data: Path
    out: Path
    codecs: list[str] = field(default_factory=lambda: list(DEFAULT_CODECS))
    limit: int | None = None  #: first N items in sorted file-name order
    preset: str = "default"  #: the vcm preset
    workers: int = 1  #: process pool size, or CPUs of a local Ray instance
    engine: str = "local"  #: "local" or "ray"
    ray_address: str | None = None  #: a Ray cluster to join (engine "ray")
    threads: int = 1  #: torch/OpenCV threads per process
    num_settings: int = 8  #: qualities per baseline picked from its grid
    qualities: dict[str, list[int]] = field(default_factory=dict)  #: fixed baseline qualities
    model: str | None = None  #: detection: ultralytics YOLO weights
    imgsz: int = 640  #: detection: the detector's letterbox size
    mmseg_config: str | None = None  #: segmentation: an mmseg config (mIoU)
    mmseg_checkpoint: str | None = None
    landmark_model: str = "dlib"  #: landmarks: "dlib" or "face_alignment"
    metric: str = "haarpsi"  #: quality: the primary metric
    quiet: bool = False  #: no progress bar or table
    command: str = ""  #: how the run was started, recorded in summary.json

    def task_options(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "imgsz": self.imgsz,
            "mmseg_config": self.mmseg_config,
            "mmseg_checkpoint": self.mmseg_checkpoint,
            "landmark_model": self.landmark_model,
            "metric": self.metric,
        }


# --------------------------------------------------------------------------- settings choice
def choose_settings(
    candidates: Sequence[int],
    cand_bpp: Sequence[float],
    lo: float,
    hi: float,
    n: int = 8,
    minimum: int = 6,
) -> list[int]:
    """Pick ≈``n`` (≥ ``minimum`` when the grid allows) qualities spanning bpp ``[lo, hi]``.

    The lowest quality is always kept (baselines are extended downwards to their floor);
    the top pick is the first candidate whose bpp reaches ``1.25 × hi`` (so the curves overlap
    at the top); in between, picks are nearest to log-spaced bpp targets. ``lo`` only matters
    through the floor: no quality can go below the lowest.
    """
    cands = list(candidates)
    b = np.maximum(np.asarray(cand_bpp, float), 1e-9)
    if len(cands) != len(b) or not cands:
        raise ValueError("candidates and their bpp must be non-empty and of equal length")
    top = next((i for i in range(len(b)) if b[i] >= 1.25 * hi), len(b) - 1)
    while top + 1 < min(minimum, len(cands)):
        top += 1
    if top + 1 <= n:
        return cands[: top + 1]
    chosen = {0, top}
    targets = np.exp(np.linspace(np.log(b[0]), np.log(b[top]), n))[1:-1]
    for t in targets:
        free = [i for i in range(1, top) if i not in chosen]
        if free:
            chosen.add(min(free, key=lambda i: abs(math.log(b[i]) - math.log(t))))
    return [cands[i] for i in sorted(chosen)]


def _probe_indices(n_items: int, k: int = 4) -> list[int]:
    return sorted({int(round(i)) for i in np.linspace(0, n_items - 1, min(k, n_items))})


def plan_settings(
    codecs: list[EvalCodec],
    items: list[Item],
    overrides: dict[str, list[int]],
    num_settings: int,
    quiet: bool = False,
) -> dict[str, Any]:
    """Set ``codec.settings`` for every baseline; returns what the probe measured."""
    probe = [load_rgb(items[i].path) for i in _probe_indices(len(items))]
    pixels = sum(im.shape[0] * im.shape[1] for im in probe)
    info: dict[str, Any] = {"probe_images": len(probe)}
    lo, hi = None, NO_VCM_HI_BPP
    vcm = next((c for c in codecs if isinstance(c, VcmCodec)), None)
    if vcm is not None:
        sizes = [vcm.sizes(im) for im in probe]
        n = max(len(s) for s in sizes)
        per_k = [sum(s[min(k, len(s) - 1)] for s in sizes) * 8 / pixels for k in range(n)]
        lo, hi = per_k[0], per_k[-1]
        info["vcm_probe_bpp"] = per_k
    for c in codecs:
        if not isinstance(c, BaselineCodec):
            continue
        if c.name in overrides:
            c.settings = overrides[c.name]
            continue
        bpp = [sum(len(c.encode(im, q)) for im in probe) * 8 / pixels for q in c.candidates]
        c.settings = choose_settings(c.candidates, bpp, lo or 0.0, hi, n=num_settings)
        info[f"{c.name}_probe_bpp"] = dict(zip(map(str, c.candidates), bpp, strict=True))
        if not quiet:
            print(f"[settings] {c.name}: q={c.settings}", file=sys.stderr)
    return info


# --------------------------------------------------------------------------- per-image work
_STATE: dict[str, Any] = {}


def _init_worker(
    task_name: str, options: dict[str, Any], codec_specs: list[tuple], threads: int | None
) -> None:
    """Build the task model and codecs once per process (a process that is handed other
    codecs, as a Ray worker is, keeps its task model and builds only the codecs)."""
    task_key = repr((task_name, sorted(options.items()), threads))
    if _STATE.get("task_key") != task_key:
        if threads:
            import torch

            torch.set_num_threads(threads)
            try:
                import cv2

                cv2.setNumThreads(threads)
            except ImportError:
                pass
        task = make_task(task_name, options)
        task.setup()
        _STATE.update(task=task, task_key=task_key, codec_cache={})
    codecs = []
    for name, preset, settings in codec_specs:
        spec_key = repr((name, preset, settings))
        c = _STATE["codec_cache"].get(spec_key)
        if c is None:
            c = make_codec(name, preset, _STATE["task"].vcm_points)
            if settings is not None:
                c.settings = list(settings)
            _STATE["codec_cache"][spec_key] = c
        codecs.append(c)
    _STATE["codecs"] = codecs


def _process_item(item: Item, score_original: bool = True) -> dict[str, Any]:
    """Score the original and every operating point of every codec for one image."""
    task: Task = _STATE["task"]
    img = load_rgb(item.path)
    pixels = int(img.shape[0] * img.shape[1])
    out: dict[str, Any] = {
        "id": item.id,
        "width": int(img.shape[1]),
        "height": int(img.shape[0]),
        "pixels": pixels,
        "original": {
            "bytes": item.path.stat().st_size,
            "result": task.score(item, img) if score_original else None,
        },
        "points": {},
    }
    for c in _STATE["codecs"]:
        pts = []
        for p in c.points(img):
            if p.image.shape != img.shape:
                raise VCMError(
                    f"{c.name} {p.setting}: decoded shape {p.image.shape} != "
                    f"original {img.shape} for {item.id}"
                )
            pts.append((p.setting, p.nbytes, task.score(item, p.image)))
        out["points"][c.name] = pts
    return out


# --------------------------------------------------------------------------- aggregation
def _curve(
    task: Task,
    items: list[Item],
    recs: list[dict[str, Any]],
    codec: str,
    rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    per_image = [r["points"][codec] for r in recs]
    n = max(len(p) for p in per_image)
    labels = next(p for p in per_image if len(p) == n)
    total_px = sum(r["pixels"] for r in recs)
    curve = []
    for k in range(n):
        chosen = [p[min(k, len(p) - 1)] for p in per_image]  # short vcm streams: full stream
        nbytes = sum(c[1] for c in chosen)
        metrics = task.aggregate(items, [c[2] for c in chosen])
        point = {
            "setting": labels[k][0],
            "bpp": nbytes * 8 / total_px,
            "metric": float(metrics[task.metric]),
            "bytes": int(nbytes),
        }
        point.update({key: float(v) for key, v in metrics.items() if key != task.metric})
        curve.append(point)
        for r, c in zip(recs, chosen, strict=True):
            rows.append(_row(task, codec, labels[k][0], r, c[1], c[2]))
    return curve


def _row(
    task: Task, codec: str, setting: str, rec: dict[str, Any], nbytes: int, result: dict[str, Any]
) -> dict[str, Any]:
    row = {
        "task": task.name,
        "codec": codec,
        "setting": setting,
        "image": rec["id"],
        "width": rec["width"],
        "height": rec["height"],
        "bytes": nbytes,
        "bpp": nbytes * 8 / rec["pixels"],
    }
    row.update({k: v for k, v in result.items() if not k.startswith("_")})
    return row


def _analyses(
    task: Task, curves: dict[str, list[dict[str, Any]]], orig: dict[str, float]
) -> dict[str, MetricReport]:
    """The primary metric's analysis (key ``metric`` in the points), then every secondary
    metric's (its own key), each with BD-rates and rates at the accuracy levels."""
    out = {
        task.metric: analyse_metric(
            curves,
            task.metric,
            "metric",
            task.higher_is_better,
            orig[task.metric],
            task.levels_note(task.metric),
        )
    }
    for name, higher in task.secondary_metrics().items():
        out[name] = analyse_metric(curves, name, name, higher, orig[name], task.levels_note(name))
    return out


def _extend_to_top_level(
    task: Task,
    codecs: list[EvalCodec],
    items: list[Item],
    recs: list[dict[str, Any]],
    cfg: RunConfig,
) -> dict[str, list[int]]:
    """Add the next higher grid quality to every baseline whose curve does not reach the top
    accuracy level (95 % of the uncompressed primary metric), round after round, so that every
    baseline's rate at that level is measured, not missing for want of a setting."""
    orig = task.aggregate(items, [r["original"]["result"] for r in recs])[task.metric]
    if task.levels_note(task.metric) is not None or not math.isfinite(orig):
        return {}
    target = level_target(orig, max(LEVELS), task.higher_is_better)

    def meets(m: float) -> bool:
        return m >= target if task.higher_is_better else m <= target

    pending = [
        c
        for c in codecs
        if isinstance(c, BaselineCodec)
        and not any(meets(p["metric"]) for p in _curve(task, items, recs, c.name, []))
    ]
    added: dict[str, list[int]] = {}
    while True:
        todo = [
            (c, next(q for q in c.candidates if q > max(c.settings)))
            for c in pending
            if max(c.candidates) > max(c.settings)
        ]
        if not todo:
            return added
        if not cfg.quiet:
            print(
                "[settings] below the top accuracy level; adding "
                + ", ".join(f"{c.name} q={q}" for c, q in todo),
                file=sys.stderr,
            )
        new = _score_items(
            cfg, task, [(c.name, cfg.preset, [q]) for c, q in todo], items, score_original=False
        )
        pending = []
        for c, q in todo:
            c.settings.append(q)
            added.setdefault(c.name, []).append(q)
            for rec, extra in zip(recs, new, strict=True):
                rec["points"][c.name].extend(extra["points"][c.name])
            point = task.aggregate(items, [e["points"][c.name][0][2] for e in new])
            if not meets(float(point[task.metric])):
                pending.append(c)


def _score_items(
    cfg: RunConfig, task: Task, specs: list[tuple], items: list[Item], score_original: bool = True
) -> list[dict[str, Any]]:
    """Run the per-image worker over the set with the chosen engine."""
    if cfg.engine == "ray":
        return _run_items_ray(
            cfg.task,
            task.options,
            specs,
            items,
            cfg.workers,
            cfg.threads,
            cfg.quiet,
            cfg.ray_address,
            score_original,
        )
    workers = max(1, min(cfg.workers, len(items)))
    return _run_items(
        cfg.task, task.options, specs, items, workers, cfg.threads, cfg.quiet, score_original
    )


# --------------------------------------------------------------------------- driver
def code_version() -> str:
    """``git describe`` of the checkout (``-dirty`` when it has uncommitted changes), so every
    summary says which codec produced it; ``unknown`` outside a git checkout."""
    import subprocess

    try:
        r = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=10,
        )
        version = r.stdout.strip() or "unknown"
        d = subprocess.run(
            ["git", "status", "--porcelain", "--", "vcm_plugin"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return version + (" (vcm_plugin/ has uncommitted changes)" if d.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(cfg: RunConfig) -> dict[str, Any]:
    """Evaluate, write the three outputs into ``cfg.out`` and return the summary."""
    t0 = time.time()
    version = code_version()  # at the start: the workers import the code as it is now
    names = list(dict.fromkeys(cfg.codecs))
    if not names:
        raise VCMError("no codec to evaluate")
    for n in names:
        check_codec_name(n)
    if cfg.task not in TASKS:
        raise VCMError(f"unknown task {cfg.task!r}; known tasks: {', '.join(TASKS)}")
    data = Path(cfg.data)
    if not data.is_dir():
        raise VCMError(f"data directory {data} does not exist")
    if cfg.limit is not None and cfg.limit < 1:
        raise VCMError(f"limit must be >= 1, got {cfg.limit}")
    for name in cfg.qualities:
        if name not in BASELINES:
            raise VCMError(
                f"fixed qualities for {name!r}, which is not a baseline; "
                f"baselines: {', '.join(BASELINES)}"
            )
    task = make_task(cfg.task, cfg.task_options())
    items = task.items(data, cfg.limit)
    codecs = [make_codec(n, cfg.preset, task.vcm_points) for n in names]
    plan = plan_settings(codecs, items, cfg.qualities, cfg.num_settings, quiet=cfg.quiet)
    specs = [(c.name, cfg.preset, c.settings) for c in codecs]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    check_engine(cfg.engine, cfg.ray_address)
    recs = _score_items(cfg, task, specs, items)
    plan["extended"] = _extend_to_top_level(task, codecs, items, recs, cfg)

    rows: list[dict[str, Any]] = []
    curves = {c.name: _curve(task, items, recs, c.name, rows) for c in codecs}
    orig = task.aggregate(items, [r["original"]["result"] for r in recs])
    reports = _analyses(task, curves, orig)
    primary = reports[task.metric]
    for r in recs:
        rows.append(_row(task, "original", "-", r, r["original"]["bytes"], r["original"]["result"]))
    total_px = sum(r["pixels"] for r in recs)
    summary = {
        "task": task.name,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "curves": curves,
        "bd_rate_vs": primary.bd_rate_vs,
        "bd_rate_notes": primary.bd_rate_notes,
        "accuracy_levels": list(LEVELS),
        "accuracy_targets": primary.targets,
        "rate_at_accuracy": primary.rate_at_accuracy,
        "rate_ratio_vs": primary.rate_ratio_vs,
        "levels_note": primary.levels_note,
        "by_metric": {name: asdict(r) for name, r in reports.items()},
        "original": {
            "metric": float(orig[task.metric]),
            "bpp": sum(r["original"]["bytes"] for r in recs) * 8 / total_px,
            **{k: float(v) for k, v in orig.items() if k != task.metric},
        },
        "data": str(data.resolve()),
        "num_images": len(items),
        "pixels": total_px,
        "preset": cfg.preset,
        "model": task.describe(),
        "settings_probe": plan,
        "bd_rate_method": BD_METHOD,
        "levels_method": LEVELS_METHOD,
        "code_version": version,
        "command": cfg.command,
        "seconds": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _write_csv(out / "per_image.csv", rows)
    from vcm_eval.plot import plot_summary

    plot_summary(summary, out / "rate_accuracy.png")
    for name in reports:
        if name != task.metric:
            plot_summary(summary, out / f"rate_accuracy_{_slug(name)}.png", metric=name)
    if not cfg.quiet:
        _print_table(summary)
    return summary


def _slug(metric: str) -> str:
    """File-name form of a metric name: ``mask fidelity (pose)`` → ``mask-fidelity-pose``."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", metric.lower()).strip("-")


def _run_items(
    task_name: str,
    options: dict[str, Any],
    specs: list[tuple],
    items: list[Item],
    workers: int,
    threads: int,
    quiet: bool,
    score_original: bool = True,
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc="images", unit="img", disable=quiet, file=sys.stderr)
    work = functools.partial(_process_item, score_original=score_original)
    try:
        if workers == 1:
            _init_worker(task_name, options, specs, threads)
            recs = []
            for it in items:
                recs.append(work(it))
                bar.update()
            return recs
        ctx = mp.get_context("spawn")  # torch/OpenMP state does not survive fork safely
        with ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(task_name, options, specs, threads),
        ) as ex:
            recs = []
            for r in ex.map(work, items, chunksize=1):
                recs.append(r)
                bar.update()
            return recs
    finally:
        bar.close()


def _ray_item(
    task_name: str,
    options: dict[str, Any],
    specs: list[tuple],
    threads: int,
    item: Item,
    score_original: bool,
) -> dict[str, Any]:
    """One Ray task: the pool's worker function on one (image, codec) pair, or on the
    original image alone (``specs`` empty)."""
    _init_worker(task_name, options, specs, threads)
    return _process_item(item, score_original)


def _run_items_ray(
    task_name: str,
    options: dict[str, Any],
    specs: list[tuple],
    items: list[Item],
    workers: int,
    threads: int,
    quiet: bool,
    address: str | None,
    score_original: bool = True,
) -> list[dict[str, Any]]:
    """Fan images x codecs out as Ray tasks (each codec's settings stay in one task: vcm's
    operating points all come from one encode) and merge them into the records the local
    pool returns. ``workers`` sizes a local Ray instance; ``address`` joins a cluster, whose
    nodes must see the data paths and have this package installed."""
    from tqdm import tqdm

    from vcm_plugin.ray_engine import ray_results, ray_session

    with ray_session(address, workers) as ray:
        remote = ray.remote(num_cpus=threads or 1)(_ray_item)
        where = {}
        for i, item in enumerate(items):
            for spec in [None, *specs] if score_original else specs:  # None: the original
                ref = remote.remote(
                    task_name, options, [] if spec is None else [spec], threads, item, spec is None
                )
                where[ref] = (i, None if spec is None else spec[0])
        parts: dict[tuple[int, str | None], dict[str, Any]] = {}
        bar = tqdm(total=len(where), desc="tasks", unit="task", disable=quiet, file=sys.stderr)
        try:
            for ref, rec in ray_results(ray, list(where)):
                parts[where[ref]] = rec
                bar.update()
        finally:
            bar.close()
    recs = []
    for i in range(len(items)):
        rec = parts[(i, None if score_original else specs[0][0])]
        for spec in specs:
            rec["points"][spec[0]] = parts[(i, spec[0])]["points"][spec[0]]
        recs.append(rec)
    return recs


def _parse_qualities(specs: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for s in specs:
        name, _, qs = s.partition("=")
        if name not in BASELINES or not qs:
            raise VCMError(
                f"--qualities expects BASELINE=q1,q2,... with BASELINE one of "
                f"{', '.join(BASELINES)}; got {s!r}"
            )
        try:
            out[name] = sorted({int(q) for q in qs.split(",") if q.strip()})
        except ValueError as e:
            raise VCMError(f"--qualities {s!r}: qualities must be integers") from e
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _print_table(s: dict[str, Any]) -> None:
    print(
        f"\n{s['task']} — {s['metric']} ({'higher' if s['higher_is_better'] else 'lower'} "
        f"is better), {s['num_images']} images; uncompressed: {s['original']['metric']:.4f}"
    )
    for name, pts in s["curves"].items():
        cells = ", ".join(f"{p['setting']}: {p['bpp']:.3f} bpp → {p['metric']:.4f}" for p in pts)
        print(f"  {name:5s} {cells}")
    for name, v in s["bd_rate_vs"].items():
        note = s.get("bd_rate_notes", {}).get(name, "not computable")
        print(f"  BD-rate vcm vs {name}: " + (f"n/a ({note})" if v is None else f"{v:+.2f} %"))
    from vcm_eval.report import levels_lines

    print("\n".join(levels_lines(s)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vcm_eval.rate_accuracy",
        description="Task accuracy vs bitrate for vcm and baselines.",
    )
    p.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    p.add_argument(
        "--data", required=True, help="data set directory (the task's layout: eval/README.md)"
    )
    p.add_argument(
        "--codecs",
        default=",".join(DEFAULT_CODECS),
        help=f"comma list from {','.join(CODEC_NAMES)} (the *-machine ones: issue 30's ablation)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--limit", type=int, default=None, help="first N items in sorted file-name order"
    )
    p.add_argument(
        "--preset",
        default="default",
        help=f"vcm preset (default: 'default', the package's default preset: {DEFAULT_PRESET})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="process pool size, or CPUs of a local Ray instance (default 1)",
    )
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: this process or a process pool; ray: images x codecs as Ray "
        "tasks (default: local)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join ('auto', 'ray://host:10001'); default: start a local instance",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/OpenCV threads per process (default 1: on a shared CPU, more "
        "threads make a small model many times slower; use --workers instead)",
    )
    p.add_argument(
        "--num-settings",
        type=int,
        default=8,
        help="qualities per baseline picked from its grid (>= 6 when possible)",
    )
    p.add_argument(
        "--qualities",
        action="append",
        metavar="CODEC=Q1,Q2,...",
        help="fix a baseline's qualities instead of choosing them (repeatable)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="detection: ultralytics YOLO weights (default: legacy yolov5n.pt)",
    )
    p.add_argument(
        "--imgsz",
        type=int,
        default=640,
        help="detection: the detector's letterbox size (default 640; another size is a second "
        "opinion on a codec tuned with YOLOv5n at 640)",
    )
    p.add_argument("--mmseg-config", default=None, help="segmentation: mmseg config (mIoU)")
    p.add_argument("--mmseg-checkpoint", default=None, help="segmentation: mmseg checkpoint")
    p.add_argument(
        "--landmark-model",
        default="dlib",
        choices=["dlib", "face_alignment"],
        help="landmarks: dlib 68-point (default) or face_alignment FAN",
    )
    p.add_argument(
        "--metric",
        default="haarpsi",
        help="quality: haarpsi (default), ms-ssim, ssimulacra2, psnr, lpips, dists",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")
    return p


def config_from_args(args: argparse.Namespace, argv: Sequence[str]) -> RunConfig:
    """The typed run of a parsed command line; errors name the command-line flags."""
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    if not codecs:
        raise VCMError("--codecs is empty")
    if args.limit is not None and args.limit < 1:
        raise VCMError("--limit must be >= 1")
    if args.ray_address is not None and args.engine != "ray":
        raise VCMError("--ray-address needs --engine ray")
    if not 32 <= args.imgsz <= 4096 or args.imgsz % 32:
        raise VCMError("--imgsz must be a multiple of 32 between 32 and 4096")
    for n in codecs:  # before --qualities, which names baselines
        check_codec_name(n)
    return RunConfig(
        task=args.task,
        data=Path(args.data),
        out=Path(args.out),
        codecs=codecs,
        limit=args.limit,
        preset=args.preset,
        workers=args.workers,
        engine=args.engine,
        ray_address=args.ray_address,
        threads=args.threads,
        num_settings=args.num_settings,
        qualities=_parse_qualities(args.qualities or []),
        model=args.model,
        imgsz=args.imgsz,
        mmseg_config=args.mmseg_config,
        mmseg_checkpoint=args.mmseg_checkpoint,
        landmark_model=args.landmark_model,
        metric=args.metric,
        quiet=args.quiet,
        command="python -m vcm_eval.rate_accuracy " + " ".join(argv),
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        run(config_from_args(args, argv))
    except VCMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
