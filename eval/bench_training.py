"""Training-speed benchmark: wall seconds per epoch of a real ultralytics detector, with and
without the compression transforms (issue 29).

    python -m vcm_eval.bench_training --data ../shared/data/coco128 --epochs 2 --out OUT

Why: the plugin's first use is a dataloader transform in detection training, and what a user
pays for it is epoch time, not codec seconds per image. Each mode trains the same untrained
detector (``--model``, built from its YAML, so nothing is downloaded; default ``yolo26n.yaml``,
the nano model of ultralytics' current generation: 1.5 GFLOPs at 320 px, fewer than the other
standard nano configs (yolov8n 2.2, yolo11n 1.7, yolov9t 2.1), so the transforms' share is
near its largest; only the yolov8n-ghost variant is smaller, by 6 %) for ``--epochs`` epochs
in a fresh run directory ``OUT/runs/MODE``:

* ``none``: ultralytics' ``DetectionTrainer`` as it is;
* ``jpeg``: Albumentations' ``ImageCompression`` (JPEG, quality 75-100, the range of
  ultralytics' own default entry) through ``model.train(augmentations=[...])``, p=1;
* ``vcm``: ``VCMCompression`` through the same hook, p=1, no cache: an encode and a decode of
  every network input (the augmented mosaic, so nothing repeats);
* ``vcm-cache``: ``VCMTrainer`` with ``vcm_cache`` set to a directory (shared by the
  DataLoader workers, unlike the in-memory cache): each image is round-tripped as loaded,
  before mosaic, so the first epoch encodes and later epochs decode the cached streams;
* ``vcm-points``: ``vcm-cache`` with ``vcm_cache_points``: the cache also keeps the pictures
  of the latent points in ``--layers`` (decoded once, at the encode), so later epochs run
  neither the encoder nor the generator (texture points still decode: an AV1 decode);
* ``shards``: ``vcm encode-dataset``'s ``encode_dataset`` writes shards first (its wall time
  is ``encode_s``, outside the epochs); their streams are copied out byte for byte as ``.vcm``
  files beside the labels (``extract_s``: ultralytics reads one file per image) and
  ``VCMTrainer`` trains on them, decoding each ``.vcm`` image as ultralytics loads it.

Every mode keeps mosaic on (``close_mosaic=0``; ultralytics' default closes it for the last 10
epochs, i.e. for the whole of a run this short, and restarts the workers inside epoch 1),
validates only after the last epoch (``val=False``, outside the epoch times) and uses
``--workers`` DataLoader worker processes even on a CPU (ultralytics sets 0 there; give
``--workers 0`` for its CPU default).

Timing. ``epoch_s``: wall seconds from ultralytics' ``on_train_epoch_start`` to its
``on_train_epoch_end`` callback. ``transform_s``: seconds spent inside the compression
transform, summed over the processes that ran it — the Albumentations transform's ``apply``
(jpeg, vcm), the VCM round trip of each loaded image (vcm-cache, vcm-points), the ``.vcm``
decode in ultralytics' ``imread`` (shards). Each call appends "finish time, seconds" to a log
file named by the environment variable ``VCM_BENCH_TRAINING_LOG`` (inherited by the DataLoader
workers; one ``O_APPEND`` write per call, so concurrent workers never interleave a line),
and a call counts towards the epoch during which it finished: epoch k is every call after
epoch k-1's end up to epoch k's end. With ``--workers 0`` this is exact. Worker processes keep
four batches each in flight (from before epoch 1 starts and across epoch ends), so with an
epoch of few more batches than that the per-epoch figures mean little (compare sums, or use
``--workers 0``); calls after the last epoch's end (prefetch for an epoch that never runs;
in the shards mode also the final validation's ``.vcm`` decodes) are reported apart
(``transform_after_s``, ``transform_after_calls``). With W workers ``transform_s`` can reach
W times ``epoch_s``.

ultralytics also keeps a buffer of recently loaded images per process (at most
``min(images, 8 × batch, 1000)``; mosaic takes three of its four pictures from it): the
``.vcm`` decode of the shards mode is skipped for buffered images, the VCM round trip of
vcm-cache and vcm-points is not (it wraps every load, four per mosaic). On a small set the
buffer holds every image, which a large set's never does; ``--buffer N`` (e.g. 4) makes the
subset behave like a large set. ``transform_calls`` counts the calls per epoch.

Writes ``OUT/bench_training.json`` (``{"device", "modes": {MODE: {"epoch_s": [...],
"transform_s": [...], ...}}, "settings", ...}``), ``OUT/bench_training.png`` (epoch time per
mode and epoch) and ``OUT/bench_training.md`` (the table). Bad input raises ``VCMError``; the
command prints it and exits with status 2.
"""

