"""The edge index: frames, detections and the analytics queue in a database.

Why a database: the store's directory listing cannot answer "frames with a person at camera C
between 2 and 3 pm" without reading every detection file, a restart had to re-list the whole
store, and a queue in one process's memory cannot be shared by a second server. SQLite (a file
in the store root, nothing to install) is the default; PostgreSQL (``--db postgresql://...``)
lets several servers share one index and one store.

The database holds metadata only: each frame's container header (its layer table, a few
hundred bytes), sizes, state, leases and one row per detected box. Stream bytes stay in the
store; the detection JSON files stay beside the frames, so :func:`reindex` can rebuild the
index from the store alone.

Calls are blocking (the server runs them on its I/O threads; one connection per thread).
Every operational failure of the database (server down, file locked too long) raises
:class:`IndexUnavailable`, which the service answers with 503 + Retry-After.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vcm_plugin.edge.store import DETECTIONS, QUARANTINE, STALE_PART_S
from vcm_plugin.errors import Unavailable, VCMError

log = logging.getLogger("vcm.edge.index")

SQLITE_NAME = ".vcm-index.sqlite3"  # in the store root; hidden, so never taken for a camera
HOUR_US = 3_600_000_000
PENDING, ANALYSED, QUARANTINED = "pending", "analysed", "quarantined"


class IndexUnavailable(Unavailable):
    """The index database cannot be reached or is busy: answer 503, retry later."""


# -- schema -----------------------------------------------------------------------------------
#: Migrations in order: (version, statements). ``{blob}``, ``{real}`` name the dialect's types.
#: A database at version v gets the statements of every later version, each version in one
#: transaction; a database newer than this code is refused.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE frames (
            cam TEXT NOT NULL,
            ts BIGINT NOT NULL,
            header {blob} NOT NULL,
            num_layers INTEGER NOT NULL,
            stored_layers INTEGER NOT NULL,
            bytes BIGINT NOT NULL,
            analytics_layers INTEGER NOT NULL,
            accepted {real} NOT NULL,
            modified {real} NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            checked INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_until {real},
            wanted {real},
            PRIMARY KEY (cam, ts))""",
            "CREATE INDEX frames_time ON frames (ts, cam)",
            "CREATE INDEX frames_age ON frames (accepted)",
            "CREATE INDEX frames_queue ON frames (accepted) WHERE state = 'pending'",
            "CREATE INDEX frames_wanted ON frames (cam) WHERE wanted IS NOT NULL",
            """CREATE TABLE cameras (
            cam TEXT PRIMARY KEY,
            frames BIGINT NOT NULL,
            bytes BIGINT NOT NULL)""",
        ],
    ),
    (
        2,
        [
            """CREATE TABLE detections (
            cam TEXT NOT NULL,
            ts BIGINT NOT NULL,
            n INTEGER NOT NULL,
            class TEXT NOT NULL,
            score {real},
            x0 {real}, y0 {real}, x1 {real}, y1 {real},
            PRIMARY KEY (cam, ts, n))""",
            "CREATE INDEX detections_class ON detections (class, ts, cam, score)",
            "CREATE INDEX detections_cam_class ON detections (cam, class, ts, score)",
            """CREATE TABLE class_hours (
            cam TEXT NOT NULL,
            hour BIGINT NOT NULL,
            class TEXT NOT NULL,
            boxes BIGINT NOT NULL,
            frames BIGINT NOT NULL,
            PRIMARY KEY (cam, hour, class))""",
        ],
    ),
    (
        3,
        [
            # events live in the index only: reindex rebuilds frames and boxes, not events
            """CREATE TABLE events (
            id TEXT PRIMARY KEY,
            cam TEXT NOT NULL,
            rule TEXT NOT NULL,
            class TEXT NOT NULL,
            start_ts BIGINT NOT NULL,
            end_ts BIGINT NOT NULL,
            best_ts BIGINT NOT NULL,
            score {real} NOT NULL,
            frames BIGINT NOT NULL,
            ended INTEGER NOT NULL,
            pre_s {real} NOT NULL,
            post_s {real} NOT NULL,
            modified {real} NOT NULL)""",
            "CREATE INDEX events_start ON events (start_ts, id)",
            "CREATE INDEX events_cam ON events (cam, start_ts, id)",
        ],
    ),
    (
        4,
        # one word for an operating point (issue 28): the column names the analytics point
        ["ALTER TABLE frames RENAME COLUMN analytics_layers TO analytics_point"],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

_COLS = (
    "cam, ts, header, num_layers, stored_layers, bytes, analytics_point, accepted, "
    "modified, state, reason, checked, lease_owner, lease_until"
)


@dataclass(frozen=True)
class FrameRow:
    """One frame as the index holds it (no image data: ``header`` is the layer table)."""

    cam: str
    ts: int
    header: bytes
    num_layers: int
    stored_layers: int
    bytes: int
    analytics_point: int
    accepted: float
    modified: float
    state: str = PENDING
    reason: str | None = None
    checked: bool = False
    lease_owner: str | None = None
    lease_until: float | None = None

    @classmethod
    def from_db(cls, row: tuple) -> FrameRow:
        values = list(row)
        values[2] = bytes(values[2])
        values[11] = bool(values[11])
        return cls(*values)


@dataclass(frozen=True)
class BoxRow:
    """One detected box as the index stores it: class name, score (None if the detector gave
    none), xyxy pixels. (A detector's own box is a dict, ``taskmodels.detect.Box``.)"""

    cls: str
    score: float | None
    xyxy: tuple[float, float, float, float]


def boxes_of(doc: dict) -> list[BoxRow]:
    """The rows of a detections document: ``name`` (else ``cls``, else ``class``) and
    ``conf`` (else ``score``) of each box. A name that is not valid Unicode (a lone
    surrogate, which the server refuses since 0.4 but a 0.3 store may hold) is stored with
    U+FFFD in its place, so ``reindex`` of an old store neither dies nor drops the frame."""
    out = []
    for box in doc.get("boxes", []):
        name = str(box.get("name", box.get("cls", box.get("class", ""))))[:256]
        name = name.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        score = box.get("conf", box.get("score"))
        if (
            not isinstance(score, (int, float))
            or isinstance(score, bool)
            or not math.isfinite(score)
        ):
            score = None
        x0, y0, x1, y1 = (float(v) for v in box["xyxy"])
        out.append(BoxRow(name, None if score is None else float(score), (x0, y0, x1, y1)))
    return out


@dataclass(frozen=True)
class Cursor:
    """Keyset position: the last frame of the previous page, and the page's order (a cursor
    is only valid for a query in the order that produced it)."""

    ts: int
    cam: str
    newest_first: bool = False

    def encode(self) -> str:
        text = f"{self.ts}:{self.cam}" + (":d" if self.newest_first else "")
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            ts, cam, *order = raw.split(":")
            if not (
                re.fullmatch(r"0|[1-9][0-9]{0,15}", ts)
                and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}", cam)
                and order in ([], ["d"])
            ):
                raise ValueError(raw)
        except (ValueError, UnicodeDecodeError):
            raise VCMError(
                f"bad cursor {text[:80]!r}: pass the next_cursor of a previous page unchanged"
            ) from None
        return cls(int(ts), cam, newest_first=bool(order))


