"""Issue 21: the edge index database — schema and migrations, queries with keyset pagination,
hourly class counts, the transactional claim and lease expiry — on SQLite and on a real
PostgreSQL server started here (skipped with the reason where none can be started)."""

from __future__ import annotations

import threading
import time

import pytest

from vcm_plugin import Codec
from vcm_plugin.codec import container
from vcm_plugin.edge.index import (
    HOUR_US,
    MIGRATIONS,
    SCHEMA_VERSION,
    BoxRow,
    Cursor,
    EventQuery,
    EventRow,
    FrameQuery,
    FrameRow,
    Index,
    _SQLite,
    boxes_of,
    open_index,
)
from vcm_plugin.errors import VCMError


@pytest.fixture(scope="module")
def header(photo) -> bytes:
    blob = Codec.from_preset("fast").encode(photo[:64, :64])
    return blob[: container.parse_header(blob, 10**8).size]


_DB_SEQ = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request, tmp_path) -> Index:
    if request.param == "sqlite":
        idx = open_index(str(tmp_path / "index.sqlite3"), "x", str(tmp_path), True)
    else:
        server = request.getfixturevalue("pg_server")
        import psycopg

        name = f"t{next(_DB_SEQ)}"
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        idx = open_index(server.url.rsplit("/", 1)[0] + f"/{name}", "x", str(tmp_path), True)
    yield idx
    idx.close()


def _row(header: bytes, cam: str, ts: int, accepted: float | None = None) -> FrameRow:
    h = container.parse_header(header, 10**8)
    now = time.time() if accepted is None else accepted
    return FrameRow(
        cam, ts, header, h.num_layers, h.num_layers, h.prefix_end(h.num_layers), 5, now, now
    )


def _box(cls: str, score: float) -> BoxRow:
    return BoxRow(cls, score, (1.0, 2.0, 30.0, 40.0))


