"""What one edge service process holds between requests: the frame store, the index, the
thread pools (I/O and the bounded decoder), per-frame locks, the long-poll wake-up, the PNG
cache, metrics, and the background work (retention, rechecks of lapsed leases, quarantine).
The handlers (:mod:`vcm_plugin.edge.routes`) read and change frames only through it."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import math
import os
import socket
import time
import weakref
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web

from vcm_plugin.codec import container
from vcm_plugin.codec.api import Codec
from vcm_plugin.edge.http import HTTPProblem
from vcm_plugin.edge.index import ANALYSED, QUARANTINED, FrameRow, Index, open_index, reindex
from vcm_plugin.edge.metrics import Metrics
from vcm_plugin.edge.notify import Notifier
from vcm_plugin.edge.store import QUARANTINE, FrameKey, FrameStore
from vcm_plugin.edge.stream import Layout
from vcm_plugin.errors import Unavailable, VCMError

log = logging.getLogger("vcm.edge.server")


@dataclass(frozen=True)
class CameraRetention:
    """How long one camera's frames stay: all of them ``days`` days (receipt time), the frames
    of its events (each event's pre/post window) ``event_days`` days (>= ``days``)."""

    days: float
    event_days: float

    @classmethod
    def parse(cls, doc: object, where: str) -> CameraRetention:
        if not isinstance(doc, dict) or set(doc) - {"days", "event_days"} or "days" not in doc:
            raise VCMError(f'{where} must be {{"days": D[, "event_days": E]}}')
        values = []
        for key in ("days", "event_days"):
            v = doc.get(key, doc["days"])
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not (math.isfinite(v) and v > 0)
            ):
                raise VCMError(f"{where} {key} must be a positive number of days, got {v!r}")
            values.append(float(v))
        if values[1] < values[0]:
            raise VCMError(f"{where} event_days must be at least days (event frames kept longer)")
        return cls(*values)


def load_retention(path: str) -> dict[str, CameraRetention]:
    """``--retention FILE``: ``{CAM | "*": {"days": D, "event_days": E}}`` (JSON or YAML)."""
    from vcm_plugin.edge.events import read_config

    return {
        cam: CameraRetention.parse(doc, f"retention of camera {cam!r}")
        for cam, doc in read_config(path, "retention").items()
    }


