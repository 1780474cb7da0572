"""Every usage snippet of the integrations runs as written.

Collects the ```python blocks of ``vcm_plugin/integrations/README.md`` and executes each one,
in order, from a sandbox laid out like a checkout: ``configs/`` of this repo, and a
``../shared`` whose coco128 is a private copy (ultralytics writes label caches next to the
data; the real ../shared must stay untouched) and whose other sets link to the real ones (only
read). Outputs (``runs/``, ``*.vcm``) land in the sandbox. face-alignment's FAN weights cannot
be downloaded here: a randomly initialised checkpoint of the right name is put in a temporary
``$TORCH_HOME/hub/checkpoints`` (plumbing only: its landmarks are meaningless). The top-level
README's snippets run in ``tests/test_readme_snippets.py``.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path

_YOLO_CFG = tempfile.mkdtemp(prefix="vcm-yolo-cfg-")
atexit.register(shutil.rmtree, _YOLO_CFG, ignore_errors=True)
os.environ.setdefault("YOLO_CONFIG_DIR", _YOLO_CFG)  # before ultralytics is first imported
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VCM_SHARED_DIR", REPO.parent / "shared"))
DOC = REPO / "vcm_plugin" / "integrations" / "README.md"
SECTIONS = {
    "ultralytics": "ultralytics",
    "mmseg": "mmseg",
    "face-alignment": "face_alignment",
    "generic": "generic",
    "pillow": "pillow",
}
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
pytestmark = pytest.mark.needs_shared("data")


def _snippets() -> list:
    found = []
    text = DOC.read_text()
    section, counts = "misc", {}
    for m in re.finditer(r"^(#{1,6} [^\n]*)$|^```python\n(.*?)^```", text, re.M | re.S):
        if m.group(1):
            title = m.group(1).lower()
            section = next((v for k, v in SECTIONS.items() if k in title), section)
            continue
        counts[section] = counts.get(section, 0) + 1
        line = text[: m.start()].count("\n") + 2
        found.append(
            pytest.param(m.group(2), f"{DOC.name}:{line}", id=f"{section}-{counts[section]}")
        )
    return found


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkout")
    repo, data = root / "repo", root / "shared" / "data"
    repo.mkdir()
    data.mkdir(parents=True)
    (repo / "configs").symlink_to(REPO / "configs")
    for entry in (SHARED / "data").iterdir():
        if entry.name == "coco128":
            dst = data / "coco128"
            dst.mkdir()
            for sub in ("images", "labels"):
                shutil.copytree(entry / sub, dst / sub)
            shutil.copy(entry / "data.yaml", dst / "data.yaml")
        else:
            (data / entry.name).symlink_to(entry)
    return repo


@pytest.fixture(scope="module")
def fan_weights(tmp_path_factory):
    import torch
    from face_alignment.models import FAN

    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), home / "hub" / "checkpoints" / FAN_FILE)  # random: plumbing
    return home


@pytest.mark.parametrize(("code", "where"), _snippets())
@pytest.mark.slow
@pytest.mark.needs_framework("ultralytics", "mmseg", "face_alignment", "torchvision")
def test_snippet_runs_as_written(code, where, sandbox, monkeypatch, request):
    monkeypatch.chdir(sandbox)
    monkeypatch.delenv("VCM_VOC_ROOT", raising=False)  # the config's own default must work
    if "face_alignment" in code:
        monkeypatch.setenv("TORCH_HOME", str(request.getfixturevalue("fan_weights")))
    exec(compile(code, where, "exec"), {"__name__": "__snippet__"})


def test_snippets_cover_every_integration():
    ids = {p.id.split("-")[0] for p in _snippets()}
    assert {"ultralytics", "mmseg", "face_alignment", "generic", "pillow"} <= ids
