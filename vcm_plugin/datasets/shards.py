"""Encode a data set into sharded layered streams, resumably, on a process pool or on Ray.

Output directory (``DST``)::

    vcm-shards.json        the job: format, preset, shard size, layout (written first)
    shard-00000.tar        WebDataset-style tar: KEY.vcm, then the sample's labels (KEY.txt,
                           KEY.seg.png, ...); deterministic (mtime 0, uid 0, sorted keys)
    shard-00000.json       its manifest, written atomically *after* the tar: sha256 and size of
                           the tar, and per member the byte offset and length in the tar, the
                           image size, header bytes, per-layer byte sizes and offsets, and the
                           sha256 of the source files
    ...
    index.json             every manifest plus the data set's small meta files (data.yaml,
                           classes.json), written last; what ``ShardDataset`` reads

Resuming: a shard counts as done when its manifest parses, names the same preset, codec
configuration and keys, the source files still hash the same, and the tar's size and sha256
match. Anything else (no manifest, a truncated or flipped tar, changed sources) is re-encoded.
A run that fails (an unreadable image, Ray unreachable, Ctrl-C) removes the files it created,
and DST itself if it created it, except the shards it finished and the job file that lets a
rerun resume them.

Why this shape: one function, :func:`encode_shard`, does one shard from a picklable
:class:`ShardTask` and returns its manifest, so the ``local`` engine (a process pool) and the
``ray`` engine (``ray.remote``) run exactly the same code and write byte-identical shards; the
codec is deterministic with one torch thread, which the function sets for its duration.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vcm_plugin.codec.files import sha256_file, write_atomic
from vcm_plugin.codec.imagefile import read_rgb
from vcm_plugin.codec.presets import DEFAULT_PRESET
from vcm_plugin.datasets.layouts import Sample, meta_files, scan
from vcm_plugin.errors import VCMError
from vcm_plugin.ray_engine import ENGINES, check_engine, ray_results, ray_session

__all__ = [
    "ENGINES",
    "FORMAT",
    "EncodeOptions",
    "ShardTask",
    "encode_dataset",
    "encode_shard",
    "verify_shard",
]

FORMAT = "vcm-shards/1"
JOB_FILE = "vcm-shards.json"
INDEX_FILE = "index.json"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.(tar|json)$")
_TMP_RE = re.compile(r"^\.(shard-\d{5,}\.(tar|json)|index\.json|vcm-shards\.json)\..*\.part$")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


@dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs to write one shard (picklable, paths absolute)."""

    dst: str
    name: str
    preset: str
    samples: tuple[Sample, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------ file helpers
def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _source_hash(sample: Sample) -> tuple[str, dict[str, bytes]]:
    """sha256 over the image and label files, and their bytes (read once)."""
    h = hashlib.sha256()
    blobs: dict[str, bytes] = {}
    for suffix, path in (("image", sample.image), *sample.labels):
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise VCMError(f"cannot read {path}: {e.strerror or e}") from None
        blobs[suffix] = data
        h.update(f"{suffix}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest(), blobs


def _source_hash_only(sample: Sample) -> str | None:
    try:
        return _source_hash(sample)[0]
    except VCMError:
        return None


# ------------------------------------------------------------------------------ one shard
def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


#: Images per ``Codec.encode_batch`` call: on a GPU equal-sized images share one network pass;
#: on the CPU a batch is image by image (the same bytes either way on one device).
ENCODE_BATCH = 16


def _encoded(codec, samples):
    """(sample, source digest, source blobs, stream) per sample, encoded a batch at a time."""
    for start in range(0, len(samples), ENCODE_BATCH):
        chunk = samples[start : start + ENCODE_BATCH]
        sources = [_source_hash(sample) for sample in chunk]
        images = [
            read_rgb(blobs["image"], sample.image)
            for sample, (_, blobs) in zip(chunk, sources, strict=True)
        ]
        streams = codec.encode_batch(images)
        for sample, (digest, blobs), blob in zip(chunk, sources, streams, strict=True):
            yield sample, digest, blobs, blob


def encode_shard(task: ShardTask) -> dict[str, Any]:
    """Encode one shard: write ``NAME.tar`` then ``NAME.json`` (both atomically) into
    ``task.dst`` and return the manifest. The same bytes come out in any process."""
    import torch

    from vcm_plugin import Codec

    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the codec is bit-exact at one thread; it is also the fast way
    try:
        codec = Codec.from_preset(task.preset)
        buf = io.BytesIO()
        members: list[dict[str, Any]] = []
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for sample, digest, blobs, blob in _encoded(codec, task.samples):
                info = codec.inspect(blob)
                entry = {
                    "key": sample.key,
                    "source": sample.image,
                    "source_sha256": digest,
                    "width": info.width,
                    "height": info.height,
                    "header_bytes": info.header_bytes,
                    "layer_bytes": info.layer_bytes,
                    "layer_offsets": info.layer_offsets,
                    "labels": {},
                }
                tar.addfile(_tarinfo(f"{sample.key}.vcm", len(blob)), io.BytesIO(blob))
                for suffix, path in sample.labels:
                    data = blobs[suffix]
                    tar.addfile(_tarinfo(f"{sample.key}.{suffix}", len(data)), io.BytesIO(data))
                    entry["labels"][suffix] = {"source": path}
                members.append(entry)
        data = buf.getvalue()
        # offsets from the finished archive (what a reader will seek to)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            where = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
        for entry in members:
            entry["offset"], entry["length"] = where[f"{entry['key']}.vcm"]
            for suffix, lab in entry["labels"].items():
                lab["offset"], lab["length"] = where[f"{entry['key']}.{suffix}"]
        manifest = {
            "format": FORMAT,
            "shard": f"{task.name}.tar",
            "preset": task.preset,
            "config": _codec_config(task.preset),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "members": members,
        }
        dst = Path(task.dst)
        write_atomic(dst / f"{task.name}.tar", data)
        write_atomic(dst / f"{task.name}.json", _json_bytes(manifest))  # last: marks it done
        return manifest
    finally:
        torch.set_num_threads(old_threads)


@functools.cache
def _codec_config(preset: str) -> str:
    """The preset's configuration hash: shards written by another configuration of the codec
    are not reused."""
    from vcm_plugin import Codec

    return Codec.from_preset(preset).config_hash


def verify_shard(dst: Path, task: ShardTask, config: str | None = None) -> dict[str, Any] | None:
    """The shard's manifest if the shard on disk is complete and current, else None."""
    manifest = _read_json(dst / f"{task.name}.json")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    if manifest.get("preset") != task.preset:
        return None
    if manifest.get("config") != (config or _codec_config(task.preset)):
        return None
    members = manifest.get("members")
    if not isinstance(members, list) or [m.get("key") for m in members] != [
        s.key for s in task.samples
    ]:
        return None
    for m, s in zip(members, task.samples, strict=True):
        if m.get("source_sha256") != _source_hash_only(s) or sorted(m.get("labels", {})) != sorted(
            suffix for suffix, _ in s.labels
        ):
            return None
    tar = dst / f"{task.name}.tar"
    try:
        if tar.stat().st_size != manifest.get("size"):
            return None
    except OSError:
        return None
    if sha256_file(tar) != manifest.get("sha256"):
        return None
    return manifest


# ------------------------------------------------------------------------------ engines
def _run_local(
    tasks: list[ShardTask], workers: int, on_done: Callable[[dict[str, Any]], None]
) -> None:
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            on_done(encode_shard(t))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: torch/OpenMP state does not survive fork safely
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=mp.get_context("spawn")) as ex:
        futures = [ex.submit(encode_shard, t) for t in tasks]
        try:
            for fut in as_completed(futures):
                on_done(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _run_ray(
    tasks: list[ShardTask],
    workers: int | None,
    address: str | None,
    on_done: Callable[[dict[str, Any]], None],
) -> None:
    with ray_session(address, workers) as ray:
        remote = ray.remote(num_cpus=1)(encode_shard)
        for _, manifest in ray_results(ray, [remote.remote(t) for t in tasks]):
            on_done(manifest)


# ------------------------------------------------------------------------------ the job
def _check_dst(dst: Path, job: dict[str, Any]) -> None:
    if dst.exists() and not dst.is_dir():
        raise VCMError(f"destination {dst} exists and is not a directory")
    if not dst.exists():
        return
    marker = dst / JOB_FILE
    if not marker.is_file():
        if any(dst.iterdir()):
            raise VCMError(
                f"destination {dst} is not empty and holds no {JOB_FILE}: refusing "
                "to write shards among other files; choose an empty or new directory"
            )
        return
    old = _read_json(marker)
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        raise VCMError(f"{marker} is not a {FORMAT} job file; choose another destination")
    for k in ("preset", "shard_size", "layout"):
        if old.get(k) != job[k]:
            raise VCMError(
                f"{dst} holds shards with {k}={old.get(k)!r}, this run asks for "
                f"{job[k]!r}; use another destination or delete it first"
            )


def _cleanup(dst: Path, num_shards: int) -> None:
    """Remove our own leftovers: temp files of a killed run and shards past the end."""
    for p in dst.iterdir():
        if _TMP_RE.match(p.name):
            p.unlink(missing_ok=True)
        m = _SHARD_RE.match(p.name)
        if m and int(m.group(1)) >= num_shards:
            p.unlink(missing_ok=True)


def plan(samples: list[Sample], shard_size: int, dst: Path, preset: str) -> list[ShardTask]:
    return [
        ShardTask(str(dst), shard_name(i // shard_size), preset, tuple(samples[i : i + shard_size]))
        for i in range(0, len(samples), shard_size)
    ]


@dataclass(frozen=True)
class EncodeOptions:
    """How :func:`encode_dataset` encodes: every choice but the source and the destination.

    ``workers``: processes of the local pool, or CPUs of a local Ray instance (default: all
    cores). ``ray_address`` connects to a running cluster instead (engine ``"ray"`` only); SRC
    and DST must then be paths every Ray node can read and write (a shared filesystem).
    """

    preset: str = DEFAULT_PRESET
    engine: str = "local"  #: one of :data:`ENGINES`
    shard_size: int = 64  #: samples per shard
    workers: int | None = None
    ray_address: str | None = None
    layout: str = "auto"  #: a layout of :mod:`vcm_plugin.datasets.layouts`, or "auto"
    progress: bool = True  #: a progress bar on stderr

    def checked(self) -> EncodeOptions:
        """These options validated (VCMError says what is wrong), the preset's alias resolved
        ("default" names the same shards as its preset)."""
        from vcm_plugin.codec.presets import get_preset

        preset = get_preset(self.preset).name
        check_engine(self.engine, self.ray_address)
        size = self.shard_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise VCMError(f"shard size must be an integer >= 1, got {size!r}")
        w = self.workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise VCMError(f"workers must be an integer >= 1, got {w!r}")
        return replace(self, preset=preset)


def _run_engine(
    opts: EncodeOptions,
    todo: list[ShardTask],
    manifests: dict[str, dict[str, Any]],
    done_images: int,
    total_images: int,
) -> None:
    """Encode the shards of ``todo``, adding each manifest to ``manifests`` as it lands."""
    from tqdm import tqdm

    bar = tqdm(
        total=total_images,
        initial=done_images,
        unit="img",
        desc=f"encode ({opts.engine})",
        disable=not opts.progress,
        file=sys.stderr,
    )

    def on_done(manifest: dict[str, Any]) -> None:
        manifests[Path(manifest["shard"]).stem] = manifest
        bar.update(len(manifest["members"]))

    try:
        if opts.engine == "local":
            _run_local(todo, opts.workers or os.cpu_count() or 1, on_done)
        else:
            _run_ray(todo, opts.workers, opts.ray_address, on_done)
    finally:
        bar.close()


def _topmost_missing(path: Path) -> Path | None:
    """The outermost directory that creating ``path`` would create (None: it exists)."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


@dataclass
class _Before:
    """What DST held before this run, so that a failed run can leave it as it was found."""

    dst: Path
    created_root: Path | None  #: the outermost directory this run creates (None: DST exists)
    found: set[str]  #: the names DST held
    saved: dict[str, bytes]  #: the job file and index this run replaces

    @classmethod
    def of(cls, dst: Path) -> _Before:
        created_root = _topmost_missing(dst)
        found = set() if created_root else set(os.listdir(dst))
        saved = {
            name: (dst / name).read_bytes() for name in (JOB_FILE, INDEX_FILE) if name in found
        }
        return cls(dst, created_root, found, saved)

    def undo(self, finished: set[str]) -> None:
        """Remove what this run created and put back the job file and index it replaced.
        Shards it finished stay, with the job file that makes a rerun resume them (an
        interrupted long run should not lose its work)."""
        keep = {f"{name}.{ext}" for name in finished for ext in ("tar", "json")}
        if keep:
            keep.add(JOB_FILE)
        elif self.created_root is not None:
            shutil.rmtree(self.created_root, ignore_errors=True)
            return
        for p in self.dst.iterdir():
            if p.name not in self.found and p.name not in keep:
                p.unlink(missing_ok=True)
        if not keep:
            for name, data in self.saved.items():
                write_atomic(self.dst / name, data)


def _verified(
    dst: Path, tasks: list[ShardTask], preset: str
) -> tuple[dict[str, dict[str, Any]], list[ShardTask]]:
    """Split ``tasks`` into the shards already done (their manifests, by name) and the ones to
    encode (see "Resuming" above)."""
    config = _codec_config(preset)
    done: dict[str, dict[str, Any]] = {}
    todo: list[ShardTask] = []
    for t in tasks:
        m = verify_shard(dst, t, config)
        if m is None:
            todo.append(t)
        else:
            done[t.name] = m
    return done, todo


def encode_dataset(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    options: EncodeOptions | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Encode every image of ``src`` into shards in ``dst``; returns a report
    (``encoded`` / ``skipped`` shard names, ``images``, ``seconds``, ``index``).

    ``options`` (:class:`EncodeOptions`), or its fields by keyword
    (``encode_dataset(src, dst, shard_size=2, workers=1)``), say how.
    """
    t0 = time.perf_counter()
    opts = replace(options or EncodeOptions(), **fields).checked()
    src_p, dst_p = Path(src).resolve(), Path(dst).resolve()
    if dst_p == src_p:
        raise VCMError(f"destination {dst_p} must not be the source directory")
    layout_used, samples = scan(src_p, opts.layout)
    job = {
        "format": FORMAT,
        "preset": opts.preset,
        "shard_size": opts.shard_size,
        "layout": layout_used,
        "source": str(src_p),
        "num_samples": len(samples),
        "num_shards": -(-len(samples) // opts.shard_size),
    }
    _check_dst(dst_p, job)
    before = _Before.of(dst_p)
    dst_p.mkdir(parents=True, exist_ok=True)
    manifests: dict[str, dict[str, Any]] = {}
    todo: list[ShardTask] = []
    try:
        write_atomic(dst_p / JOB_FILE, _json_bytes(job))
        tasks = plan(samples, opts.shard_size, dst_p, opts.preset)
        manifests, todo = _verified(dst_p, tasks, opts.preset)
        skipped = sorted(manifests)
        if todo:
            (dst_p / INDEX_FILE).unlink(missing_ok=True)  # stale until this run completes
        _run_engine(
            opts,
            todo,
            manifests,
            sum(len(t.samples) for t in tasks if t.name in manifests),
            len(samples),
        )
        index = dict(job, meta=meta_files(src_p), shards=[manifests[t.name] for t in tasks])
        write_atomic(dst_p / INDEX_FILE, _json_bytes(index))
        _cleanup(dst_p, job["num_shards"])  # after success: a failed run keeps the old index's
    except BaseException:
        before.undo({t.name for t in todo if t.name in manifests})
        raise
    return {
        "engine": opts.engine,
        "images": len(samples),
        "shards": len(tasks),
        "encoded": sorted(t.name for t in todo),
        "skipped": skipped,
        "seconds": time.perf_counter() - t0,
        "index": str(dst_p / INDEX_FILE),
    }