from __future__ import annotations

import os

# must be set before ultralytics is first imported (it reads them at import time): a benchmark
# must not time downloads or pip installs, and its output is the progress lines below
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from vcm_plugin.codec.presets import ANALYTICS, DEFAULT_PRESET, get_preset  # noqa: E402
from vcm_plugin.datasets.layouts import scan  # noqa: E402
from vcm_plugin.errors import VCMError  # noqa: E402

__all__ = ["MODES", "main", "run", "table"]

MODES = ("none", "jpeg", "vcm", "vcm-cache", "vcm-points", "shards")
COMPRESSING = frozenset(MODES) - {"none"}
LOG_ENV = "VCM_BENCH_TRAINING_LOG"
JPEG_QUALITY = (75, 100)  # ultralytics' own default ImageCompression entry
DEFAULT_MODEL = "yolo26n.yaml"  # see the module docstring
SHARD_SIZE = 64


# --------------------------------------------------------------------------------------------
# Timing shared across DataLoader worker processes


def record(seconds: float) -> None:
    """Append one transform call (finish time, seconds) to the log ``VCM_BENCH_TRAINING_LOG``
    names; nothing when it is unset. One small ``O_APPEND`` write per call: atomic on a local
    filesystem, so the worker processes' lines never interleave."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{time.time():.6f} {seconds:.6f}\n".encode())
    finally:
        os.close(fd)


def read_log(path: Path) -> list[tuple[float, float]]:
    """The (finish time, seconds) pairs of a log written by :func:`record`."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        t, s = line.split()
        out.append((float(t), float(s)))
    return out


def per_epoch(
    calls: list[tuple[float, float]], ends: list[float]
) -> tuple[list[float], list[int], tuple[float, int]]:
    """Seconds and counts of the calls that finished in each epoch (after the previous epoch's
    end, up to this one's), and (seconds, count) of the calls after the last end."""
    seconds, counts = [0.0] * len(ends), [0] * len(ends)
    after_s, after_n = 0.0, 0
    for t, s in calls:
        k = next((i for i, end in enumerate(ends) if t <= end), None)
        if k is None:
            after_s += s
            after_n += 1
        else:
            seconds[k] += s
            counts[k] += 1
    return seconds, counts, (after_s, after_n)


