"""Blocking HTTP client for the edge service, shared by camera, worker and load test.

Why not an async client: cameras and workers are sequential loops around CPU-bound work
(encode, detect); plain threads with keep-alive ``http.client`` connections are enough and
add no dependency. Every call retries with exponential back-off (plus jitter) while the
server is down or answers 429/502/503/504, so a camera rides out a server restart; uploads
are idempotent (frames are named by camera and capture time), so a retry never duplicates.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from vcm_plugin.errors import Unavailable, VCMError

RETRY_STATUS = {429, 502, 503, 504}


class ServerError(VCMError):
    """The server answered with an error status; ``status`` and its message are kept."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server answered {status}: {message}")
        self.status = status


class ServerUnavailable(Unavailable):
    """The server could not be reached within the retry budget (an outage: not a VCMError)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Backoff:
    """Delays of ``first * factor**n`` capped at ``cap``, each scaled by a random 0.5-1.0."""

    first: float = 0.2
    factor: float = 2.0
    cap: float = 10.0

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.first * self.factor**attempt) * random.uniform(0.5, 1.0)


class EdgeClient:
    """One base URL, one keep-alive connection per thread, retries inside ``retry_for`` s."""

    def __init__(
        self,
        url: str,
        role: str = "viewer",
        timeout: float = 60.0,
        retry_for: float = 60.0,
        backoff: Backoff | None = None,
        token: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise VCMError(f"bad server URL {url!r}: expected http://HOST:PORT")
        self.url = url.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.role, self.timeout, self.retry_for = role, timeout, retry_for
        self.backoff = backoff or Backoff()
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"EdgeClient({self.url!r}, role={self.role!r})"

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout
            )
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        self._drop()

    def _once(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Response:
        conn = self._conn()
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException):
            self._drop()
            raise
        if r.getheader("Connection", "").lower() == "close":
            self._drop()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 206),
        retry_for: float | None = None,
    ) -> Response:
        """Send one request, retrying transport errors and 429/5xx-busy answers."""
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        hdrs = {"X-VCM-Client": self.role, **self._auth, **(headers or {})}
        if body is not None:
            hdrs.setdefault("Content-Type", "application/octet-stream")
        budget = self.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + budget
        attempt = 0
        while True:
            try:
                resp = self._once(method, path, body, hdrs)
                if resp.status not in RETRY_STATUS:
                    break
                problem = f"{resp.status} {resp.body[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            delay = self.backoff.delay(attempt)
            attempt += 1
            if time.monotonic() + delay > deadline:
                raise ServerUnavailable(
                    f"{method} {self.url}{path} failed after {attempt} "
                    f"attempt(s) in {budget:.0f} s: {problem}"
                )
            time.sleep(delay)
        if resp.status not in ok:
            try:
                message = resp.json().get("error", "")
            except (ValueError, AttributeError):
                message = resp.body[:200].decode("utf-8", "replace")
            raise ServerError(resp.status, message)
        return resp

    # -- the service's calls -------------------------------------------------------------
    def upload(self, cam: str, ts: int, data: bytes) -> dict:
        return self.request("POST", f"/cameras/{cam}/frames", data, {"ts": ts}).json()

    def append(self, frame_id: str, offset: int, data: bytes) -> dict:
        return self.request("POST", f"/frames/{frame_id}/layers", data, {"offset": offset}).json()

    def frame(
        self,
        frame_id: str,
        layers: int | None = None,
        wait: float | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> Response:
        headers = {"Range": f"bytes={byte_range[0]}-{byte_range[1] - 1}"} if byte_range else {}
        return self.request(
            "GET", f"/frames/{frame_id}", query={"layers": layers, "wait": wait}, headers=headers
        )

    def view(self, frame_id: str, layers: int, wait: float | None = None) -> Response:
        """Operating point ``layers`` alone: the header and the layers it needs (for a texture
        point of the generator preset, the texture chain up to it), as a stream
        ``Codec.decode`` reads."""
        return self.request(
            "GET", f"/frames/{frame_id}", query={"layers": layers, "wait": wait, "view": 1}
        )

    def image(self, frame_id: str, layers: int | None = None, wait: float | None = None) -> bytes:
        return self.request(
            "GET", f"/frames/{frame_id}/image", query={"layers": layers, "wait": wait}
        ).body

    def info(self, frame_id: str) -> dict:
        return self.request("GET", f"/frames/{frame_id}/info").json()

    def detections(self, frame_id: str) -> dict:
        return self.request("GET", f"/frames/{frame_id}/detections").json()

    def put_detections(self, frame_id: str, result: dict) -> dict:
        return self.request(
            "PUT",
            f"/frames/{frame_id}/detections",
            json.dumps(result).encode(),
            headers={"Content-Type": "application/json"},
        ).json()

    def save_event(self, event: dict) -> dict:
        """Report an event, new or grown (``POST /events``; the worker's rules)."""
        return self.request(
            "POST",
            "/events",
            json.dumps(event).encode(),
            headers={"Content-Type": "application/json"},
            ok=(200, 201),
        ).json()

    def claim(self, n: int = 1, wait: float = 20.0, lease: float = 120.0) -> list[dict]:
        return self.request(
            "POST", "/analytics/claim", query={"max": n, "wait": wait, "lease": lease}
        ).json()["frames"]

    def wanted(self, cam: str, wait: float = 20.0) -> list[dict]:
        return self.request("GET", f"/cameras/{cam}/wanted", query={"wait": wait}).json()["frames"]

    def frames(self, cam: str, **query: Any) -> list[dict]:
        return self.request("GET", f"/cameras/{cam}/frames", query=query).json()["frames"]

    def report_undecodable(self, frame_id: str) -> dict:
        """Tell the server layer 0 of this frame does not decode (it checks, then keeps the
        frame out of analytics)."""
        return self.request("POST", f"/frames/{frame_id}/undecodable", b"", ok=(200, 409)).json()

    def delete(self, frame_id: str) -> None:
        self.request("DELETE", f"/frames/{frame_id}", ok=(204,))

    def metrics(self) -> dict:
        return self.request("GET", "/metrics").json()

    def health(self) -> dict:
        return self.request("GET", "/health").json()
