"""The edge HTTP service (aiohttp): uploads in, layer prefixes / PNGs / detections out.

Why aiohttp: one dependency gives an asyncio server that streams byte ranges and holds
long-polls (analytics claims, texture requests) without a thread per waiting client.
Blocking work (fsync, decoding) runs in thread pools so the event loop only routes.

Routes (role needed in brackets; see :data:`ROUTE_ROLES` and docs/edge.md)::

    GET  /, /viewer.js                       viewer page (its data calls carry a token)
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
    GET  /cameras, /cameras/{cam}/frames     index by camera and time (?since=&until=&cursor=
                                             &order=)
    GET  /frames?cam=&since=&until=&class=&min_score=&limit=&cursor=&order=   [viewer, admin]
                                             frames by time, camera and class, newest first
                                             (order=asc: oldest first); keyset pages
    GET  /stats/classes?cam=&since=&until=&class=   [viewer, admin] boxes and frames per
                                             class per camera per hour
    GET  /cameras/{cam}/wanted?wait=s        [camera] frames whose texture a viewer asked for
    POST /events                             [analytics] an event, new or grown (the
                                             worker's rules); asks for its frames' texture
    GET  /events?cam=&class=&since=&until=&limit=&cursor=   [viewer, admin] newest first
    GET  /events/{id}, /events/{id}/snapshot?wait=s   [viewer, admin] one event; its best
                                             frame at full quality (PNG; 409 until stored)
    GET  /events/{id}/clip?limit=n           [viewer, admin] its frames as MP4 (H.264)
    DELETE /frames/{id}, POST /admin/retention, GET /metrics   [admin]
    GET  /health                             status (details with any valid token)

Each route is one line of :data:`ROUTES` (method, route, handler, roles).

Every GET route answers HEAD too.

This module holds who may call what (:data:`ROUTE_ROLES`, the middleware), the service-level
endpoints and the route table; the handlers are grouped in :mod:`vcm_plugin.edge.routes`, what
the service holds between requests is :class:`vcm_plugin.edge.state.ServerState`, query
parsing :mod:`vcm_plugin.edge.query`, HTTP mechanics (ranges, validators, the connection
guard) :mod:`vcm_plugin.edge.http`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time

from aiohttp import web

from vcm_plugin.edge.auth import Principal, Role, TokenTable, bearer, open_principal
from vcm_plugin.edge.http import ConnectionGuard, HTTPProblem, dumps, is_loopback, parse_range
from vcm_plugin.edge.index import Index, IndexUnavailable, open_index
from vcm_plugin.edge.notify import Notifier
from vcm_plugin.edge.query import CLIENT_LABEL
from vcm_plugin.edge.routes import (
    AdminRoutes,
    AnalyticsRoutes,
    EventRoutes,
    FrameRoutes,
    IndexRoutes,
    UploadRoutes,
)
from vcm_plugin.edge.state import ServerLimits, ServerState
from vcm_plugin.edge.store import FrameStore
from vcm_plugin.errors import VCMError

__all__ = ["ROUTE_ROLES", "EdgeServer", "HTTPProblem", "ServerLimits", "parse_range", "serve"]

log = logging.getLogger("vcm.edge.server")


class RequestBytesFilter(logging.Filter):
    """aiohttp logs a request it cannot parse with the parser's exception, whose message
    quotes the start of the offending line: for an ``Authorization`` header over 8190 bytes,
    the bearer token (issue 27, item 4). The record stays (a malformed request is worth a
    line) without the quoted bytes: the exception's class and status only."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.msg}: {type(exc).__name__}, status {exc.code} (bytes not logged)"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_request_bytes() -> None:
    """Install ``RequestBytesFilter`` on aiohttp's server logger, once per process."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, RequestBytesFilter) for f in logger.filters):
        logger.addFilter(RequestBytesFilter())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vcm_plugin")
    except PackageNotFoundError:
        return "0"


V, A, C, ADM = Role.VIEWER, Role.ANALYTICS, Role.CAMERA, Role.ADMIN
PUBLIC: frozenset[Role] = frozenset()
#: The route table, one line per route: (method, route, handler, roles allowed). The handler is
#: an attribute path on :class:`EdgeServer` (a handler group, then its method); HEAD follows
#: GET. Camera routes also check the camera id against the token's own ids, analytics reads
#: its layer limit (in the handlers). Adding a route is a line here and its handler.
ROUTES: tuple[tuple[str, str, str, frozenset[Role]], ...] = (
    ("GET", "/", "admin.page", PUBLIC),
    ("GET", "/viewer.js", "admin.page_js", PUBLIC),
    ("GET", "/health", "health", PUBLIC),
    ("POST", "/cameras/{cam}/frames", "uploads.post_frame", frozenset({C})),
    ("POST", "/frames/{id}/layers", "uploads.append_layers", frozenset({C})),
    ("GET", "/cameras/{cam}/wanted", "catalog.wanted", frozenset({C})),
    ("GET", "/cameras", "catalog.cameras", frozenset({V, ADM, C})),
    ("GET", "/cameras/{cam}/frames", "catalog.camera_frames", frozenset({V, ADM, C})),
    ("GET", "/frames", "catalog.list_frames", frozenset({V, ADM})),
    ("GET", "/stats/classes", "catalog.class_stats", frozenset({V, ADM})),
    ("GET", "/frames/{id}", "frames.get_frame", frozenset({V, ADM, A})),
    ("GET", "/frames/{id}/image", "frames.get_image", frozenset({V, ADM, A})),
    ("GET", "/frames/{id}/info", "frames.get_info", frozenset({V, ADM, A, C})),
    ("GET", "/frames/{id}/detections", "analytics.get_detections", frozenset({V, ADM, A})),
    ("PUT", "/frames/{id}/detections", "analytics.put_detections", frozenset({A})),
    ("POST", "/frames/{id}/undecodable", "analytics.report_undecodable", frozenset({A})),
    ("POST", "/analytics/claim", "analytics.claim", frozenset({A})),
    ("DELETE", "/frames/{id}", "admin.delete_frame", frozenset({ADM})),
    ("POST", "/admin/retention", "admin.retention", frozenset({ADM})),
    ("GET", "/metrics", "get_metrics", frozenset({ADM})),
    ("POST", "/events", "events.save_event", frozenset({A})),
    ("GET", "/events", "events.list_events", frozenset({V, ADM})),
    ("GET", "/events/{id}", "events.get_event", frozenset({V, ADM})),
    ("GET", "/events/{id}/snapshot", "events.snapshot", frozenset({V, ADM})),
    ("GET", "/events/{id}/clip", "events.clip", frozenset({V, ADM})),
)
#: (method, route) -> roles allowed, from :data:`ROUTES` (what the middleware checks)
ROUTE_ROLES: dict[tuple[str, str], frozenset[Role]] = {
    (method, route): roles for method, route, _, roles in ROUTES
}


class EdgeServer:
    """One service instance: who may call what (the middleware: origin, token, role), the
    service-level endpoints (health, metrics), and the application that routes each request
    to its group of handlers (:mod:`vcm_plugin.edge.routes`) over one :class:`ServerState`."""

    def __init__(
        self,
        store: FrameStore,
        limits: ServerLimits | None = None,
        tokens: TokenTable | None = None,
        io_threads: int = 4,
        index: Index | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.state = ServerState(store, limits, io_threads, index, notifier)
        self.tokens = tokens
        self.guard: ConnectionGuard | None = None
        self.uploads = UploadRoutes(self.state)
        self.frames = FrameRoutes(self.state, _version())
        self.analytics = AnalyticsRoutes(self.state)
        self.catalog = IndexRoutes(self.state)
        self.events = EventRoutes(self.state, self.frames)
        self.admin = AdminRoutes(self.state)

    def _principal(self, request: web.Request) -> Principal | None:
        """The caller: from its bearer token, or (no tokens configured) the open principal
        named by its ``X-VCM-Client`` label. None: a token was required and is missing or
        unknown."""
        token = bearer(request.headers.get("Authorization"))
        if self.tokens is None:
            name = request.headers.get("X-VCM-Client", "")
            return open_principal(name if CLIENT_LABEL.fullmatch(name) else "anonymous")
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
                raise HTTPProblem(
                    403,
                    f"Host {host[:80]!r} is not a loopback address; this "
                    "service runs without tokens and answers local names only",
                )
        origin = request.headers.get("Origin")
        allowed = (f"http://{host}", *self.state.limits.allow_origins)
        if origin is not None and origin not in allowed:
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
            raise HTTPProblem(
                401,
                "a bearer token is required (Authorization: Bearer TOKEN)",
                {"WWW-Authenticate": 'Bearer realm="vcm-edge"'},
            )
        if not principal.has(*roles):
            raise HTTPProblem(
                403,
                f"role {'/'.join(sorted(principal.roles))} may not {method} {resource.canonical}",
            )
        return principal

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
                response = web.json_response(
                    {"error": str(exc), **exc.extra},
                    status=exc.status,
                    headers=exc.headers,
                    dumps=dumps,
                )
            except IndexUnavailable as exc:  # the database is down or busy: not our 500
                self.state.metrics.frames["index_unavailable"] += 1
                log.warning("%s %s: %s", request.method, request.path, exc)
                response = web.json_response(
                    {"error": str(exc)}, status=503, headers={"Retry-After": "5"}, dumps=dumps
                )
            except VCMError as exc:
                response = web.json_response({"error": str(exc)}, status=400, dumps=dumps)
            except web.HTTPException as exc:
                exc.text = json.dumps({"error": exc.reason})
                exc.content_type = "application/json"
                response = exc
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            self.state.metrics.request(
                f"{request.method} {route}", response.status, time.perf_counter() - start
            )
            if isinstance(response, web.HTTPException):
                raise response
            return response
        finally:
            if self.guard is not None:
                self.guard.end(request.protocol)

    async def health(self, request: web.Request) -> web.Response:
        """Public: ok when the index answers (503 when it does not); details for tokens."""
        if request["principal"] is None:
            await self.state.db(self.state.index.version)
            return web.json_response({"status": "ok"})
        totals = await self.state.db(self.state.index.totals)
        return web.json_response(
            {
                "status": "ok",
                "store": self.state.store.url,
                "index": self.state.index.kind,
                "frames": totals["frames"],
                "pending_analytics": totals["pending"],
                "auth": "tokens" if self.tokens is not None else "open",
            }
        )

    async def get_metrics(self, request: web.Request) -> web.Response:
        totals = await self.state.db(self.state.index.totals)
        gauges = {
            "frames_stored": totals["frames"],
            "analytics_pending": totals["pending"],
            "stored_bytes": totals["bytes"],
            "decode_in_flight": self.state.decoding,
            "open_connections": len(self.guard.active) if self.guard else 0,
            "connections_refused": self.guard.refused if self.guard else 0,
            "connections_timed_out": self.guard.timed_out if self.guard else 0,
            "notifications_sent": self.state.notifier.sent,
            "notifications_failed": self.state.notifier.failed,
            "notifications_dropped": self.state.notifier.dropped,
        }
        if request.query.get("format") == "prometheus":
            return web.Response(
                text=self.state.metrics.prometheus(**gauges), content_type="text/plain"
            )
        return web.json_response(
            self.state.metrics.snapshot(
                **gauges,
                store={
                    "bytes_read": self.state.store.bytes_read,
                    "bytes_written": self.state.store.bytes_written,
                    "header_probe_bytes": self.state.store.probe_bytes,
                },
            ),
            dumps=dumps,
        )

    def _handler(self, name: str):
        """The bound handler a :data:`ROUTES` line names (``"group.method"`` or ``"method"``)."""
        target: object = self
        for part in name.split("."):
            target = getattr(target, part)
        return target

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.state.limits.max_json, middlewares=[self._middleware]
        )
        app.on_startup.append(self.state.startup)
        app.on_shutdown.append(self.state.shutdown)
        app.on_cleanup.append(self.state.cleanup)
        app.add_routes(  # web.get also answers HEAD
            [
                web.get(route, self._handler(name))
                if method == "GET"
                else web.route(method, route, self._handler(name))
                for method, route, name, _ in ROUTES
            ]
        )
        return app


async def serve(
    store: FrameStore,
    host: str = "127.0.0.1",
    port: int = 8750,
    access_log: bool = False,
    limits: ServerLimits | None = None,
    tokens: TokenTable | None = None,
    index: Index | None = None,
    db: str | None = None,
    notifier: Notifier | None = None,
) -> None:
    """Run until SIGINT/SIGTERM; prints ``serving ... on URL`` once the socket is bound
    (port 0 picks a free port, and the line says which). Without tokens it listens on a
    loopback address only."""
    if tokens is None and not is_loopback(host):
        raise VCMError(
            f"refusing to listen on {host} without tokens: anyone who reaches the "
            "port could upload, read and delete. Give --tokens-file (see "
            "docs/edge.md) or listen on 127.0.0.1"
        )
    quiet_request_bytes()
    index = index or open_index(db, store.url, store.root, store.local)
    server = EdgeServer(store, limits, tokens, index=index, notifier=notifier)
    runner = web.AppRunner(
        server.app(),
        access_log=log if access_log else None,
        keepalive_timeout=server.state.limits.header_timeout,
    )
    await runner.setup()
    listener = None
    try:
        limits = server.state.limits
        server.guard = ConnectionGuard(runner.server, limits.max_connections, limits.header_timeout)
        loop = asyncio.get_running_loop()
        try:
            listener = await loop.create_server(server.guard, host, port, backlog=1024)
        except OSError as exc:
            raise VCMError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = listener.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        mode = (
            f"{len(tokens)} token(s)"
            if tokens is not None
            else "no tokens: open to every local user and program, loopback only"
        )
        print(
            f"vcm edge: serving {store.url} on http://{shown}:{bound[1]} ({mode}; index "
            f"{server.state.index.backend.describe()})",
            flush=True,
        )
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()