def timed(fn: Callable[..., Any], only: Callable[..., bool] | None = None) -> Callable[..., Any]:
    """``fn`` recording each call's seconds (the calls ``only`` accepts, when given)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if only is not None and not only(*args, **kwargs):
            return fn(*args, **kwargs)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        record(time.perf_counter() - t0)
        return out

    return call


@contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
    """Rebind ``module.name`` for the block. Forked DataLoader workers inherit the binding
    (Linux's default start method); a run whose compression mode logs no call says so."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


# --------------------------------------------------------------------------------------------
# Options


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes:
        raise VCMError(f"--modes is empty; known modes: {', '.join(MODES)}")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise VCMError(f"unknown mode(s) {', '.join(unknown)}; known modes: {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


def parse_layers_arg(text: str) -> int | str | tuple[int, int] | None:
    """``--layers``: ``analytics``, ``all``, ``K`` or ``LOW-HIGH`` (drawn per image)."""
    from vcm_plugin.codec.layerspec import parse_layers

    t = text.strip()
    if t == ANALYTICS:
        return ANALYTICS
    if t == "all":
        return None
    try:
        if "-" in t:
            low, high = (int(v) for v in t.split("-", 1))
            return parse_layers((low, high), "--layers")  # type: ignore[return-value]
        return parse_layers(int(t), "--layers")  # type: ignore[return-value]
    except ValueError as e:
        if isinstance(e, VCMError):
            raise
        raise VCMError(
            f"--layers must be 'analytics', 'all', a count K or a range LOW-HIGH, got {text!r}"
        ) from None


def resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VCMError(f"--device {device}: torch sees no CUDA device here")
    if device != "cpu" and not device.startswith("cuda"):
        raise VCMError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    return device


def _ultralytics_device(device: str) -> str:
    """ultralytics names GPUs by index ("0"), not "cuda:0"."""
    if device == "cpu":
        return "cpu"
    return device.split(":", 1)[1] if ":" in device else "0"


def check_settings(
    epochs: int,
    imgsz: int,
    batch: int,
    workers: int,
    limit: int | None,
    preset: str,
    buffer: int | None = None,
) -> None:
    for name, value, low in (("epochs", epochs, 1), ("imgsz", imgsz, 32), ("batch", batch, 1)):
        if value < low:
            raise VCMError(f"--{name} must be >= {low}, got {value}")
    if workers < 0:
        raise VCMError(f"--workers must be >= 0, got {workers}")
    if limit is not None and limit < 1:
        raise VCMError(f"--limit must be >= 1, got {limit}")
    if buffer is not None and buffer < 2:
        raise VCMError(f"--buffer must be >= 2 (mosaic draws from it), got {buffer}")
    get_preset(preset)


# --------------------------------------------------------------------------------------------
# Data


def _class_names(src: Path, label_files: list[Path]) -> list[str]:
    """Class names from the source's YAML (``data.yaml``, ``dataset.yaml`` or any ``*.yaml``
    with ``names``); without one, ``"0"``, ``"1"`` ... up to the largest class id used."""
    import yaml

    candidates = [src / "data.yaml", src / "dataset.yaml", *sorted(src.glob("*.yaml"))]
    for path in dict.fromkeys(candidates):
        if not path.is_file():
            continue
        try:
            meta = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise VCMError(f"{path} is not valid YAML: {e}") from None
        names = meta.get("names") if isinstance(meta, dict) else None
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list) and names:
            return [str(n) for n in names]
    top = -1
    for f in label_files:
        for line in f.read_text().splitlines():
            if line.strip():
                try:
                    top = max(top, int(float(line.split()[0])))
                except ValueError:
                    raise VCMError(f"bad label line in {f}: {line!r}") from None
    return [str(i) for i in range(top + 1)] or ["0"]


def _write_yaml(root: Path, names: list[str]) -> Path:
    import yaml

    meta = {"path": str(root.resolve()), "train": "images", "val": "images", "names": names}
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(meta, sort_keys=False))
    return path


def find_samples(src: Path, limit: int | None) -> list[Any]:
    """The first ``limit`` samples (by key) of the YOLO set ``src``; VCMError when ``src`` is
    missing, not a directory, not in YOLO layout (``images/`` + ``labels/``) or has no
    images."""
    if not src.exists():
        raise VCMError(f"--data {src} does not exist")
    _, samples = scan(src, "yolo")
    return samples[:limit] if limit else samples


def prepare_data(src: Path, samples: list[Any], out: Path) -> Path:
    """``OUT/data``: ``samples`` of the YOLO set ``src`` (images and labels as symbolic links)
    with a ``data.yaml``; returns its path. A copy, because ultralytics writes its label cache
    beside the data, and the source must stay untouched."""
    root = out / "data"
    shutil.rmtree(root, ignore_errors=True)
    labels = []
    for s in samples:
        image = root / "images" / (s.key + Path(s.image).suffix)
        image.parent.mkdir(parents=True, exist_ok=True)
        image.symlink_to(Path(s.image).resolve())
        for _, lab in s.labels:
            dst = root / "labels" / f"{s.key}.txt"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(Path(lab).resolve())
            labels.append(Path(lab))
    (root / "labels").mkdir(exist_ok=True)
    return _write_yaml(root, _class_names(src, labels))


