"""HTTP mechanics of the edge service, apart from its routes: error answers, byte ranges and
validators (RFC 9110), JSON without NaN, loopback names, and the connection guard (a cap on open
connections and a header timeout in front of aiohttp's protocol)."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import ipaddress
import json
import re
import time
from typing import Any

STREAM_TYPE = "application/vnd.vcm"
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"
#: ``json.dumps`` that refuses NaN and infinities (they are not JSON)
dumps = functools.partial(json.dumps, allow_nan=False)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class HTTPProblem(Exception):
    """An error answer with a status and a one-line message (sent as ``{"error": ...}``)."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.headers, self.extra = status, headers or {}, extra


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
            raise HTTPProblem(
                416, f"unsatisfiable range {value!r}", {"Content-Range": f"bytes */{size}"}
            )
        return max(0, size - n), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise HTTPProblem(
            416,
            f"range {value!r} outside the {size}-byte representation",
            {"Content-Range": f"bytes */{size}"},
        )
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


def parse_date(value: str) -> float | None:
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
    date = parse_date(header)
    return date is not None and int(date) == int(modified)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ConnectionGuard:
    """Protocol factory around aiohttp's: caps open connections (the next one gets a 503 and
    is closed) and closes a connection that has not sent a complete request's headers within
    ``header_timeout`` seconds of connecting or of its previous answer (slow-header clients
    and idle keep-alives). Body timeouts are the upload handlers' own."""

    BUSY = (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: "
        b"application/json\r\nContent-Length: 38\r\nConnection: close\r\n\r\n"
        b'{"error": "too many open connections"}'
    )

    def __init__(self, factory, max_connections: int, header_timeout: float) -> None:
        """``max_connections`` open at once (the next gets 503 and is closed); a connection
        must send a request's headers within ``header_timeout`` seconds of opening or of its
        last response."""
        self.factory = factory
        self.max_connections, self.header_timeout = max_connections, header_timeout
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
        if len(guard.active) >= guard.max_connections:
            guard.refused += 1
            transport.write(ConnectionGuard.BUSY)
            transport.close()
            return
        guard.active[self.inner] = [0, time.monotonic()]
        self.timer = asyncio.get_running_loop().call_later(guard.header_timeout, self._check)

    def _check(self) -> None:
        state = self.guard.active.get(self.inner)
        if state is None or self.transport is None:
            return
        timeout = self.guard.header_timeout
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
