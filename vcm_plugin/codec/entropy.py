"""Entropy coding through constriction's range coder.

A layer is one range-coded stream. ``LayerWriter`` and ``LayerReader`` mirror each other call for
call; every probability the two sides use is computed from already-decoded integers with the
same numpy operations, so decoding is bit-exact. Any failure inside the decoder (garbage that
survived the CRC, a crafted stream) becomes a VCMError.
"""

from __future__ import annotations

import decimal

import constriction
import numpy as np

from vcm_plugin.errors import VCMError

_model = constriction.stream.model
LAPLACE_LIMIT = 255  # residual symbols are clipped to [-LAPLACE_LIMIT, LAPLACE_LIMIT]
_LAPLACE = _model.QuantizedLaplace(-LAPLACE_LIMIT, LAPLACE_LIMIT + 1)
_CATEGORICAL = _model.Categorical(perfect=False)
MIN_SCALE = 0.04


def scale_to_code(mean_abs: np.ndarray) -> np.ndarray:
    """Log-quantise positive values (mean |symbol|) to one byte each: 2**(1/8) resolution,
    2**-8 .. 2**24."""
    code = np.round(np.log2(np.maximum(mean_abs, 2.0**-8)) * 8.0) + 64
    return np.clip(code, 0, 255).astype(np.int32)


def _exact_laplace_scales() -> np.ndarray:
    """Laplace scale b for every mean-|symbol| code, correctly rounded via decimal arithmetic.

    Integer symbols from a Laplace of scale b have E|s| = sqrt(t) / (1 - t), t = exp(-1/b);
    solving for b with E|s| = m = 2**((code - 64) / 8) matches the model to the symbols' mean
    magnitude. Using m itself as the scale (what the first streams did) underestimates b badly
    for sparse symbols (m = 0.03 -> b = 0.03 instead of 0.14) and made every non-zero symbol
    cost ~15 bits.
    Decimal rather than numpy: numpy's log/exp dispatch to CPU-specific SIMD code that need
    not round alike on every machine, and a one-ulp change in a scale can shift a quantised
    probability and desynchronise the range decoder.
    """
    ctx = decimal.Context(prec=50)
    one, two = decimal.Decimal(1), decimal.Decimal(2)
    out = []
    for code in range(256):
        m = ctx.power(2, ctx.divide(code - 64, 8))
        root = ctx.divide(ctx.subtract(ctx.sqrt(ctx.add(one, 4 * m * m)), one), two * m)
        out.append(float(ctx.divide(-one, ctx.multiply(two, ctx.ln(root)))))
    return np.array(out)


_LAPLACE_SCALE_OF_CODE = _exact_laplace_scales()
_LAPLACE_SCALE_OF_CODE.setflags(write=False)


def laplace_scale(code: np.ndarray) -> np.ndarray:
    """Laplace scales for mean-|symbol| codes; codes may be sums of log codes (products of
    means), so they are clipped to the table."""
    return _LAPLACE_SCALE_OF_CODE[np.clip(np.asarray(code, dtype=np.int64), 0, 255)]


class LayerWriter:
    def __init__(self) -> None:
        self._enc = constriction.stream.queue.RangeEncoder()

    def uniform(self, values, size: int) -> None:
        """Integers in [0, size) with a flat model (header-like fields)."""
        values = np.atleast_1d(np.asarray(values, dtype=np.int32))
        if values.size:
            if values.min() < 0 or values.max() >= size:
                raise VCMError(f"internal: value out of range for a {size}-letter field")
            if size > 1:  # one letter carries nothing (and constriction panics on it)
                self._enc.encode(values, _model.Uniform(size))

    def laplace(self, symbols: np.ndarray, scales: np.ndarray) -> None:
        """Zero-mean quantised Laplace symbols with one scale per symbol."""
        symbols = np.clip(
            np.asarray(symbols, dtype=np.int32).ravel(), -LAPLACE_LIMIT, LAPLACE_LIMIT
        )
        if symbols.size:
            scales = np.maximum(np.asarray(scales, dtype=np.float64).ravel(), MIN_SCALE)
            self._enc.encode(symbols, _LAPLACE, np.zeros(symbols.size), scales)

    def categorical(self, symbol: int, probabilities: np.ndarray) -> None:
        self._enc.encode(
            np.array([symbol], dtype=np.int32),
            _CATEGORICAL,
            np.asarray(probabilities, dtype=np.float64)[None, :],
        )

    def getvalue(self) -> bytes:
        return self._enc.get_compressed().tobytes()


class LayerReader:
    def __init__(self, payload: bytes, layer: int) -> None:
        self.layer = layer
        usable = len(payload) - len(payload) % 4
        words = np.frombuffer(payload[:usable], dtype=np.uint32).copy()
        try:
            self._dec = constriction.stream.queue.RangeDecoder(words)
        except Exception as exc:  # noqa: BLE001 - constriction raises several types
            raise VCMError(f"layer {layer}: entropy-coded data is malformed ({exc})") from None

    def _fail(self, exc: Exception) -> VCMError:
        return VCMError(f"layer {self.layer}: entropy-coded data is malformed ({exc})")

    def uniform(self, count: int, size: int) -> np.ndarray:
        if count == 0 or size == 1:
            return np.zeros(count, dtype=np.int32)
        try:
            return np.asarray(self._dec.decode(_model.Uniform(size), count), dtype=np.int32)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from None

    def laplace(self, scales: np.ndarray) -> np.ndarray:
        scales = np.maximum(np.asarray(scales, dtype=np.float64).ravel(), MIN_SCALE)
        if scales.size == 0:
            return np.zeros(0, dtype=np.int32)
        try:
            out = self._dec.decode(_LAPLACE, np.zeros(scales.size), scales)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from None
        # constriction can return LAPLACE_LIMIT + 1 from bytes no encoder writes
        return np.clip(np.asarray(out, dtype=np.int32), -LAPLACE_LIMIT, LAPLACE_LIMIT)

    def categorical(self, probabilities: np.ndarray) -> int:
        try:
            return int(
                self._dec.decode(
                    _CATEGORICAL, np.asarray(probabilities, dtype=np.float64)[None, :]
                )[0]
            )
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from None
