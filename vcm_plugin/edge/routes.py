"""The handlers of the edge service, in groups over one
:class:`~vcm_plugin.edge.state.ServerState`: camera uploads, reads of a frame, the analytics
side, the index, events, administration. :class:`~vcm_plugin.edge.server.EdgeServer` routes to
them (its route table, :data:`~vcm_plugin.edge.server.ROUTES`) after its middleware has
checked the caller's role; a handler checks what depends on the frame (camera ownership, the
analytics layer limit)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import time
from collections import Counter
from fractions import Fraction
from typing import Any

import numpy as np
from aiohttp import web

from vcm_plugin.codec import container
from vcm_plugin.edge.auth import Principal, Role
from vcm_plugin.edge.events import check_event
from vcm_plugin.edge.http import (
    IMMUTABLE,
    REVALIDATE,
    STREAM_TYPE,
    HTTPProblem,
    dumps,
    http_date,
    none_match,
    parse_date,
    parse_range,
    range_allowed,
)
from vcm_plugin.edge.index import EventQuery, EventRow, FrameQuery, FrameRow, Index, boxes_of
from vcm_plugin.edge.query import (
    bounded_int,
    check_detections,
    class_param,
    cursor_param,
    event_cursor_param,
    flag_param,
    float_param,
    int_param,
    newest_first_param,
    reject_constant,
    score_param,
)
from vcm_plugin.edge.state import FrameMeta, ServerLimits, ServerState
from vcm_plugin.edge.store import FrameKey, check_camera
from vcm_plugin.edge.stream import Layout, StreamCheck
from vcm_plugin.edge.viewer import page_file
from vcm_plugin.errors import VCMError

#: bytes read from the store per write when a frame or view is sent
READ_CHUNK = 256 << 10
#: most frames in one event clip (a minute at 5 frames/s)
MAX_CLIP_FRAMES = 300

__all__ = [
    "AdminRoutes",
    "AnalyticsRoutes",
    "EventRoutes",
    "FrameRoutes",
    "IndexRoutes",
    "Routes",
    "UploadRoutes",
]

V, A, ADM = Role.VIEWER, Role.ANALYTICS, Role.ADMIN
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; connect-src 'self'; "
    "img-src 'self' blob: data:; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class Routes:
    """What every group of handlers shares: the service state, the frame a request names, and
    the camera-ownership check (the role check is the server's middleware)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    @property
    def limits(self) -> ServerLimits:
        return self.state.limits

    @property
    def index(self) -> Index:
        return self.state.index

    async def _meta(self, request: web.Request) -> FrameMeta:
        key = FrameKey.parse(request.match_info["id"])
        meta = await self.state.get(key)
        if meta is None:
            raise HTTPProblem(404, f"frame {key} not found")
        return meta

    def _own_camera(self, request: web.Request, cam: str) -> None:
        principal: Principal = request["principal"]
        if principal.has(V, ADM) and request.method in ("GET", "HEAD"):
            return
        if not principal.owns(cam):
            raise HTTPProblem(403, f"token {principal.name!r} may not act for camera {cam!r}")

    async def _json_body(self, request: web.Request, what: str = "detections") -> object:
        """A bounded JSON body: size over ``max_json`` 413, NaN/Infinity and nesting deeper
        than Python's parser handles 400."""
        limit = self.limits.max_json
        if request.content_length is not None and request.content_length > limit:
            raise HTTPProblem(
                413, f"JSON body of {request.content_length} bytes is over the limit of {limit}"
            )
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                raw = await request.content.read(limit + 1)
                if len(raw) > limit:
                    raise HTTPProblem(413, f"JSON body over the limit of {limit} bytes")
        except TimeoutError:
            raise HTTPProblem(
                408, "request body not received in time", {"Connection": "close"}
            ) from None
        try:
            return json.loads(raw, parse_constant=reject_constant, parse_int=bounded_int)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VCMError(f"{what} must be JSON: {exc}") from None
        except RecursionError:
            raise VCMError(f"{what} JSON is nested too deeply") from None


class UploadRoutes(Routes):
    """Camera uploads: a frame's first layers, then appended ones; bodies are streamed to the store
    and validated as they arrive."""

    async def post_frame(self, request: web.Request) -> web.Response:
        cam = check_camera(request.match_info["cam"])
        self._own_camera(request, cam)
        ts = int_param(request, "ts", default=time.time_ns() // 1000, lo=0, hi=10**16 - 1)
        key = FrameKey(cam, ts)
        check = StreamCheck(self.state.codec)
        upload = await self.state.run(self.state.store.begin, key)
        try:
            size, layout = await self._receive_stream(request, upload, check)
            async with self.state.lock(key):
                meta = await self.state.get(key)
                created = False
                if meta is None:
                    now = time.time()
                    h = layout.header
                    row = FrameRow(
                        cam,
                        ts,
                        bytes(check.head[: h.size]),
                        h.num_layers,
                        layout.stored_layers,
                        layout.size,
                        check.info.analytics_point,
                        now,
                        now,
                    )
                    created = await self.state.db(self.index.insert, row, upload.commit)
                    meta = await self.state.get(key)
                    if meta is None:  # deleted at once by someone else
                        raise HTTPProblem(409, f"frame {key} changed during the upload; retry")
                if not created:  # a retry, or the same frame re-sent with more layers
                    stored = meta.layout.size
                    common = min(stored, size)
                    if not await self.state.run(self.state.same_bytes, key, upload, 0, common):
                        raise HTTPProblem(409, f"frame {key} already exists with other content")
                    if size <= stored:
                        self.state.metrics.frames["duplicate"] += 1
                        return web.json_response({**meta.describe(), "created": False}, dumps=dumps)
                    await self.state.relayout(meta, layout, upload)
                else:
                    self.state.metrics.frames["accepted"] += 1
                self.state.after_layers(meta, size)
        finally:
            await self.state.run(upload.abort)
        await self.state.notify()
        return web.json_response(
            {**meta.describe(), "created": created}, status=201 if created else 200, dumps=dumps
        )

    async def append_layers(self, request: web.Request) -> web.Response:
        meta = await self._meta(request)
        self._own_camera(request, meta.key.cam)
        offset = int_param(request, "offset", lo=0, hi=1 << 40)
        if offset is None:
            raise VCMError("query parameter offset=N (the stored byte count) is required")
        key = meta.key
        async with self.state.lock(key):
            meta = await self.state.get(key)  # as it is now that this upload holds the lock
            if meta is None:
                raise HTTPProblem(404, f"frame {key} not found")
            size = meta.layout.size
            if offset != size:
                n = request.content_length
                if n is not None and offset + n <= size:  # a retry of an append that landed
                    upload = await self.state.run(self.state.store.begin, key)
                    try:
                        await self._receive(request, upload, None)
                        if await self.state.run(self.state.same_bytes, key, upload, offset, n):
                            return web.json_response(
                                {**meta.describe(), "duplicate": True}, dumps=dumps
                            )
                    finally:
                        await self.state.run(upload.abort)
                raise HTTPProblem(
                    409,
                    f"offset {offset} does not match the {size} bytes stored for frame {key}",
                    stored_bytes=size,
                )
            head = await self.state.run(
                self.state.store.read, key, 0, meta.layout.header.head_end()
            )
            check = StreamCheck(self.state.codec, resume=(head, size))
            upload = await self.state.run(self.state.store.begin, key, size)
            try:
                nbytes, layout = await self._receive_stream(request, upload, check)
                await self.state.relayout(meta, layout, upload)
            finally:
                await self.state.run(upload.abort)
            self.state.after_layers(meta, nbytes)
        await self.state.notify()
        return web.json_response(meta.describe(), dumps=dumps)

    async def _receive_stream(
        self, request: web.Request, upload, check: StreamCheck
    ) -> tuple[int, Layout]:
        """The body into ``upload`` through the stream check: its byte count and the layout
        it declares; a refused stream counts as rejected."""
        try:
            n = await self._receive(request, upload, check)
            return n, check.finish()
        except VCMError:
            self.state.metrics.frames["rejected"] += 1
            raise

    async def _receive(self, request: web.Request, sink, check: StreamCheck | None) -> int:
        """Stream the request body into ``sink`` (an Upload) chunk by chunk, validating as it
        goes; bounded in size (413) and time (408). Returns the byte count."""
        limit, option = self.limits.upload_limit()
        length = request.content_length
        if length is not None and length > limit:
            raise HTTPProblem(
                413, f"upload of {length} bytes is over the limit of {limit} ({option})"
            )
        total = 0
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                async for chunk in request.content.iter_chunked(1 << 16):
                    total += len(chunk)
                    if total > limit:
                        raise HTTPProblem(413, f"upload over the limit of {limit} bytes ({option})")
                    if check is not None:
                        check.feed(chunk)
                    sink.write(chunk)
        except TimeoutError:
            raise HTTPProblem(
                408,
                f"upload body not received within {self.limits.body_timeout:g} s",
                {"Connection": "close"},
            ) from None
        except (HTTPProblem, VCMError):
            raise
        except Exception as exc:  # client went away mid-upload: nothing is stored
            raise HTTPProblem(400, f"incomplete upload: {type(exc).__name__}") from None
        if total == 0:
            raise VCMError("empty upload: send the stream bytes as the request body")
        return total


class FrameRoutes(Routes):
    """Reads of one frame: an operating point's bytes (prefix, range or view), its decoded PNG,
    its layer table."""

    def __init__(self, state: ServerState, image_version: str) -> None:
        super().__init__(state)
        self._image_version = image_version  # in the PNG ETags: a new release renders anew

    async def get_frame(self, request: web.Request) -> web.StreamResponse:
        meta = await self._meta(request)
        k = await self._layers(request, meta)
        explicit = request.query.get("layers") not in (None, "")
        view = flag_param(request, "view")
        etag = meta.etag("v" if view else "p", k)
        headers = {
            **self._validators(meta, etag, k, explicit),
            "X-VCM-Layers": str(k),
            "X-VCM-Num-Layers": str(meta.layout.num_layers),
            "X-VCM-Stored-Layers": str(meta.layout.stored_layers),
            "X-VCM-Layer-Ends": ",".join(
                str(meta.layout.end(i)) for i in range(1, meta.layout.num_layers + 1)
            ),
        }
        if view:
            headers["X-VCM-View-Layers"] = ",".join(map(str, meta.layout.header.point_layers(k)))
            headers["Accept-Ranges"] = "none"
        else:
            headers["Accept-Ranges"] = "bytes"
        if self._not_modified(request, etag, meta):
            return web.Response(status=304, headers=headers)
        if view:
            if request.method == "HEAD":
                return web.Response(
                    headers={**headers, "Content-Length": str(meta.layout.header.point_bytes(k))},
                    content_type=STREAM_TYPE,
                )
            head, ranges = self.state.view_pieces(meta, k)
            self._served(request, meta, meta.layout.view_per_layer(k))
            return await self._stream(request, meta, head, ranges, 200, headers)
        size = meta.layout.end(k)
        rng = None
        if range_allowed(request.headers.get("If-Range"), etag, meta.modified):
            rng = parse_range(request.headers.get("Range"), size)
        start, stop = rng or (0, size)
        if rng is not None:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        status = 206 if rng else 200
        if request.method == "HEAD":
            return web.Response(
                status=status,
                content_type=STREAM_TYPE,
                headers={**headers, "Content-Length": str(stop - start)},
            )
        self._served(request, meta, meta.layout.bytes_per_layer(start, stop))
        return await self._stream(request, meta, b"", [(start, stop)], status, headers)

    async def _stream(
        self,
        request: web.Request,
        meta: FrameMeta,
        head: bytes,
        ranges: list[tuple[int, int]],
        status: int,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        """Send ``head`` then the stored byte ranges, ``READ_CHUNK`` bytes at a time: each
        write waits for the socket to drain, so a GET holds about one chunk of the frame in
        memory however large the frame or slow the client (issue 27, item 1: 0.3 read the
        whole range first). A frame cut short on disk meanwhile ends the connection early;
        the client sees fewer bytes than Content-Length."""
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = STREAM_TYPE
        response.content_length = len(head) + sum(b - a for a, b in ranges)
        await response.prepare(request)
        if head:
            await response.write(head)
        for start, stop in ranges:
            for at in range(start, stop, READ_CHUNK):
                want = min(stop, at + READ_CHUNK) - at
                try:  # the status line is sent: a failure now can only end the connection
                    chunk = await self.state.run(self.state.store.read, meta.key, at, at + want)
                except VCMError as exc:  # deleted meanwhile (retention, an admin)
                    raise ConnectionResetError(str(exc)) from None
                if len(chunk) != want:
                    raise ConnectionResetError(f"frame {meta.key} shrank while being sent")
                await response.write(chunk)
        await response.write_eof()
        return response

    async def get_image(self, request: web.Request) -> web.StreamResponse:
        meta = await self._meta(request)
        k = await self._layers(request, meta)
        return await self.image(request, meta, k, request.query.get("layers") not in (None, ""))

    async def image(
        self, request: web.Request, meta: FrameMeta, k: int, explicit: bool
    ) -> web.StreamResponse:
        """Operating point ``k`` of the frame as PNG (cached, conditional, HEAD)."""
        etag = meta.etag(f"i{self._image_version}-", k)
        headers = {
            **self._validators(meta, etag, k, explicit),
            "Accept-Ranges": "none",
            "X-VCM-Layers": str(k),
        }
        if self._not_modified(request, etag, meta):
            return web.Response(status=304, headers=headers)
        if meta.quarantined is not None:
            raise HTTPProblem(422, f"frame {meta.key} does not decode: {meta.quarantined}")
        name = f"{meta.key.id}/{etag}"
        png = self.state.pngs.get(name)
        if request.method == "HEAD":
            if png is not None:
                headers["Content-Length"] = str(len(png))
            return web.Response(headers=headers, content_type="image/png")
        if png is None:
            # only the layers the point reads
            data = await self.state.run(self.state.read_view, meta, k)
            try:
                png = await self.state.decode(self.state.render_png, data, k)
            except VCMError as exc:
                if k == meta.stored_analytics_point or await self.state.verify(meta) is False:
                    await self.state.quarantine(meta, str(exc))
                raise HTTPProblem(422, f"frame {meta.key} does not decode: {exc}") from None
            self.state.cache_png(name, png)
            self._served(request, meta, meta.layout.view_per_layer(k))
        return web.Response(body=png, content_type="image/png", headers=headers)

    async def get_info(self, request: web.Request) -> web.Response:
        meta = await self._meta(request)
        if not request["principal"].has(V, ADM, A):
            self._own_camera(request, meta.key.cam)
        return web.json_response(meta.describe(), dumps=dumps)

    async def _layers(self, request: web.Request, meta: FrameMeta) -> int:
        """The operating point to serve. Analytics tokens are held to the analytics layers.
        A viewer's explicit ``layers=k`` beyond the stored layers, or ``wait=s``, asks the
        camera for the texture (and waits up to ``wait``); an explicit ``layers=k`` still
        missing then gets 409 + Retry-After. A plain GET or HEAD (a size probe) serves the
        stored layers and asks nobody."""
        principal: Principal = request["principal"]
        n = meta.layout.num_layers
        limit = n if principal.reads_texture else min(meta.analytics_point, n)
        asked = int_param(request, "layers", lo=1, hi=n)
        wait = float_param(request, "wait", 0.0, 0.0, 60.0)
        if asked is not None and asked > limit:
            raise HTTPProblem(
                403,
                f"token {principal.name!r} reads operating points layers=1..{limit} of "
                f"frame {meta.key} (up to its analytics point)",
            )
        if asked is None:
            want = min(n if wait > 0 else meta.layout.stored_layers, limit)
        else:
            want = asked
        if want <= meta.layout.stored_layers:
            return want
        if (
            request.method == "GET"
            and principal.reads_texture
            and await self.ask_camera(meta, want, wait)
        ):
            return want
        if asked is None:
            return min(meta.layout.stored_layers, limit)
        raise HTTPProblem(
            409,
            f"frame {meta.key} has {meta.layout.stored_layers} of {n} "
            f"layers; the rest were requested from camera {meta.key.cam}, "
            "retry later",
            {"Retry-After": "1"},
            stored_layers=meta.layout.stored_layers,
        )

    async def ask_camera(self, meta: FrameMeta, want: int, wait: float) -> bool:
        """Ask the frame's camera for its texture (the camera's next poll of ``wanted``) and
        wait up to ``wait`` seconds for ``want`` layers; ``meta`` is refreshed as they
        arrive. True: they are stored."""
        await self.state.db(self.index.want, meta.key.cam, meta.key.ts)
        await self.state.notify()

        async def stored() -> bool:
            now = await self.state.get(meta.key)
            if now is not None:
                meta.layout, meta.modified = now.layout, now.modified
            return meta.layout.stored_layers >= want

        await self.state.wait_until(stored, wait)
        return meta.layout.stored_layers >= want

    def _served(self, request: web.Request, meta: FrameMeta, per_layer: list[int]) -> None:
        principal: Principal = request["principal"]
        client = self.state.metrics.served(principal.name, per_layer)
        meta.served[client] += sum(per_layer)
        analytics = principal.has(A) and not principal.has(V, ADM)
        if analytics or (not principal.authenticated and principal.name == "worker"):
            self.state.metrics.analytics_bytes_read += sum(per_layer)

    def _validators(self, meta: FrameMeta, etag: str, k: int, explicit: bool) -> dict:
        """ETag, Last-Modified and Cache-Control: a point whose layers are all stored never
        changes (immutable); "whatever is stored so far" must be revalidated."""
        fixed = meta.layout.complete or explicit
        return {
            "ETag": etag,
            "Last-Modified": http_date(meta.modified),
            "Cache-Control": IMMUTABLE if fixed else REVALIDATE,
        }

    def _not_modified(self, request: web.Request, etag: str, meta: FrameMeta) -> bool:
        inm = request.headers.get("If-None-Match")
        if inm is not None:
            return none_match(inm, etag)
        ims = request.headers.get("If-Modified-Since")
        date = parse_date(ims) if ims else None
        return date is not None and int(meta.modified) <= int(date)


class AnalyticsRoutes(Routes):
    """The analytics side: claims (leases), detections in and out, reports of an undecodable
    analytics point."""

    async def claim(self, request: web.Request) -> web.Response:
        n = int_param(request, "max", default=1, lo=1, hi=256)
        wait = float_param(request, "wait", 0.0, 0.0, 60.0)
        lease = float_param(request, "lease", 120.0, 1.0, 3600.0)
        owner = f"{request['principal'].name}@{self.state.owner}"
        got: list[FrameRow] = []

        async def ready() -> bool:
            for row in await self.state.db(self.index.lapsed_unchecked):
                key = FrameKey(row.cam, row.ts)
                if key not in self.state.rechecking:
                    self.state.rechecking.add(key)
                    self.state.spawn(
                        self.state.recheck(
                            FrameMeta.from_row(
                                row,
                                self.limits.max_pixels,
                                self.state.served.setdefault(key, Counter()),
                            )
                        )
                    )
            got.extend(await self.state.db(self.index.claim, n, lease, owner))
            return bool(got)

        await self.state.wait_until(ready, wait)
        frames = []
        for row in got:
            h = container.parse_header(row.header, self.limits.max_pixels)
            frames.append(
                {
                    "id": FrameKey(row.cam, row.ts).id,
                    "layer0_bytes": h.prefix_end(1),
                    "analytics_point": row.analytics_point,
                    "stored_layers": row.stored_layers,
                }
            )
        return web.json_response({"frames": frames}, dumps=dumps)

    async def get_detections(self, request: web.Request) -> web.Response:
        meta = await self._meta(request)
        result = await self.state.run(self.state.store.read_json, meta.key)
        if result is None:
            raise HTTPProblem(404, f"no detections for frame {meta.key} yet (analytics pending)")
        body = dumps(result).encode()
        etag = f'"{hashlib.blake2b(body, digest_size=10).hexdigest()}"'
        headers = {"ETag": etag, "Cache-Control": REVALIDATE}
        if none_match(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=None if request.method == "HEAD" else body,
            headers=headers,
            content_type="application/json",
        )

    async def put_detections(self, request: web.Request) -> web.Response:
        meta = await self._meta(request)
        result = check_detections(await self._json_body(request), self.limits.max_boxes)
        result["frame"] = meta.key.id
        result["analyst"] = request["principal"].name
        # the record reindex reads
        await self.state.run(self.state.store.write_json, meta.key, result)
        first = await self.state.db(
            self.index.set_detections, meta.key.cam, meta.key.ts, boxes_of(result)
        )
        if first is None:
            raise HTTPProblem(404, f"frame {meta.key} was deleted")
        meta.analysed = True
        if first:
            self.state.metrics.frames["analysed"] += 1
            self.state.metrics.analytics_latency.add(time.time() - meta.accepted)
            self.state.metrics.analytics_point_bytes += meta.layout.header.point_bytes(
                meta.stored_analytics_point
            )
            if isinstance(result.get("inference_s"), (int, float)):
                self.state.metrics.inference.add(result["inference_s"])
        return web.json_response({"id": meta.key.id, "stored": True}, dumps=dumps)

    async def report_undecodable(self, request: web.Request) -> web.Response:
        meta = await self._meta(request)
        ok = await self.state.verify(meta)
        if ok is None:
            raise HTTPProblem(503, "the decoder is busy; retry shortly", {"Retry-After": "2"})
        if ok:
            raise HTTPProblem(409, f"the analytics point of frame {meta.key} decodes here")
        await self.state.quarantine(
            meta, f"the analytics point does not decode (reported by {request['principal'].name})"
        )
        return web.json_response({"id": meta.key.id, "quarantined": meta.quarantined})


class IndexRoutes(Routes):
    """The index by camera, time and class, and the cameras' long-poll for wanted textures."""

    async def cameras(self, request: web.Request) -> web.Response:
        counts = await self.state.db(self.index.cameras)
        return web.json_response({"cameras": [{"id": c, "frames": n} for c, n, _ in counts]})

    async def camera_frames(self, request: web.Request) -> web.Response:
        cam = check_camera(request.match_info["cam"])
        self._own_camera(request, cam)
        query = FrameQuery(
            cam,
            since=int_param(request, "since", lo=0, hi=10**16),
            until=int_param(request, "until", lo=0, hi=10**16),
            limit=int_param(request, "limit", default=1000, lo=1, hi=100_000),
            cursor=cursor_param(request),
            newest_first=newest_first_param(request),
        )
        rows, more = await self.state.db(self.index.frames, query)
        page: dict[str, Any] = {"frames": [self._describe(r) for r in rows]}
        if more:
            page["next_cursor"] = more.encode()
        return web.json_response(page, dumps=dumps)

    async def list_frames(self, request: web.Request) -> web.Response:
        """``GET /frames?cam=&since=&until=&class=&min_score=&limit=&cursor=&order=``: frames
        by capture time, newest first (``order=asc``: oldest first), one camera or all,
        optionally only those with a box of a class (at or above a score); ``next_cursor``
        fetches the next (older) page (keyset pagination: the cost of a page does not grow
        with its depth)."""
        cam = request.query.get("cam")
        query = FrameQuery(
            cam=check_camera(cam) if cam not in (None, "") else None,
            since=int_param(request, "since", lo=0, hi=10**16),
            until=int_param(request, "until", lo=0, hi=10**16),
            cls=class_param(request),
            min_score=score_param(request),
            limit=int_param(request, "limit", default=100, lo=1, hi=1000),
            cursor=cursor_param(request),
            newest_first=newest_first_param(request),
        )
        rows, more = await self.state.db(self.index.frames, query)
        return web.json_response(
            {
                "frames": [self._describe(r) for r in rows],
                "next_cursor": more.encode() if more else None,
            },
            dumps=dumps,
        )

    async def class_stats(self, request: web.Request) -> web.Response:
        """``GET /stats/classes?cam=&since=&until=&class=``: boxes and frames per class per
        camera per hour (``hour``: its first microsecond, capture time, UTC)."""
        cam = request.query.get("cam")
        rows = await self.state.db(
            self.index.class_counts,
            check_camera(cam) if cam not in (None, "") else None,
            int_param(request, "since", lo=0, hi=10**16),
            int_param(request, "until", lo=0, hi=10**16),
            class_param(request),
            int_param(request, "limit", default=10_000, lo=1, hi=100_000),
        )
        return web.json_response({"counts": rows}, dumps=dumps)

    async def wanted(self, request: web.Request) -> web.Response:
        cam = check_camera(request.match_info["cam"])
        self._own_camera(request, cam)
        wait = float_param(request, "wait", 0.0, 0.0, 60.0)
        got: list[tuple[int, int]] = []

        async def ready() -> bool:
            got.extend(await self.state.db(self.index.offer, cam, self.state.reoffer_s))
            return bool(got)

        await self.state.wait_until(ready, wait)
        return web.json_response(
            {"frames": [{"id": FrameKey(cam, ts).id, "offset": offset} for ts, offset in got]}
        )

    def _describe(self, row: FrameRow) -> dict:
        key = FrameKey(row.cam, row.ts)
        return FrameMeta.from_row(
            row, self.limits.max_pixels, self.state.served.get(key, Counter())
        ).describe()


class EventRoutes(Routes):
    """Events: analytics clients report them (the worker's rules), viewers list them and see
    their best frame at full quality. A new or grown event asks the camera for the texture of
    its frames from ``pre_s`` before its start to ``post_s`` after its end, and is announced
    to the webhook and MQTT (:mod:`vcm_plugin.edge.notify`)."""

    def __init__(self, state: ServerState, frames: FrameRoutes) -> None:
        super().__init__(state)
        self.frames = frames

    async def save_event(self, request: web.Request) -> web.Response:
        """``POST /events`` (new or updated; the id is ``CAM-START-RULE``)."""
        doc = check_event(await self._json_body(request, "an event"))
        event_id = f"{doc['cam']}-{doc['start']}-{doc['rule']}"
        row = EventRow(
            event_id, doc["cam"], doc["rule"], doc["class"], doc["start"], doc["end"],
            doc["best"], doc["score"], doc["frames"], doc["ended"], doc["pre_s"],
            doc["post_s"], time.time(),
        )  # fmt: skip
        before = await self.state.db(self.index.save_event, row)
        after = await self.state.db(self.index.event, event_id)
        assert after is not None
        asked = await self.state.db(
            self.index.want_range,
            after.cam,
            after.start - int(after.pre_s * 1e6),
            after.end + int(after.post_s * 1e6),
        )
        if asked:
            await self.state.notify()
        kind = (
            "new" if before is None else ("end" if after.ended and not before.ended else "update")
        )
        if before is None or dataclasses.replace(after, modified=before.modified) != before:
            self.state.notifier.send(kind, after.describe())
        return web.json_response(
            {**after.describe(), "texture_requested": asked},
            status=201 if before is None else 200,
            dumps=dumps,
        )

    async def list_events(self, request: web.Request) -> web.Response:
        """``GET /events?cam=&class=&since=&until=&limit=&cursor=``: newest first."""
        cam = request.query.get("cam")
        query = EventQuery(
            cam=check_camera(cam) if cam not in (None, "") else None,
            cls=class_param(request),
            since=int_param(request, "since", lo=0, hi=10**16),
            until=int_param(request, "until", lo=0, hi=10**16),
            limit=int_param(request, "limit", default=100, lo=1, hi=1000),
            after=event_cursor_param(request),
        )
        rows, more = await self.state.db(self.index.events, query)
        return web.json_response(
            {
                "events": [r.describe() for r in rows],
                "next_cursor": more.encode() if more else None,
            },
            dumps=dumps,
        )

    async def _event(self, request: web.Request) -> EventRow:
        event_id = request.match_info["id"]
        row = await self.state.db(self.index.event, event_id) if len(event_id) < 200 else None
        if row is None:
            raise HTTPProblem(404, f"event {event_id[:80]!r} not found")
        return row

    async def get_event(self, request: web.Request) -> web.Response:
        return web.json_response((await self._event(request)).describe(), dumps=dumps)

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        """The event's best frame at full quality (PNG). Layers still on the camera are asked
        for; ``wait=s`` waits for them, else (or when the wait runs out) 409 + Retry-After."""
        row = await self._event(request)
        meta = await self.state.get(FrameKey(row.cam, row.best))
        if meta is None:
            raise HTTPProblem(404, f"the best frame of event {row.id} is no longer stored")
        n = meta.layout.num_layers
        if meta.layout.stored_layers < n:
            wait = float_param(request, "wait", 0.0, 0.0, 60.0)
            if not await self.frames.ask_camera(meta, n, wait):
                raise HTTPProblem(
                    409,
                    f"the full-quality layers of frame {meta.key} were asked from camera "
                    f"{meta.key.cam}; retry later",
                    {"Retry-After": "1"},
                    stored_layers=meta.layout.stored_layers,
                )
        return await self.frames.image(request, meta, n, True)

    async def clip(self, request: web.Request) -> web.Response:
        """``GET /events/{id}/clip?limit=N``: the event's frames from ``pre_s`` before its start
        to ``post_s`` after its end as an MP4 (H.264), each at the best point stored (full
        quality where the camera sent it), at its capture time; at most ``limit`` (default
        300) frames. Decodes run on the bounded decode pool (503 when it is full)."""
        row = await self._event(request)
        limit = int_param(request, "limit", default=300, lo=1, hi=MAX_CLIP_FRAMES)
        query = FrameQuery(
            row.cam,
            since=row.start - int(row.pre_s * 1e6),
            until=row.end + int(row.post_s * 1e6),
            limit=limit,
            newest_first=False,
        )
        rows, _ = await self.state.db(self.index.frames, query)
        clip = _Clip()
        try:
            for frame in rows:
                meta = await self.state.get(FrameKey(frame.cam, frame.ts))
                if meta is None or meta.quarantined is not None:
                    continue
                k = meta.layout.stored_layers
                data = await self.state.run(self.state.read_view, meta, k)
                try:
                    rgb = await self.state.decode(self.state.codec.decode, data, k)
                except VCMError:
                    continue  # a frame that does not decode is left out of the clip
                await self.state.run(clip.add, rgb, meta.key.ts)
        finally:
            body = await self.state.run(clip.close)
        if not clip.frames:
            raise HTTPProblem(404, f"no frames of event {row.id} are stored")
        return web.Response(
            body=body,
            content_type="video/mp4",
            headers={"X-VCM-Frames": str(clip.frames), "Cache-Control": REVALIDATE},
        )


class _Clip:
    """An MP4 (H.264, yuv420p) written in memory frame by frame, each at its capture time:
    a clip of hundreds of frames never holds more than one decoded picture."""

    def __init__(self) -> None:
        import av

        self.buf = io.BytesIO()
        self.out = av.open(self.buf, mode="w", format="mp4")
        self.stream = None
        self.first: int | None = None
        self.last_pts = -1
        self.frames = 0

    def add(self, rgb: np.ndarray, ts: int) -> None:
        import av

        if self.stream is None:
            self.stream = self.out.add_stream("libx264", rate=30)
            self.stream.width, self.stream.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
            self.stream.pix_fmt = "yuv420p"
            self.stream.time_base = Fraction(1, 1000)
            self.stream.codec_context.time_base = Fraction(1, 1000)
            self.stream.options = {"preset": "veryfast", "crf": "23"}
            self.first = ts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(self.stream.width, self.stream.height, format="yuv420p")
        pts = max(self.last_pts + 1, (ts - self.first) // 1000)
        frame.pts, frame.time_base, self.last_pts = pts, Fraction(1, 1000), pts
        for packet in self.stream.encode(frame):
            self.out.mux(packet)
        self.frames += 1

    def close(self) -> bytes:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.out.mux(packet)
        self.out.close()
        return self.buf.getvalue()


class AdminRoutes(Routes):
    """Deletion, retention and the viewer page."""

    async def delete_frame(self, request: web.Request) -> web.Response:
        key = (await self._meta(request)).key
        await self.state.delete(key)
        await self.state.notify()
        return web.Response(status=204)

    async def retention(self, request: web.Request) -> web.Response:
        return web.json_response(await self.state.apply_retention(), dumps=dumps)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(
            text=page_file("index.html"), content_type="text/html", headers=_PAGE_HEADERS
        )

    async def page_js(self, request: web.Request) -> web.Response:
        return web.Response(
            text=page_file("viewer.js"), content_type="text/javascript", headers=_PAGE_HEADERS
        )
