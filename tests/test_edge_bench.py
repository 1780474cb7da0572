"""``vcm edge bench`` keeps out of a live store: its frames go to ``bench-*`` cameras, it says
how to remove them, and a store holding other cameras' frames is refused unless
``--allow-live-store`` (issue 20: 500 bench frames queued ahead of the real ones)."""

from __future__ import annotations

from PIL import Image

from vcm_plugin import Codec
from vcm_plugin.cli import main
from vcm_plugin.edge.client import EdgeClient
from vcm_plugin.edge.testing import ServerProcess

FAST = "fast"  # the DCT preset (named "default" before the preset rename): no weights, quick


def test_bench_uses_its_own_cameras_and_refuses_a_live_store(tmp_path, capsys, photo):
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(photo[:48, :64]).save(frames / "f.png")
    bench = [
        "edge",
        "bench",
        str(frames),
        "--n",
        "6",
        "--concurrency",
        "2",
        "--distinct",
        "1",
        "--preset",
        FAST,
    ]
    with ServerProcess(tmp_path / "store", tmp_path / "server.log") as srv:
        client = EdgeClient(srv.url)
        assert main([*bench, "--server", srv.url]) == 0  # an empty store: fine
        err = capsys.readouterr().err
        assert "bench-0..bench-1" in err and f"rm -r {tmp_path / 'store'}/bench-*" in err
        assert main([*bench, "--server", srv.url]) == 0  # its own earlier frames: fine too
        capsys.readouterr()
        assert [len(client.frames(f"bench-{c}")) for c in range(2)] == [6, 6]

        client.upload("lobby", 1, Codec.from_preset(FAST).encode(photo[:32, :32]))
        assert main([*bench, "--server", srv.url]) == 1
        err = capsys.readouterr().err
        assert err.startswith("vcm: error:") and err.count("\n") == 1
        assert "lobby" in err and "--allow-live-store" in err
        assert [len(client.frames(f"bench-{c}")) for c in range(2)] == [6, 6]  # nothing sent

        assert main([*bench, "--server", srv.url, "--allow-live-store"]) == 0
        assert [len(client.frames(f"bench-{c}")) for c in range(2)] == [9, 9]
        assert len(client.frames("lobby")) == 1
        client.close()
    folders = sorted(
        p.name
        for p in (tmp_path / "store").iterdir()
        if not p.name.startswith(".vcm-")  # the index, the parts folder
    )  # the SQLite index beside them
    assert folders == ["bench-0", "bench-1", "lobby"]
