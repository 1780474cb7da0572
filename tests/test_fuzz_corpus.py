"""The committed malformed-stream corpus (``tests/data/make_malformed.py``): every stream is
refused with VCMError and a message naming the problem, by decode, inspect and truncate, the
Pillow plugin refuses them too, and the corpus is what the script builds from the seeds."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin import Codec, VCMError
from vcm_plugin.codec.api import TruncatedStreamWarning

DATA = Path(__file__).resolve().parent / "data"
MANIFEST = json.loads((DATA / "malformed" / "MANIFEST.json").read_text())


def _script():
    spec = importlib.util.spec_from_file_location("make_malformed", DATA / "make_malformed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def test_corpus_covers_the_issue_list():
    names = set(MANIFEST)
    for prefix in (
        "trunc-",
        "crc-payload-layer",
        "crc-table-layer",
        "length-past-end",
        "offset-overlap",
        "dims-",
        "backend-unknown",
        "preset-unknown",
        "version-",
    ):
        assert any(n.startswith(prefix) for n in names), prefix
    assert len(names) >= 60


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_malformed_stream_raises_named_vcmerror(codec, name):
    case = MANIFEST[name]
    blob = (DATA / "malformed" / f"{name}.vcm").read_bytes()
    calls = {
        "decode": codec.decode,
        "inspect": codec.inspect,
        "truncate": lambda b: codec.truncate(b, 1),
    }
    for call in case["calls"]:
        with pytest.raises(VCMError) as err:
            calls[call](blob)
        assert re.search(case["match"], str(err.value)), (call, str(err.value))
    for call in set(calls) - set(case["calls"]):  # the others: a result or VCMError, no crash
        try:
            calls[call](blob)
        except VCMError:
            pass


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_pillow_plugin_refuses_malformed(name):
    """Pillow's way of saying no: UnidentifiedImageError or its bomb error at open, VCMError
    from load, OSError for a file cut short (Pillow's own rule) — when every layer is asked
    for, as ``decode`` does (every corpus stream fails it). The default, the analytics point,
    reads only its layers: it fails the same way or decodes what those layers hold."""
    from PIL import Image, UnidentifiedImageError

    import vcm_plugin.integrations.pillow  # noqa: F401  (registers the format)

    assert "decode" in MANIFEST[name]["calls"]
    blob = (DATA / "malformed" / f"{name}.vcm").read_bytes()
    refusals = (UnidentifiedImageError, VCMError, Image.DecompressionBombError, OSError)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(refusals):
            with Image.open(io.BytesIO(blob), formats=["VCM"]) as im:
                im.layers = None
                im.load()
        try:
            with Image.open(io.BytesIO(blob), formats=["VCM"]) as im:
                im.load()
        except refusals:
            pass
        else:
            assert im.size[0] * im.size[1] > 0 and im.info["layers_decoded"] >= 1


def test_length_past_end_of_last_layer_is_a_truncated_stream(codec):
    """The last layer's length past the end reads as a cut stream: the layers before it decode,
    with a warning, and asking for the missing layer is a named error."""
    seeds = _script().load_seeds()
    base = seeds["fast-17x23-photo"]
    m = _script()
    n = m.num_layers(base)
    bad = m.edit_entry(base, n - 1, 1, m.entry(base, n - 1)[1] + 1000)
    assert codec.inspect(bad).complete_layers == n - 1
    with pytest.warns(TruncatedStreamWarning, match=f"decoded {n - 1} of {n}"):
        out = codec.decode(bad)
    np.testing.assert_array_equal(out, codec.decode(base, layers=n - 1))
    with pytest.raises(VCMError, match=f"stream has {n - 1} complete layer"):
        codec.decode(bad, layers=n)


def test_every_cut_of_a_stream(codec):
    """Each prefix: header cuts are named errors, cuts inside a layer decode what is complete."""
    base = _script().load_seeds()["fast-3x97-photo"]
    layer_ends = [
        o + n
        for o, n in zip(
            codec.inspect(base).layer_offsets, codec.inspect(base).layer_bytes, strict=True
        )
    ]
    for cut in range(len(base)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncatedStreamWarning)
            try:
                out = codec.decode(base[:cut])
            except VCMError as exc:
                assert cut < layer_ends[0], (cut, exc)
                assert re.search("empty|magic|truncated", str(exc)), (cut, exc)
                continue
        complete = sum(end <= cut for end in layer_ends)
        np.testing.assert_array_equal(out, codec.decode(base, layers=complete))


def test_corpus_is_what_the_script_builds(tmp_path):
    """Keeps the committed files and the generator in step (no encoding: built from seeds)."""
    manifest = _script().build(tmp_path)
    assert manifest == MANIFEST
    for name in manifest:
        assert (tmp_path / f"{name}.vcm").read_bytes() == (
            DATA / "malformed" / f"{name}.vcm"
        ).read_bytes(), name


def test_seeds_decode(codec):
    seeds = _script().load_seeds()
    assert {k.split("-")[0] for k in seeds} == {"fast", "tae", "tae04"}
    for name, blob in seeds.items():
        h, w = (int(v) for v in name.split("-")[1].split("x"))
        assert codec.decode(blob).shape == (h, w, 3), name


def test_cli_refuses_malformed(tmp_path, capsys):
    """``vcm info`` / ``vcm decode`` on every corpus stream: exit 1 with one error line."""
    from vcm_plugin import cli

    for name in sorted(MANIFEST):
        path = DATA / "malformed" / f"{name}.vcm"
        out = tmp_path / f"{name}.png"
        assert cli.main(["decode", str(path), str(out)]) == 1, name
        assert not out.exists(), name
        if "inspect" in MANIFEST[name]["calls"]:
            assert cli.main(["info", str(path)]) == 1, name
        err = capsys.readouterr().err
        assert err.startswith("vcm: error:") and "Traceback" not in err, (name, err)
