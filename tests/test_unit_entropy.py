"""Unit tests of the range coder wrapper (``vcm_plugin.codec.entropy``), without the codec.

Properties: what ``LayerWriter`` writes, ``LayerReader`` reads back call for call; the
scale table is monotonic, bounded and solves the moment equation it documents; hostile
bytes give a VCMError or in-range values, never another exception type.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vcm_plugin.codec import entropy
from vcm_plugin.codec.entropy import (
    LAPLACE_LIMIT,
    MIN_SCALE,
    LayerReader,
    LayerWriter,
    laplace_scale,
    scale_to_code,
)
from vcm_plugin.errors import VCMError


def _reader(writer: LayerWriter, layer: int = 0) -> LayerReader:
    return LayerReader(writer.getvalue(), layer)


# -- writer -> reader identity -------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 3, 7, 256, 1 << 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_uniform_round_trip(size, seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, size, 500)
    values[:2] = (0, size - 1)  # the extremes of the alphabet
    w = LayerWriter()
    w.uniform(values, size)
    out = _reader(w).uniform(len(values), size)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, values)


def test_uniform_scalar_and_out_of_range():
    w = LayerWriter()
    w.uniform(5, 6)  # a scalar is one symbol
    assert _reader(w).uniform(1, 6).tolist() == [5]
    for bad in (6, -1, [0, 7]):
        with pytest.raises(VCMError, match="out of range for a 6-letter field"):
            LayerWriter().uniform(bad, 6)


@pytest.mark.parametrize("scale", [MIN_SCALE, 0.3, 1.0, 4.0, 40.0, 400.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_laplace_round_trip_at_one_scale(scale, seed):
    rng = np.random.default_rng(seed)
    symbols = np.clip(np.round(rng.laplace(0.0, scale, 2000)), -LAPLACE_LIMIT, LAPLACE_LIMIT)
    symbols[:3] = (-LAPLACE_LIMIT, LAPLACE_LIMIT, 0)  # every symbol is codable at any scale
    scales = np.full(symbols.size, scale)
    w = LayerWriter()
    w.laplace(symbols, scales)
    np.testing.assert_array_equal(_reader(w).laplace(scales), symbols)


def test_laplace_round_trip_with_a_scale_per_symbol_and_any_shape():
    rng = np.random.default_rng(3)
    scales = np.exp(rng.uniform(np.log(MIN_SCALE), np.log(300.0), (40, 7)))
    symbols = np.round(rng.laplace(0.0, scales)).astype(np.int64)
    w = LayerWriter()
    w.laplace(symbols, scales)  # 2-D in, raveled on both sides
    out = _reader(w).laplace(scales)
    assert out.shape == (symbols.size,)
    np.testing.assert_array_equal(out, np.clip(symbols, -LAPLACE_LIMIT, LAPLACE_LIMIT).ravel())


def test_laplace_clips_symbols_and_floors_scales():
    """Symbols beyond the limit come back clipped; scales below MIN_SCALE (zero, negative,
    tiny) code as MIN_SCALE on both sides, so the two still agree."""
    symbols = np.array([-10_000, 10_000, LAPLACE_LIMIT + 1, -LAPLACE_LIMIT - 1, 0, 3])
    scales = np.array([0.0, -1.0, 1e-12, 1e6, MIN_SCALE / 2, 3.0])
    w = LayerWriter()
    w.laplace(symbols, scales)
    out = _reader(w).laplace(scales)
    np.testing.assert_array_equal(out, np.clip(symbols, -LAPLACE_LIMIT, LAPLACE_LIMIT))
    w2 = LayerWriter()
    w2.laplace(symbols, np.maximum(scales, MIN_SCALE))
    assert w2.getvalue() == w.getvalue()


@pytest.mark.parametrize("alphabet", [2, 3, 17, 256])
def test_categorical_round_trip(alphabet):
    rng = np.random.default_rng(alphabet)
    steps = []
    for _ in range(300):
        p = rng.dirichlet(np.full(alphabet, 0.3)) * rng.uniform(0.5, 50)  # unnormalised
        steps.append((int(rng.integers(alphabet)), p))
    w = LayerWriter()
    for symbol, p in steps:
        w.categorical(symbol, p)
    r = _reader(w)
    assert [r.categorical(p) for _, p in steps] == [s for s, _ in steps]


def test_categorical_codes_a_symbol_of_probability_zero():
    """The model is leaky: a symbol whose count is zero still round-trips."""
    w = LayerWriter()
    w.categorical(2, np.array([0.5, 0.5, 0.0]))
    w.categorical(1, np.array([1.0, 0.0]))
    r = _reader(w)
    assert (r.categorical(np.array([0.5, 0.5, 0.0])), r.categorical(np.array([1.0, 0.0]))) == (2, 1)


def test_interleaved_calls_round_trip():
    """One layer mixes the three models, as the bricks do; the reader mirrors call for call."""
    rng = np.random.default_rng(5)
    plan = []
    for _ in range(60):
        kind = rng.choice(["uniform", "laplace", "categorical"])
        if kind == "uniform":
            size = int(rng.integers(2, 300))
            plan.append((kind, rng.integers(0, size, int(rng.integers(0, 20))), size))
        elif kind == "laplace":
            scales = rng.uniform(0.01, 20, int(rng.integers(0, 30)))
            plan.append((kind, np.round(rng.laplace(0, scales)).astype(int), scales))
        else:
            p = rng.uniform(0, 1, int(rng.integers(2, 9)))
            plan.append((kind, int(rng.integers(len(p))), p))
    w = LayerWriter()
    for kind, values, model in plan:
        getattr(w, kind)(values, model)
    r = _reader(w)
    for kind, values, model in plan:
        if kind == "uniform":
            np.testing.assert_array_equal(r.uniform(len(values), model), values)
        elif kind == "laplace":
            np.testing.assert_array_equal(r.laplace(model), values)
        else:
            assert r.categorical(model) == values


def test_one_letter_uniform_field_is_refused_or_coded():
    w = LayerWriter()
    try:
        w.uniform([0, 0], 1)
    except VCMError:
        return
    assert LayerReader(w.getvalue(), 0).uniform(2, 1).tolist() == [0, 0]


def test_empty_input():
    w = LayerWriter()
    w.uniform([], 5)
    w.laplace(np.zeros(0), np.zeros(0))
    assert w.getvalue() == b""
    r = LayerReader(b"", 0)
    assert r.uniform(0, 5).shape == (0,)
    assert r.laplace(np.zeros(0)).shape == (0,)


def test_writer_is_deterministic_and_word_aligned():
    rng = np.random.default_rng(8)
    symbols = np.round(rng.laplace(0, 2.0, 1000))

    def once() -> bytes:
        w = LayerWriter()
        w.uniform([3, 1, 4], 10)
        w.laplace(symbols, np.full(symbols.size, 2.0))
        return w.getvalue()

    first = once()
    assert first == once()
    assert len(first) % 4 == 0  # constriction writes 32-bit words


def test_a_matching_scale_codes_close_to_the_entropy():
    """A model that fits costs about the symbols' entropy; a badly wrong scale costs more."""
    rng = np.random.default_rng(9)
    symbols = np.round(rng.laplace(0.0, 0.5, 20_000))
    _, counts = np.unique(symbols, return_counts=True)
    freq = counts / counts.sum()
    entropy_bytes = -(freq * np.log2(freq)).sum() * symbols.size / 8

    def cost(scale: float) -> int:
        w = LayerWriter()
        w.laplace(symbols, np.full(symbols.size, scale))
        return len(w.getvalue())

    assert cost(0.5) < 1.05 * entropy_bytes + 8
    assert cost(20.0) > 1.5 * cost(0.5)


