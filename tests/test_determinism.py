"""A good stream decodes to the same pixels everywhere on the CPU: across processes, torch
thread counts and DataLoader workers (spawn and fork); the same image encodes to the same bytes
(GPU against CPU: tests/test_gpu.py). The codec's torch
work runs on one intra-op thread whatever the caller set (``vcm_plugin.codec.threads``), so
this holds for both presets and any image size. The entropy-coded part (index maps, palette
splits, latent symbols) is checked against digests committed with the seed streams, so a CPU or
library change that altered it would fail here.

Platform limits (see the README's Assumptions): pixels go through float32 convolutions (tae)
and a float bicubic resize, so a CPU with other SIMD kernels may differ by one level in rare
pixels. The entropy-decoded integers cannot differ: their probabilities come from integers
through IEEE float64 operations in numpy and constriction, and the Laplace scales from a
correctly rounded table.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vcm_plugin import Codec

REPO = Path(__file__).resolve().parents[1]
SEEDS = Path(__file__).resolve().parent / "data" / "seeds"
DIGESTS = SEEDS / "DIGESTS.json"


def _script():
    path = SEEDS.parent / "make_malformed.py"
    spec = importlib.util.spec_from_file_location("make_malformed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seeds() -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(SEEDS.glob("*.vcm"))}


def _sha(a: np.ndarray | bytes) -> str:
    return hashlib.sha256(a if isinstance(a, bytes) else np.ascontiguousarray(a).data).hexdigest()


def _encode_images() -> list[np.ndarray]:
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[60:108, 150:214])
    noise = np.random.default_rng(3).integers(0, 256, (17, 29, 3), dtype=np.uint8)
    return [photo, noise]


def digests(threads: int | None = None) -> dict[str, str]:
    """Decoded pixels of every seed (every layer count) and encoded bytes of two images."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        out = {}
        codec = Codec(device="cpu")
        for name, blob in _seeds().items():
            n = codec.inspect(blob)["num_layers"]
            for k in range(1, n + 1):
                out[f"{name}/{k}"] = _sha(codec.decode(blob, layers=k))
        for preset in ("fast", "tae"):
            enc = Codec.from_preset(preset, device="cpu")
            for i, img in enumerate(_encode_images()):
                out[f"encode/{preset}/{i}"] = _sha(enc.encode(img))
        return out
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    return digests(threads=1)


def test_entropy_decoded_part_matches_committed_digests():
    expected = json.loads(DIGESTS.read_text())
    got = {name: _script().entropy_digest(blob) for name, blob in _seeds().items()}
    assert got == expected


def test_same_across_thread_counts(reference):
    assert digests(threads=2) == reference


def test_photo_sized_encodes_and_decodes_across_thread_counts():
    """Photo-sized inputs are where oneDNN and GroupNorm split their sums by thread: the codec's
    fixed thread count must make both presets bit-identical there too, and leave the caller's
    thread setting as it was."""
    from skimage import data

    img = data.astronaut()
    old = torch.get_num_threads()
    try:
        for preset in ("fast", "tae"):
            codec = Codec.from_preset(preset, device="cpu")
            torch.set_num_threads(1)
            blob = codec.encode(img)
            one = codec.decode(blob)
            torch.set_num_threads(2)
            assert codec.encode(img) == blob, preset
            two = codec.decode(blob)
            assert torch.get_num_threads() == 2
            assert np.array_equal(one, two), preset
    finally:
        torch.set_num_threads(old)


def test_same_in_a_fresh_process(reference):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                   "")]))
    proc = subprocess.run([sys.executable, __file__, "child"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == reference


class SeedDecodes(torch.utils.data.Dataset):
    """Decodes seed i (all layers) in whichever process the DataLoader puts it."""

    def __init__(self) -> None:
        self.blobs = list(_seeds().items())
        self.codec = Codec(device="cpu")

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int) -> tuple[str, str, int]:
        name, blob = self.blobs[i]
        n = self.codec.inspect(blob)["num_layers"]
        return f"{name}/{n}", _sha(self.codec.decode(blob)), os.getpid()


@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_same_in_dataloader_workers(reference, context):
    loader = torch.utils.data.DataLoader(SeedDecodes(), batch_size=None, num_workers=2,
                                         multiprocessing_context=context, timeout=240)
    got = list(loader)
    assert {key: sha for key, sha, _ in got} == {key: reference[key] for key, _, _ in got}
    assert len({pid for *_, pid in got}) == 2 and os.getpid() not in {p for *_, p in got}


if __name__ == "__main__" and sys.argv[1:] == ["child"]:
    print(json.dumps(digests(threads=1)))
