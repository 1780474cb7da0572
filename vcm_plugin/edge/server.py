"""The edge HTTP service (aiohttp): uploads in, layer prefixes / PNGs / detections out.

Why aiohttp: one dependency gives an asyncio server that streams byte ranges and holds
long-polls (analytics claims, texture requests) without a thread per waiting client.
Blocking work (fsync, decoding) runs in thread pools so the event loop only routes.

Routes (role needed in brackets; see :data:`ROUTE_ROLES` and docs/edge.md)::

    GET  /                                   viewer page (its data calls carry a token)
    POST /cameras/{cam}/frames?ts=US         [camera, own ids] upload whole layers (201)
    POST /frames/{id}/layers?offset=N        [camera, own ids] append the next layers
    GET  /frames/{id}?layers=k&view=1        [viewer, admin, analytics <= its layers] point k
                                             alone: header + the layers it needs
    GET  /frames/{id}?layers=k[&wait=s]      stream prefix of k layers (default: the layers
                                             stored); honours Range / If-Range / If-None-Match
    GET  /frames/{id}/image?layers=k[&wait=s] decoded PNG
    GET  /frames/{id}/info                   layer table, stored layers, bytes served
    GET  /frames/{id}/detections             detections JSON (404 until analysed)
    PUT  /frames/{id}/detections             [analytics] the worker stores its result
    POST /frames/{id}/undecodable            [analytics] "the analytics point does not
                                             decode": checked here, then quarantined
    POST /analytics/claim?max=n&wait=s       [analytics] lease frames that need analytics
    GET  /cameras, /cameras/{cam}/frames     index by camera and time (?since=&until=&cursor=)
    GET  /frames?cam=&since=&until=&class=&min_score=&limit=&cursor=   [viewer, admin]
                                             frames by time, camera and class; keyset pages
    GET  /stats/classes?cam=&since=&until=&class=   [viewer, admin] boxes and frames per
                                             class per camera per hour
    GET  /cameras/{cam}/wanted?wait=s        [camera] frames whose texture a viewer asked for
    DELETE /frames/{id}, POST /admin/retention, GET /metrics   [admin]
    GET  /health                             status (details with any valid token)

Every GET route answers HEAD too.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import io
import ipaddress
import json
import logging
import math
import os
import re
import signal
import socket
import time
import weakref
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from vcm_plugin.codec import container
from vcm_plugin.codec.api import Codec
from vcm_plugin.edge.auth import Principal, Role, TokenTable, bearer, open_principal
from vcm_plugin.edge.index import (
    ANALYSED,
    QUARANTINED,
    Cursor,
    FrameQuery,
    FrameRow,
    Index,
    IndexUnavailable,
    boxes_of,
    open_index,
    reindex,
)
from vcm_plugin.edge.metrics import Metrics
from vcm_plugin.edge.store import QUARANTINE, FrameKey, FrameStore, check_camera
from vcm_plugin.edge.stream import Layout, StreamCheck, analytics_layers
from vcm_plugin.errors import VCMError

log = logging.getLogger("vcm.edge.server")
STREAM_TYPE = "application/vnd.vcm"
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"
_dumps = functools.partial(json.dumps, allow_nan=False)
_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
_CLIENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vcm_plugin")
    except PackageNotFoundError:
        return "0"


@dataclass(frozen=True)
class ServerLimits:
    """Every bound the service enforces against a careless or hostile client."""

    max_upload: int = 64 << 20         # bytes per upload request (413 beyond)
    max_pixels: int = 3840 * 2160      # largest frame accepted (4K UHD); decoding is O(pixels)
    max_json: int = 1 << 20            # detections body bytes
    max_boxes: int = 10_000            # boxes per detections document
    max_connections: int = 256         # open connections; the next gets 503 and is closed
    header_timeout: float = 15.0       # a connection must send a request's headers this fast
    body_timeout: float = 60.0         # an upload body must arrive within this many seconds
    decode_threads: int = 1            # PNG decodes at once
    decode_queue: int = 4              # decodes waiting; beyond: 503 + Retry-After
    png_cache_bytes: int = 32 << 20    # decoded PNGs kept for repeat views
    keep_days: float | None = None     # retention: frames older than this are deleted
    max_bytes: int | None = None       # retention: oldest frames deleted above this total
    retention_every: float = 60.0      # seconds between retention passes
    allow_origins: tuple[str, ...] = ()  # browser origins besides the service's own

    def __post_init__(self) -> None:
        for name in ("max_upload", "max_pixels", "max_json", "max_boxes", "max_connections",
                     "decode_threads"):
            if getattr(self, name) < 1:
                raise VCMError(f"{name.replace('_', '-')} must be at least 1")
        for name in ("header_timeout", "body_timeout", "retention_every"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise VCMError(f"{name.replace('_', '-')} must be a positive number")
        if self.keep_days is not None and not (math.isfinite(self.keep_days)
                                               and self.keep_days > 0):
            raise VCMError("keep-days must be a positive number")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise VCMError("max-bytes must be positive")


class HTTPProblem(Exception):
    """An error answer with a status and a one-line message (sent as ``{"error": ...}``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.headers, self.extra = status, headers or {}, extra


V, A, C, ADM = Role.VIEWER, Role.ANALYTICS, Role.CAMERA, Role.ADMIN
PUBLIC: frozenset[Role] = frozenset()
#: (method, route) -> roles allowed; HEAD follows GET. Camera routes also check the camera id
#: against the token's own ids, analytics reads its layer limit (in the handlers).
ROUTE_ROLES: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/"): PUBLIC,
    ("GET", "/viewer.js"): PUBLIC,
    ("GET", "/health"): PUBLIC,
    ("POST", "/cameras/{cam}/frames"): frozenset({C}),
    ("POST", "/frames/{id}/layers"): frozenset({C}),
    ("GET", "/cameras/{cam}/wanted"): frozenset({C}),
    ("GET", "/cameras"): frozenset({V, ADM, C}),
    ("GET", "/cameras/{cam}/frames"): frozenset({V, ADM, C}),
    ("GET", "/frames"): frozenset({V, ADM}),
    ("GET", "/stats/classes"): frozenset({V, ADM}),
    ("GET", "/frames/{id}"): frozenset({V, ADM, A}),
    ("GET", "/frames/{id}/image"): frozenset({V, ADM, A}),
    ("GET", "/frames/{id}/info"): frozenset({V, ADM, A, C}),
    ("GET", "/frames/{id}/detections"): frozenset({V, ADM, A}),
    ("PUT", "/frames/{id}/detections"): frozenset({A}),
    ("POST", "/frames/{id}/undecodable"): frozenset({A}),
    ("POST", "/analytics/claim"): frozenset({A}),
    ("DELETE", "/frames/{id}"): frozenset({ADM}),
    ("POST", "/admin/retention"): frozenset({ADM}),
    ("GET", "/metrics"): frozenset({ADM}),
}