@dataclass(frozen=True)
class FrameQuery:
    """``GET /frames``: one camera or all, a time window, a class (with a minimum score)."""

    cam: str | None = None
    since: int | None = None
    until: int | None = None
    cls: str | None = None
    min_score: float | None = None
    limit: int = 100
    cursor: Cursor | None = None
    #: newest capture time first (a viewer's page, a camera's latest); False: oldest first
    newest_first: bool = True


_EVENT_COLS = (
    "id, cam, rule, class, start_ts, end_ts, best_ts, score, frames, ended, pre_s, post_s, modified"
)


@dataclass(frozen=True)
class EventRow:
    """One event (:mod:`vcm_plugin.edge.events`) as the index holds it; times: capture time,
    microseconds; ``best``: the ts of its best frame."""

    id: str
    cam: str
    rule: str
    cls: str
    start: int
    end: int
    best: int
    score: float
    frames: int
    ended: bool
    pre_s: float
    post_s: float
    modified: float

    @classmethod
    def from_db(cls, row: tuple) -> EventRow:
        v = list(row)
        return cls(
            v[0], v[1], v[2], v[3], int(v[4]), int(v[5]), int(v[6]), float(v[7]), int(v[8]),
            bool(v[9]), float(v[10]), float(v[11]), float(v[12]),
        )  # fmt: skip

    def describe(self) -> dict:
        return {
            "id": self.id,
            "cam": self.cam,
            "rule": self.rule,
            "class": self.cls,
            "start": self.start,
            "end": self.end,
            "best": f"{self.cam}-{self.best}",
            "score": self.score,
            "frames": self.frames,
            "ended": self.ended,
            "pre_s": self.pre_s,
            "post_s": self.post_s,
            "snapshot": f"/events/{self.id}/snapshot",
        }


@dataclass(frozen=True)
class EventCursor:
    """Keyset position in the events list (newest start first): the last event of the
    previous page, its start and id."""

    start: int
    id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.start}:{self.id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> EventCursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            start, event_id = raw.split(":", 1)
            if not (
                re.fullmatch(r"0|[1-9][0-9]{0,15}", start)
                and re.fullmatch(r"[A-Za-z0-9_-]{1,200}", event_id)
            ):
                raise ValueError(raw)
        except (ValueError, UnicodeDecodeError):
            raise VCMError(
                f"bad cursor {text[:80]!r}: pass the next_cursor of a previous page unchanged"
            ) from None
        return cls(int(start), event_id)


@dataclass(frozen=True)
class EventQuery:
    """``GET /events``: newest first by start; one camera or all, a class, a time window
    (events overlapping it); ``after``: where the previous page ended."""

    cam: str | None = None
    cls: str | None = None
    since: int | None = None
    until: int | None = None
    limit: int = 100
    after: EventCursor | None = None


# -- connections ------------------------------------------------------------------------------
class _Backend:
    """Dialect and connections of one database kind."""

    kind = ""
    blob = "BLOB"
    real = "REAL"

    def connect(self) -> Any:
        raise NotImplementedError

    def errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def sql(self, text: str) -> str:
        return text

    def begin(self, conn: Any, write: bool) -> None:
        raise NotImplementedError

    def lost(self, conn: Any) -> bool:
        """Whether ``conn`` failed because the server dropped it (a restart): a fresh
        connection may then succeed. Never for SQLite (a busy database stays busy)."""
        return False

    def describe(self) -> str:
        raise NotImplementedError


class _SQLite(_Backend):
    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an acknowledged frame survives power loss
        return conn

    def errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.OperationalError,)

    def begin(self, conn: sqlite3.Connection, write: bool) -> None:
        # a write takes the lock at once (no read-to-write upgrade deadlocks); reads see a
        # snapshot and never wait for writers (WAL)
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def describe(self) -> str:
        return f"sqlite:{self.path}"


