"""README.md's ```python blocks run as a new user runs them: in order, in one namespace, from a
fresh checkout with ``../shared`` beside it (issue 20: the API snippet used an undefined
``img``, and a snippet failed on a folder an earlier one had written).

The sandbox is a temp ``repo/`` (the working directory) beside a ``shared/data`` that links to
the real data sets (read only), except coco128: its first 8 images with their labels, so that
the snippet which encodes it, exports a YOLO folder and trains one epoch costs seconds, not
minutes, on this 2-core CPU. The snippets' code runs verbatim.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
COCO128_IMAGES = 8


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the block's first code line, code) for every ```python block, in order."""
    return [
        (text[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S)
    ]


@pytest.fixture
def checkout(tmp_path, shared_dir, monkeypatch) -> Path:
    repo, data = tmp_path / "repo", tmp_path / "shared" / "data"
    repo.mkdir()
    data.mkdir(parents=True)
    for entry in (shared_dir / "data").iterdir():
        if entry.name != "coco128":
            (data / entry.name).symlink_to(entry)
    coco = data / "coco128"
    (coco / "labels").mkdir(parents=True)
    (coco / "images").mkdir()
    for image in sorted((shared_dir / "data" / "coco128" / "images").iterdir())[:COCO128_IMAGES]:
        shutil.copy(image, coco / "images")
        label = shared_dir / "data" / "coco128" / "labels" / f"{image.stem}.txt"
        if label.is_file():
            shutil.copy(label, coco / "labels")
    shutil.copy(shared_dir / "data" / "coco128" / "data.yaml", coco)
    monkeypatch.chdir(repo)
    return repo


@pytest.mark.slow
@pytest.mark.needs_framework("ultralytics", "mmseg")
@pytest.mark.needs_shared("data/coco128")
def test_readme_python_blocks_run_in_order(checkout):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4, "the README's python blocks were not found"
    namespace = {"__name__": "__readme__"}
    for line, code in blocks:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