@dataclass
class FrameMeta:
    """One frame as a request sees it: read from the index (:class:`FrameRow`) per request,
    so every server sharing the index sees the same frames; the store holds the bytes."""

    key: FrameKey
    layout: Layout
    accepted: float                 # first receipt (retention age)
    modified: float                 # last write (Last-Modified)
    analytics_layers: int = 1       # the operating point the analytics role may read
    analysed: bool = False
    quarantined: str | None = None  # why analytics cannot decode it; kept out of analytics
    checked: bool = False           # the analytics point decoded here once
    served: Counter[str] = field(default_factory=Counter)  # by this server process

    @classmethod
    def from_row(cls, row: FrameRow, max_pixels: int, served: Counter[str]) -> FrameMeta:
        header = container.parse_header(row.header, max_pixels)
        return cls(FrameKey(row.cam, row.ts), Layout(header, row.stored_layers), row.accepted,
                   row.modified, row.analytics_layers, analysed=row.state == ANALYSED,
                   quarantined=row.reason if row.state == QUARANTINED else None,
                   checked=row.checked, served=served)

    @property
    def digest(self) -> str:
        """Names the stored content: the layer table (lengths and CRC32 of every layer)."""
        h = self.layout.header
        raw = repr((self.key.id, h.backend_id, h.preset_id, h.width, h.height, h.config_hash,
                    h.offsets, h.lengths, h.crcs, h.needs))
        return hashlib.blake2b(raw.encode(), digest_size=10).hexdigest()

    @property
    def analytics_point(self) -> int:
        """What analytics reads now: the analytics point, or the highest point below it that
        is stored (a first upload cut by a camera's byte budget)."""
        return max(1, min(self.analytics_layers, self.layout.stored_layers))

    def etag(self, kind: str, layers: int) -> str:
        return f'"{self.digest}-{kind}{layers}"'

    def describe(self) -> dict:
        return {"id": self.key.id, "cam": self.key.cam, "ts": self.key.ts,
                **self.layout.describe(), "analytics_layers": self.analytics_layers,
                "analysed": self.analysed, "quarantined": self.quarantined,
                "served_bytes": dict(self.served)}


def _int(request: web.Request, name: str, default: int | None = None,
         lo: int | None = None, hi: int | None = None) -> int | None:
    """An integer query parameter: ASCII digits, one spelling (no '+', '_', spaces, leading
    zeros or other scripts' digits), within [lo, hi]; else VCMError (400)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not _INT.fullmatch(raw):
        raise VCMError(f"query parameter {name}={raw[:40]!r} is not an integer (ASCII digits, "
                       "no leading zeros)")
    value = int(raw)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise VCMError(f"query parameter {name}={value} out of range [{lo}, {hi}]")
    return value


def _float(request: web.Request, name: str, default: float, lo: float, hi: float) -> float:
    """A finite decimal query parameter within [lo, hi] ('nan', 'inf', '1e9' refused)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not _DECIMAL.fullmatch(raw):
        raise VCMError(f"query parameter {name}={raw[:40]!r} is not a plain decimal number")
    value = float(raw)
    if not lo <= value <= hi:
        raise VCMError(f"query parameter {name}={raw} out of range [{lo:g}, {hi:g}]")
    return value


def _class(request: web.Request) -> str | None:
    """``class=NAME``: a detector's class name (printable, at most 256 characters)."""
    raw = request.query.get("class")
    if raw is None or raw == "":
        return None
    if len(raw) > 256 or not raw.isprintable():
        raise VCMError("query parameter class must be a printable name of at most 256 "
                       "characters")
    return raw


def _score(request: web.Request) -> float | None:
    raw = request.query.get("min_score")
    return None if raw in (None, "") else _float(request, "min_score", 0.0, 0.0, 1e6)


