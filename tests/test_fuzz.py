"""Fuzzing in the suite: a short run of the ``tools/fuzz.py`` harness (the benchmark runs 1M), and
resource bounds for hostile headers checked under a real ``RLIMIT_AS`` in a child process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin import Codec, VCMError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
BUDGET_MB = 1024  # address space a child may add to what it holds after warming up
CASE_LIMIT_S = 10.0  # per hostile call; the hang bound is 5 s on an idle machine


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.mark.slow
def test_short_fuzz_run(tmp_path):
    """~20k inputs through decode / inspect / truncate / Pillow: nothing but VCMError."""
    runs = 20_000
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "fuzz.py"),
            "--runs",
            str(runs),
            "--jobs",
            "2",
            "--seed",
            "7",
            "--out",
            str(tmp_path),
            "--max-time",
            "420",
            "--seeds",
            str(DATA / "seeds"),
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    detail = json.dumps({k: summary[k] for k in ("findings", "worker_deaths")}, indent=1)[:4000]
    assert summary["exceptions_by_type"] == {}, detail
    assert summary["worker_deaths"] == [], detail
    assert summary["hangs_over_5s"] == 0, summary["slowest_input"]
    assert summary["harness_errors"] == 0, proc.stderr[-2000:]
    assert summary["inputs"] >= runs, (summary["inputs"], summary["seconds"])
    counts = summary["counts"]
    for target in ("decode", "inspect", "truncate", "pillow"):  # both outcomes are reached
        assert counts.get(f"ok.{target}", 0) > 100 and counts.get(f"refused.{target}", 0) > 100
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_pixel_limit_is_configurable():
    blob = (DATA / "seeds" / "fast-17x23-photo.vcm").read_bytes()
    with pytest.raises(VCMError, match="exceeds the pixel limit 390"):
        Codec(max_pixels=390).decode(blob)
    assert Codec(max_pixels=391).decode(blob).shape == (17, 23, 3)
    assert Codec(max_pixels=391).inspect(blob).width == 23


def test_hostile_headers_stay_in_memory_and_time_bounds():
    proc = subprocess.run(
        [sys.executable, __file__, "child"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rec in lines:
        assert rec["outcome"] in ("ok", "VCMError", "Pillow refused"), rec
        assert rec["seconds"] < CASE_LIMIT_S, rec
    outcomes = {(r["case"], r["call"]): r["outcome"] for r in lines}
    assert outcomes["huge-dims", "decode"] == "VCMError"
    assert outcomes["thin-over-grid", "decode"] == "VCMError"
    for case in ("split-bomb-256x256", "tae-crafted-at-limit", "encoded-at-limit"):
        assert outcomes[case, "decode"] == "ok", case  # decodes, in bounded memory
    assert max(r["rss_growth_mb"] for r in lines) < BUDGET_MB


# --------------------------------------------------------------------------------------------
# the child process: warm up, cap the address space, run the hostile cases


def _gradient(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)


def _hostile_cases() -> list[tuple[str, bytes, Codec]]:
    spec = importlib.util.spec_from_file_location("make_malformed", DATA / "make_malformed.py")
    mm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mm)
    seeds = mm.load_seeds()
    base, tae = seeds["fast-17x23-photo"], seeds["tae-9x40-noise"]
    small = Codec(max_pixels=1 << 18)  # 512 x 512
    cases = [
        ("huge-dims", mm.edit_header(base, "<II", 8, 0xFFFFFFFF, 0xFFFFFFFF), small),
        ("over-limit", mm.edit_header(base, "<II", 8, 513, 512), small),
        ("thin-over-grid", mm.edit_header(base, "<II", 8, 1 << 18, 1), small),
        ("thin-within-grid", mm.repack(base, mm.payloads(base), width=65536, height=4), small),
        ("fast-at-limit", mm.repack(base, mm.payloads(base), width=512, height=512), small),
        ("tae-at-limit", mm.repack(tae, mm.payloads(tae), width=512, height=512), small),
        (
            "split-bomb-256x256",
            mm.repack(base, mm.crafted_split_layers(256, 256, 256, 256), width=256, height=256),
            small,
        ),
        (
            "split-bomb-at-limit",
            mm.repack(base, mm.crafted_split_layers(512, 512, 256, 256), width=512, height=512),
            small,
        ),
        (
            "palette-256-at-limit",
            mm.repack(base, mm.crafted_split_layers(512, 512, 256, 1)[:1], width=512, height=512),
            small,
        ),
        (
            "layer0-garbage-at-limit",
            mm.repack(base, [bytes(range(256)) * 8], width=512, height=512),
            small,
        ),
        (
            "tae-crafted-at-limit",
            mm.repack(tae, mm.crafted_split_layers(512, 512, 4, 2), width=512, height=512),
            small,
        ),
        ("encoded-at-limit", Codec().encode(_gradient(512, 512)), small),
    ]
    return cases


def _child() -> None:
    import io
    import re
    import resource
    import warnings

    import torch
    from PIL import Image, UnidentifiedImageError

    import vcm_plugin.integrations.pillow  # noqa: F401

    torch.set_num_threads(1)
    Image.MAX_IMAGE_PIXELS = 1 << 17  # Pillow refuses above twice this, like our 512 x 512
    warnings.simplefilter("ignore")
    cases = _hostile_cases()
    for seed in sorted((DATA / "seeds").glob("*.vcm")):  # warm up: weights, kernels, arenas
        Codec().decode(seed.read_bytes())

    def vm(key: str) -> int:
        text = Path("/proc/self/status").read_text()
        return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) * 1024

    cap = vm("VmSize") + BUDGET_MB * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    rss0 = vm("VmRSS")

    def pillow(blob: bytes) -> None:
        try:
            with Image.open(io.BytesIO(blob), formats=["VCM"]) as im:
                im.load()
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise LookupError("Pillow refused") from exc

    for name, blob, codec in cases:
        calls = {
            "decode": codec.decode,
            "inspect": codec.inspect,
            "truncate": lambda b, c=codec: c.truncate(b, 1),
            "pillow": pillow,
        }
        for call, fn in calls.items():
            t0 = time.perf_counter()
            try:
                fn(blob)
                outcome = "ok"
            except VCMError:
                outcome = "VCMError"
            except LookupError:
                outcome = "Pillow refused"
            except BaseException as exc:  # noqa: BLE001 - MemoryError is what we look for
                outcome = f"{type(exc).__name__}: {exc}"[:300]
            rec = {
                "case": name,
                "call": call,
                "outcome": outcome,
                "seconds": round(time.perf_counter() - t0, 3),
                "rss_growth_mb": round((vm("VmHWM") - rss0) / 2**20, 1),
            }
            print(json.dumps(rec), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["child"]:
    _child()