@dataclass(frozen=True)
class ServerLimits:
    """Every bound the service enforces against a careless or hostile client."""

    max_upload: int = 64 << 20  # bytes per upload request (413 beyond)
    max_pixels: int = 3840 * 2160  # largest frame accepted (4K UHD); decoding is O(pixels)
    max_json: int = 1 << 20  # detections body bytes
    max_boxes: int = 10_000  # boxes per detections document
    max_connections: int = 256  # open connections; the next gets 503 and is closed
    header_timeout: float = 15.0  # a connection must send a request's headers this fast
    body_timeout: float = 60.0  # an upload body must arrive within this many seconds
    decode_threads: int = 1  # PNG decodes at once
    decode_queue: int = 4  # decodes waiting; beyond: 503 + Retry-After
    png_cache_bytes: int = 32 << 20  # decoded PNGs kept for repeat views
    keep_days: float | None = None  # retention: frames older than this are deleted
    max_bytes: int | None = None  # retention: oldest frames deleted above this total
    retention_every: float = 60.0  # seconds between retention passes
    retention_grace: float = 300.0  # max_bytes never deletes a frame younger than this
    allow_origins: tuple[str, ...] = ()  # browser origins besides the service's own
    #: per-camera retention (camera id or "*"); cameras without an entry follow keep_days
    retention: dict[str, CameraRetention] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "max_upload",
            "max_pixels",
            "max_json",
            "max_boxes",
            "max_connections",
            "decode_threads",
        ):
            if getattr(self, name) < 1:
                raise VCMError(f"{name.replace('_', '-')} must be at least 1")
        for name in ("header_timeout", "body_timeout", "retention_every"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise VCMError(f"{name.replace('_', '-')} must be a positive number")
        if self.keep_days is not None and not (
            math.isfinite(self.keep_days) and self.keep_days > 0
        ):
            raise VCMError("keep-days must be a positive number")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise VCMError("max-bytes must be positive")
        if not (math.isfinite(self.retention_grace) and self.retention_grace >= 0):
            raise VCMError("retention-grace must be a number of seconds >= 0")

    def upload_limit(self) -> tuple[int, str]:
        """The most bytes one upload may carry, and the option that sets it: ``max_upload``,
        or the retention budget ``max_bytes`` when smaller — a frame over the budget would be
        answered 201 and deleted by the next retention pass (issue 27, item 7), so it is
        refused (413) instead."""
        if self.max_bytes is not None and self.max_bytes < self.max_upload:
            return self.max_bytes, "--max-bytes (the store's retention budget)"
        return self.max_upload, "--max-upload-mb"


@dataclass
class FrameMeta:
    """One frame as a request sees it: read from the index (:class:`FrameRow`) per request,
    so every server sharing the index sees the same frames; the store holds the bytes."""

    key: FrameKey
    layout: Layout
    accepted: float  # first receipt (retention age)
    modified: float  # last write (Last-Modified)
    analytics_point: int = 1  # the operating point the analytics role may read
    analysed: bool = False
    quarantined: str | None = None  # why analytics cannot decode it; kept out of analytics
    checked: bool = False  # the analytics point decoded here once
    served: Counter[str] = field(default_factory=Counter)  # by this server process

    @classmethod
    def from_row(cls, row: FrameRow, max_pixels: int, served: Counter[str]) -> FrameMeta:
        header = container.parse_header(row.header, max_pixels)
        return cls(
            FrameKey(row.cam, row.ts),
            Layout(header, row.stored_layers),
            row.accepted,
            row.modified,
            row.analytics_point,
            analysed=row.state == ANALYSED,
            quarantined=row.reason if row.state == QUARANTINED else None,
            checked=row.checked,
            served=served,
        )

    @property
    def digest(self) -> str:
        """Names the stored content: the layer table (lengths and CRC32 of every layer)."""
        h = self.layout.header
        raw = repr(
            (
                self.key.id,
                h.backend_id,
                h.preset_id,
                h.width,
                h.height,
                h.config_hash,
                h.offsets,
                h.lengths,
                h.crcs,
                h.needs,
            )
        )
        return hashlib.blake2b(raw.encode(), digest_size=10).hexdigest()

    @property
    def stored_analytics_point(self) -> int:
        """What analytics reads now: the analytics point, or the highest point below it that
        is stored (a first upload cut by a camera's byte budget)."""
        return max(1, min(self.analytics_point, self.layout.stored_layers))

    def etag(self, kind: str, layers: int) -> str:
        return f'"{self.digest}-{kind}{layers}"'

    def describe(self) -> dict:
        return {
            "id": self.key.id,
            "cam": self.key.cam,
            "ts": self.key.ts,
            **self.layout.describe(),
            "analytics_point": self.analytics_point,
            "analysed": self.analysed,
            "quarantined": self.quarantined,
            "served_bytes": dict(self.served),
        }


class ServerState:
    """The state of one service instance over one store, and the operations on it that do not
    depend on who asks (the routes check that)."""

    def __init__(
        self,
        store: FrameStore,
        limits: ServerLimits | None = None,
        io_threads: int = 4,
        index: Index | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier or Notifier()  # none configured: events are not announced
        self.index = index or open_index(None, store.url, store.root, store.local)
        self.limits = limits = limits or ServerLimits()
        self.codec = Codec(max_pixels=limits.max_pixels)
        self.metrics = Metrics()
        self.served: dict[FrameKey, Counter[str]] = {}  # bytes this process served
        self.reoffer_s = 30.0  # a wanted texture is offered to its camera again after this
        self.owner = f"{socket.gethostname()}:{os.getpid()}"  # names this server's leases
        self.rechecking: set[FrameKey] = set()
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="edge-io")
        self._cpu = ThreadPoolExecutor(limits.decode_threads, thread_name_prefix="edge-decode")
        self.decoding = 0
        self.pngs: OrderedDict[str, bytes] = OrderedDict()
        self.png_bytes = 0
        self._locks: weakref.WeakValueDictionary[FrameKey, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._changed: asyncio.Condition | None = None
        self._tasks: set[asyncio.Task] = set()
        self.closing = False

    async def run(self, fn, *args, cpu: bool = False):
        return await asyncio.get_running_loop().run_in_executor(
            self._cpu if cpu else self._io, fn, *args
        )

    async def decode(self, fn, *args):
        """Run a decode on the bounded pool; 503 + Retry-After when the queue is full."""
        if self.decoding >= self.limits.decode_threads + self.limits.decode_queue:
            self.metrics.frames["decode_busy"] += 1
            raise HTTPProblem(503, "the decoder is busy; retry shortly", {"Retry-After": "2"})
        self.decoding += 1
        try:
            return await self.run(fn, *args, cpu=True)
        finally:
            self.decoding -= 1

    def lock(self, key: FrameKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def db(self, fn, *args):
        """One index call on the I/O threads (IndexUnavailable -> 503 in the middleware)."""
        return await self.run(fn, *args)

    async def wait_until(self, predicate, timeout: float) -> bool:
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

    def forget(self, key: FrameKey) -> None:
        """Drop what this process caches about a deleted frame."""
        self.served.pop(key, None)
        for name in [n for n in self.pngs if n.startswith(f"{key.id}/")]:
            self.png_bytes -= len(self.pngs.pop(name))

    async def get(self, key: FrameKey) -> FrameMeta | None:
        row = await self.db(self.index.get, key.cam, key.ts)
        if row is None:
            return None
        return FrameMeta.from_row(
            row, self.limits.max_pixels, self.served.setdefault(key, Counter())
        )

    async def startup(self, app: web.Application) -> None:
        """Start-up reads counters from the index, never the store: its cost does not grow
        with the number of frames. Only a new, empty index over a store that already holds
        frames (a store from before the index) is built once from the store."""
        self._changed = asyncio.Condition()
        self.notifier.start()
        if self.index.created and await self.run(self.store.cameras):
            report = await self.run(reindex, self.index, self.store, self.codec)
            log.info(
                "index built from the existing store: %d frames in %.1f s",
                report.frames,
                report.seconds,
            )
        totals = await self.db(self.index.totals)
        self.metrics.frames["recovered"] = totals["frames"]
        log.info(
            "store %s, index %s: %d frames, %d awaiting analytics",
            self.store.url,
            self.index.backend.describe(),
            totals["frames"],
            totals["pending"],
        )
        await self.sweep_parts()
        self.spawn(self._retention_loop())  # also sweeps temp files, with or without limits

    async def shutdown(self, app: web.Application) -> None:
        """End long-polls at once so a stop does not wait out a worker's 20 s claim."""
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        await self.notify()

    async def cleanup(self, app: web.Application) -> None:
        await self.notifier.stop()
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

    async def sweep_parts(self) -> tuple[int, int]:
        """Remove the temp files of uploads whose process was killed (issue 27, item 5):
        untouched for twice ``body_timeout``, which no live upload is."""
        files, freed = await self.run(self.store.remove_stale_parts, 2 * self.limits.body_timeout)
        if files:
            log.info("removed %d stale upload temp file(s), %d bytes", files, freed)
        return files, freed

    async def apply_retention(self) -> dict:
        """Remove stale upload temp files (:meth:`sweep_parts`); delete each camera's frames
        past its ``retention`` entry (event frames kept to ``event_days``), those of other
        cameras older than ``keep_days``, then the oldest while the store holds more than
        ``max_bytes`` (never one received within ``retention_grace`` seconds). Age is the
        server's receipt time, not the camera's timestamp; all walk the index's age order in
        batches."""
        parts, parts_bytes = await self.sweep_parts()
        deleted = freed = 0
        per_camera = self.limits.retention
        if per_camera:
            now = time.time()
            cams = [c for c, _, _ in await self.db(self.index.cameras)]
            for cam in cams:
                rule = per_camera.get(cam, per_camera.get("*"))
                if rule is None:
                    continue
                before, events_before = now - rule.days * 86400, now - rule.event_days * 86400
                while batch := await self.db(self.index.expired, cam, before, events_before, 500):
                    for row in batch:
                        freed += await self.delete(FrameKey(row.cam, row.ts))
                        deleted += 1
        if self.limits.keep_days is not None and "*" not in per_camera:
            cutoff = time.time() - self.limits.keep_days * 86400
            own = tuple(per_camera)
            while batch := await self.db(self.index.oldest, 500, cutoff, own):
                for row in batch:
                    freed += await self.delete(FrameKey(row.cam, row.ts))
                    deleted += 1
        if self.limits.max_bytes is not None:
            # frames younger than the grace period stay even over the budget (issue 27, item
            # 7): the store may exceed it for that long rather than lose what it just took
            young = time.time() - self.limits.retention_grace
            while (await self.db(self.index.totals))["bytes"] > self.limits.max_bytes:
                batch = await self.db(self.index.oldest, 64, young)
                if not batch:
                    break
                total = (await self.db(self.index.totals))["bytes"]
                for row in batch:
                    if total <= self.limits.max_bytes:
                        break
                    freed += await self.delete(FrameKey(row.cam, row.ts))
                    total -= row.bytes
                    deleted += 1
        if deleted:
            log.info("retention: deleted %d frame(s), %d bytes", deleted, freed)
        totals = await self.db(self.index.totals)
        return {
            "deleted": deleted,
            "freed_bytes": freed,
            "removed_parts": parts,
            "removed_parts_bytes": parts_bytes,
            "frames": totals["frames"],
            "stored_bytes": totals["bytes"],
        }

    async def delete(self, key: FrameKey) -> int:
        """Index row first (no server offers the frame any more), then the files."""
        async with self.lock(key):
            row = await self.db(self.index.delete, key.cam, key.ts)
            if row is None:
                return 0
            freed = await self.run(self.store.delete, key)
            self.forget(key)
            self.metrics.frames["deleted"] += 1
        return freed

    def same_bytes(self, key: FrameKey, upload, start: int, n: int) -> bool:
        """Stored bytes [start, start + n) equal the upload's first n bytes?"""
        step = 1 << 20
        return all(
            self.store.read(key, start + i, start + min(n, i + step))
            == upload.read(i, min(n, i + step))
            for i in range(0, n, step)
        )

    async def relayout(self, meta: FrameMeta, layout: Layout, upload) -> None:
        """Store the longer stream and its row together (compare-and-set on the size)."""
        now = time.time()
        ok = await self.db(
            self.index.relayout,
            meta.key.cam,
            meta.key.ts,
            meta.layout.size,
            layout.stored_layers,
            layout.size,
            now,
            upload.commit,
        )
        if not ok:
            raise HTTPProblem(
                409,
                f"frame {meta.key} changed during the upload (another "
                "upload stored layers first); ask /info and retry",
                stored_bytes=meta.layout.size,
            )
        meta.layout, meta.modified = layout, now

    def after_layers(self, meta: FrameMeta, nbytes: int) -> None:
        self.metrics.upload_bytes += nbytes
        if meta.layout.complete:
            self.metrics.frames["complete"] += 1

    def read_view(self, meta: FrameMeta, layers: int) -> bytes:
        """Operating point ``layers`` alone (``Codec.view``), read from the store by range:
        the header plus the layers it needs; a texture point skips the analytics layers.
        For a decode; a GET streams the same bytes (``view_pieces``) instead."""
        head, ranges = self.view_pieces(meta, layers)
        return head + b"".join(self.store.read(meta.key, a, b) for a, b in ranges)

    @staticmethod
    def view_pieces(meta: FrameMeta, layers: int) -> tuple[bytes, list[tuple[int, int]]]:
        """A view's header and the stored byte ranges that follow it (``container.view_head``)."""
        head, _ = container.view_head(meta.layout.header, layers)
        return head, meta.layout.point_ranges(layers)

    def cache_png(self, name: str, png: bytes) -> None:
        if len(png) > self.limits.png_cache_bytes // 4:
            return
        self.pngs[name] = png
        self.png_bytes += len(png)
        while self.png_bytes > self.limits.png_cache_bytes:
            self.png_bytes -= len(self.pngs.popitem(last=False)[1])

    def render_png(self, data: bytes, layers: int) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.codec.decode(data, layers=layers)).save(
            buf, format="PNG", compress_level=1
        )
        return buf.getvalue()

    async def verify(self, meta: FrameMeta) -> bool | None:
        """Decode what analytics reads (its point's view) here: True decodes, False does not,
        None decoder busy."""
        k = meta.stored_analytics_point
        data = await self.run(self.read_view, meta, k)
        try:
            await self.decode(self.codec.decode, data, k)
        except HTTPProblem:
            return None
        except VCMError:
            return False
        if not meta.checked:
            meta.checked = True
            await self.db(self.index.mark_checked, meta.key.cam, meta.key.ts)
        return True

    async def quarantine(self, meta: FrameMeta, reason: str) -> None:
        """Keep a frame whose analytics point does not decode out of analytics for good (a
        marker file next to it survives restarts); viewers still get its bytes, /image a 422."""
        if meta.quarantined is not None:
            return
        meta.quarantined = reason[:300]
        self.metrics.frames["quarantined"] += 1
        await self.run(
            self.store.write_json, meta.key, {"error": meta.quarantined}, QUARANTINE
        )  # the file first: reindex rebuilds the state from it
        await self.db(self.index.quarantine, meta.key.cam, meta.key.ts, meta.quarantined)
        log.warning("frame %s quarantined: %s", meta.key, reason)

    async def recheck(self, meta: FrameMeta) -> None:
        """A lease lapsed without detections: decode the analytics point once before the
        frame is offered again (a frame that kills workers must not come back forever)."""
        try:
            ok = await self.verify(meta)
            if ok is False:
                await self.quarantine(
                    meta,
                    "the analytics point does not decode (checked after a worker's lease lapsed)",
                )
                return
            await self.db(self.index.release, meta.key.cam, meta.key.ts, bool(ok))
            await self.notify()
        except (
            VCMError,
            Unavailable,
            OSError,
        ) as exc:  # frame gone, index down: next claim retries
            log.warning("recheck of %s: %s", meta.key, exc)
        finally:
            self.rechecking.discard(meta.key)
