"""``vcm edge serve | worker | push | bench``: the edge pipeline's processes."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from vcm_plugin.errors import VCMError

DEFAULT_URL = "http://127.0.0.1:8750"
DB_HELP = (
    "index database: postgresql://USER@HOST/DB (several servers may share it) or a SQLite "
    "file path (default: STORE/.vcm-index.sqlite3; for a remote store a file in the "
    "user cache)"
)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _size(text: str) -> int:
    """'500000', '64M', '2G' -> bytes (K/M/G/T are powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B")
    scale = units.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in units else text
    if not digits.isascii() or not digits.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500M, 20G)")
    return int(digits) * scale


def _layers(text: str) -> int | str:
    from vcm_plugin.codec.layerspec import parse_point

    try:
        return parse_point(text)
    except VCMError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _token(args: argparse.Namespace) -> str | None:
    from vcm_plugin.edge.auth import client_token

    return client_token(args.token_file)


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        from vcm_plugin.edge.server import ServerLimits, serve
    except ImportError as exc:
        raise VCMError(f"vcm edge serve needs aiohttp ({exc}): pip install aiohttp") from None
    from vcm_plugin.edge.auth import TOKENS_FILE_ENV, TokenTable
    from vcm_plugin.edge.state import load_retention
    from vcm_plugin.edge.store import FrameStore

    tokens_file = args.tokens_file or os.environ.get(TOKENS_FILE_ENV)
    tokens = TokenTable.load(tokens_file) if tokens_file else None
    limits = ServerLimits(
        max_upload=args.max_upload_mb << 20,
        max_pixels=args.max_pixels,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        decode_threads=args.decode_threads,
        decode_queue=args.decode_queue,
        keep_days=args.keep_days,
        retention=load_retention(args.retention) if args.retention else {},
        max_bytes=args.max_bytes,
        retention_grace=args.retention_grace,
        allow_origins=tuple(args.allow_origin),
    )
    from vcm_plugin.edge.notify import MqttTarget, Notifier, read_secret

    notifier = Notifier(
        webhook=args.webhook,
        secret=read_secret(args.webhook_secret_file) if args.webhook_secret_file else None,
        mqtt=MqttTarget.parse(args.mqtt) if args.mqtt else None,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    store = FrameStore(args.store)
    asyncio.run(
        serve(
            store,
            args.host,
            args.port,
            access_log=args.access_log,
            limits=limits,
            tokens=tokens,
            db=args.db,
            notifier=notifier,
        )
    )


def cmd_reindex(args: argparse.Namespace) -> None:
    from vcm_plugin.codec.api import Codec
    from vcm_plugin.edge.index import open_index, reindex
    from vcm_plugin.edge.store import FrameStore

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    store = FrameStore(args.store)
    index = open_index(args.db, store.url, store.root, store.local)
    try:
        report = reindex(index, store, Codec())
    finally:
        index.close()
    print(json.dumps({"index": index.backend.describe(), **vars(report)}), flush=True)


def cmd_index_bench(args: argparse.Namespace) -> None:
    from vcm_plugin.edge.indexbench import run_index_bench

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    result = run_index_bench(
        args.db,
        frames=args.frames,
        cameras=args.cameras,
        queries=args.queries,
        images=args.images,
        uploads=args.uploads,
        concurrency=args.concurrency,
        keep=args.keep,
    )
    print(json.dumps(result, indent=2), flush=True)


def cmd_token(args: argparse.Namespace) -> None:
    from vcm_plugin.edge.auth import add_token

    token = add_token(args.tokens_file, args.name, args.role, args.cameras)
    print(token, flush=True)
    print(
        f"vcm edge token: {args.role} token {args.name!r} added to {args.tokens_file}; give "
        "it to the client in a file (--token-file) or $VCM_EDGE_TOKEN",
        file=sys.stderr,
    )


def cmd_worker(args: argparse.Namespace) -> None:
    from vcm_plugin.edge.client import EdgeClient
    from vcm_plugin.edge.worker import Worker
    from vcm_plugin.taskmodels.detect import load_detector

    _threads(args.threads)
    detector = load_detector(args.model, conf=args.conf, imgsz=args.imgsz)
    client = EdgeClient(args.server, role="worker", retry_for=args.retry_for, token=_token(args))
    from vcm_plugin.edge.events import load_masks, load_rules

    rules = load_rules(args.rules) if args.rules else None
    masks = load_masks(args.masks) if args.masks else None
    worker = Worker(
        client, detector, layers=args.layers, batch=args.batch, rules=rules, masks=masks
    )
    print(f"vcm edge worker: {detector!r} on layers={args.layers} from {args.server}", flush=True)
    done = worker.run(max_frames=args.max_frames, idle_exit=args.idle_exit)
    print(f"vcm edge worker: analysed {done} frame(s)", flush=True)


def cmd_push(args: argparse.Namespace) -> None:
    from vcm_plugin.codec.api import Codec
    from vcm_plugin.edge.camera import Camera
    from vcm_plugin.edge.client import EdgeClient
    from vcm_plugin.edge.sources import iter_frames
    from vcm_plugin.edge.store import check_camera
    from vcm_plugin.taskmodels.detect import object_finder

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    _threads(args.threads)
    check_camera(args.cam)
    frames = iter_frames(args.source, every=args.every, limit=args.limit, fps=args.fps)
    client = EdgeClient(args.server, role="camera", retry_for=args.retry_for, token=_token(args))
    camera = Camera(
        client,
        args.cam,
        Codec.from_preset(args.preset),
        texture=args.texture,
        max_bytes=args.max_bytes,
        objects=None if args.objects is None else object_finder(args.objects),
    )
    print(json.dumps(camera.run(frames, linger=args.linger)), flush=True)


def cmd_bench(args: argparse.Namespace) -> None:
    from vcm_plugin.codec.api import Codec
    from vcm_plugin.edge.loadtest import BENCH_PREFIX, check_bench_store, run_load
    from vcm_plugin.edge.sources import iter_frames

    token = _token(args)
    store = check_bench_store(args.server, allow_live=args.allow_live_store, token=token)
    codec = Codec.from_preset(args.preset)
    streams = [codec.encode(f.rgb) for f in iter_frames(args.source, limit=args.distinct)]
    result = run_load(
        args.server,
        streams,
        n=args.n,
        concurrency=args.concurrency,
        cam_prefix=BENCH_PREFIX,
        layers_first=args.layers_first,
        token=token,
    )
    print(json.dumps(result, indent=2), flush=True)
    print(
        f"vcm edge bench: {result['uploads']} frame(s) stored under cameras "
        f"{BENCH_PREFIX}0..{BENCH_PREFIX}{args.concurrency - 1} of the store {store}; to "
        f"remove them, stop the server and delete those camera folders "
        f"(e.g. rm -r {store}/{BENCH_PREFIX}*)",
        file=sys.stderr,
        flush=True,
    )
    if result["errors"]:
        raise VCMError(f"{len(result['errors'])} client(s) failed: {result['errors'][0]}")


def _client_options(p: argparse.ArgumentParser) -> None:
    """What every client of the service (worker, camera) takes: retry window and token."""
    p.add_argument(
        "--retry-for",
        type=float,
        default=300.0,
        help="seconds to keep retrying while the server is down",
    )
    p.add_argument(
        "--token-file",
        default=None,
        help="file holding this client's bearer token (default: "
        "$VCM_EDGE_TOKEN_FILE, else $VCM_EDGE_TOKEN)",
    )


def _serve_command(esub: argparse._SubParsersAction) -> None:
    """``vcm edge serve`` and its arguments."""
    p = esub.add_parser("serve", help="run the HTTP service over a frame store")
    p.add_argument(
        "--store",
        required=True,
        help="folder or fsspec URL where frames are kept (e.g. ./edge-store)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    p.add_argument("--port", type=int, default=8750, help="port (default 8750; 0 picks a free one)")
    p.add_argument(
        "--max-upload-mb", type=int, default=64, help="largest accepted upload in MiB (default 64)"
    )
    p.add_argument(
        "--tokens-file",
        default=None,
        help="JSON file of bearer tokens and their roles (default: "
        "$VCM_EDGE_TOKENS_FILE; none: open, loopback only; see docs/edge.md)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=3840 * 2160,
        help="largest frame accepted, in pixels (default 8294400, 4K UHD)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="open connections (default 256; the next gets 503)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=15.0,
        help="seconds a connection has to send a request's headers (default 15)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        help="seconds an upload body may take (default 60)",
    )
    p.add_argument("--decode-threads", type=int, default=1, help="PNG decodes at once (default 1)")
    p.add_argument(
        "--decode-queue",
        type=int,
        default=4,
        help="decodes that may wait; beyond, 503 + Retry-After (default 4)",
    )
    p.add_argument(
        "--keep-days",
        type=float,
        default=None,
        help="retention: delete frames received more than D days ago",
    )
    p.add_argument(
        "--retention",
        default=None,
        help='per-camera retention, JSON or YAML: {CAM: {"days": D, "event_days": E}} '
        "(CAM '*': any other camera): all frames D days, the frames of events (their "
        "pre/post window) E days; cameras without an entry follow --keep-days",
    )
    p.add_argument(
        "--max-bytes",
        type=_size,
        default=None,
        help="retention: delete the oldest frames while the store holds more (e.g. 20G)",
    )
    p.add_argument(
        "--retention-grace",
        type=float,
        default=300.0,
        help="seconds after receipt in which --max-bytes never deletes a frame, so analytics "
        "and a viewer get to it (default 300)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        help="a browser origin allowed besides the service's own (e.g. the "
        "https:// name of a TLS reverse proxy); repeatable",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument(
        "--webhook",
        default=None,
        help="POST each new, grown or ended event as JSON to this URL, signed "
        "(X-VCM-Signature: sha256=HMAC of the body); needs --webhook-secret-file",
    )
    p.add_argument(
        "--webhook-secret-file",
        default=None,
        help="file holding the webhook's HMAC secret (16 bytes or more)",
    )
    p.add_argument(
        "--mqtt",
        default=None,
        help="publish the same JSON to mqtt://[user:pass@]HOST[:PORT]/TOPIC (QoS 1)",
    )
    p.set_defaults(func=cmd_serve)


def _reindex_command(esub: argparse._SubParsersAction) -> None:
    """``vcm edge reindex`` and its arguments."""
    p = esub.add_parser(
        "reindex",
        help="build or repair the index database from the store",
        description="Read every stored stream, detections and quarantine "
        "file and bring the index in line: missing frames added, changed ones "
        "updated (boxes replaced), rows of vanished frames removed. Safe while "
        "servers run; leases in flight are kept.",
    )
    p.add_argument("--store", required=True, help="folder or fsspec URL of the frame store")
    p.add_argument("--db", default=None, help=DB_HELP)
    p.set_defaults(func=cmd_reindex)


def _index_bench_command(esub: argparse._SubParsersAction) -> None:
    """``vcm edge index-bench`` and its arguments."""
    p = esub.add_parser(
        "index-bench",
        help="index scale benchmark: synthetic frames, query "
        "latency, start-up time, upload throughput with the index on",
        description="Fill a scratch index with N synthetic frames (about 3 "
        "boxes each; no image data), then time camera/time-window and class "
        "queries (p50/p95), the server's start-up against that index, and "
        "real uploads through a server using it.",
    )
    p.add_argument(
        "--db",
        default=None,
        help="scratch database: postgresql://... (its "
        "tables are dropped and re-created!) or a SQLite path (default: a temp file)",
    )
    p.add_argument("--frames", type=int, default=1_000_000, help="synthetic frames (default 1M)")
    p.add_argument("--cameras", type=int, default=50, help="cameras they spread over")
    p.add_argument("--queries", type=int, default=300, help="queries timed per kind")
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        help="images for the upload test (default: ../shared/data/coco-val2017/"
        "images if present; none: skipped)",
    )
    p.add_argument("--uploads", type=int, default=500, help="uploads for the throughput test")
    p.add_argument("--concurrency", type=int, default=8, help="upload clients")
    p.add_argument("--keep", action="store_true", help="keep the scratch SQLite file")
    p.set_defaults(func=cmd_index_bench)


def _token_command(esub: argparse._SubParsersAction) -> None:
    """``vcm edge token`` and its arguments."""
    p = esub.add_parser("token", help="create a bearer token and add it to a tokens file")
    p.add_argument(
        "--tokens-file",
        required=True,
        help="the server's tokens file (created with mode 600 if missing)",
    )
    p.add_argument("--name", required=True, help="who holds it (shown in the byte accounting)")
    p.add_argument(
        "--role",
        required=True,
        choices=["camera", "analytics", "viewer", "admin"],
        help="camera: upload its own ids; analytics: claim, read the analytics "
        "layers, write detections; viewer: read; admin: read, delete, "
        "retention, metrics",
    )
    p.add_argument(
        "--cameras",
        nargs="+",
        default=None,
        help="camera role: the camera ids it may upload (a trailing * matches a prefix)",
    )
    p.set_defaults(func=cmd_token)


def _worker_command(esub: argparse._SubParsersAction, env_url: str) -> None:
    """``vcm edge worker`` and its arguments."""
    p = esub.add_parser("worker", help="analytics: detect on the analytics point of new frames")
    p.add_argument("--server", default=env_url, help=f"service URL (default {env_url})")
    p.add_argument(
        "--model",
        default=None,
        help="yolov5n (default, from $VCM_WEIGHTS_DIR or ../shared/models), "
        "any ultralytics weights path, or module:factory",
    )
    p.add_argument(
        "--layers",
        type=_layers,
        default="analytics",
        help="operating point to read: 'analytics' (default: each frame's analytics "
        "point, Codec.inspect().analytics_point, fetched as a view of only "
        "its layers) or k (point k's layers; above the analytics point needs a "
        "viewer-capable token)",
    )
    p.add_argument(
        "--conf", type=float, default=0.25, help="detection confidence threshold (default 0.25)"
    )
    p.add_argument(
        "--imgsz", type=int, default=640, help="detector input size in pixels (default 640)"
    )
    p.add_argument("--batch", type=int, default=4, help="frames leased per claim")
    p.add_argument(
        "--rules",
        default=None,
        help="event rules per camera, JSON or YAML: {CAM: [{name, classes, min_score, zone, "
        "min_frames, cooldown_s, pre_s, post_s}]} (zone: [[x, y], ...] in 0..1; CAM '*': "
        "any camera); events go to the server (GET /events)",
    )
    p.add_argument(
        "--masks",
        default=None,
        help="mask polygons per camera, JSON or YAML: {CAM: [[[x, y], ...], ...]} in 0..1; "
        "boxes whose bottom centre is masked are dropped",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        help="stop after S seconds without new frames (default: run forever)",
    )
    _client_options(p)
    p.set_defaults(func=cmd_worker)


def _push_command(esub: argparse._SubParsersAction, env_url: str) -> None:
    """``vcm edge push`` and its arguments."""
    from vcm_plugin.codec.presets import DEFAULT_PRESET, PRESETS

    p = esub.add_parser(
        "push", help="camera: encode images, a video or a live camera's frames and upload"
    )
    p.add_argument(
        "source",
        help="folder of images, an image, a video file, or any FFmpeg source: a camera URL "
        "(rtsp://user:pass@host:554/stream, http://..., rtmp://...) or a V4L2 device "
        "(/dev/video0); a live source is reconnected with back-off when it drops",
    )
    p.add_argument("--server", default=env_url, help=f"service URL (default {env_url})")
    p.add_argument("--cam", required=True, help="camera id (letters, digits, _ and -)")
    p.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        choices=sorted(PRESETS),
        help=f"codec preset (default: {DEFAULT_PRESET})",
    )
    p.add_argument(
        "--texture",
        default="after",
        choices=["after", "on-request", "never"],
        help="texture layers: after layer 0 of queued frames (default), only "
        "when a viewer asks, or never",
    )
    p.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="seconds to keep answering texture requests after the last frame (-1: until Ctrl-C)",
    )
    p.add_argument(
        "--max-bytes",
        type=_size,
        default=None,
        help="byte budget of each frame's first upload: the longest prefix that "
        "fits (e.g. 6K), even if shorter than the analytics point (default: the "
        "prefix through the analytics point); the rest follows per --texture",
    )
    p.add_argument(
        "--objects",
        metavar="MODEL",
        default=None,
        help="a detector on the camera (yolov5n, a .pt path, or module:factory): each "
        "frame's analytics point spends its bits on the boxes it finds (confidence >= 0.1); "
        "the viewer points keep the whole picture",
    )
    p.add_argument("--every", type=int, default=1, help="take every N-th frame")
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        help="at most F frames per second of capture time (video and camera sources; a "
        "live camera's newest frame is taken when the encoder is free)",
    )
    p.add_argument("--limit", type=int, default=None, help="at most N frames")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    _client_options(p)
    p.set_defaults(func=cmd_push)