def _cursor(request: web.Request) -> Cursor | None:
    raw = request.query.get("cursor")
    return None if raw in (None, "") else Cursor.decode(raw)


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw in (None, "", "0"):
        return False
    if raw == "1":
        return True
    raise VCMError(f"query parameter {name}={raw[:40]!r} must be 0 or 1")


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` / ``a-`` / ``-n`` range -> [start, stop); None = serve everything.

    RFC 9110 §14.2: a header that does not parse, a multi-range or a range whose last
    position is below its first is *ignored* (200 with the whole representation); a valid
    range that does not overlap the representation is unsatisfiable (416)."""
    if not value:
        return None
    m = re.fullmatch(r"bytes=([0-9]{0,18})-([0-9]{0,18})", value.strip())
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.groups()
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            raise HTTPProblem(416, f"unsatisfiable range {value!r}",
                              {"Content-Range": f"bytes */{size}"})
        return max(0, size - n), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise HTTPProblem(416, f"range {value!r} outside the {size}-byte representation",
                          {"Content-Range": f"bytes */{size}"})
    stop = size if last == "" else min(int(last) + 1, size)
    return start, stop


def _etags(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def none_match(header: str | None, etag: str) -> bool:
    """``If-None-Match`` matches (weak comparison, RFC 9110 §13.1.2): answer 304."""
    if header is None:
        return False
    tags = _etags(header)
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _parse_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp() if parsed.tzinfo else None


def range_allowed(header: str | None, etag: str, modified: float) -> bool:
    """``If-Range`` (RFC 9110 §13.1.5): the range applies only if the validator is the
    current strong ETag or exactly the current Last-Modified date; otherwise the whole 200."""
    if header is None:
        return True
    header = header.strip()
    if header.startswith('"') or header.startswith("W/"):
        return header == etag  # strong comparison: a weak tag never matches
    date = _parse_date(header)
    return date is not None and int(date) == int(modified)


class ConnectionGuard:
    """Protocol factory around aiohttp's: caps open connections (the next one gets a 503 and
    is closed) and closes a connection that has not sent a complete request's headers within
    ``header_timeout`` seconds of connecting or of its previous answer (slow-header clients
    and idle keep-alives). Body timeouts are the upload handlers' own."""

    BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: "
            b"application/json\r\nContent-Length: 38\r\nConnection: close\r\n\r\n"
            b'{"error": "too many open connections"}')

    def __init__(self, factory, limits: ServerLimits) -> None:
        self.factory, self.limits = factory, limits
        self.active: dict[object, list[float]] = {}  # handler -> [requests in flight, since]
        self.refused = 0
        self.timed_out = 0

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self, self.factory())

    def begin(self, handler: object) -> None:
        state = self.active.get(handler)
        if state is not None:
            state[0] += 1

    def end(self, handler: object) -> None:
        state = self.active.get(handler)
        if state is not None:
            state[0] -= 1
            state[1] = time.monotonic()


class _Guarded(asyncio.Protocol):
    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard, self.inner = guard, inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)
        guard = self.guard
        if len(guard.active) >= guard.limits.max_connections:
            guard.refused += 1
            transport.write(ConnectionGuard.BUSY)
            transport.close()
            return
        guard.active[self.inner] = [0, time.monotonic()]
        self.timer = asyncio.get_running_loop().call_later(guard.limits.header_timeout,
                                                           self._check)

    def _check(self) -> None:
        state = self.guard.active.get(self.inner)
        if state is None or self.transport is None:
            return
        timeout = self.guard.limits.header_timeout
        idle = time.monotonic() - state[1]
        if state[0] == 0 and idle >= timeout:
            self.guard.timed_out += 1
            self.transport.close()
            return
        delay = timeout - idle if state[0] == 0 else timeout
        self.timer = asyncio.get_running_loop().call_later(max(0.05, delay), self._check)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.guard.active.pop(self.inner, None)
        if self.timer is not None:
            self.timer.cancel()
        self.inner.connection_lost(exc)


def check_detections(doc: object, max_boxes: int) -> dict:
    """The detections document a worker may store: an object of scalars plus ``boxes``, a
    list of objects each with ``xyxy`` (4 finite numbers); every number finite (NaN never
    stored), strings short, nothing nested deeper. Raises VCMError saying what is wrong."""
    def scalar(value: object, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise VCMError(f"detections: {where} is not a finite number")
        if isinstance(value, str) and len(value) > 256:
            raise VCMError(f"detections: {where} is longer than 256 characters")
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise VCMError(f"detections: {where} must be a string, number, boolean or null")

    if not isinstance(doc, dict) or not isinstance(doc.get("boxes"), list):
        raise VCMError('detections must be a JSON object with a "boxes" list')
    if len(doc) > 64:
        raise VCMError("detections: more than 64 fields")
    boxes = doc["boxes"]
    if len(boxes) > max_boxes:
        raise VCMError(f"detections: {len(boxes)} boxes, over the limit of {max_boxes}")
    for name, value in doc.items():
        if name != "boxes":
            scalar(value, repr(name[:40]))
    for i, box in enumerate(boxes):
        if not isinstance(box, dict) or len(box) > 16:
            raise VCMError(f"detections: box {i} must be an object of at most 16 fields")
        xyxy = box.get("xyxy")
        if not (isinstance(xyxy, list) and len(xyxy) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in xyxy)):
            raise VCMError(f"detections: box {i} needs xyxy, four finite numbers")
        for name, value in box.items():
            if name != "xyxy":
                scalar(value, f"box {i} {name[:40]!r}")
    inference = doc.get("inference_s")
    if inference is not None and (not isinstance(inference, (int, float)) or inference < 0):
        raise VCMError("detections: inference_s must be a number of seconds >= 0")
    return doc


def _reject_constant(name: str) -> None:
    raise VCMError(f"detections: {name} is not a number JSON allows")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class EdgeServer:
    """State and handlers of one service instance over one store."""

    def __init__(self, store: FrameStore, limits: ServerLimits | None = None,
                 tokens: TokenTable | None = None, io_threads: int = 4,
                 index: Index | None = None) -> None:
        self.store = store
        self.index = index or open_index(None, store.url, store.root, store.local)
        self.limits = limits = limits or ServerLimits()
        self.tokens = tokens
        self.codec = Codec(max_pixels=limits.max_pixels)
        self.metrics = Metrics()
        self.served: dict[FrameKey, Counter[str]] = {}  # bytes this process served
        self.reoffer_s = 30.0  # a wanted texture is offered to its camera again after this
        self.owner = f"{socket.gethostname()}:{os.getpid()}"  # names this server's leases
        self._rechecking: set[FrameKey] = set()
        self.guard: ConnectionGuard | None = None
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="edge-io")
        self._cpu = ThreadPoolExecutor(limits.decode_threads, thread_name_prefix="edge-decode")
        self._decoding = 0
        self._pngs: OrderedDict[str, bytes] = OrderedDict()
        self._png_bytes = 0
        self._locks: weakref.WeakValueDictionary[FrameKey, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._changed: asyncio.Condition | None = None
        self._tasks: set[asyncio.Task] = set()
        self._image_version = _version()
        self.closing = False

    # -- plumbing ------------------------------------------------------------------------
    async def _run(self, fn, *args, cpu: bool = False):
        return await asyncio.get_running_loop().run_in_executor(
            self._cpu if cpu else self._io, fn, *args)

    async def _decode(self, fn, *args):
        """Run a decode on the bounded pool; 503 + Retry-After when the queue is full."""
        if self._decoding >= self.limits.decode_threads + self.limits.decode_queue:
            self.metrics.frames["decode_busy"] += 1
            raise HTTPProblem(503, "the decoder is busy; retry shortly", {"Retry-After": "2"})
        self._decoding += 1
        try:
            return await self._run(fn, *args, cpu=True)
        finally:
            self._decoding -= 1

    def _lock(self, key: FrameKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _db(self, fn, *args):
        """One index call on the I/O threads (IndexUnavailable -> 503 in the middleware)."""
        return await self._run(fn, *args)

    async def _wait_until(self, predicate, timeout: float) -> bool:
        """Wait (long-poll) until ``await predicate()`` holds or ``timeout`` seconds pass.
        Woken by this process's changes at once and every half second otherwise: another
        server sharing the index changes it without telling this one."""
        if not (math.isfinite(timeout) and timeout >= 0):
            raise VCMError(f"bad wait {timeout!r}")
        deadline = time.monotonic() + timeout
        while not await predicate():
            left = deadline - time.monotonic()
            if left <= 0 or self.closing:
                return False
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
                except TimeoutError:
                    pass
        return True

    def _forget(self, key: FrameKey) -> None:
        """Drop what this process caches about a deleted frame."""
        self.served.pop(key, None)
        for name in [n for n in self._pngs if n.startswith(f"{key.id}/")]:
            self._png_bytes -= len(self._pngs.pop(name))

    async def _get(self, key: FrameKey) -> FrameMeta | None:
        row = await self._db(self.index.get, key.cam, key.ts)
        if row is None:
            return None
        return FrameMeta.from_row(row, self.limits.max_pixels,
                                  self.served.setdefault(key, Counter()))

    async def _meta(self, request: web.Request) -> FrameMeta:
        key = FrameKey.parse(request.match_info["id"])
        meta = await self._get(key)
        if meta is None:
            raise HTTPProblem(404, f"frame {key} not found")
        return meta

    # -- who is asking -------------------------------------------------------------------
    def _principal(self, request: web.Request) -> Principal | None:
        """The caller: from its bearer token, or (no tokens configured) the open principal
        named by its ``X-VCM-Client`` label. None: a token was required and is missing or
        unknown."""
        token = bearer(request.headers.get("Authorization"))
        if self.tokens is None:
            name = request.headers.get("X-VCM-Client", "")
            return open_principal(name if _CLIENT.fullmatch(name) else "anonymous")
        return self.tokens.lookup(token) if token else None

    def _check_origin(self, request: web.Request) -> None:
        """Browsers may only call from the service's own page: a foreign ``Origin`` (or a
        cross-site fetch) is refused, and without tokens the Host must be a loopback name, so
        a DNS-rebinding page cannot pose as same-origin. No CORS headers are ever sent."""
        host = request.host or ""
        if self.tokens is None:
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if host.startswith("["):
                name = host[1:].split("]", 1)[0]
            if not is_loopback(name):
                raise HTTPProblem(403, f"Host {host[:80]!r} is not a loopback address; this "
                                  "service runs without tokens and answers local names only")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in (f"http://{host}", *self.limits.allow_origins):
            raise HTTPProblem(403, f"cross-origin request from {origin[:80]!r} refused")
        if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            raise HTTPProblem(403, "cross-site browser request refused")

    def _authorize(self, request: web.Request) -> Principal | None:
        resource = request.match_info.route.resource
        if resource is None:
            return None
        method = "GET" if request.method == "HEAD" else request.method
        roles = ROUTE_ROLES.get((method, resource.canonical))
        principal = self._principal(request)
        if roles is None or not roles:
            return principal
        if principal is None:
            raise HTTPProblem(401, "a bearer token is required (Authorization: Bearer TOKEN)",
                              {"WWW-Authenticate": 'Bearer realm="vcm-edge"'})
        if not principal.has(*roles):
            raise HTTPProblem(403, f"role {'/'.join(sorted(principal.roles))} may not "
                              f"{method} {resource.canonical}")
        return principal

    def _own_camera(self, request: web.Request, cam: str) -> None:
        principal: Principal = request["principal"]
        if principal.has(V, ADM) and request.method in ("GET", "HEAD"):
            return
        if not principal.owns(cam):
            raise HTTPProblem(403, f"token {principal.name!r} may not act for camera {cam!r}")

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        start = time.perf_counter()
        if self.guard is not None:
            self.guard.begin(request.protocol)
        try:
            try:
                self._check_origin(request)
                request["principal"] = self._authorize(request)
                response = await handler(request)
            except HTTPProblem as exc:
                response = web.json_response({"error": str(exc), **exc.extra},
                                             status=exc.status, headers=exc.headers,
                                             dumps=_dumps)
            except IndexUnavailable as exc:  # the database is down or busy: not our 500
                self.metrics.frames["index_unavailable"] += 1
                log.warning("%s %s: %s", request.method, request.path, exc)
                response = web.json_response({"error": str(exc)}, status=503,
                                             headers={"Retry-After": "5"}, dumps=_dumps)
            except VCMError as exc:
                response = web.json_response({"error": str(exc)}, status=400, dumps=_dumps)
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
        finally:
            if self.guard is not None:
                self.guard.end(request.protocol)

    # -- start-up and background work ------------------------------------------------------
    async def _startup(self, app: web.Application) -> None:
        """Start-up reads counters from the index, never the store: its cost does not grow
        with the number of frames. Only a new, empty index over a store that already holds
        frames (a store from before the index) is built once from the store."""
        self._changed = asyncio.Condition()
        if self.index.created and await self._run(self.store.cameras):
            report = await self._run(reindex, self.index, self.store, self.codec)
            log.info("index built from the existing store: %d frames in %.1f s",
                     report.frames, report.seconds)
        totals = await self._db(self.index.totals)
        self.metrics.frames["recovered"] = totals["frames"]
        log.info("store %s, index %s: %d frames, %d awaiting analytics", self.store.url,
                 self.index.backend.describe(), totals["frames"], totals["pending"])
        if self.limits.keep_days is not None or self.limits.max_bytes is not None:
            self._spawn(self._retention_loop())

    async def _shutdown(self, app: web.Application) -> None:
        """End long-polls at once so a stop does not wait out a worker's 20 s claim."""
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        await self._notify()

    async def _cleanup(self, app: web.Application) -> None:
        self._io.shutdown(wait=True)
        self._cpu.shutdown(wait=True)
        self.index.close()

    async def _retention_loop(self) -> None:
        while not self.closing:
            await asyncio.sleep(self.limits.retention_every)
            try:
                await self.apply_retention()
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("retention pass failed")

    async def apply_retention(self) -> dict:
        """Delete frames older than ``keep_days``, then the oldest while the store holds more
        than ``max_bytes``. Age is the server's receipt time, not the camera's timestamp;
        both walk the index's age order in batches."""
        deleted = freed = 0
        if self.limits.keep_days is not None:
            cutoff = time.time() - self.limits.keep_days * 86400
            while batch := await self._db(self.index.oldest, 500, cutoff):
                for row in batch:
                    freed += await self._delete(FrameKey(row.cam, row.ts))
                    deleted += 1
        if self.limits.max_bytes is not None:
            while (await self._db(self.index.totals))["bytes"] > self.limits.max_bytes:
                batch = await self._db(self.index.oldest, 64)
                if not batch:
                    break
                total = (await self._db(self.index.totals))["bytes"]
                for row in batch:
                    if total <= self.limits.max_bytes:
                        break
                    freed += await self._delete(FrameKey(row.cam, row.ts))
                    total -= row.bytes
                    deleted += 1
        if deleted:
            log.info("retention: deleted %d frame(s), %d bytes", deleted, freed)
        totals = await self._db(self.index.totals)
        return {"deleted": deleted, "freed_bytes": freed, "frames": totals["frames"],
                "stored_bytes": totals["bytes"]}

    async def _delete(self, key: FrameKey) -> int:
        """Index row first (no server offers the frame any more), then the files."""
        async with self._lock(key):
            row = await self._db(self.index.delete, key.cam, key.ts)
            if row is None:
                return 0
            freed = await self._run(self.store.delete, key)
            self._forget(key)
            self.metrics.frames["deleted"] += 1
        return freed

    # -- uploads -------------------------------------------------------------------------
    async def _receive(self, request: web.Request, sink, check: StreamCheck | None) -> int:
        """Stream the request body into ``sink`` (an Upload) chunk by chunk, validating as it
        goes; bounded in size (413) and time (408). Returns the byte count."""
        length = request.content_length
        if length is not None and length > self.limits.max_upload:
            raise HTTPProblem(413, f"upload of {length} bytes is over the limit of "
                              f"{self.limits.max_upload}")
        total = 0
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                async for chunk in request.content.iter_chunked(1 << 16):
                    total += len(chunk)
                    if total > self.limits.max_upload:
                        raise HTTPProblem(413, f"upload over the limit of "
                                          f"{self.limits.max_upload} bytes")
                    if check is not None:
                        check.feed(chunk)
                    sink.write(chunk)
        except TimeoutError:
            raise HTTPProblem(408, f"upload body not received within "
                              f"{self.limits.body_timeout:g} s", {"Connection": "close"}) from None
        except (HTTPProblem, VCMError):
            raise
        except Exception as exc:  # client went away mid-upload: nothing is stored
            raise HTTPProblem(400, f"incomplete upload: {type(exc).__name__}") from None
        if total == 0:
            raise VCMError("empty upload: send the stream bytes as the request body")
        return total

    def _same_bytes(self, key: FrameKey, upload, start: int, n: int) -> bool:
        """Stored bytes [start, start + n) equal the upload's first n bytes?"""
        step = 1 << 20
        return all(self.store.read(key, start + i, start + min(n, i + step))
                   == upload.read(i, min(n, i + step)) for i in range(0, n, step))

    async def post_frame(self, request: web.Request) -> web.Response:
        cam = check_camera(request.match_info["cam"])
        self._own_camera(request, cam)
        ts = _int(request, "ts", default=time.time_ns() // 1000, lo=0, hi=10**16 - 1)
        key = FrameKey(cam, ts)
        check = StreamCheck(self.codec)
        upload = await self._run(self.store.begin, key)
        try:
            try:
                size = await self._receive(request, upload, check)
                layout = check.finish()
            except VCMError:
                self.metrics.frames["rejected"] += 1
                raise
            async with self._lock(key):
                meta = await self._get(key)
                created = False
                if meta is None:
                    now = time.time()
                    h = layout.header
                    row = FrameRow(cam, ts, bytes(check.head[:h.size]), h.num_layers,
                                   layout.stored_layers, layout.size,
                                   analytics_layers(check.info), now, now)
                    created = await self._db(self.index.insert, row, upload.commit)
                    meta = await self._get(key)
                    if meta is None:  # deleted at once by someone else
                        raise HTTPProblem(409, f"frame {key} changed during the upload; retry")
                if not created:  # a retry, or the same frame re-sent with more layers
                    stored = meta.layout.size
                    common = min(stored, size)
                    if not await self._run(self._same_bytes, key, upload, 0, common):
                        raise HTTPProblem(409, f"frame {key} already exists with other content")
                    if size <= stored:
                        self.metrics.frames["duplicate"] += 1
                        return web.json_response({**meta.describe(), "created": False},
                                                 dumps=_dumps)
                    await self._relayout(meta, layout, upload)
                else:
                    self.metrics.frames["accepted"] += 1
                self._after_layers(meta, size)
        finally:
            await self._run(upload.abort)
        await self._notify()
        return web.json_response({**meta.describe(), "created": created},
                                 status=201 if created else 200, dumps=_dumps)

    async def _relayout(self, meta: FrameMeta, layout: Layout, upload) -> None:
        """Store the longer stream and its row together (compare-and-set on the size)."""
        now = time.time()
        ok = await self._db(self.index.relayout, meta.key.cam, meta.key.ts, meta.layout.size,
                            layout.stored_layers, layout.size, now, upload.commit)
        if not ok:
            raise HTTPProblem(409, f"frame {meta.key} changed during the upload (another "
                              "upload stored layers first); ask /info and retry",
                              stored_bytes=meta.layout.size)
        meta.layout, meta.modified = layout, now

    def _after_layers(self, meta: FrameMeta, nbytes: int) -> None:
        self.metrics.upload_bytes += nbytes
        if meta.layout.complete:
            self.metrics.frames["complete"] += 1

    async def append_layers(self, request: web.Request) -> web.Response:
        meta = await self._meta(request)
        self._own_camera(request, meta.key.cam)
        offset = _int(request, "offset", lo=0, hi=1 << 40)
        if offset is None:
            raise VCMError("query parameter offset=N (the stored byte count) is required")
        key = meta.key
        async with self._lock(key):
            meta = await self._get(key)  # as it is now that this upload holds the lock
            if meta is None:
                raise HTTPProblem(404, f"frame {key} not found")
            size = meta.layout.size
            if offset != size:
                n = request.content_length
                if n is not None and offset + n <= size:  # a retry of an append that landed
                    upload = await self._run(self.store.begin, key)
                    try:
                        await self._receive(request, upload, None)
                        if await self._run(self._same_bytes, key, upload, offset, n):
                            return web.json_response({**meta.describe(), "duplicate": True},
                                                     dumps=_dumps)
                    finally:
                        await self._run(upload.abort)
                raise HTTPProblem(409, f"offset {offset} does not match the {size} bytes "
                                  f"stored for frame {key}", stored_bytes=size)
            head = await self._run(self.store.read, key, 0, meta.layout.end(1))
            check = StreamCheck(self.codec, resume=(head, size))
            upload = await self._run(self.store.begin, key, size)
            try:
                try:
                    nbytes = await self._receive(request, upload, check)
                    layout = check.finish()
                except VCMError:
                    self.metrics.frames["rejected"] += 1
                    raise
                await self._relayout(meta, layout, upload)
            finally:
                await self._run(upload.abort)
            self._after_layers(meta, nbytes)
        await self._notify()
        return web.json_response(meta.describe(), dumps=_dumps)

    # -- reads ---------------------------------------------------------------------------
    async def _layers(self, request: web.Request, meta: FrameMeta) -> int:
        """The operating point to serve. Analytics tokens are held to the analytics layers.
        A viewer's explicit ``layers=k`` beyond the stored layers, or ``wait=s``, asks the
        camera for the texture (and waits up to ``wait``); an explicit ``layers=k`` still
        missing then gets 409 + Retry-After. A plain GET or HEAD (a size probe) serves the
        stored layers and asks nobody."""
        principal: Principal = request["principal"]
        n = meta.layout.num_layers
        limit = n if principal.reads_texture else min(meta.analytics_layers, n)
        asked = _int(request, "layers", lo=1, hi=n)
        wait = _float(request, "wait", 0.0, 0.0, 60.0)
        if asked is not None and asked > limit:
            raise HTTPProblem(403, f"token {principal.name!r} reads layers 1..{limit} of "
                              f"frame {meta.key} (the analytics layers)")
        if asked is None:
            want = min(n if wait > 0 else meta.layout.stored_layers, limit)
        else:
            want = asked
        if want <= meta.layout.stored_layers:
            return want
        if request.method == "GET" and principal.reads_texture:
            await self._db(self.index.want, meta.key.cam, meta.key.ts)
            await self._notify()

            async def stored() -> bool:
                now = await self._get(meta.key)
                if now is not None:
                    meta.layout, meta.modified = now.layout, now.modified
                return meta.layout.stored_layers >= want

            await self._wait_until(stored, wait)
            if meta.layout.stored_layers >= want:
                return want
        if asked is None:
            return min(meta.layout.stored_layers, limit)
        raise HTTPProblem(409, f"frame {meta.key} has {meta.layout.stored_layers} of {n} "
                          f"layers; the rest were requested from camera {meta.key.cam}, "
                          "retry later", {"Retry-After": "1"},
                          stored_layers=meta.layout.stored_layers)

    def _served(self, request: web.Request, meta: FrameMeta, per_layer: list[int]) -> None:
        principal: Principal = request["principal"]
        client = self.metrics.served(principal.name, per_layer)
        meta.served[client] += sum(per_layer)
        analytics = principal.has(A) and not principal.has(V, ADM)
        if analytics or (not principal.authenticated and principal.name == "worker"):
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

    def _validators(self, meta: FrameMeta, etag: str, k: int, explicit: bool) -> dict:
        """ETag, Last-Modified and Cache-Control: a point whose layers are all stored never
        changes (immutable); "whatever is stored so far" must be revalidated."""
        fixed = meta.layout.complete or explicit
        return {"ETag": etag, "Last-Modified": http_date(meta.modified),
                "Cache-Control": IMMUTABLE if fixed else REVALIDATE}

    def _not_modified(self, request: web.Request, etag: str, meta: FrameMeta) -> bool:
        inm = request.headers.get("If-None-Match")
        if inm is not None:
            return none_match(inm, etag)
        ims = request.headers.get("If-Modified-Since")
        date = _parse_date(ims) if ims else None
        return date is not None and int(meta.modified) <= int(date)

    async def get_frame(self, request: web.Request) -> web.StreamResponse:
        meta = await self._meta(request)
        k = await self._layers(request, meta)
        explicit = request.query.get("layers") not in (None, "")
        view = _flag(request, "view")
        etag = meta.etag("v" if view else "p", k)
        headers = {**self._validators(meta, etag, k, explicit),
                   "X-VCM-Layers": str(k), "X-VCM-Num-Layers": str(meta.layout.num_layers),
                   "X-VCM-Stored-Layers": str(meta.layout.stored_layers),
                   "X-VCM-Layer-Ends": ",".join(str(meta.layout.end(i)) for i in range(
                       1, meta.layout.num_layers + 1))}
        if view:
            headers["X-VCM-View-Layers"] = ",".join(
                map(str, meta.layout.header.point_layers(k)))
            headers["Accept-Ranges"] = "none"
        else:
            headers["Accept-Ranges"] = "bytes"
        if self._not_modified(request, etag, meta):
            return web.Response(status=304, headers=headers)
        if view:
            if request.method == "HEAD":
                return web.Response(headers={**headers, "Content-Length": str(
                    meta.layout.header.point_bytes(k))}, content_type=STREAM_TYPE)
            data = await self._run(self._read_view, meta, k)
            self._served(request, meta, meta.layout.view_per_layer(k))
            return web.Response(body=data, headers=headers, content_type=STREAM_TYPE)
        size = meta.layout.end(k)
        rng = None
        if range_allowed(request.headers.get("If-Range"), etag, meta.modified):
            rng = parse_range(request.headers.get("Range"), size)
        start, stop = rng or (0, size)
        if rng is not None:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        status = 206 if rng else 200
        if request.method == "HEAD":
            return web.Response(status=status, content_type=STREAM_TYPE,
                                headers={**headers, "Content-Length": str(stop - start)})
        data = await self._run(self.store.read, meta.key, start, stop)
        self._served(request, meta, meta.layout.bytes_per_layer(start, stop))
        return web.Response(body=data, status=status, headers=headers,
                            content_type=STREAM_TYPE)

    async def get_image(self, request: web.Request) -> web.StreamResponse:
        meta = await self._meta(request)
        k = await self._layers(request, meta)
        explicit = request.query.get("layers") not in (None, "")
        etag = meta.etag(f"i{self._image_version}-", k)
        headers = {**self._validators(meta, etag, k, explicit), "Accept-Ranges": "none",
                   "X-VCM-Layers": str(k)}
        if self._not_modified(request, etag, meta):
            return web.Response(status=304, headers=headers)
        if meta.quarantined is not None:
            raise HTTPProblem(422, f"frame {meta.key} does not decode: {meta.quarantined}")
        name = f"{meta.key.id}/{etag}"
        png = self._pngs.get(name)
        if request.method == "HEAD":
            if png is not None:
                headers["Content-Length"] = str(len(png))
            return web.Response(headers=headers, content_type="image/png")
        if png is None:
            data = await self._run(self._read_view, meta, k)  # only the layers the point reads
            try:
                png = await self._decode(self._png, data, k)
            except VCMError as exc:
                if k == meta.analytics_point or await self._verify(meta) is False:
                    await self._quarantine(meta, str(exc))
                raise HTTPProblem(422, f"frame {meta.key} does not decode: {exc}") from None
            self._cache_png(name, png)
            self._served(request, meta, meta.layout.view_per_layer(k))
        return web.Response(body=png, content_type="image/png", headers=headers)

    def _cache_png(self, name: str, png: bytes) -> None:
        if len(png) > self.limits.png_cache_bytes // 4:
            return
        self._pngs[name] = png
        self._png_bytes += len(png)
        while self._png_bytes > self.limits.png_cache_bytes:
            self._png_bytes -= len(self._pngs.popitem(last=False)[1])

    def _png(self, data: bytes, layers: int) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.codec.decode(data, layers=layers)).save(buf, format="PNG",
                                                                     compress_level=1)
        return buf.getvalue()

    async def get_info(self, request: web.Request) -> web.Response:
        meta = await self._meta(request)
        if not request["principal"].has(V, ADM, A):
            self._own_camera(request, meta.key.cam)
        return web.json_response(meta.describe(), dumps=_dumps)

    # -- undecodable frames --------------------------------------------------------------
    async def _verify(self, meta: FrameMeta) -> bool | None:
        """Decode what analytics reads (its point's view) here: True decodes, False does not,
        None decoder busy."""
        k = meta.analytics_point
        data = await self._run(self._read_view, meta, k)
        try:
            await self._decode(self.codec.decode, data, k)
        except HTTPProblem:
            return None
        except VCMError:
            return False
        if not meta.checked:
            meta.checked = True
            await self._db(self.index.mark_checked, meta.key.cam, meta.key.ts)
        return True

    async def _quarantine(self, meta: FrameMeta, reason: str) -> None:
        """Keep a frame whose analytics point does not decode out of analytics for good (a
        marker file next to it survives restarts); viewers still get its bytes, /image a 422."""
        if meta.quarantined is not None:
            return
        meta.quarantined = reason[:300]
        self.metrics.frames["quarantined"] += 1
        await self._run(self.store.write_json, meta.key, {"error": meta.quarantined},
                        QUARANTINE)  # the file first: reindex rebuilds the state from it
        await self._db(self.index.quarantine, meta.key.cam, meta.key.ts, meta.quarantined)
        log.warning("frame %s quarantined: %s", meta.key, reason)

    async def _recheck(self, meta: FrameMeta) -> None:
        """A lease lapsed without detections: decode the analytics point once before the
        frame is offered again (a frame that kills workers must not come back forever)."""
        try:
            ok = await self._verify(meta)
            if ok is False:
                await self._quarantine(meta, "the analytics point does not decode (checked "
                                       "after a worker's lease lapsed)")
                return
            await self._db(self.index.release, meta.key.cam, meta.key.ts, bool(ok))
            await self._notify()
        except (VCMError, OSError) as exc:  # index down, frame gone: the next claim retries
            log.warning("recheck of %s: %s", meta.key, exc)
        finally:
            self._rechecking.discard(meta.key)

    async def report_undecodable(self, request: web.Request) -> web.Response:
        meta = await self._meta(request)
        ok = await self._verify(meta)
        if ok is None:
            raise HTTPProblem(503, "the decoder is busy; retry shortly", {"Retry-After": "2"})
        if ok:
            raise HTTPProblem(409, f"the analytics point of frame {meta.key} decodes here")
        await self._quarantine(meta, f"the analytics point does not decode (reported by "
                               f"{request['principal'].name})")
        return web.json_response({"id": meta.key.id, "quarantined": meta.quarantined})

    # -- analytics -----------------------------------------------------------------------
    async def claim(self, request: web.Request) -> web.Response:
        n = _int(request, "max", default=1, lo=1, hi=256)
        wait = _float(request, "wait", 0.0, 0.0, 60.0)
        lease = _float(request, "lease", 120.0, 1.0, 3600.0)
        owner = f"{request['principal'].name}@{self.owner}"
        got: list[FrameRow] = []

        async def ready() -> bool:
            for row in await self._db(self.index.lapsed_unchecked):
                key = FrameKey(row.cam, row.ts)
                if key not in self._rechecking:
                    self._rechecking.add(key)
                    self._spawn(self._recheck(FrameMeta.from_row(
                        row, self.limits.max_pixels, self.served.setdefault(key, Counter()))))
            got.extend(await self._db(self.index.claim, n, lease, owner))
            return bool(got)

        await self._wait_until(ready, wait)
        frames = []
        for row in got:
            h = container.parse_header(row.header, self.limits.max_pixels)
            frames.append({"id": FrameKey(row.cam, row.ts).id, "layer0_bytes": h.prefix_end(1),
                           "analytics_layers": row.analytics_layers,
                           "stored_layers": row.stored_layers})
        return web.json_response({"frames": frames}, dumps=_dumps)

    async def get_detections(self, request: web.Request) -> web.Response:
        meta = await self._meta(request)
        result = await self._run(self.store.read_json, meta.key)
        if result is None:
            raise HTTPProblem(404, f"no detections for frame {meta.key} yet (analytics pending)")
        body = _dumps(result).encode()
        etag = f'"{hashlib.blake2b(body, digest_size=10).hexdigest()}"'
        headers = {"ETag": etag, "Cache-Control": REVALIDATE}
        if none_match(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=None if request.method == "HEAD" else body, headers=headers,
                            content_type="application/json")

    async def _json_body(self, request: web.Request) -> object:
        """A bounded JSON body: size over ``max_json`` 413, NaN/Infinity and nesting deeper
        than Python's parser handles 400."""
        limit = self.limits.max_json
        if request.content_length is not None and request.content_length > limit:
            raise HTTPProblem(413, f"JSON body of {request.content_length} bytes is over the "
                              f"limit of {limit}")
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                raw = await request.content.read(limit + 1)
                if len(raw) > limit:
                    raise HTTPProblem(413, f"JSON body over the limit of {limit} bytes")
        except TimeoutError:
            raise HTTPProblem(408, "request body not received in time",
                              {"Connection": "close"}) from None
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VCMError(f"detections must be JSON: {exc}") from None
        except RecursionError:
            raise VCMError("detections JSON is nested too deeply") from None

    async def put_detections(self, request: web.Request) -> web.Response:
        meta = await self._meta(request)
        result = check_detections(await self._json_body(request), self.limits.max_boxes)
        result["frame"] = meta.key.id
        result["analyst"] = request["principal"].name
        await self._run(self.store.write_json, meta.key, result)  # the record reindex reads
        first = await self._db(self.index.set_detections, meta.key.cam, meta.key.ts,
                               boxes_of(result))
        if first is None:
            raise HTTPProblem(404, f"frame {meta.key} was deleted")
        meta.analysed = True
        if first:
            self.metrics.frames["analysed"] += 1
            self.metrics.analytics_latency.add(time.time() - meta.accepted)
            self.metrics.analytics_point_bytes += meta.layout.header.point_bytes(
                meta.analytics_point)
            if isinstance(result.get("inference_s"), (int, float)):
                self.metrics.inference.add(result["inference_s"])
        return web.json_response({"id": meta.key.id, "stored": True}, dumps=_dumps)

    async def delete_frame(self, request: web.Request) -> web.Response:
        key = (await self._meta(request)).key
        await self._delete(key)
        await self._notify()
        return web.Response(status=204)

    async def retention(self, request: web.Request) -> web.Response:
        return web.json_response(await self.apply_retention(), dumps=_dumps)

    # -- index and camera side -----------------------------------------------------------
    async def cameras(self, request: web.Request) -> web.Response:
        return web.json_response({"cameras": [{"id": c, "frames": n}
                                              for c, n, _ in await self._db(self.index.cameras)]})

    def _describe(self, row: FrameRow) -> dict:
        key = FrameKey(row.cam, row.ts)
        return FrameMeta.from_row(row, self.limits.max_pixels,
                                  self.served.get(key, Counter())).describe()

    async def camera_frames(self, request: web.Request) -> web.Response:
        cam = check_camera(request.match_info["cam"])
        self._own_camera(request, cam)
        query = FrameQuery(cam, since=_int(request, "since", lo=0, hi=10**16),
                           until=_int(request, "until", lo=0, hi=10**16),
                           limit=_int(request, "limit", default=1000, lo=1, hi=100_000),
                           cursor=_cursor(request))
        rows, more = await self._db(self.index.frames, query)
        page: dict[str, Any] = {"frames": [self._describe(r) for r in rows]}
        if more:
            page["next_cursor"] = more.encode()
        return web.json_response(page, dumps=_dumps)

    async def list_frames(self, request: web.Request) -> web.Response:
        """``GET /frames?cam=&since=&until=&class=&min_score=&limit=&cursor=``: frames in
        capture-time order, one camera or all, optionally only those with a box of a class
        (at or above a score); ``next_cursor`` fetches the next page (keyset pagination:
        the cost of a page does not grow with its depth)."""
        cam = request.query.get("cam")
        query = FrameQuery(
            cam=check_camera(cam) if cam not in (None, "") else None,
            since=_int(request, "since", lo=0, hi=10**16),
            until=_int(request, "until", lo=0, hi=10**16),
            cls=_class(request), min_score=_score(request),
            limit=_int(request, "limit", default=100, lo=1, hi=1000), cursor=_cursor(request))
        rows, more = await self._db(self.index.frames, query)
        return web.json_response({"frames": [self._describe(r) for r in rows],
                                  "next_cursor": more.encode() if more else None},
                                 dumps=_dumps)

    async def class_stats(self, request: web.Request) -> web.Response:
        """``GET /stats/classes?cam=&since=&until=&class=``: boxes and frames per class per
        camera per hour (``hour``: its first microsecond, capture time, UTC)."""
        cam = request.query.get("cam")
        rows = await self._db(self.index.class_counts,
                              check_camera(cam) if cam not in (None, "") else None,
                              _int(request, "since", lo=0, hi=10**16),
                              _int(request, "until", lo=0, hi=10**16), _class(request),
                              _int(request, "limit", default=10_000, lo=1, hi=100_000))
        return web.json_response({"counts": rows}, dumps=_dumps)

    async def wanted(self, request: web.Request) -> web.Response:
        cam = check_camera(request.match_info["cam"])
        self._own_camera(request, cam)
        wait = _float(request, "wait", 0.0, 0.0, 60.0)
        got: list[tuple[int, int]] = []

        async def ready() -> bool:
            got.extend(await self._db(self.index.offer, cam, self.reoffer_s))
            return bool(got)

        await self._wait_until(ready, wait)
        return web.json_response({"frames": [
            {"id": FrameKey(cam, ts).id, "offset": offset} for ts, offset in got]})

    async def health(self, request: web.Request) -> web.Response:
        """Public: ok when the index answers (503 when it does not); details for tokens."""
        if request["principal"] is None:
            await self._db(self.index.version)
            return web.json_response({"status": "ok"})
        totals = await self._db(self.index.totals)
        return web.json_response({"status": "ok", "store": self.store.url,
                                  "index": self.index.kind,
                                  "frames": totals["frames"],
                                  "pending_analytics": totals["pending"],
                                  "auth": "tokens" if self.tokens is not None else "open"})

    async def get_metrics(self, request: web.Request) -> web.Response:
        totals = await self._db(self.index.totals)
        gauges = {"frames_stored": totals["frames"], "analytics_pending": totals["pending"],
                  "stored_bytes": totals["bytes"], "decode_in_flight": self._decoding,
                  "open_connections": len(self.guard.active) if self.guard else 0,
                  "connections_refused": self.guard.refused if self.guard else 0,
                  "connections_timed_out": self.guard.timed_out if self.guard else 0}
        if request.query.get("format") == "prometheus":
            return web.Response(text=self.metrics.prometheus(**gauges),
                                content_type="text/plain")
        return web.json_response(self.metrics.snapshot(
            **gauges, store={"bytes_read": self.store.bytes_read,
                             "bytes_written": self.store.bytes_written,
                             "header_probe_bytes": self.store.probe_bytes}), dumps=_dumps)

    async def page(self, request: web.Request) -> web.Response:
        from vcm_plugin.edge.viewer import PAGE

        return web.Response(text=PAGE, content_type="text/html", headers=_PAGE_HEADERS)

    async def page_js(self, request: web.Request) -> web.Response:
        from vcm_plugin.edge.viewer import SCRIPT

        return web.Response(text=SCRIPT, content_type="text/javascript",
                            headers=_PAGE_HEADERS)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_json,
                              middlewares=[self._middleware])
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        r = app.router
        r.add_get("/", self.page)
        r.add_get("/viewer.js", self.page_js)
        r.add_post("/cameras/{cam}/frames", self.post_frame)
        r.add_get("/cameras/{cam}/frames", self.camera_frames)
        r.add_get("/cameras/{cam}/wanted", self.wanted)
        r.add_get("/cameras", self.cameras)
        r.add_get("/frames", self.list_frames)
        r.add_get("/stats/classes", self.class_stats)
        r.add_post("/frames/{id}/layers", self.append_layers)
        r.add_get("/frames/{id}", self.get_frame)
        r.add_delete("/frames/{id}", self.delete_frame)
        r.add_get("/frames/{id}/image", self.get_image)
        r.add_get("/frames/{id}/info", self.get_info)
        r.add_get("/frames/{id}/detections", self.get_detections)
        r.add_put("/frames/{id}/detections", self.put_detections)
        r.add_post("/frames/{id}/undecodable", self.report_undecodable)
        r.add_post("/analytics/claim", self.claim)
        r.add_post("/admin/retention", self.retention)
        r.add_get("/health", self.health)
        r.add_get("/metrics", self.get_metrics)
        return app


_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; connect-src 'self'; "
                               "img-src 'self' blob: data:; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
}


async def serve(store: FrameStore, host: str = "127.0.0.1", port: int = 8750,
                access_log: bool = False, limits: ServerLimits | None = None,
                tokens: TokenTable | None = None, index: Index | None = None,
                db: str | None = None) -> None:
    """Run until SIGINT/SIGTERM; prints ``serving ... on URL`` once the socket is bound
    (port 0 picks a free port, and the line says which). Without tokens it listens on a
    loopback address only."""
    if tokens is None and not is_loopback(host):
        raise VCMError(f"refusing to listen on {host} without tokens: anyone who reaches the "
                       "port could upload, read and delete. Give --tokens-file (see "
                       "docs/edge.md) or listen on 127.0.0.1")
    index = index or open_index(db, store.url, store.root, store.local)
    server = EdgeServer(store, limits, tokens, index=index)
    runner = web.AppRunner(server.app(), access_log=log if access_log else None,
                           keepalive_timeout=server.limits.header_timeout)
    await runner.setup()
    listener = None
    try:
        server.guard = ConnectionGuard(runner.server, server.limits)
        loop = asyncio.get_running_loop()
        try:
            listener = await loop.create_server(server.guard, host, port, backlog=1024)
        except OSError as exc:
            raise VCMError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = listener.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        mode = (f"{len(tokens)} token(s)" if tokens is not None else
                "no tokens: open to every local user and program, loopback only")
        print(f"vcm edge: serving {store.url} on http://{shown}:{bound[1]} ({mode}; index "
              f"{server.index.backend.describe()})", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()
