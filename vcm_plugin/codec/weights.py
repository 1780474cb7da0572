"""Weights registry: one table of name -> file, public URL, sha256; lookup and verified fetch.

Lookup: ``$VCM_WEIGHTS_DIR`` alone when set (an explicit choice); otherwise the user cache dir
that ``vcm weights fetch`` fills, when it holds every file, then the copies shipped inside the
package (TAEF2 is MIT and 2 x 2.7 MB, so ``Codec()`` works offline with nothing downloaded).
Every file's sha256 is checked before it is loaded.

Task-model weights (the edge worker's and the eval's ``yolov5n.pt``, ...) are not in the
registry: :func:`models_dir` is where they are looked up, ``$VCM_WEIGHTS_DIR`` when set, else
``../shared/models`` beside the repository. This module is the one home of that variable.
"""

from __future__ import annotations

import functools
import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from vcm_plugin.codec.files import atomic_file, sha256_file
from vcm_plugin.errors import VCMError

_TAESD = "https://github.com/madebyollin/taesd/raw/main/"


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    sha256: str


REGISTRY: dict[str, tuple[WeightFile, ...]] = {
    "taef2": (
        WeightFile(
            "taef2_encoder.pth",
            _TAESD + "taef2_encoder.pth",
            "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
        ),
        WeightFile(
            "taef2_decoder.pth",
            _TAESD + "taef2_decoder.pth",
            "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
        ),
    ),
}


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("vcm_plugin")) / "weights"


def package_dir() -> Path:
    """The weights shipped as package data (with their licence text)."""
    return Path(__file__).resolve().parent / "assets" / "weights"


def env_dir() -> Path | None:
    """``$VCM_WEIGHTS_DIR`` when set (and not empty), else None."""
    env = os.environ.get("VCM_WEIGHTS_DIR")
    return Path(env) if env else None


def search_dirs() -> list[Path]:
    """``$VCM_WEIGHTS_DIR`` alone when set (an explicit choice); else the defaults."""
    env = env_dir()
    return [env] if env is not None else [cache_dir(), package_dir()]


def models_dir() -> Path:
    """Where task-model weights live: ``$VCM_WEIGHTS_DIR`` when set, else ``../shared/models``
    beside the repository root."""
    env = env_dir()
    return env if env is not None else Path(__file__).resolve().parents[3] / "shared" / "models"


def find(model: str) -> dict[str, Path]:
    """Verified paths of every file of ``model``, from the first directory that holds them all.

    VCMError names the variable and the files when none does, and names the file whose sha256
    differs from the registry's (a corrupt or foreign file is never loaded in its place).
    """
    files = REGISTRY[model]
    for directory in search_dirs():
        paths = {f.name: directory / f.name for f in files}
        if all(p.is_file() for p in paths.values()):
            for wf in files:
                got = _verified_sha256(paths[wf.name], paths[wf.name].stat().st_mtime_ns)
                if got != wf.sha256:
                    raise VCMError(
                        f"{paths[wf.name]}: sha256 {got} != expected {wf.sha256} "
                        f"(replace it, or run `vcm weights fetch {model}`)"
                    )
            return paths
    names = ", ".join(f.name for f in files)
    looked = ", ".join(str(d) for d in search_dirs())
    raise VCMError(
        f"weights for '{model}' not found: need {names} in $VCM_WEIGHTS_DIR "
        f"(looked in {looked}); run `vcm weights fetch {model}` to download them"
    )


@functools.lru_cache(maxsize=32)
def _verified_sha256(path: Path, mtime_ns: int) -> str:
    """Hash once per file version and process: every Codec loads the same two files."""
    return sha256_of(path)


def sha256_of(path: Path) -> str:
    return sha256_file(path)


def fetch(
    model: str, dest: Path | None = None, base_url: str | None = None, timeout: float = 60.0
) -> list[Path]:
    """Download ``model``'s files into ``dest`` (default: the user cache dir), verifying sha256.

    A file whose hash does not match is deleted and reported; an existing good file is kept.
    """
    if model not in REGISTRY:
        raise VCMError(f"unknown weights '{model}'; known: {', '.join(REGISTRY)}")
    dest = Path(dest) if dest else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for wf in REGISTRY[model]:
        target = dest / wf.name
        if target.is_file() and sha256_of(target) == wf.sha256:
            written.append(target)
            continue
        url = (base_url.rstrip("/") + "/" + wf.name) if base_url else wf.url
        try:  # installed only once the hash matches (a failed check leaves target as it was)
            with atomic_file(target) as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                digest = hashlib.sha256()
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                got = digest.hexdigest()
                if got != wf.sha256:
                    raise VCMError(f"{wf.name} from {url}: sha256 {got} != expected {wf.sha256}")
        except OSError as exc:
            raise VCMError(f"could not download {url}: {exc}") from None
        written.append(target)
    return written
