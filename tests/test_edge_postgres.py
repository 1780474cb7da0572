"""Issue 21 against real processes: two servers sharing one PostgreSQL and one store, the
index's queries over HTTP, ``vcm edge reindex``, SIGKILL mid-upload and mid-claim, and a
database that goes down (503 + Retry-After) and comes back."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from vcm_plugin import Codec
from vcm_plugin.codec import container
from vcm_plugin.edge.client import EdgeClient
from vcm_plugin.edge.testing import ServerProcess, http_call, vcm_command


@pytest.fixture(scope="module")
def blob(photo) -> bytes:
    return Codec.from_preset("fast").encode(photo[:96, :128])


@pytest.fixture(scope="module")
def pg(pg_server):
    """The throw-away PostgreSQL server of ``conftest.pg_server`` (one per module)."""
    return pg_server


def _db(pg, name: str) -> str:
    import psycopg

    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


def _put(client: EdgeClient, fid: str, names: list[str]) -> None:
    client.put_detections(
        fid, {"boxes": [{"xyxy": [1, 2, 3, 4], "name": n, "conf": 0.9} for n in names]}
    )


def test_sqlite_queries_over_http_and_reindex(tmp_path, blob):
    """The walkthrough's default: SQLite in the store root. /frames pages and filters by
    class; /stats/classes counts per hour; `vcm edge reindex` rebuilds a lost index."""
    store = tmp_path / "store"
    with ServerProcess(store, tmp_path / "s.log") as srv:
        c = EdgeClient(srv.url, role="worker")
        base = 1_700_000_000 * 10**6
        for i in range(12):
            c.upload(f"door{i % 2}", base + i * 600 * 10**6, blob)
        claimed = [f["id"] for f in c.claim(12, wait=1)]
        assert len(claimed) == 12
        for i, fid in enumerate(sorted(claimed, key=lambda f: int(f.rsplit("-", 1)[1]))):
            _put(c, fid, ["person"] * (i % 3 == 0) + ["truck"] * (i % 4 == 0))
        page = c.request("GET", "/frames", query={"class": "person", "limit": 2}).json()
        ids = [f["id"] for f in page["frames"]]
        while page.get("next_cursor"):
            page = c.request(
                "GET",
                "/frames",
                query={"class": "person", "limit": 2, "cursor": page["next_cursor"]},
            ).json()
            ids += [f["id"] for f in page["frames"]]
        # newest first by default, paged with next_cursor
        assert ids == [f"door{i % 2}-{base + i * 600 * 10**6}" for i in range(9, -1, -3)]
        one = c.request(
            "GET", "/frames", query={"cam": "door0", "class": "truck", "order": "asc"}
        ).json()
        assert [f["id"] for f in one["frames"]] == [
            f"door0-{base + i * 600 * 10**6}" for i in (0, 4, 8)
        ]
        counts = c.request("GET", "/stats/classes", query={"class": "person"}).json()["counts"]
        assert sum(r["boxes"] for r in counts) == 4 and {r["cam"] for r in counts} == {
            "door0",
            "door1",
        }
        for bad in (
            {"cursor": "zz"},
            {"min_score": "nan"},
            {"cam": "a%20b"},
            {"limit": "0"},
            {"class": "x" * 300},
            {"order": "sideways"},
        ):
            status, _, text = http_call(
                srv.url, "GET", "/frames?" + "&".join(f"{k}={v}" for k, v in bad.items())
            )
            assert status == 400 and b"error" in text, bad
    # the index is lost: reindex rebuilds frames, states and boxes from the store's files
    for p in store.glob(".vcm-index.sqlite3*"):
        p.unlink()
    r = subprocess.run(
        vcm_command("edge", "reindex", "--store", str(store)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["frames"] == report["added"] == 12 and report["boxes"] == 4 + 3
    r = subprocess.run(
        vcm_command("edge", "reindex", "--store", str(store)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(r.stdout.strip().splitlines()[-1])["updated"] == 12  # idempotent
    with ServerProcess(store, tmp_path / "s2.log") as srv:
        c = EdgeClient(srv.url)
        assert c.health()["pending_analytics"] == 0
        again = c.request("GET", "/frames", query={"class": "person"}).json()["frames"]
        assert [f["id"] for f in again] == ids


@pytest.mark.needs_framework("psycopg")
def test_two_servers_share_one_postgresql_and_store(pg, tmp_path, blob):
    db = _db(pg, "shared")
    store = tmp_path / "store"
    end1 = container.parse_header(blob, 10**8).prefix_end(1)
    a = ServerProcess(store, tmp_path / "a.log", args=("--db", db)).start()
    b = ServerProcess(store, tmp_path / "b.log", args=("--db", db)).start()
    try:
        ca, cb = EdgeClient(a.url, role="worker"), EdgeClient(b.url, role="worker")
        # the same camera through both servers, the same ids re-sent to the other: no dupes
        for i in range(20):
            (ca if i % 2 else cb).upload("gate", 1000 + i, blob if i % 3 else blob[:end1])
        for i in range(20):
            assert (cb if i % 2 else ca).upload("gate", 1000 + i, blob[:end1])["created"] is False
        assert ca.frames("gate") == cb.frames("gate")
        assert len(ca.frames("gate")) == 20
        # an append through one server is seen by the other
        short = [f for f in cb.frames("gate") if not f["complete"]]
        assert short
        ca.append(short[0]["id"], end1, blob[end1:])
        assert cb.info(short[0]["id"])["complete"]
        assert cb.frame(short[0]["id"]).body == blob
        # four workers, two per server, claim concurrently: every frame exactly once
        got: list[str] = []
        lock = threading.Lock()

        def work(client: EdgeClient) -> None:
            while frames := client.claim(2, wait=0.3, lease=60):
                with lock:
                    got.extend(f["id"] for f in frames)

        threads = [
            threading.Thread(target=work, args=(EdgeClient(u, role="worker"),))
            for u in (a.url, b.url, a.url, b.url)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(got) == sorted(f"gate-{1000 + i}" for i in range(20))
        # detections written through one server are queryable through the other
        _put(ca, got[0], ["person"])
        found = cb.request("GET", "/frames", query={"class": "person"}).json()["frames"]
        assert [f["id"] for f in found] == [got[0]]
        # a viewer's texture request on A reaches the camera polling B
        lazy = next(f for f in ca.frames("gate") if not f["complete"])
        status, _, _ = http_call(a.url, "GET", f"/frames/{lazy['id']}?layers=5")
        assert status == 409
        wanted = cb.wanted("gate", wait=5)
        assert lazy["id"] in {w["id"] for w in wanted}
    finally:
        a.stop()
        b.stop()


KILLED_UPLOAD = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port))
s.sendall(f"POST /cameras/kcam/frames?ts=77 HTTP/1.1\r\nHost: {host}\r\n"
          f"Content-Length: {n}\r\n\r\n".encode() + sys.stdin.buffer.read())
print("sent", flush=True)
s.recv(1)
"""


