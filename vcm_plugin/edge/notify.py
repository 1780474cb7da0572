"""Event notifications: a signed webhook POST and an MQTT message per change of an event.

Each notification is one JSON document, ``{"type": "new" | "update" | "end", "event": {...}}``
(the event as ``GET /events/ID`` shows it), as Frigate's ``frigate/events`` topic carries
``type`` new/update/end. The webhook body is signed with the secret from a file:
``X-VCM-Signature: sha256=<hex HMAC-SHA256 of the body>`` (GitHub's scheme), so a receiver can
refuse forgeries; the secret never appears in a log or a message.

Why a queue and a task of its own: a slow or dead receiver must never hold up an upload or a
detection (the request that made the event answers at once). The queue is bounded; when it is
full the oldest-waiting notification is dropped and counted (``notifications_dropped`` in
``/metrics``), never memory without bound. Each delivery is tried 3 times with back-off.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vcm_plugin.errors import VCMError

log = logging.getLogger("vcm.edge.notify")
SIGNATURE_HEADER = "X-VCM-Signature"
QUEUE = 1000
ATTEMPTS = 3
TIMEOUT_S = 5.0


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def read_secret(path: str | Path) -> bytes:
    """The webhook secret: a file's content without surrounding whitespace (16+ bytes)."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise VCMError(f"cannot read the webhook secret file {path}: {exc.strerror}") from None
    if len(secret) < 16:
        raise VCMError(f"the webhook secret in {path} is shorter than 16 bytes")
    return secret


@dataclass(frozen=True)
class MqttTarget:
    """``mqtt://[user:password@]HOST[:PORT]/TOPIC``."""

    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttTarget:
        parts = urlsplit(url)
        topic = parts.path.lstrip("/")
        if parts.scheme != "mqtt" or not parts.hostname or not topic:
            raise VCMError(
                f"--mqtt must look like mqtt://HOST[:PORT]/TOPIC, got {url.split('@')[-1]!r}"
            )
        if any(c in topic for c in "+#"):
            raise VCMError(f"the MQTT topic {topic!r} must not hold wildcards (+ or #)")
        return cls(parts.hostname, parts.port or 1883, topic, parts.username, parts.password)


class Notifier:
    """Delivers event notifications from a bounded queue on the server's event loop."""

    def __init__(
        self,
        webhook: str | None = None,
        secret: bytes | None = None,
        mqtt: MqttTarget | None = None,
    ) -> None:
        if webhook is not None and urlsplit(webhook).scheme not in ("http", "https"):
            raise VCMError(f"--webhook must be an http:// or https:// URL, got {webhook!r}")
        if webhook is not None and secret is None:
            raise VCMError("--webhook needs --webhook-secret-file (the HMAC key)")
        self.webhook, self.secret, self.mqtt = webhook, secret, mqtt
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: asyncio.Queue[bytes] | None = None
        self._task: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self.webhook is not None or self.mqtt is not None

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._queue = asyncio.Queue(QUEUE)
            self._task = asyncio.get_running_loop().create_task(self._deliver_all())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def send(self, kind: str, event: dict) -> None:
        """Queue one notification (never waits)."""
        if self._queue is None:
            return
        body = json.dumps({"type": kind, "event": event}, separators=(",", ":")).encode()
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            log.warning("notification queue full: the oldest notification was dropped")
        self._queue.put_nowait(body)

    async def _deliver_all(self) -> None:
        assert self._queue is not None
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                body = await self._queue.get()
                if self.webhook is not None:
                    await self._try(lambda b=body: self._post(session, b), "webhook")
                if self.mqtt is not None:
                    await self._try(lambda b=body: asyncio.to_thread(self._publish, b), "MQTT")

    async def _try(self, deliver, what: str) -> None:
        for attempt in range(ATTEMPTS):
            try:
                await deliver()
                self.sent += 1
                return
            except Exception as exc:  # any failure of the receiver: retried, then logged
                if attempt == ATTEMPTS - 1:
                    self.failed += 1
                    log.warning("%s notification failed %d times: %s", what, ATTEMPTS, exc)
                    return
                await asyncio.sleep(0.5 * 2**attempt)

    async def _post(self, session, body: bytes) -> None:
        assert self.webhook is not None and self.secret is not None
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body)}
        async with session.post(self.webhook, data=body, headers=headers) as resp:
            if resp.status >= 300:
                raise VCMError(f"the webhook answered {resp.status}")

    def _publish(self, body: bytes) -> None:
        import paho.mqtt.publish as publish

        assert self.mqtt is not None
        m = self.mqtt
        auth = {"username": m.username, "password": m.password} if m.username else None
        publish.single(m.topic, body, qos=1, hostname=m.host, port=m.port, auth=auth, keepalive=10)