def _bench_command(esub: argparse._SubParsersAction, env_url: str) -> None:
    """``vcm edge bench`` and its arguments."""
    from vcm_plugin.codec.presets import DEFAULT_PRESET, PRESETS
    from vcm_plugin.edge.loadtest import BENCH_PREFIX

    p = esub.add_parser(
        "bench",
        help="bounded upload load test against a running service",
        description="Upload N pre-encoded frames from C concurrent clients "
        f"as cameras {BENCH_PREFIX}0, {BENCH_PREFIX}1, ... Run it against a "
        "scratch server: the frames stay in its store and a worker would "
        "analyse them. A store holding other cameras' frames is refused unless "
        "--allow-live-store.",
    )
    p.add_argument("source", type=Path, help="images to encode once and upload repeatedly")
    p.add_argument("--server", default=env_url, help=f"service URL (default {env_url})")
    p.add_argument("--n", type=int, default=500, help="uploads in all")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    p.add_argument("--distinct", type=int, default=4, help="distinct images to encode")
    p.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        choices=sorted(PRESETS),
        help=f"codec preset (default: {DEFAULT_PRESET})",
    )
    p.add_argument(
        "--layers-first",
        action="store_true",
        help="upload layer 0, then the texture layers, as two requests",
    )
    p.add_argument(
        "--allow-live-store",
        action="store_true",
        help="upload even if the store holds frames of other cameras (they then "
        "queue behind the bench frames for analytics)",
    )
    p.add_argument(
        "--token-file",
        default=None,
        help="file holding this client's bearer token (default: "
        "$VCM_EDGE_TOKEN_FILE, else $VCM_EDGE_TOKEN)",
    )
    p.set_defaults(func=cmd_bench)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm edge ...`` on the ``vcm`` command's subparsers."""
    edge = sub.add_parser("edge", help="edge-camera pipeline: serve, worker, push, bench")
    esub = edge.add_subparsers(dest="edge_command", required=True)
    env_url = os.environ.get("VCM_EDGE_URL", DEFAULT_URL)
    _serve_command(esub)
    _reindex_command(esub)
    _index_bench_command(esub)
    _token_command(esub)
    _worker_command(esub, env_url)
    _push_command(esub, env_url)
    _bench_command(esub, env_url)
