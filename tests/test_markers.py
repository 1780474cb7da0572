"""The markers of pyproject.toml as tests/conftest.py applies them: a missing ../shared path or
framework skips with a reason naming it, fixtures reading ../shared count as needs_shared for
``-m`` selection, and nothing is skipped where everything is present. Runs this conftest on a
small generated test file in a subprocess, with VCM_SHARED_DIR pointing at temp folders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

TESTS = """
import pytest


@pytest.mark.needs_shared("data/kodak")
def test_reads_kodak():
    pass


def test_uses_the_fixture(shared_dir):
    assert (shared_dir / "data").is_dir()


@pytest.mark.needs_framework("numpy", "vcm_no_such_framework")
def test_needs_a_missing_framework():
    pass


@pytest.mark.needs_framework("numpy")
def test_needs_numpy():
    pass


@pytest.mark.slow
def test_slow():
    pass


def test_plain():
    pass
"""


@pytest.fixture
def run(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST.read_text())
    markers = re.search(r"markers = \[(.*?)\]", PYPROJECT.read_text(), re.S).group(1)
    names = re.findall(r'"(\w+)[:(]', markers)
    pytester.makeini("[pytest]\nmarkers =\n" + "".join(f"    {n}\n" for n in names))
    pytester.makepyfile(test_sample=TESTS)

    def go(shared: Path, *args: str):
        monkeypatch.setenv("VCM_SHARED_DIR", str(shared))
        return pytester.runpytest_subprocess("-rs", "--strict-markers", *args)

    return go


def test_pyproject_registers_the_three_markers():
    text = PYPROJECT.read_text()
    for name in ("slow", "needs_shared", "needs_framework"):
        assert re.search(rf'"{name}[:(]', text), name


def test_missing_shared_data_and_frameworks_skip_with_the_reason(run, tmp_path):
    result = run(tmp_path / "nowhere")
    result.assert_outcomes(passed=3, skipped=3)
    out = result.stdout.str()
    assert re.search(r"SKIPPED \S+ test_sample.py:4: needs \S*/nowhere/data/kodak: the data", out)
    assert re.search(r"SKIPPED \S+ test_sample.py: needs \S*/nowhere: the data sets", out)
    assert "needs vcm_no_such_framework, not installed here" in out
    assert "needs numpy" not in out


def test_everything_runs_where_everything_is_present(run, tmp_path):
    (tmp_path / "shared" / "data" / "kodak").mkdir(parents=True)
    result = run(tmp_path / "shared", "-k", "not missing_framework")
    result.assert_outcomes(passed=5, deselected=1)


def test_marker_selection(run, tmp_path):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    # the fixture user counts as needs_shared although it carries no marker
    result = run(tmp_path / "shared", "-m", "not needs_shared and not needs_framework")
    result.assert_outcomes(passed=2, deselected=4)
    result = run(tmp_path / "shared", "-m", "not slow")
    result.assert_outcomes(passed=3, skipped=2, deselected=1)  # data/kodak is not there