@pytest.mark.needs_framework("psycopg")
def test_sigkill_mid_upload_and_mid_claim_then_database_down(pg, tmp_path, blob):
    db = _db(pg, "faults")
    store = tmp_path / "store"
    srv = ServerProcess(store, tmp_path / "s.log", args=("--db", db)).start()
    try:
        c = EdgeClient(srv.url, role="worker", retry_for=5)
        acked = [c.upload("kcam", i, blob)["id"] for i in range(1, 6)]
        host, port = srv.url.removeprefix("http://").split(":")
        half = subprocess.Popen(
            [sys.executable, "-c", KILLED_UPLOAD, host, port, str(len(blob))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        half.stdin.write(blob[: len(blob) // 2])
        half.stdin.close()
        assert half.stdout.readline().strip() == b"sent"
        claimed = c.claim(5, wait=1, lease=2)  # every frame leased, then the server dies
        assert len(claimed) == 5

        def long_poll() -> None:
            try:
                http_call(srv.url, "POST", "/analytics/claim?max=1&wait=20&lease=600")
            except OSError:  # the server is killed under it: expected
                pass

        claimer = threading.Thread(target=long_poll, daemon=True)
        claimer.start()  # a long-poll in flight (nothing to claim yet)
        time.sleep(0.3)
        srv.kill()  # SIGKILL mid-upload and mid-claim
        half.kill()
        half.wait()
        srv.start()
        c = EdgeClient(srv.url, role="worker", retry_for=30)
        listed = [f["id"] for f in c.frames("kcam", order="asc")]
        assert listed == acked  # every acknowledged frame, not the half upload
        assert c.upload("kcam", 77, blob)["created"] is True  # the cut one, whole, anew
        # the leases of the dead server lapse: the frames come back (after one check)
        back: set[str] = set()
        deadline = time.monotonic() + 20
        while not set(acked) <= back and time.monotonic() < deadline:
            back |= {f["id"] for f in c.claim(8, wait=0.5, lease=60)}
        assert back == {*acked, "kcam-77"}
        # the database goes down: 503 + Retry-After (never 500); back up: served again
        pg.stop("immediate")
        for method, path in (
            ("GET", "/cameras"),
            ("GET", "/frames/kcam-1"),
            ("POST", "/analytics/claim?wait=0"),
            ("GET", "/health"),
            ("GET", "/frames?class=person"),
        ):
            status, headers, text = http_call(srv.url, method, path)
            assert status == 503 and headers.get("retry-after"), (path, status, text)
        status, _, _ = http_call(srv.url, "POST", "/cameras/kcam/frames?ts=99", body=blob)
        assert status == 503
        pg.start()
        assert EdgeClient(srv.url, retry_for=30).upload("kcam", 99, blob)["created"] is True
        # back up: each I/O thread's dropped connection is replaced at BEGIN, so no request
        # after the restart answers 503 (0.3: one per thread; a 503 after an upload's COMMIT
        # made the client's retry find its own frame, "created": false)
        metrics = EdgeClient(srv.url).request("GET", "/metrics").json()
        assert metrics["frames"]["index_unavailable"] == 6, metrics["frames"]
        assert len(EdgeClient(srv.url).frames("kcam")) == 7
        assert EdgeClient(srv.url).health()["frames"] == 7
    finally:
        srv.stop()


def test_start_up_reads_no_frame(tmp_path, blob):
    """Start-up cost does not grow with the store: with the index in place the server lists
    nothing and reads no stream (the store's byte counters stay at zero)."""
    store = tmp_path / "store"
    with ServerProcess(store, tmp_path / "a.log") as srv:
        c = EdgeClient(srv.url)
        for i in range(30):
            c.upload(f"c{i % 3}", i + 1, blob)
    with ServerProcess(store, tmp_path / "b.log") as srv:
        c = EdgeClient(srv.url)
        m = c.metrics()
        assert m["frames"]["recovered"] == 30 and m["store"]["bytes_read"] == 0
        assert m["store"]["header_probe_bytes"] == 0
