"""The edge HTTP service (aiohttp): uploads in, layer prefixes / PNGs / detections out.

Why aiohttp: one dependency gives an asyncio server that streams byte ranges and holds
long-polls (analytics claims, texture requests) without a thread per waiting client.
Blocking work (disk, decoding) runs in thread pools so the event loop only routes.

Routes::

    POST /cameras/{cam}/frames?ts=US         upload a stream prefix of whole layers (201)
    POST /frames/{id}/layers?offset=N        append the next layers (bytes from offset N)
    GET  /frames/{id}?layers=k&view=1        operating point k alone: header + the layers it
                                             needs (X-VCM-View-Layers), e.g. one texture layer
    GET  /frames/{id}?layers=k[&wait=s]      stream prefix of k layers (default: all stored;
                                             missing ones are requested from the camera);
                                             honours Range
    GET  /frames/{id}/image?layers=k[&wait=s] decoded PNG
    GET  /frames/{id}/info                   layer table, stored layers, bytes served
    GET  /frames/{id}/detections             detections JSON (404 until analysed)
    PUT  /frames/{id}/detections             the worker stores its result
    POST /analytics/claim?max=n&wait=s       worker: lease frames that need analytics
    GET  /cameras, /cameras/{cam}/frames     index by camera and time (?since=&until=)
    GET  /cameras/{cam}/wanted?wait=s        camera: frames whose texture a viewer asked for
    GET  /health, /metrics[?format=prometheus]
"""

from __future__ import annotations

import asyncio
import bisect
import io
import json
import logging
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from vcm_plugin.codec import container
from vcm_plugin.codec.api import Codec
from vcm_plugin.edge.metrics import Metrics
from vcm_plugin.edge.store import DETECTIONS, FrameKey, FrameStore, check_camera
from vcm_plugin.edge.stream import Layout, validate_stream
from vcm_plugin.errors import VCMError

log = logging.getLogger("vcm.edge.server")
STREAM_TYPE = "application/vnd.vcm"


class HTTPProblem(Exception):
    """An error answer with a status and a one-line message (sent as ``{"error": ...}``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.headers, self.extra = status, headers or {}, extra


@dataclass
class FrameMeta:
    """What the server keeps in memory per frame; the store stays the source of truth."""

    key: FrameKey
    layout: Layout
    accepted: float
    analysed: bool = False
    served: Counter[str] = field(default_factory=Counter)

    def describe(self) -> dict:
        return {"id": self.key.id, "cam": self.key.cam, "ts": self.key.ts,
                **self.layout.describe(), "analysed": self.analysed,
                "served_bytes": dict(self.served)}


class AnalyticsQueue:
    """Frames waiting for detections, handed out under a lease so a dead worker's frames
    come back; rebuilt from the store (frames without detections) at start-up."""

    def __init__(self) -> None:
        self.pending: dict[FrameKey, None] = {}
        self.leases: dict[FrameKey, float] = {}

    def add(self, key: FrameKey) -> None:
        if key not in self.leases:
            self.pending[key] = None

    def done(self, key: FrameKey) -> None:
        self.pending.pop(key, None)
        self.leases.pop(key, None)

    def take(self, n: int, lease_s: float) -> list[FrameKey]:
        now = time.monotonic()
        for key, until in list(self.leases.items()):
            if until < now:
                del self.leases[key]
                self.pending[key] = None
        keys = list(self.pending)[:n]
        for key in keys:
            del self.pending[key]
            self.leases[key] = now + lease_s
        return keys

    def __len__(self) -> int:
        return len(self.pending) + len(self.leases)


class TextureRequests:
    """Frames whose texture layers a viewer asked for, per camera; a camera long-polls them.
    A frame is offered again after ``reoffer_s`` in case the camera lost the first offer."""

    def __init__(self, reoffer_s: float = 30.0) -> None:
        self.wanted: dict[str, dict[FrameKey, float]] = {}
        self.reoffer_s = reoffer_s

    def want(self, key: FrameKey) -> None:
        self.wanted.setdefault(key.cam, {}).setdefault(key, 0.0)

    def fulfilled(self, key: FrameKey) -> None:
        self.wanted.get(key.cam, {}).pop(key, None)

    def offer(self, cam: str) -> list[FrameKey]:
        now = time.monotonic()
        keys = [k for k, t in self.wanted.get(cam, {}).items() if now - t >= self.reoffer_s]
        for k in keys:
            self.wanted[cam][k] = now
        return keys


def _int(request: web.Request, name: str, default: int | None = None,
         lo: int | None = None, hi: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise VCMError(f"query parameter {name}={raw!r} is not an integer") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise VCMError(f"query parameter {name}={value} out of range [{lo}, {hi}]")
    return value


def _float(request: web.Request, name: str, default: float, hi: float) -> float:
    raw = request.query.get(name)
    try:
        return default if raw is None else min(max(float(raw), 0.0), hi)
    except ValueError:
        raise VCMError(f"query parameter {name}={raw!r} is not a number") from None


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` / ``a-`` / ``-n`` range -> [start, stop); None = serve everything
    (absent, malformed or multi-range headers are ignored, as RFC 9110 allows)."""
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                raise HTTPProblem(416, f"unsatisfiable range {value!r}",
                                  {"Content-Range": f"bytes */{size}"})
            return max(0, size - n), size
        start = int(first)
        stop = size if last == "" else min(int(last) + 1, size)
    except ValueError:
        return None
    if start >= size or stop <= start:
        raise HTTPProblem(416, f"range {value!r} outside the {size}-byte representation",
                          {"Content-Range": f"bytes */{size}"})
    return start, stop