class _Postgres(_Backend):
    kind = "postgresql"
    blob = "BYTEA"
    real = "DOUBLE PRECISION"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise VCMError(
                f"--db postgresql://... needs psycopg ({exc}): pip install 'psycopg[binary]'"
            ) from None
        self.psycopg = psycopg
        self.url = url

    def connect(self) -> Any:
        conn = self.psycopg.connect(self.url, connect_timeout=3, autocommit=True)
        return conn

    def errors(self) -> tuple[type[BaseException], ...]:
        return (self.psycopg.OperationalError, self.psycopg.InterfaceError)

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def begin(self, conn: Any, write: bool) -> None:
        conn.execute("BEGIN")

    def lost(self, conn: Any) -> bool:
        return bool(getattr(conn, "broken", False))

    def describe(self) -> str:
        return re.sub(r"//[^@/]*@", "//***@", self.url)  # no password in logs


class Index:
    """One index database; thread-safe (a connection per thread)."""

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend
        self.kind = backend.kind
        self._local = threading.local()
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self.created = False  # this open created the schema (a new, empty index)

    def __repr__(self) -> str:
        return f"Index({self.backend.describe()!r})"

    # -- plumbing --------------------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.backend.connect()
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            try:
                conn.close()
            except Exception:  # already broken: nothing to close
                pass

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass

    def _begin(self, write: bool) -> Any:
        """This thread's connection with a transaction begun. A connection the server dropped
        (PostgreSQL restarted: each I/O thread holds one) is replaced once, since nothing of
        the transaction has run yet; without that every thread's first call after a restart
        answered 503, and a 503 after an upload's COMMIT made a client's retry find its own
        frame."""
        errors = self.backend.errors()
        for attempt in (0, 1):
            conn = None
            try:
                conn = self._conn()
                self.backend.begin(conn, write)
                return conn
            except errors as exc:
                lost = conn is not None and self.backend.lost(conn)
                self._drop()
                if attempt or not lost:
                    raise IndexUnavailable(
                        f"index database unavailable: {_first_line(exc)}"
                    ) from None
        raise AssertionError("unreachable")

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Callable[..., Any]]:
        """One transaction; yields ``ex(sql, params) -> cursor``. Operational errors drop the
        connection (the next call reconnects) and raise IndexUnavailable."""
        errors = self.backend.errors()
        conn = self._begin(write)
        sql = self.backend.sql

        def ex(text: str, params: Iterable[Any] = ()) -> Any:
            return conn.execute(sql(text), tuple(params))

        try:
            try:
                yield ex
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except errors as exc:
            self._drop()
            raise IndexUnavailable(f"index database unavailable: {_first_line(exc)}") from None

    def _one(self, text: str, params: Iterable[Any] = ()) -> tuple | None:
        with self._tx(write=False) as ex:
            return ex(text, params).fetchone()

    def _all(self, text: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._tx(write=False) as ex:
            return ex(text, params).fetchall()

    # -- schema ----------------------------------------------------------------------------
    def version(self) -> int:
        with self._tx(write=False) as ex:
            return self._version(ex)

    def _version(self, ex) -> int:
        if self.kind == "sqlite":
            found = ex(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
        else:
            found = ex("SELECT to_regclass('schema_version')").fetchone()
            found = found if found and found[0] else None
        if not found:
            return 0
        row = ex("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def migrate(self, target: int = SCHEMA_VERSION) -> int:
        """Bring the schema to ``target`` (each version one transaction); returns the version
        found. Two servers starting together: one migrates, the other waits for its lock."""
        with self._tx() as ex:
            if self.kind == "postgresql":
                ex("SELECT pg_advisory_xact_lock(7250321)")
            found = self._version(ex)
            if found > SCHEMA_VERSION:
                raise VCMError(
                    f"the index {self.backend.describe()} has schema version "
                    f"{found}, newer than this vcm_plugin ({SCHEMA_VERSION}); "
                    "upgrade vcm_plugin"
                )
            if found == 0:
                ex("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                ex("INSERT INTO schema_version VALUES (0)")
                self.created = True
            for version, statements in MIGRATIONS:
                if found < version <= target:
                    for text in statements:
                        ex(text.format(blob=self.backend.blob, real=self.backend.real))
                    ex("UPDATE schema_version SET version = ?", (version,))
                    log.info(
                        "index %s: schema migrated to version %d", self.backend.describe(), version
                    )
        return found

    # -- frames ----------------------------------------------------------------------------
    def get(self, cam: str, ts: int) -> FrameRow | None:
        row = self._one(f"SELECT {_COLS} FROM frames WHERE cam = ? AND ts = ?", (cam, ts))
        return FrameRow.from_db(row) if row else None

    def insert(self, row: FrameRow, commit: Callable[[], None] | None = None) -> bool:
        """Add a new frame; False if the id is taken (another upload, on any server, won).
        ``commit`` (the upload's rename into the store) runs inside the transaction, after
        the row is claimed and before it is visible: a concurrent upload of the same id
        waits for it, and a crash before COMMIT leaves no row (the frame unacknowledged)."""
        with self._tx() as ex:
            cur = ex(
                f"INSERT INTO frames ({_COLS}) VALUES ({', '.join('?' * 14)}) "
                "ON CONFLICT (cam, ts) DO NOTHING",
                _values(row),
            )
            if cur.rowcount != 1:
                return False
            _camera_add(ex, row.cam, 1, row.bytes)
            if commit is not None:
                commit()
        return True

    def relayout(
        self,
        cam: str,
        ts: int,
        old_bytes: int,
        stored_layers: int,
        nbytes: int,
        modified: float,
        commit: Callable[[], None] | None = None,
    ) -> bool:
        """More layers stored: compare-and-set on the stored size, the row locked while
        ``commit`` renames the longer stream into place (False: another upload changed it
        first, nothing renamed). A complete frame is no longer wanted."""
        with self._tx() as ex:
            lock = " FOR UPDATE" if self.kind == "postgresql" else ""
            row = ex(
                f"SELECT bytes FROM frames WHERE cam = ? AND ts = ?{lock}", (cam, ts)
            ).fetchone()
            if row is None or int(row[0]) != old_bytes:
                return False
            if commit is not None:
                commit()
            ex(
                "UPDATE frames SET stored_layers = ?, bytes = ?, modified = ?, "
                "wanted = CASE WHEN ? >= num_layers THEN NULL ELSE wanted END "
                "WHERE cam = ? AND ts = ?",
                (stored_layers, nbytes, modified, stored_layers, cam, ts),
            )
            _camera_add(ex, cam, 0, nbytes - old_bytes)
        return True

    def delete(self, cam: str, ts: int) -> FrameRow | None:
        with self._tx() as ex:
            row = ex(f"SELECT {_COLS} FROM frames WHERE cam = ? AND ts = ?", (cam, ts)).fetchone()
            if row is None:
                return None
            frame = FrameRow.from_db(row)
            _drop_boxes(ex, cam, ts)
            ex("DELETE FROM frames WHERE cam = ? AND ts = ?", (cam, ts))
            _camera_add(ex, cam, -1, -frame.bytes)
        return frame

    # -- detections ------------------------------------------------------------------------
    def set_detections(self, cam: str, ts: int, boxes: list[BoxRow]) -> bool | None:
        """Replace the frame's boxes and mark it analysed (its lease ends); True the first
        time, False for a replacement, None if the frame is gone."""
        with self._tx() as ex:
            row = ex("SELECT state FROM frames WHERE cam = ? AND ts = ?", (cam, ts)).fetchone()
            if row is None:
                return None
            _drop_boxes(ex, cam, ts)
            _add_boxes(ex, cam, ts, boxes)
            ex(
                "UPDATE frames SET state = CASE WHEN state = ? THEN state ELSE ? END, "
                "lease_owner = NULL, lease_until = NULL WHERE cam = ? AND ts = ?",
                (QUARANTINED, ANALYSED, cam, ts),
            )
        return row[0] == PENDING

    def quarantine(self, cam: str, ts: int, reason: str) -> None:
        with self._tx() as ex:
            ex(
                "UPDATE frames SET state = ?, reason = ?, lease_owner = NULL, lease_until = NULL "
                "WHERE cam = ? AND ts = ?",
                (QUARANTINED, reason, cam, ts),
            )

    # -- the analytics queue ---------------------------------------------------------------
    def claim(self, n: int, lease_s: float, owner: str, now: float | None = None) -> list[FrameRow]:
        """Lease up to ``n`` frames in one transaction: pending ones not leased, or whose
        lease lapsed after the server checked they decode. PostgreSQL: ``FOR UPDATE SKIP
        LOCKED``, so concurrent claims (any server) never get the same frame."""
        now = time.time() if now is None else now
        until = now + lease_s
        ready = "state = 'pending' AND (lease_until IS NULL OR (lease_until < ? AND checked = 1))"
        with self._tx() as ex:
            if self.kind == "postgresql":
                rows = ex(
                    f"UPDATE frames SET lease_owner = ?, lease_until = ? "
                    f"WHERE (cam, ts) IN (SELECT cam, ts FROM frames WHERE {ready} "
                    f"ORDER BY accepted LIMIT ? FOR UPDATE SKIP LOCKED) "
                    f"RETURNING {_COLS}",
                    (owner, until, now, n),
                ).fetchall()
            else:  # BEGIN IMMEDIATE: the whole claim holds the write lock
                keys = ex(
                    f"SELECT cam, ts FROM frames WHERE {ready} ORDER BY accepted LIMIT ?", (now, n)
                ).fetchall()
                rows = []
                for cam, ts in keys:
                    ex(
                        "UPDATE frames SET lease_owner = ?, lease_until = ? WHERE cam = ? "
                        "AND ts = ?",
                        (owner, until, cam, ts),
                    )
                    rows.append(
                        ex(
                            f"SELECT {_COLS} FROM frames WHERE cam = ? AND ts = ?", (cam, ts)
                        ).fetchone()
                    )
        frames = [FrameRow.from_db(r) for r in rows]
        return sorted(frames, key=lambda f: (f.accepted, f.ts, f.cam))

    def lapsed_unchecked(self, limit: int = 16, now: float | None = None) -> list[FrameRow]:
        """Frames whose lease lapsed before the server checked that they decode."""
        now = time.time() if now is None else now
        rows = self._all(
            f"SELECT {_COLS} FROM frames WHERE state = 'pending' AND "
            "lease_until < ? AND checked = 0 ORDER BY accepted LIMIT ?",
            (now, limit),
        )
        return [FrameRow.from_db(r) for r in rows]

    def release(self, cam: str, ts: int, checked: bool) -> None:
        """Back to the queue (a lapsed lease checked by the server)."""
        with self._tx() as ex:
            ex(
                "UPDATE frames SET lease_owner = NULL, lease_until = NULL, "
                "checked = CASE WHEN ? THEN 1 ELSE checked END WHERE cam = ? AND ts = ? "
                "AND state = 'pending'",
                (bool(checked), cam, ts),
            )

    def mark_checked(self, cam: str, ts: int) -> None:
        with self._tx() as ex:
            ex("UPDATE frames SET checked = 1 WHERE cam = ? AND ts = ?", (cam, ts))

    # -- events ----------------------------------------------------------------------------
    def save_event(self, row: EventRow) -> EventRow | None:
        """Insert or update an event; returns the row as it was before (None: it is new). An
        ended event stays ended (a late update cannot reopen it)."""
        with self._tx() as ex:
            old = ex(f"SELECT {_EVENT_COLS} FROM events WHERE id = ?", (row.id,)).fetchone()
            if old is None:
                ex(
                    f"INSERT INTO events ({_EVENT_COLS}) VALUES ({', '.join('?' * 13)})",
                    (
                        row.id, row.cam, row.rule, row.cls, row.start, row.end, row.best,
                        row.score, row.frames, int(row.ended), row.pre_s, row.post_s,
                        row.modified,
                    ),
                )  # fmt: skip
                return None
            before = EventRow.from_db(old)
            ex(
                "UPDATE events SET class = ?, end_ts = ?, best_ts = ?, score = ?, frames = ?, "
                "ended = ?, pre_s = ?, post_s = ?, modified = ? WHERE id = ?",
                (
                    row.cls, max(row.end, before.end), row.best, row.score,
                    max(row.frames, before.frames), int(row.ended or before.ended), row.pre_s,
                    row.post_s, row.modified, row.id,
                ),
            )  # fmt: skip
            return before

    def event(self, event_id: str) -> EventRow | None:
        row = self._one(f"SELECT {_EVENT_COLS} FROM events WHERE id = ?", (event_id,))
        return EventRow.from_db(row) if row else None

    def events(self, q: EventQuery) -> tuple[list[EventRow], EventCursor | None]:
        """One page, newest start first, and the keyset position of the next (None: last)."""
        where, params = [], []
        for cond, value in (
            ("cam = ?", q.cam),
            ("class = ?", q.cls),
            ("end_ts >= ?", q.since),
            ("start_ts <= ?", q.until),
        ):
            if value is not None:
                where.append(cond)
                params.append(value)
        if q.after is not None:
            where.append("start_ts <= ? AND (start_ts < ? OR id < ?)")
            params += [q.after.start, q.after.start, q.after.id]
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._all(
            f"SELECT {_EVENT_COLS} FROM events {cond} ORDER BY start_ts DESC, id DESC LIMIT ?",
            (*params, q.limit + 1),
        )
        events = [EventRow.from_db(r) for r in rows]
        if len(events) <= q.limit:
            return events, None
        events = events[: q.limit]
        return events, EventCursor(events[-1].start, events[-1].id)

    def expired(self, cam: str, before: float, events_before: float, limit: int) -> list[FrameRow]:
        """The camera's frames received before ``before``, oldest first, except those inside
        an event's window (``pre_s`` before its start to ``post_s`` after its end) received
        at or after ``events_before`` (per-camera retention: event frames kept longer)."""
        rows = self._all(
            f"SELECT {_COLS} FROM frames f WHERE cam = ? AND accepted < ? AND (accepted < ? "
            "OR NOT EXISTS (SELECT 1 FROM events e WHERE e.cam = f.cam AND "
            "f.ts >= e.start_ts - e.pre_s * 1000000 AND f.ts <= e.end_ts + e.post_s * 1000000)) "
            "ORDER BY accepted LIMIT ?",
            (cam, before, events_before, limit),
        )
        return [FrameRow.from_db(r) for r in rows]

    def want_range(self, cam: str, since: int, until: int) -> int:
        """Ask the camera for the texture of its frames captured in ``[since, until]`` (an
        event's window); returns how many were asked for."""
        with self._tx() as ex:
            cur = ex(
                "UPDATE frames SET wanted = ? WHERE cam = ? AND ts >= ? AND ts <= ? AND "
                "wanted IS NULL AND stored_layers < num_layers",
                (-1.0, cam, since, until),
            )
            return max(0, cur.rowcount)

    # -- texture requests ------------------------------------------------------------------
    def want(self, cam: str, ts: int) -> None:
        """A viewer asked for the texture: the camera is told on its next poll."""
        with self._tx() as ex:
            ex(
                "UPDATE frames SET wanted = ? WHERE cam = ? AND ts = ? AND wanted IS NULL "
                "AND stored_layers < num_layers",
                (-1.0, cam, ts),
            )

    def offer(self, cam: str, reoffer_s: float, now: float | None = None) -> list[tuple[int, int]]:
        """(ts, stored bytes) of the camera's wanted frames not offered in ``reoffer_s``."""
        now = time.time() if now is None else now
        with self._tx() as ex:
            rows = ex(
                "SELECT ts, bytes FROM frames WHERE cam = ? AND wanted IS NOT NULL AND "
                "wanted <= ? ORDER BY ts LIMIT 256",
                (cam, now - reoffer_s),
            ).fetchall()
            for ts, _ in rows:
                ex("UPDATE frames SET wanted = ? WHERE cam = ? AND ts = ?", (now, cam, ts))
        return [(int(ts), int(b)) for ts, b in rows]

    # -- queries ---------------------------------------------------------------------------
    def frames(self, q: FrameQuery) -> tuple[list[FrameRow], Cursor | None]:
        """One page in (ts, cam) order, newest first unless ``q.newest_first`` is False, and
        the cursor of the next (None: last page)."""
        if q.cursor is not None and q.cursor.newest_first != q.newest_first:
            raise VCMError(
                "the cursor belongs to a page in the other order: pass the same order= as "
                "the page that gave it"
            )
        desc = " DESC" if q.newest_first else ""
        order = f"ts{desc}, cam{desc}"
        where, params = [], []
        if q.cam is not None:
            where.append("cam = ?")
            params.append(q.cam)
        if q.since is not None:
            where.append("ts >= ?")
            params.append(q.since)
        if q.until is not None:
            where.append("ts <= ?")
            params.append(q.until)
        if q.cursor is not None:
            if q.newest_first:
                where.append("ts <= ? AND (ts < ? OR cam < ?)")
            else:
                where.append("ts >= ? AND (ts > ? OR cam > ?)")
            params += [q.cursor.ts, q.cursor.ts, q.cursor.cam]
        if q.cls is not None:
            box = ["class = ?", *where]
            bparams = [q.cls, *params]
            if q.min_score is not None:
                box.append("score >= ?")
                bparams.append(q.min_score)
            cols = ", ".join("f." + c.strip() for c in _COLS.split(","))
            text = (
                f"SELECT {cols} FROM frames f JOIN (SELECT DISTINCT ts, cam FROM "
                f"detections WHERE {' AND '.join(box)} ORDER BY {order} LIMIT ?) d "
                f"ON f.cam = d.cam AND f.ts = d.ts ORDER BY f.ts{desc}, f.cam{desc}"
            )
            rows = self._all(text, (*bparams, q.limit + 1))
        else:
            if q.min_score is not None:
                where.append(
                    "EXISTS (SELECT 1 FROM detections d WHERE d.cam = frames.cam AND "
                    "d.ts = frames.ts AND d.score >= ?)"
                )
                params.append(q.min_score)
            cond = f"WHERE {' AND '.join(where)}" if where else ""
            rows = self._all(
                f"SELECT {_COLS} FROM frames {cond} ORDER BY {order} LIMIT ?",
                (*params, q.limit + 1),
            )
        frames = [FrameRow.from_db(r) for r in rows]
        more = len(frames) > q.limit
        frames = frames[: q.limit]
        if not more:
            return frames, None
        return frames, Cursor(frames[-1].ts, frames[-1].cam, q.newest_first)

    def class_counts(
        self,
        cam: str | None = None,
        since: int | None = None,
        until: int | None = None,
        cls: str | None = None,
        limit: int = 10_000,
    ) -> list[dict]:
        """Boxes and frames per class per camera per hour (hours by capture time, UTC)."""
        where, params = ["boxes > 0"], []
        for column, value in (("cam", cam), ("class", cls)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("hour >= ?")
            params.append(since // HOUR_US)
        if until is not None:
            where.append("hour <= ?")
            params.append(until // HOUR_US)
        rows = self._all(
            "SELECT cam, hour, class, boxes, frames FROM class_hours WHERE "
            f"{' AND '.join(where)} ORDER BY hour, cam, class LIMIT ?",
            (*params, limit),
        )
        return [
            {"cam": c, "hour": int(h) * HOUR_US, "class": k, "boxes": int(b), "frames": int(f)}
            for c, h, k, b, f in rows
        ]

    def cameras(self) -> list[tuple[str, int, int]]:
        return [
            (c, int(n), int(b))
            for c, n, b in self._all(
                "SELECT cam, frames, bytes FROM cameras WHERE frames > 0 ORDER BY cam"
            )
        ]

    def totals(self) -> dict:
        """Frames, bytes and analytics backlog; cheap at any size (counters, partial index)."""
        with self._tx(write=False) as ex:
            n, b = ex(
                "SELECT COALESCE(SUM(frames), 0), COALESCE(SUM(bytes), 0) FROM cameras"
            ).fetchone()
            pending = ex("SELECT COUNT(*) FROM frames WHERE state = 'pending'").fetchone()[0]
        return {"frames": int(n), "bytes": int(b), "pending": int(pending)}

    def oldest(
        self, limit: int, before: float | None = None, skip: tuple[str, ...] = ()
    ) -> list[FrameRow]:
        """Frames by receipt time, oldest first (retention), not of the cameras in ``skip``
        (those with retention of their own)."""
        where, params = [], []
        if before is not None:
            where.append("accepted < ?")
            params.append(before)
        if skip:
            where.append(f"cam NOT IN ({', '.join('?' * len(skip))})")
            params += list(skip)
        cond = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self._all(
            f"SELECT {_COLS} FROM frames {cond}ORDER BY accepted LIMIT ?", (*params, limit)
        )
        return [FrameRow.from_db(r) for r in rows]

    # -- reindex ---------------------------------------------------------------------------
    def keys(self) -> set[tuple[str, int]]:
        return {(c, int(t)) for c, t in self._all("SELECT cam, ts FROM frames")}

    def upsert(self, row: FrameRow, boxes: list[BoxRow] | None) -> None:
        """Reindex one frame from the store: its row as the files say, its boxes replaced;
        a lease in flight is kept."""
        with self._tx() as ex:
            old = ex(
                "SELECT bytes FROM frames WHERE cam = ? AND ts = ?", (row.cam, row.ts)
            ).fetchone()
            if old is None:
                ex(f"INSERT INTO frames ({_COLS}) VALUES ({', '.join('?' * 14)})", _values(row))
                _camera_add(ex, row.cam, 1, row.bytes)
            else:
                ex(
                    "UPDATE frames SET header = ?, num_layers = ?, stored_layers = ?, bytes = ?, "
                    "analytics_point = ?, modified = ?, state = ?, reason = ? "
                    "WHERE cam = ? AND ts = ?",
                    (
                        row.header,
                        row.num_layers,
                        row.stored_layers,
                        row.bytes,
                        row.analytics_point,
                        row.modified,
                        row.state,
                        row.reason,
                        row.cam,
                        row.ts,
                    ),
                )
                _camera_add(ex, row.cam, 0, row.bytes - int(old[0]))
            _drop_boxes(ex, row.cam, row.ts)
            if boxes:
                _add_boxes(ex, row.cam, row.ts, boxes)

    def bulk_insert(self, rows: list[FrameRow], boxes: list[tuple[str, int, list[BoxRow]]]) -> None:
        """Many new frames and their boxes in one transaction (the scale benchmark)."""
        with self._tx() as ex:
            cur_sql = self.backend.sql
            conn = self._conn()
            many = conn.executemany if self.kind == "sqlite" else conn.cursor().executemany
            many(
                cur_sql(f"INSERT INTO frames ({_COLS}) VALUES ({', '.join('?' * 14)})"),
                [_values(r) for r in rows],
            )
            many(
                cur_sql("INSERT INTO detections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                [
                    (cam, ts, i, b.cls, b.score, *b.xyxy)
                    for cam, ts, bs in boxes
                    for i, b in enumerate(bs)
                ],
            )
            per_cam: dict[str, list[int]] = {}
            for r in rows:
                acc = per_cam.setdefault(r.cam, [0, 0])
                acc[0] += 1
                acc[1] += r.bytes
            for cam, (n, b) in per_cam.items():
                _camera_add(ex, cam, n, b)
            hours: dict[tuple[str, int, str], list[int]] = {}
            for cam, ts, bs in boxes:
                seen = set()
                for b in bs:
                    acc = hours.setdefault((cam, ts // HOUR_US, b.cls), [0, 0])
                    acc[0] += 1
                    if b.cls not in seen:
                        acc[1] += 1
                        seen.add(b.cls)
            for (cam, hour, cls), (nb, nf) in hours.items():
                _hour_add(ex, cam, hour, cls, nb, nf)


def _values(row: FrameRow) -> tuple:
    return (
        row.cam,
        row.ts,
        row.header,
        row.num_layers,
        row.stored_layers,
        row.bytes,
        row.analytics_point,
        row.accepted,
        row.modified,
        row.state,
        row.reason,
        int(row.checked),
        row.lease_owner,
        row.lease_until,
    )


def _camera_add(ex, cam: str, frames: int, nbytes: int) -> None:
    ex(
        "INSERT INTO cameras (cam, frames, bytes) VALUES (?, ?, ?) ON CONFLICT (cam) DO UPDATE "
        "SET frames = cameras.frames + excluded.frames, bytes = cameras.bytes + excluded.bytes",
        (cam, frames, nbytes),
    )


def _hour_add(ex, cam: str, hour: int, cls: str, boxes: int, frames: int) -> None:
    ex(
        "INSERT INTO class_hours (cam, hour, class, boxes, frames) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (cam, hour, class) DO UPDATE SET boxes = class_hours.boxes + "
        "excluded.boxes, frames = class_hours.frames + excluded.frames",
        (cam, hour, cls, boxes, frames),
    )


def _drop_boxes(ex, cam: str, ts: int) -> None:
    """Remove a frame's boxes and take them out of the hourly counts."""
    rows = ex(
        "SELECT class, COUNT(*) FROM detections WHERE cam = ? AND ts = ? GROUP BY class", (cam, ts)
    ).fetchall()
    for cls, n in rows:
        _hour_add(ex, cam, ts // HOUR_US, cls, -int(n), -1)
    if rows:
        ex("DELETE FROM detections WHERE cam = ? AND ts = ?", (cam, ts))


def _add_boxes(ex, cam: str, ts: int, boxes: list[BoxRow]) -> None:
    counts: dict[str, int] = {}
    for i, b in enumerate(boxes):
        ex(
            "INSERT INTO detections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (cam, ts, i, b.cls, b.score, *b.xyxy),
        )
        counts[b.cls] = counts.get(b.cls, 0) + 1
    for cls, n in counts.items():
        _hour_add(ex, cam, ts // HOUR_US, cls, n, 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def open_index(db: str | None, store_url: str, store_root: str, local: bool) -> Index:
    """``--db``: None (SQLite in the store root; for a remote store, a file in the user cache
    named after the store URL), ``sqlite:///PATH``, a plain path, or ``postgresql://...``."""
    if db is None:
        if local:
            path = os.path.join(store_root, SQLITE_NAME)
        else:
            import platformdirs

            folder = platformdirs.user_cache_dir("vcm_plugin")
            os.makedirs(folder, exist_ok=True)
            digest = hashlib.sha256(store_url.encode()).hexdigest()[:16]
            path = os.path.join(folder, f"edge-index-{digest}.sqlite3")
        backend: _Backend = _SQLite(path)
    elif db.startswith(("postgresql://", "postgres://")):
        backend = _Postgres(db)
    elif db.startswith("sqlite:///"):
        backend = _SQLite(db.removeprefix("sqlite://"))
    elif "://" in db:
        raise VCMError(
            f"--db {db[:40]!r}: expected postgresql://..., sqlite:///PATH or a file path"
        )
    else:
        backend = _SQLite(db)
    index = Index(backend)
    index.migrate()
    return index


@dataclass
class ReindexReport:
    """What :func:`reindex` did."""

    frames: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    skipped: int = 0
    boxes: int = 0
    removed_parts: int = 0  # temp files of uploads whose process was killed
    seconds: float = 0.0


def frame_row(store, codec, key, now: float | None = None) -> tuple[FrameRow, list[BoxRow] | None]:
    """A frame's index row and boxes from what the store holds (stream, detections and
    quarantine files). Raises VCMError for a frame damaged on disk."""
    layout = store.layout(key)
    h = layout.header
    info = codec.inspect(store.read(key, 0, layout.end(1)))
    mtime = store.mtime(key) if now is None else now
    doc = store.read_json(key, DETECTIONS)
    bad = store.read_json(key, QUARANTINE)
    state = QUARANTINED if bad else (ANALYSED if doc is not None else PENDING)
    row = FrameRow(
        key.cam,
        key.ts,
        store.read(key, 0, h.size),
        h.num_layers,
        layout.stored_layers,
        layout.size,
        info.analytics_point,
        mtime,
        mtime,
        state,
        (bad.get("error", "quarantined") if bad else None),
    )
    return row, (boxes_of(doc) if isinstance(doc, dict) else None)


def reindex(
    index: Index, store, codec, progress: Callable[[int], None] | None = None
) -> ReindexReport:
    """Build or repair the index from the store: every stored frame gets its row (layout,
    state from its detections / quarantine files) and its boxes; rows whose frame is gone
    are removed, and so are temp files (in the parts folder and beside the frames) no one has
    written for ``STALE_PART_S``. Leases
    in flight are kept; the store is the source of truth."""
    t0 = time.perf_counter()
    report = ReindexReport()
    report.removed_parts, _ = store.remove_stale_parts(STALE_PART_S, everywhere=True)
    known = index.keys()
    for key in store.all_frames():
        try:
            row, boxes = frame_row(store, codec, key)
        except (VCMError, ValueError, KeyError, TypeError) as exc:
            log.warning("reindex: skipping %s: %s", key, exc)
            report.skipped += 1
            continue
        index.upsert(row, boxes)
        report.frames += 1
        report.boxes += len(boxes or [])
        if (key.cam, key.ts) in known:
            report.updated += 1
            known.discard((key.cam, key.ts))
        else:
            report.added += 1
        if progress is not None:
            progress(report.frames)
    for cam, ts in sorted(known):
        index.delete(cam, ts)
        report.removed += 1
    report.seconds = time.perf_counter() - t0
    return report