def test_trailing_bytes_that_are_not_a_whole_word_are_ignored():
    w = LayerWriter()
    w.uniform([9, 8, 7], 10)
    payload = w.getvalue()
    assert LayerReader(payload + b"\x01\x02\x03", 0).uniform(3, 10).tolist() == [9, 8, 7]


# -- truncated and hostile input -----------------------------------------------------------


def test_truncated_payload_never_raises_anything_but_vcmerror():
    """The range decoder reads a short payload as if zero-padded: a cut layer decodes wrong
    symbols silently (the container's per-layer length and CRC catch the cut, not the coder),
    but never with another exception type or out-of-range results."""
    rng = np.random.default_rng(10)
    symbols = np.round(rng.laplace(0, 5.0, 4000))
    scales = np.full(symbols.size, 5.0)
    w = LayerWriter()
    w.laplace(symbols, scales)
    w.uniform(rng.integers(0, 7, 50), 7)
    payload = w.getvalue()
    wrong = 0
    for cut in (0, 1, 4, 8, len(payload) // 2, len(payload) - 4):
        r = LayerReader(payload[:cut], 2)
        try:
            out = r.laplace(scales)
            tail = r.uniform(50, 7)
        except VCMError as exc:
            assert "layer 2: entropy-coded data is malformed" in str(exc)
            continue
        assert out.shape == symbols.shape and tail.shape == (50,)
        assert tail.min() >= 0 and tail.max() < 7
        wrong += not np.array_equal(out, symbols)
    assert wrong  # the cut is visible in the symbols


@pytest.mark.parametrize("kind", ["uniform", "laplace", "categorical"])
def test_invalid_data_raises_vcmerror_naming_the_layer(kind):
    reader = LayerReader(b"\xff" * 8, 7)  # a coder state no encoder writes
    calls = {
        "uniform": lambda: reader.uniform(3, 256),
        "laplace": lambda: reader.laplace(np.full(3, 0.3)),
        "categorical": lambda: reader.categorical(np.array([0.5, 0.5])),
    }
    with pytest.raises(VCMError, match=r"^layer 7: entropy-coded data is malformed"):
        calls[kind]()


def test_random_bytes_give_vcmerror_or_in_range_symbols():
    rng = np.random.default_rng(11)
    outcomes = {"ok": 0, "error": 0}
    for i in range(400):
        n = int(rng.integers(0, 8)) * 4 + int(rng.integers(0, 4))
        raw = rng.choice([0, 255], n) if i % 2 else rng.integers(0, 256, n)
        try:
            r = LayerReader(raw.astype(np.uint8).tobytes(), 1)
            u = r.uniform(5, 7)
            r.laplace(np.full(20, 0.05))
            c = r.categorical(np.array([0.2, 0.0, 0.8]))
        except VCMError:
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1
        assert u.min() >= 0 and u.max() < 7
        assert 0 <= c < 3
    assert outcomes["ok"] and outcomes["error"]


def test_hostile_laplace_symbols_stay_in_the_support():
    out = LayerReader(b"\xff" * 4, 0).laplace(np.full(3, 0.3))
    assert np.abs(out).max() <= LAPLACE_LIMIT


# -- the scale table -----------------------------------------------------------------------


def test_scale_to_code_bounds_and_resolution():
    assert scale_to_code(np.array([1.0]))[0] == 64  # code 64 is a mean |symbol| of 1
    k = np.arange(-64, 192)
    codes = scale_to_code(2.0 ** (k / 8))  # 2**(1/8) resolution: exact powers hit a code each
    np.testing.assert_array_equal(codes, k + 64)
    extremes = scale_to_code(np.array([0.0, 2.0**-20, 2.0**-8, 2.0**24, 2.0**40, np.inf]))
    np.testing.assert_array_equal(extremes, [0, 0, 0, 255, 255, 255])
    assert codes.dtype == np.int32


def test_scale_to_code_is_monotonic():
    values = np.sort(np.random.default_rng(12).uniform(-10, 30, 5000))
    codes = scale_to_code(2.0**values)
    assert np.all(np.diff(codes) >= 0)
    assert codes.min() == 0 and codes.max() == 255


def test_laplace_scale_table_is_increasing_positive_and_read_only():
    table = laplace_scale(np.arange(256))
    assert table.shape == (256,)
    assert np.all(table > 0) and np.all(np.isfinite(table))
    assert np.all(np.diff(table) > 0)
    with pytest.raises(ValueError):
        entropy._LAPLACE_SCALE_OF_CODE[0] = 1.0


def test_laplace_scale_clips_codes_to_the_table():
    table = laplace_scale(np.arange(256))
    np.testing.assert_array_equal(
        laplace_scale(np.array([-5, -1, 0, 255, 256, 1000])), table[[0, 0, 0, 255, 255, 255]]
    )


@pytest.mark.parametrize("code", [0, 24, 40, 64, 100, 160, 255])
def test_laplace_scale_solves_the_moment_equation(code):
    """Integer symbols of a Laplace with scale b have E|s| = sqrt(t) / (1 - t), t = exp(-1/b);
    the table's b gives back the code's mean |symbol| m = 2**((code - 64) / 8)."""
    b = float(laplace_scale(np.array([code]))[0])
    t = math.exp(-1.0 / b)
    m = 2.0 ** ((code - 64) / 8)
    assert math.sqrt(t) / (1.0 - t) == pytest.approx(m, rel=1e-9)


def test_sparse_symbols_get_a_scale_above_their_mean():
    """Why the table exists: for sparse symbols the moment-matched scale is several times
    the mean magnitude (using m as the scale made each non-zero symbol cost ~15 bits)."""
    code = scale_to_code(np.array([0.03]))
    assert laplace_scale(code)[0] > 3 * 0.03