class EdgeServer:
    """State and handlers of one service instance over one store."""

    def __init__(self, store: FrameStore, max_upload: int = 64 << 20, io_threads: int = 4,
                 decode_threads: int = 1) -> None:
        self.store = store
        self.codec = Codec()
        self.max_upload = max_upload
        self.metrics = Metrics()
        self.frames: dict[FrameKey, FrameMeta] = {}
        self.by_camera: dict[str, list[int]] = {}  # sorted timestamps: the time index
        self.analytics = AnalyticsQueue()
        self.textures = TextureRequests()
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="edge-io")
        self._cpu = ThreadPoolExecutor(decode_threads, thread_name_prefix="edge-decode")
        self._locks = [asyncio.Lock() for _ in range(64)]
        self._changed: asyncio.Condition | None = None
        self.closing = False

    # -- plumbing ------------------------------------------------------------------------
    async def _run(self, fn, *args, cpu: bool = False):
        return await asyncio.get_running_loop().run_in_executor(
            self._cpu if cpu else self._io, fn, *args)

    def _lock(self, key: FrameKey) -> asyncio.Lock:
        return self._locks[hash(key) % len(self._locks)]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_until(self, predicate, timeout: float) -> bool:
        """Wait (long-poll) until ``predicate()`` holds or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or self.closing:
                    return False
                try:  # wake at least every second: leases expire without a notify
                    await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
                except TimeoutError:
                    pass
        return True

    def _index(self, meta: FrameMeta) -> None:
        self.frames[meta.key] = meta
        bisect.insort(self.by_camera.setdefault(meta.key.cam, []), meta.key.ts)

    def _meta(self, request: web.Request) -> FrameMeta:
        key = FrameKey.parse(request.match_info["id"])
        meta = self.frames.get(key)
        if meta is None:
            raise HTTPProblem(404, f"frame {key} not found")
        return meta

    async def _body(self, request: web.Request) -> bytes:
        try:
            body = await request.read()
        except web.HTTPException:
            raise
        except Exception as exc:  # client went away mid-upload: nothing is stored
            raise HTTPProblem(400, f"incomplete upload: {exc}") from None
        if not body:
            raise VCMError("empty upload: send the stream bytes as the request body")
        return body

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        start = time.perf_counter()
        try:
            response = await handler(request)
        except HTTPProblem as exc:
            response = web.json_response({"error": str(exc), **exc.extra}, status=exc.status,
                                         headers=exc.headers)
        except VCMError as exc:
            response = web.json_response({"error": str(exc)}, status=400)
        except web.HTTPException as exc:
            exc.text = json.dumps({"error": exc.reason})
            exc.content_type = "application/json"
            response = exc
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self.metrics.request(f"{request.method} {route}", response.status,
                             time.perf_counter() - start)
        if isinstance(response, web.HTTPException):
            raise response
        return response

    # -- start-up ------------------------------------------------------------------------
    def _scan(self) -> list[FrameMeta]:
        metas = []
        for key in self.store.all_frames():
            try:
                layout = self.store.layout(key)
            except VCMError as exc:  # a frame damaged on disk must not stop the service
                log.warning("skipping %s: %s", key, exc)
                continue
            metas.append(FrameMeta(key, layout, self.store.mtime(key),
                                   analysed=self.store.has(key, DETECTIONS)))
        return metas

    async def _startup(self, app: web.Application) -> None:
        self._changed = asyncio.Condition()
        for meta in await self._run(self._scan):
            self._index(meta)
            if not meta.analysed:
                self.analytics.add(meta.key)
        self.metrics.frames["recovered"] = len(self.frames)
        log.info("store %s: %d frames, %d awaiting analytics", self.store.url,
                 len(self.frames), len(self.analytics))

    async def _shutdown(self, app: web.Application) -> None:
        """End long-polls at once so a stop does not wait out a worker's 20 s claim."""
        self.closing = True
        await self._notify()

    async def _cleanup(self, app: web.Application) -> None:
        self._io.shutdown(wait=True)
        self._cpu.shutdown(wait=True)

    # -- uploads -------------------------------------------------------------------------
    async def post_frame(self, request: web.Request) -> web.Response:
        cam = check_camera(request.match_info["cam"])
        ts = _int(request, "ts", default=time.time_ns() // 1000, lo=0, hi=10**16 - 1)
        body = await self._body(request)
        try:
            layout = validate_stream(body, self.codec)
        except VCMError:
            self.metrics.frames["rejected"] += 1
            raise
        key = FrameKey(cam, ts)
        async with self._lock(key):
            meta = self.frames.get(key)
            created = meta is None
            if meta is not None:  # a retry, or the same frame re-sent with more layers
                stored = await self._run(self.store.read, key)
                if stored.startswith(body):
                    self.metrics.frames["duplicate"] += 1
                    return web.json_response({**meta.describe(), "created": False})
                if not body.startswith(stored):
                    raise HTTPProblem(409, f"frame {key} already exists with other content")
            await self._run(self.store.write, key, body)
            if meta is None:
                meta = FrameMeta(key, layout, time.time())
                self._index(meta)
                self.analytics.add(key)
                self.metrics.frames["accepted"] += 1
            else:
                meta.layout = layout
            self._after_layers(meta, len(body))
        await self._notify()
        return web.json_response({**meta.describe(), "created": created},
                                 status=201 if created else 200)

    def _after_layers(self, meta: FrameMeta, nbytes: int) -> None:
        self.metrics.upload_bytes += nbytes
        if meta.layout.complete:
            self.textures.fulfilled(meta.key)
            self.metrics.frames["complete"] += 1

    async def append_layers(self, request: web.Request) -> web.Response:
        meta = self._meta(request)
        offset = _int(request, "offset", lo=0)
        if offset is None:
            raise VCMError("query parameter offset=N (the stored byte count) is required")
        body = await self._body(request)
        key = meta.key
        async with self._lock(key):
            size = meta.layout.size
            if offset != size:
                if offset + len(body) <= size:  # a retry of an append that already landed
                    if await self._run(self.store.read, key, offset, offset + len(body)) == body:
                        return web.json_response({**meta.describe(), "duplicate": True})
                raise HTTPProblem(409, f"offset {offset} does not match the {size} bytes "
                                  f"stored for frame {key}", stored_bytes=size)
            stored = await self._run(self.store.read, key)
            try:
                layout = validate_stream(stored + body, self.codec)
            except VCMError:
                self.metrics.frames["rejected"] += 1
                raise
            await self._run(self.store.write, key, stored + body)
            meta.layout = layout
            self._after_layers(meta, len(body))
        await self._notify()
        return web.json_response(meta.describe())

    # -- reads ---------------------------------------------------------------------------
    async def _layers(self, request: web.Request, meta: FrameMeta) -> int:
        """The layer count to serve. Missing texture layers are requested from the camera and
        waited for up to ``wait`` seconds; then an explicit ``layers=k`` gets 409 with
        Retry-After, while a request without ``layers`` gets every layer stored so far."""
        n = meta.layout.num_layers
        asked = _int(request, "layers", lo=1, hi=n)
        want = n if asked is None else asked
        if want > meta.layout.stored_layers:
            self.textures.want(meta.key)
            await self._notify()
            wait = _float(request, "wait", 0.0, 60.0)
            if not await self._wait_until(lambda: meta.layout.stored_layers >= want, wait):
                if asked is None:
                    return meta.layout.stored_layers
                raise HTTPProblem(409, f"frame {meta.key} has {meta.layout.stored_layers} of "
                                  f"{n} layers; the rest were requested from camera "
                                  f"{meta.key.cam}, retry later", {"Retry-After": "1"},
                                  stored_layers=meta.layout.stored_layers)
        return want

    def _count(self, request: web.Request, meta: FrameMeta, start: int, stop: int) -> None:
        self._served(request, meta, meta.layout.bytes_per_layer(start, stop))

    def _served(self, request: web.Request, meta: FrameMeta, per_layer: list[int]) -> None:
        client = request.headers.get("X-VCM-Client", "viewer")[:32]
        self.metrics.served(client, per_layer)
        meta.served[client] += sum(per_layer)
        if client == "worker":
            self.metrics.analytics_bytes_read += sum(per_layer)

    def _read_view(self, meta: FrameMeta, layers: int) -> bytes:
        """Operating point ``layers`` alone (``Codec.view``), read from the store by range:
        the header plus the layers it needs; a texture point skips the analytics layers."""
        h = meta.layout.header
        parts = dict(zip(h.point_layers(layers),
                         (self.store.read(meta.key, a, b)
                          for a, b in meta.layout.point_ranges(layers)), strict=True))
        if sorted(parts) == list(range(layers)):  # a prefix is its own view
            return container.truncate(b"".join(
                [self.store.read(meta.key, 0, h.size), *parts.values()]), h, layers)
        payloads = [parts.get(i, b"") for i in range(h.num_layers)]
        return container.pack(h.backend_id, h.preset_id, h.width, h.height, h.config_hash,
                              payloads, h.needs)

    async def get_frame(self, request: web.Request) -> web.Response:
        meta = self._meta(request)
        k = await self._layers(request, meta)
        if request.query.get("view") == "1":
            return await self._get_view(request, meta, k)
        size = meta.layout.end(k)
        rng = parse_range(request.headers.get("Range"), size)
        start, stop = rng or (0, size)
        data = await self._run(self.store.read, meta.key, start, stop)
        self._count(request, meta, start, stop)
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": f'"{meta.key.id}-{k}"',
            "X-VCM-Layers": str(k),
            "X-VCM-Num-Layers": str(meta.layout.num_layers),
            "X-VCM-Stored-Layers": str(meta.layout.stored_layers),
            "X-VCM-Layer-Ends": ",".join(map(str, meta.layout.describe()["layer_ends"])),
        }
        if rng is not None:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return web.Response(body=data, status=206 if rng else 200, headers=headers,
                            content_type=STREAM_TYPE)

    async def _get_view(self, request: web.Request, meta: FrameMeta, k: int) -> web.Response:
        data = await self._run(self._read_view, meta, k)
        self._served(request, meta, meta.layout.view_per_layer(k))
        layers = ",".join(map(str, meta.layout.header.point_layers(k)))
        return web.Response(body=data, content_type=STREAM_TYPE,
                            headers={"X-VCM-Layers": str(k), "X-VCM-View-Layers": layers,
                                     "X-VCM-Num-Layers": str(meta.layout.num_layers),
                                     "ETag": f'"{meta.key.id}-view-{k}"'})

    async def get_image(self, request: web.Request) -> web.Response:
        meta = self._meta(request)
        k = await self._layers(request, meta)
        data = await self._run(self._read_view, meta, k)  # only the layers the point reads
        self._served(request, meta, meta.layout.view_per_layer(k))
        png = await self._run(self._png, data, k, cpu=True)
        return web.Response(body=png, content_type="image/png",
                            headers={"X-VCM-Layers": str(k)})

    def _png(self, data: bytes, layers: int) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.codec.decode(data, layers=layers)).save(buf, format="PNG",
                                                                     compress_level=1)
        return buf.getvalue()

    async def get_info(self, request: web.Request) -> web.Response:
        return web.json_response(self._meta(request).describe())

    # -- analytics -----------------------------------------------------------------------
    async def claim(self, request: web.Request) -> web.Response:
        n = _int(request, "max", default=1, lo=1, hi=256)
        wait = _float(request, "wait", 0.0, 60.0)
        lease = _float(request, "lease", 120.0, 3600.0)
        got: list[FrameKey] = []

        def ready() -> bool:
            got.extend(self.analytics.take(n, lease))
            return bool(got)

        await self._wait_until(ready, wait)
        return web.json_response({"frames": [
            {"id": k.id, "layer0_bytes": self.frames[k].layout.end(1)}
            for k in got if k in self.frames]})

    async def get_detections(self, request: web.Request) -> web.Response:
        meta = self._meta(request)
        result = await self._run(self.store.read_json, meta.key)
        if result is None:
            raise HTTPProblem(404, f"no detections for frame {meta.key} yet (analytics pending)")
        return web.json_response(result)

    async def put_detections(self, request: web.Request) -> web.Response:
        meta = self._meta(request)
        try:
            result = json.loads(await self._body(request))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VCMError(f"detections must be JSON: {exc}") from None
        if not isinstance(result, dict) or not isinstance(result.get("boxes"), list):
            raise VCMError('detections must be a JSON object with a "boxes" list')
        result["frame"] = meta.key.id
        await self._run(self.store.write_json, meta.key, result)
        first = not meta.analysed
        meta.analysed = True
        self.analytics.done(meta.key)
        if first:
            self.metrics.frames["analysed"] += 1
            self.metrics.analytics_latency.add(time.time() - meta.accepted)
            self.metrics.analytics_layer0_bytes += meta.layout.end(1)
            if isinstance(result.get("inference_s"), (int, float)):
                self.metrics.inference.add(result["inference_s"])
        return web.json_response({"id": meta.key.id, "stored": True})

    # -- index and camera side -----------------------------------------------------------
    async def cameras(self, request: web.Request) -> web.Response:
        return web.json_response({"cameras": [{"id": c, "frames": len(ts)}
                                              for c, ts in sorted(self.by_camera.items())]})

    async def camera_frames(self, request: web.Request) -> web.Response:
        cam = check_camera(request.match_info["cam"])
        since, until = _int(request, "since"), _int(request, "until")
        limit = _int(request, "limit", default=1000, lo=1, hi=100_000)
        stamps = self.by_camera.get(cam, [])
        lo = 0 if since is None else bisect.bisect_left(stamps, since)
        hi = len(stamps) if until is None else bisect.bisect_right(stamps, until)
        return web.json_response({"frames": [self.frames[FrameKey(cam, ts)].describe()
                                             for ts in stamps[lo:min(hi, lo + limit)]]})

    async def wanted(self, request: web.Request) -> web.Response:
        cam = check_camera(request.match_info["cam"])
        got: list[FrameKey] = []

        def ready() -> bool:
            got.extend(self.textures.offer(cam))
            return bool(got)

        await self._wait_until(ready, _float(request, "wait", 0.0, 60.0))
        return web.json_response({"frames": [
            {"id": k.id, "offset": self.frames[k].layout.size} for k in got if k in self.frames]})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "store": self.store.url,
                                  "frames": len(self.frames),
                                  "pending_analytics": len(self.analytics)})

    async def get_metrics(self, request: web.Request) -> web.Response:
        gauges = {"frames_stored": len(self.frames), "analytics_pending": len(self.analytics)}
        if request.query.get("format") == "prometheus":
            return web.Response(text=self.metrics.prometheus(**gauges),
                                content_type="text/plain")
        return web.json_response(self.metrics.snapshot(
            **gauges, store={"bytes_read": self.store.bytes_read,
                             "bytes_written": self.store.bytes_written,
                             "header_probe_bytes": self.store.probe_bytes}))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_upload, middlewares=[self._middleware])
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        r = app.router
        r.add_post("/cameras/{cam}/frames", self.post_frame)
        r.add_get("/cameras/{cam}/frames", self.camera_frames)
        r.add_get("/cameras/{cam}/wanted", self.wanted)
        r.add_get("/cameras", self.cameras)
        r.add_post("/frames/{id}/layers", self.append_layers)
        r.add_get("/frames/{id}", self.get_frame, allow_head=False)
        r.add_get("/frames/{id}/image", self.get_image, allow_head=False)
        r.add_get("/frames/{id}/info", self.get_info)
        r.add_get("/frames/{id}/detections", self.get_detections)
        r.add_put("/frames/{id}/detections", self.put_detections)
        r.add_post("/analytics/claim", self.claim)
        r.add_get("/health", self.health)
        r.add_get("/metrics", self.get_metrics)
        return app


async def serve(store: FrameStore, host: str = "127.0.0.1", port: int = 8750,
                access_log: bool = False, **kwargs: Any) -> None:
    """Run until SIGINT/SIGTERM; prints ``serving ... on URL`` once the socket is bound
    (port 0 picks a free port, and the line says which)."""
    runner = web.AppRunner(EdgeServer(store, **kwargs).app(),
                           access_log=log if access_log else None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024, shutdown_timeout=10.0)
        try:
            await site.start()
        except OSError as exc:
            raise VCMError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = runner.addresses[0]
        print(f"vcm edge: serving {store.url} on http://{bound[0]}:{bound[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