def test_migrations_from_every_version(tmp_path, header):
    """A database at version 1 (frames only) is brought to the current schema, keeping its
    rows; a database from a newer vcm_plugin is refused, not damaged."""
    path = tmp_path / "old.sqlite3"
    old = Index(_SQLite(str(path)))
    assert old.migrate(target=1) == 0 and old.version() == 1
    row = _row(header, "cam", 1)
    with old._tx() as ex:  # as version 1 wrote it (its column was analytics_layers)
        ex(
            "INSERT INTO frames (cam, ts, header, num_layers, stored_layers, bytes, "
            "analytics_layers, accepted, modified, state, checked) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0)",
            (row.cam, row.ts, row.header, row.num_layers, row.stored_layers, row.bytes, 4,
             row.accepted, row.modified),
        )  # fmt: skip
    old.close()
    idx = open_index(str(path), "x", str(tmp_path), True)
    assert idx.version() == SCHEMA_VERSION == MIGRATIONS[-1][0] >= 4
    kept = idx.get("cam", 1)
    assert kept is not None and kept.analytics_point == 4 and kept.header == row.header
    assert idx.set_detections("cam", 1, [_box("dog", 0.9)])
    assert idx.migrate() == SCHEMA_VERSION  # idempotent
    with idx._tx() as ex:
        ex("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    idx.close()
    with pytest.raises(VCMError, match="newer than this vcm_plugin"):
        open_index(str(path), "x", str(tmp_path), True)


def test_queries_keyset_pages_class_filter_and_hourly_counts(index, header):
    base = 1_700_000_000 * 10**6
    for i in range(30):
        cam = f"cam{i % 3}"
        ts = base + i * 10 * 60 * 10**6  # every 10 minutes: 5 hours in all
        assert index.insert(_row(header, cam, ts))
        boxes = [_box("person", 0.3 + 0.02 * i)] if i % 2 == 0 else []
        boxes += [_box("car", 0.8)] * (i % 3 == 0)
        assert index.set_detections(cam, ts, boxes) is True
    assert index.set_detections("cam0", base, [_box("person", 0.3)]) is False  # replaced
    # every frame once over pages of 7: newest first by default, oldest first on request
    for newest_first in (True, False):
        seen, cursor = [], None
        while True:
            q = FrameQuery(limit=7, cursor=cursor, newest_first=newest_first)
            rows, cursor = index.frames(q)
            seen += [(r.ts, r.cam) for r in rows]
            if cursor is None:
                break
        assert seen == sorted(seen, reverse=newest_first) and len(seen) == 30 == len(set(seen))
    # a cursor only continues the order it came from
    _, cursor = index.frames(FrameQuery(limit=7))
    assert cursor is not None and Cursor.decode(cursor.encode()) == cursor
    with pytest.raises(VCMError, match="other order"):
        index.frames(FrameQuery(limit=7, cursor=cursor, newest_first=False))
    # one camera in a time window
    rows, more = index.frames(
        FrameQuery(cam="cam1", since=base + 3600 * 10**6, until=base + 3 * 3600 * 10**6)
    )
    assert more is None and [r.cam for r in rows] == ["cam1"] * len(rows)
    assert all(base + 3600 * 10**6 <= r.ts <= base + 3 * 3600 * 10**6 for r in rows)
    assert len(rows) == 4
    # a class, a score floor, a camera; paged
    rows, more = index.frames(FrameQuery(cls="person", min_score=0.6, limit=3, newest_first=False))
    expect = [
        (base + i * 600 * 10**6, f"cam{i % 3}")
        for i in range(0, 30, 2)
        if 0.3 + 0.02 * i >= 0.6 - 1e-9
    ]
    rest, _ = index.frames(FrameQuery(cls="person", min_score=0.6, cursor=more, newest_first=False))
    assert [(r.ts, r.cam) for r in rows + rest] == expect
    rows, more = index.frames(FrameQuery(cls="person", min_score=0.6, limit=3))
    rest, _ = index.frames(FrameQuery(cls="person", min_score=0.6, cursor=more))
    assert [(r.ts, r.cam) for r in rows + rest] == expect[::-1]  # newest first, paged
    rows, _ = index.frames(FrameQuery(cls="car", cam="cam0", newest_first=False))
    # frames i = 0, 3, ... are cam0's and had a car; frame 0's boxes were replaced without
    assert [r.ts for r in rows] == [base + i * 600 * 10**6 for i in range(3, 30, 3)]
    assert index.frames(FrameQuery(cls="unicorn"))[0] == []
    # hourly counts: boxes and frames per class per camera per hour, from the rows
    counts = index.class_counts()
    total = {}
    for c in counts:
        assert c["hour"] % HOUR_US == 0
        total[c["class"]] = total.get(c["class"], 0) + c["boxes"]
    assert total == {"person": 15, "car": 9}
    cam0 = index.class_counts(cam="cam0", cls="car")
    assert sum(c["frames"] for c in cam0) == 9 and {c["cam"] for c in cam0} == {"cam0"}
    assert len(cam0) == 5  # one row per hour that had a car at cam0
    # deleting a frame takes its boxes out of the counts
    index.delete("cam0", base)
    assert sum(c["boxes"] for c in index.class_counts(cls="person")) == 14
    assert index.totals()["frames"] == 29


def test_a_lone_surrogate_from_an_old_store_is_indexed_not_fatal(index, header):
    """0.3 stored detections whose names held lone surrogates (JSON "\\ud800"); reindexing
    such a store died with UnicodeEncodeError (issue 27, item 2). The name is kept with
    U+FFFD in place of the surrogate, and the frame is found by it."""
    ts = 1_700_000_000 * 10**6
    assert index.insert(_row(header, "old", ts))
    boxes = boxes_of({"boxes": [{"name": "dog\ud800", "conf": 0.9, "xyxy": [0, 0, 4, 4]}]})
    assert boxes == [BoxRow("dog\ufffd", 0.9, (0.0, 0.0, 4.0, 4.0))]
    assert index.set_detections("old", ts, boxes) is True
    rows, _ = index.frames(FrameQuery(cls="dog\ufffd"))
    assert [(r.cam, r.ts) for r in rows] == [("old", ts)]


def test_cursor_is_checked():
    c = Cursor(123, "cam-1")
    assert Cursor.decode(c.encode()) == c
    for bad in ("", "!!", "MTIz", Cursor(1, "x").encode() + "A", "bad cursor"):
        with pytest.raises(VCMError):
            Cursor.decode(bad)


def test_claim_is_one_transaction_no_double_claims(index, header):
    """Four threads claim concurrently (one connection each): every frame goes to exactly
    one claimer; an expired lease brings a checked frame back; analysed ones never come."""
    for i in range(60):
        assert index.insert(_row(header, "q", i + 1, accepted=1000.0 + i))
    got: dict[str, list[int]] = {}

    def claimer(name: str) -> None:
        mine = got.setdefault(name, [])
        while rows := index.claim(3, 60.0, name):
            mine += [r.ts for r in rows]

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [ts for v in got.values() for ts in v]
    assert sorted(every) == list(range(1, 61))  # each frame once
    assert index.claim(5, 60.0, "late") == []
    # leases lapse: unchecked frames are first checked by the server, then come back
    later = time.time() + 120
    lapsed = index.lapsed_unchecked(limit=100, now=later)
    assert len(lapsed) == 60 and index.claim(5, 60.0, "x", now=later) == []
    for row in lapsed[:10]:
        index.release(row.cam, row.ts, checked=True)
    index.set_detections("q", lapsed[0].ts, [])  # analysed: never offered again
    back = index.claim(100, 60.0, "again", now=later)
    assert sorted(r.ts for r in back) == sorted(r.ts for r in lapsed[1:10])
    assert all(r.lease_owner == "again" for r in back)
    # a checked frame whose lease lapses comes back without another check
    again = index.claim(100, 60.0, "third", now=later + 120)
    assert sorted(r.ts for r in again) == sorted(r.ts for r in back)
    index.quarantine("q", again[0].ts, "broken")
    assert again[0].ts not in [r.ts for r in index.claim(100, 60.0, "x", now=later + 400)]


def test_texture_requests_are_shared_through_the_index(index, header):
    row = _row(header, "lazy", 5)
    h = container.parse_header(header, 10**8)
    row = FrameRow(**{**row.__dict__, "stored_layers": 1, "bytes": h.prefix_end(1)})
    assert index.insert(row)
    assert index.offer("lazy", 30.0) == []
    index.want("lazy", 5)
    assert index.offer("lazy", 30.0) == [(5, h.prefix_end(1))]
    assert index.offer("lazy", 30.0) == []  # offered: not again until reoffer_s
    assert index.offer("lazy", 30.0, now=time.time() + 31) == [(5, h.prefix_end(1))]
    assert not index.relayout("lazy", 5, h.prefix_end(1) + 1, h.num_layers, row.bytes, 1.0)
    assert index.relayout("lazy", 5, h.prefix_end(1), h.num_layers, h.prefix_end(h.num_layers), 2.0)
    assert index.offer("lazy", 0.0, now=time.time() + 99) == []  # complete: not wanted
    assert index.get("lazy", 5).stored_layers == h.num_layers
    assert index.totals()["bytes"] == h.prefix_end(h.num_layers)


def test_index_bench_runs_at_a_tiny_size():
    """The scale benchmark (a command, run at 1M frames for docs/edge.md) at 3000 frames:
    rows, boxes and counters agree, and every query kind is timed."""
    from vcm_plugin.edge.indexbench import run_index_bench

    result = run_index_bench(None, frames=3000, cameras=6, queries=20, uploads=0)
    assert result["fill"]["frames"] == result["totals"]["frames"] == 3000
    assert 2 * 3000 < result["fill"]["boxes"] < 4 * 3000  # ~3 boxes per frame
    for name in ("camera_time_window", "class_filter", "camera_class_window"):
        q = result["queries"][name]
        assert q["n"] == 20 and 0 < q["p50_ms"] <= q["p95_ms"] <= q["max_ms"]
    assert result["start_up_s_filled"] > 0


def _event(cam: str, start: int, end: int, rule: str = "p", pre: float = 0.0, post: float = 0.0):
    return EventRow(
        f"{cam}-{start}-{rule}", cam, rule, "person", start, end, start, 0.9, 2, False, pre,
        post, time.time(),
    )  # fmt: skip


def test_events_saved_listed_and_kept_by_retention(index, header):
    """Events: insert, update (an ended event stays ended), keyset pages newest first,
    filters; the texture of an event's window is asked for; per-camera retention keeps the
    frames of events longer than the rest."""
    day = 86400.0
    now = time.time()
    for ts in range(0, 10):  # received 10 days ago, one frame a second of capture time
        assert index.insert(_row(header, "door", ts * 1_000_000, accepted=now - 10 * day))
    assert index.insert(_row(header, "yard", 1, accepted=now - 10 * day))
    ev = _event("door", 3_000_000, 4_000_000, pre=1.0, post=1.0)
    assert index.save_event(ev) is None
    assert index.save_event(EventRow(**{**ev.__dict__, "ended": True, "end": 5_000_000}))
    again = index.save_event(EventRow(**{**ev.__dict__, "ended": False}))
    assert again.ended and index.event(ev.id).ended and index.event(ev.id).end == 5_000_000
    for i in range(3):
        index.save_event(_event("yard", 100 + i, 100 + i))
    page, more = index.events(EventQuery(limit=2))
    assert [e.start for e in page] == [3_000_000, 102] and more is not None
    rest, end = index.events(EventQuery(limit=2, after=more))
    assert [e.start for e in rest] == [101, 100] and end is None
    assert [e.id for e in index.events(EventQuery(cam="door"))[0]] == [ev.id]
    assert index.events(EventQuery(cls="car"))[0] == []
    assert [e.start for e in index.events(EventQuery(since=4_500_000))[0]] == [3_000_000]
    # frames are stored whole by _row: nothing to ask for
    assert index.want_range("door", 0, 10**7) == 0
    # retention: all frames older than 5 days go, event frames (2..6 s) stay until 30 days
    expired = index.expired("door", now - 5 * day, now - 30 * day, 100)
    assert [r.ts // 1_000_000 for r in expired] == [0, 1, 7, 8, 9]
    assert len(index.expired("door", now - 5 * day, now - 7 * day, 100)) == 10
    assert index.expired("door", now - 20 * day, now - 30 * day, 100) == []
    assert [r.cam for r in index.oldest(100, now - day, skip=("door",))] == ["yard"]