def prepare_shards(
    data_yaml: Path, out: Path, preset: str, workers: int
) -> tuple[Path, dict[str, Any]]:
    """Encode ``OUT/data`` into ``OUT/shards`` (timed: ``encode_s``), then copy each stream out
    of its shard, byte for byte, as ``OUT/shards-yolo/images/KEY.vcm`` beside its label
    (``extract_s``). Returns that set's data.yaml and the figures."""
    import yaml

    from vcm_plugin.datasets import ShardDataset, encode_dataset

    shards, root = out / "shards", out / "shards-yolo"
    shutil.rmtree(shards, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    report = encode_dataset(
        data_yaml.parent,
        shards,
        preset=preset,
        shard_size=SHARD_SIZE,
        workers=max(1, workers),
        progress=False,
    )
    t0 = time.perf_counter()
    ds = ShardDataset(shards)
    (root / "labels").mkdir(parents=True)
    for i, key in enumerate(ds.keys):
        image = root / "images" / f"{key}.vcm"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(ds.stream(i))
        label = ds.label(i, "txt")
        if label is not None:
            dst = root / "labels" / f"{key}.txt"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(label)
    names = yaml.safe_load(data_yaml.read_text())["names"]
    path = _write_yaml(root, names)
    return path, {
        "encode_s": report["seconds"],
        "extract_s": time.perf_counter() - t0,
        "shards": report["shards"],
        "shard_size": SHARD_SIZE,
        "encode_workers": max(1, workers),
        "stream_bytes": sum(p.stat().st_size for p in (root / "images").rglob("*.vcm")),
    }


# --------------------------------------------------------------------------------------------
# Trainers and transforms


def _classes() -> dict[str, Any]:
    """The trainers and timed transforms, built once, on first use: they import ultralytics
    and Albumentations, which checking the options does not need. The transforms are
    registered with Albumentations under ``vcm_eval.bench_training.<name>``, where ultralytics'
    checkpoint round trip of ``augmentations`` (``A.to_dict`` / ``A.from_dict``) finds them."""
    if _CLASSES:
        return _CLASSES
    import albumentations as A
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils import DEFAULT_CFG

    from vcm_plugin.integrations.ultralytics import VCMCompression, VCMTrainer

    class BenchTrainer:
        """Keeps ``workers`` (ultralytics sets 0 on a CPU) and applies ``bench_buffer``, the
        size of ultralytics' per-process buffer of loaded training images (None: its own)."""

        def __init__(self, cfg: Any = DEFAULT_CFG, overrides: Any = None, _callbacks: Any = None):
            overrides = dict(overrides or {})
            self.bench_buffer = overrides.pop("bench_buffer", None)
            workers = overrides.get("workers", DEFAULT_CFG.workers)
            super().__init__(cfg, overrides, _callbacks)  # type: ignore[call-arg]
            self.args.workers = workers  # type: ignore[attr-defined]

        def build_dataset(self, img_path: str, mode: str = "train", batch: Any = None) -> Any:
            dataset = super().build_dataset(img_path, mode=mode, batch=batch)  # type: ignore[misc]
            if mode == "train" and self.bench_buffer is not None:
                dataset.max_buffer_length = self.bench_buffer
            return dataset

    class BenchDetectionTrainer(BenchTrainer, DetectionTrainer):
        pass

    class BenchVCMTrainer(BenchTrainer, VCMTrainer):
        pass

    class TimedImageCompression(A.ImageCompression):
        """``A.ImageCompression`` recording the seconds of each ``apply``."""

        def apply(self, img: Any, *args: Any, **params: Any) -> Any:
            t0 = time.perf_counter()
            out = super().apply(img, *args, **params)
            record(time.perf_counter() - t0)
            return out

    class TimedVCMCompression(VCMCompression):
        """``VCMCompression`` recording the seconds of each ``apply``."""

        def apply(self, img: Any, *args: Any, **params: Any) -> Any:
            t0 = time.perf_counter()
            out = super().apply(img, *args, **params)
            record(time.perf_counter() - t0)
            return out

    _CLASSES.update(
        detection=BenchDetectionTrainer,
        vcm=BenchVCMTrainer,
        jpeg_transform=TimedImageCompression,
        vcm_transform=TimedVCMCompression,
    )
    return _CLASSES


_CLASSES: dict[str, Any] = {}


@contextmanager
def _vcm_files_timed() -> Iterator[None]:
    """``.vcm`` files readable by ultralytics, their decode in ``imread`` timed; the reader
    state is put back afterwards."""
    import ultralytics.data.base as base

    from vcm_plugin.integrations import ultralytics as vu

    before = vu._reader()
    vu.enable_vcm_files()  # the trainer's per-image layer count overrides the reader's
    try:
        is_vcm = lambda f, *a, **k: os.fspath(f).lower().endswith(vu.VCM_SUFFIX)  # noqa: E731
        with patched(base, "imread", timed(base.imread, only=is_vcm)):
            yield
    finally:
        if before is None:
            vu.disable_vcm_files()
        else:
            vu.enable_vcm_files(before.layers)


def train_mode(
    mode: str,
    data_yaml: Path,
    out: Path,
    *,
    model: str,
    epochs: int,
    imgsz: int,
    batch: int,
    workers: int,
    device: str,
    preset: str,
    layers: Any,
    buffer: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train ``model`` for ``epochs`` epochs in ``mode`` in a fresh ``OUT/runs/MODE``; returns
    ``epoch_s``, ``transform_s`` and the rest of the mode's entry."""
    from ultralytics import YOLO

    from vcm_plugin.integrations import ultralytics as vu

    classes = _classes()
    run_dir = out / "runs" / mode
    shutil.rmtree(run_dir, ignore_errors=True)
    log = out / "timing" / f"{mode}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    args: dict[str, Any] = dict(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        workers=workers,
        device=_ultralytics_device(device),
        project=str(run_dir.parent),
        name=mode,
        exist_ok=True,
        close_mosaic=0,
        val=False,
        plots=False,
        amp=device != "cpu",
        seed=0,
        verbose=False,
        trainer=classes["detection"],
        bench_buffer=buffer,
    )
    extra: dict[str, Any] = {}
    patch: Any = None
    if mode == "jpeg":
        args["augmentations"] = [classes["jpeg_transform"](quality_range=JPEG_QUALITY, p=1.0)]
        extra["jpeg_quality"] = list(JPEG_QUALITY)
    elif mode == "vcm":
        args["augmentations"] = [
            classes["vcm_transform"](layers=layers, preset=preset, channel_order="bgr", p=1.0)
        ]
    elif mode in ("vcm-cache", "vcm-points"):
        cache = out / "cache" / mode
        shutil.rmtree(cache, ignore_errors=True)
        args.update(trainer=classes["vcm"], vcm_layers=layers, vcm_preset=preset)
        args.update(vcm_cache=str(cache), vcm_cache_points=mode == "vcm-points")
        patch = patched(vu, "_roundtrip_bgr", timed(vu._roundtrip_bgr))
        extra["cache"] = str(cache)
    elif mode == "shards":
        args.update(trainer=classes["vcm"], vcm_layers=layers, vcm_preset=preset)
        patch = _vcm_files_timed()

    yolo = YOLO(model)
    starts: list[float] = []
    ends: list[float] = []

    def on_start(trainer: Any) -> None:
        starts.append(time.time())

    def on_end(trainer: Any) -> None:
        ends.append(time.time())
        s, n, _ = per_epoch(read_log(log), ends)
        if not quiet:
            print(
                f"{mode}: epoch {len(ends)}/{epochs} {ends[-1] - starts[-1]:.1f} s, transform "
                f"{s[-1]:.1f} s in {n[-1]} calls",
                flush=True,
            )

    yolo.add_callback("on_train_epoch_start", on_start)
    yolo.add_callback("on_train_epoch_end", on_end)
    os.environ[LOG_ENV] = str(log)
    t0 = time.perf_counter()
    try:
        if patch is None:
            yolo.train(**args)
        else:
            with patch:
                yolo.train(**args)
    finally:
        os.environ.pop(LOG_ENV, None)
    train_s = time.perf_counter() - t0
    if len(ends) != epochs:
        raise RuntimeError(f"{mode}: ultralytics ran {len(ends)} of {epochs} epochs")
    seconds, counts, after = per_epoch(read_log(log), ends)
    if mode in COMPRESSING and not any(counts):
        raise RuntimeError(
            f"{mode}: no transform call was recorded: DataLoader workers must inherit the "
            f"timing hooks (a forked start method) and the environment variable {LOG_ENV}"
        )
    trainer = yolo.trainer
    entry = {
        "epoch_s": [e - s for s, e in zip(starts, ends, strict=True)],
        "transform_s": seconds,
        "transform_calls": counts,
        "transform_after_s": after[0],
        "transform_after_calls": after[1],
        "train_s": train_s,
        "workers": trainer.train_loader.num_workers,
        **extra,
    }
    if mode in ("vcm-cache", "vcm-points"):
        entry["cache_streams"] = sum(1 for _ in (out / "cache" / mode).glob("*/*.vcm"))
        entry["cache_points"] = sum(1 for _ in (out / "cache" / mode).glob("*/*.npy"))
        entry["cache_bytes"] = sum(f.stat().st_size for f in (out / "cache" / mode).glob("*/*"))
    return entry


# --------------------------------------------------------------------------------------------
# Report


def table(report: dict[str, Any]) -> str:
    """Markdown: per mode the epoch times, the transform's share of each epoch and the last
    epoch against jpeg's last epoch."""
    modes = report["modes"]
    epochs = report["settings"]["epochs"]
    jpeg = modes.get("jpeg", {}).get("epoch_s")
    head = " | ".join(f"epoch {k + 1} s" for k in range(epochs))
    share = " | ".join(f"transform share {k + 1}" for k in range(epochs))
    lines = [
        f"| mode | {head} | {share} | epoch {epochs} / jpeg epoch {epochs} | notes |",
        "|---|" + "---|" * (2 * epochs + 2),
    ]
    for mode, m in modes.items():
        times = " | ".join(f"{t:.1f}" for t in m["epoch_s"])
        shares = " | ".join(
            f"{s / t:.2f}" if mode != "none" else "–"
            for s, t in zip(m["transform_s"], m["epoch_s"], strict=True)
        )
        ratio = f"{m['epoch_s'][-1] / jpeg[-1]:.2f}" if jpeg else "–"
        notes = []
        if "encode_s" in m:
            notes.append(f"encode-dataset {m['encode_s']:.1f} s, extract {m['extract_s']:.1f} s")
        if "cache_streams" in m:
            kept = f" + {m['cache_points']} pictures" if m.get("cache_points") else ""
            size = f", {m['cache_bytes'] / 1e6:.1f} MB" if "cache_bytes" in m else ""
            notes.append(f"{m['cache_streams']} streams{kept} cached{size}")
        notes.append("calls " + "/".join(str(c) for c in m["transform_calls"]))
        lines.append(f"| {mode} | {times} | {shares} | {ratio} | {'; '.join(notes)} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Grouped bars: epoch seconds per mode and epoch; the transform seconds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = report["modes"]
    epochs = report["settings"]["epochs"]
    width = 0.8 / epochs
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for k in range(epochs):
        xs = [i + (k - (epochs - 1) / 2) * width for i in range(len(modes))]
        ys = [m["epoch_s"][k] for m in modes.values()]
        bars = ax.bar(xs, ys, width * 0.95, color=f"C{k}", label=f"epoch {k + 1}")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.plot(
            xs,
            [m["transform_s"][k] for m in modes.values()],
            "k_",
            ms=14,
            mew=2,
            label="transform s (all processes)" if k == 0 else None,
        )
    ticks = [
        f"{mode}\n(+{m['encode_s']:.0f} s encode-dataset)" if "encode_s" in m else mode
        for mode, m in modes.items()
    ]
    ax.set_xticks(range(len(modes)), ticks, fontsize=8)
    ax.set_ylabel("seconds")
    s = report["settings"]
    ax.set_title(
        f"{s['model']} {s['imgsz']} px, {s['images']} images, batch {s['batch']}, "
        f"{s['workers']} workers, {report['device']}, preset {s['preset']}, "
        f"layers {s['layers']}",
        fontsize=9,
    )
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _hardware(device: str) -> dict[str, Any]:
    import torch

    from vcm_eval.bench_speed import cpu_name

    return {
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
    }


def run(
    data: Path,
    out: Path,
    *,
    epochs: int = 2,
    modes: Sequence[str] = MODES,
    model: str = DEFAULT_MODEL,
    imgsz: int = 320,
    batch: int = 16,
    workers: int = 2,
    limit: int | None = None,
    device: str | None = None,
    preset: str = DEFAULT_PRESET,
    layers: Any = ANALYTICS,
    buffer: int | None = None,
    command: str = "",
    quiet: bool = False,
) -> dict[str, Any]:
    """Every mode in turn; writes and returns the report. Bad input raises VCMError before
    anything is trained."""
    modes = parse_modes(",".join(modes))
    check_settings(epochs, imgsz, batch, workers, limit, preset, buffer)
    samples = find_samples(Path(data), limit)
    device = resolve_device(device)
    from ultralytics import YOLO

    try:
        YOLO(model)
    except (FileNotFoundError, OSError, KeyError, ValueError) as e:
        raise VCMError(f"--model {model!r} cannot be built here: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    data_yaml = prepare_data(Path(data), samples, out)
    n_images = len(samples)
    report: dict[str, Any] = {
        "device": device,
        **_hardware(device),
        "settings": {
            "data": str(data),
            "images": n_images,
            "epochs": epochs,
            "model": model,
            "imgsz": imgsz,
            "batch": batch,
            "workers": workers,
            "buffer": buffer if buffer is not None else "ultralytics: min(images, 8 x batch, 1000)",
            "preset": get_preset(preset).name,
            "layers": "all" if layers is None else layers,
            "close_mosaic": 0,
            "val": "after the last epoch only",
            "command": command,
        },
        "modes": {},
    }
    common = dict(
        model=model,
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        workers=workers,
        device=device,
        preset=preset,
        layers=layers,
        buffer=buffer,
        quiet=quiet,
    )
    for mode in modes:
        shards: dict[str, Any] = {}
        yaml_for_mode = data_yaml
        if mode == "shards":
            yaml_for_mode, shards = prepare_shards(data_yaml, out, preset, workers)
            if not quiet:
                print(
                    f"shards: encode-dataset {shards['encode_s']:.1f} s for {n_images} images "
                    f"({shards['shards']} shards), extract {shards['extract_s']:.1f} s",
                    flush=True,
                )
        entry = train_mode(mode, yaml_for_mode, out, **common)  # type: ignore[arg-type]
        report["modes"][mode] = {**entry, **shards}
        import torch

        report["torch_threads"] = torch.get_num_threads()  # ultralytics sets it for the CPU
    (out / "bench_training.json").write_text(json.dumps(report, indent=2) + "\n")
    text = table(report)
    (out / "bench_training.md").write_text(text + "\n")
    plot(report, out / "bench_training.png")
    if not quiet:
        print(text)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, required=True, help="a YOLO data set (images/, labels/)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)}")
    p.add_argument("--model", default=DEFAULT_MODEL, help="an ultralytics model YAML or .pt")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--limit", type=int, help="only the first N images (sorted by name)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when torch sees one)")
    p.add_argument("--preset", default=DEFAULT_PRESET, help="codec preset of the VCM modes")
    p.add_argument(
        "--layers",
        default=ANALYTICS,
        help="operating point of the VCM modes: analytics (default), all, K or LOW-HIGH",
    )
    p.add_argument(
        "--buffer",
        type=int,
        help="ultralytics' per-process buffer of loaded training images (default: its own, "
        "min(images, 8 x batch, 1000)); far below the image count, a small set behaves like a "
        "large one, whose images are rarely still buffered when they come round again",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        run(
            args.data,
            args.out,
            epochs=args.epochs,
            modes=parse_modes(args.modes),
            model=args.model,
            imgsz=args.imgsz,
            batch=args.batch,
            workers=args.workers,
            limit=args.limit,
            device=args.device,
            preset=args.preset,
            layers=parse_layers_arg(args.layers),
            buffer=args.buffer,
            command="python -m vcm_eval.bench_training " + " ".join(argv),
            quiet=args.quiet,
        )
    except VCMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
