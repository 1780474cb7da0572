"""Writing files so that readers never see half a file and a finished write survives power loss.

One durability rule for every file the package writes (CLI outputs, shards and their index, the
edge store's frames, the stream cache, downloaded weights, the edge tokens file): the bytes go
to a temporary file in the target's own directory (so the rename cannot cross filesystems),
are flushed and fsynced, the temporary file is renamed over the target with ``os.replace``
(atomic: a reader sees the old file or the new one), and the directory is fsynced so the
rename itself is on disk. On any error the temporary file is removed and the target is left as
it was.

It lives in ``vcm_plugin.codec`` because every other package (the CLI, data sets, edge,
integrations) may import the codec, and the codec imports nothing of theirs.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def temp_path(path: Path) -> Path:
    """A fresh hidden name beside ``path`` (``.NAME.RANDOM.part``): listings that skip dot
    files never show it, and renaming it over ``path`` stays on one filesystem."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.part"


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make renames and creations inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename a finished, fsynced temporary file over ``path`` and fsync the directory."""
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


@contextmanager
def atomic_file(path: str | os.PathLike[str], mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file object whose contents replace ``path`` when the block ends without an
    exception (flush, fsync, rename, directory fsync); on an exception ``path`` is untouched.

    The temporary file is created with ``mode`` (default 0666), so the process's umask decides
    the permissions, as for any file a program writes (``mkstemp`` would make it 0600); pass
    0600 for a private file.
    """
    path = Path(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        replace_durably(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o666) -> None:
    """Write ``data`` to ``path`` all or nothing, durably (see the module docstring)."""
    with atomic_file(path, mode) as f:
        f.write(data)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (weights, shard tars)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
