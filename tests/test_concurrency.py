"""One Codec shared by threads, and codecs in DataLoader worker processes, give the results a
single thread gives: a training loader or a web server may hold one codec for everything."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from vcm_plugin import Codec, VCMError

SEEDS = Path(__file__).resolve().parent / "data" / "seeds"


def _sha(a: np.ndarray | bytes) -> str:
    return hashlib.sha256(a if isinstance(a, bytes) else np.ascontiguousarray(a).data).hexdigest()


def _images() -> list[np.ndarray]:
    from skimage import data

    photo = data.astronaut()
    return [
        np.ascontiguousarray(photo[y : y + h, x : x + w])
        for y, x, h, w in ((0, 0, 33, 47), (200, 100, 16, 16), (60, 300, 40, 21))
    ]


def _jobs() -> list[tuple[str, object]]:
    """Decode every seed at every layer count, garbage that must fail, and encodes."""
    jobs: list[tuple[str, object]] = []
    codec = Codec()
    for path in sorted(SEEDS.glob("*.vcm")):
        blob = path.read_bytes()
        for k in range(1, codec.inspect(blob).num_layers + 1):
            jobs.append(("decode", (blob, k)))
        jobs.append(("decode", (blob[:-3] + b"xyz", None)))  # a broken CRC
    for i in range(len(_images())):
        jobs.append(("encode", i))
    return jobs


def _run(codec: Codec, job: tuple[str, object]) -> str:
    kind, arg = job
    try:
        if kind == "encode":
            return _sha(codec.encode(_images()[arg]))
        blob, k = arg
        return _sha(codec.decode(blob, layers=k))
    except VCMError as exc:
        return f"VCMError: {exc}"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Intra-op threads on top of the pool's threads only oversubscribe a 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def serial() -> dict[int, str]:
    codec = Codec()
    return {i: _run(codec, job) for i, job in enumerate(_jobs())}


def test_one_codec_shared_by_threads(serial):
    codec = Codec()  # default preset encodes; it decodes tae streams too
    jobs = list(enumerate(_jobs())) * 3
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda ij: (ij[0], _run(codec, ij[1])), jobs))
    for i, sha in results:
        assert sha == serial[i], _jobs()[i][0]
    assert any(s.startswith("VCMError: layer") for s in serial.values())


def test_tae_codec_shared_by_threads():
    """The neural backend's modules are shared too (inference only, no per-call state)."""
    codec = Codec.from_preset("tae")
    imgs = _images()[:2]
    blobs = [codec.encode(img) for img in imgs]
    want = [_sha(codec.decode(b)) for b in blobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(
            pool.map(
                lambda i: (_sha(codec.encode(imgs[i % 2])), _sha(codec.decode(blobs[i % 2]))),
                range(8),
            )
        )
    for i, (enc, dec) in enumerate(got):
        assert enc == _sha(blobs[i % 2]) and dec == want[i % 2]


class CodecJobs(torch.utils.data.Dataset):
    """Each DataLoader worker runs its share of the jobs with the codec it unpickled."""

    def __init__(self) -> None:
        self.jobs = _jobs()
        self.codec = Codec()

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[int, str, int]:
        return i, _run(self.codec, self.jobs[i]), os.getpid()


def test_two_dataloader_workers(serial):
    loader = torch.utils.data.DataLoader(
        CodecJobs(), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=240
    )
    got = list(loader)
    assert {i: sha for i, sha, _ in got} == serial
    assert len({pid for *_, pid in got}) == 2
