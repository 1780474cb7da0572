"""Packaging (issue 28 item 7): the eval's source sits in the top-level ``eval/`` folder and
installs as ``vcm_eval``; the package list in pyproject.toml names every folder that holds an
``__init__.py``, so a new subpackage cannot be left out of the wheel."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_package_list_matches_the_source_folders():
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = setup["package-dir"]
    found = set()
    for name, folder in dirs.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((name, *rel)))
    assert set(setup["packages"]) == found


def test_vcm_eval_is_the_eval_folder():
    spec = importlib.util.find_spec("vcm_eval")
    assert spec is not None and Path(spec.origin).parent == REPO / "eval"
    assert importlib.util.find_spec("vcm_eval.rate_accuracy") is not None
    assert not (REPO / "vcm_eval").exists()
