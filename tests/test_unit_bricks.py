"""Unit tests of each layer brick (``vcm_plugin.codec.layers``), without the container.

The contract every brick keeps: ``encode(source, state)`` returns a payload and moves
``state`` to what a decoder holds after reading it, so ``decode(state', payload, layer)`` on a
decoder-side state that saw the same earlier layers ends in exactly the same state. Plus the
flags the codec reads (``standalone``, ``reads_pixels``) and VCMError on corrupt payloads.
Uses the training-free DCT backend (no weights) and a stand-in backend with another channel
count, so the bricks are seen not to depend on one backend's shape.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vcm_plugin.codec.backends.dct import DCTBackend
from vcm_plugin.codec.entropy import LayerReader, LayerWriter
from vcm_plugin.codec.layers import (
    MAX_PALETTE,
    Geometry,
    IndexMapCoder,
    LatentRefinement,
    PaletteSplits,
    SemanticPalette,
    Source,
    State,
    TexturePhoto,
    TextureResidual,
    deadzone_quantise,
    semantic_image,
)
from vcm_plugin.errors import VCMError


class ToyBackend:
    """Five channels per 4x4 block: block means of R, G, B and two gradients; decodes to
    flat blocks. Enough for the bricks, which see only ``channels`` and ``decode``."""

    name = "toy"
    factor = 4
    channels = 5

    def encode(self, image: np.ndarray) -> np.ndarray:
        f = self.factor
        h, w = image.shape[0] // f, image.shape[1] // f
        blocks = image.reshape(h, f, w, f, 3).astype(np.float64)
        means = blocks.mean(axis=(1, 3)).transpose(2, 0, 1) * 4
        gx = blocks[:, :, :, f // 2 :].mean((1, 3, 4)) - blocks[:, :, :, : f // 2].mean((1, 3, 4))
        gy = blocks[:, f // 2 :].mean((1, 3, 4)) - blocks[:, : f // 2].mean((1, 3, 4))
        return np.concatenate([means, 8 * gx[None], 8 * gy[None]]).astype(np.float32)

    def decode(self, latent: np.ndarray) -> np.ndarray:
        rgb = np.clip(latent[:3] / 4, 0, 1).transpose(1, 2, 0)
        return np.repeat(np.repeat(rgb, self.factor, 0), self.factor, 1).astype(np.float32)

    def decode_batch(self, latents, exact: bool = True):
        return [self.decode(z) for z in latents]


BACKENDS = {"dct": DCTBackend(), "toy": ToyBackend()}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:196, 150:278])  # 96x128, a face


def _start(image: np.ndarray, backend) -> tuple[Source, State]:
    """Encoder-side source and empty state, as ``Codec.encode_batch`` builds them."""
    g = Geometry.of(image.shape[1], image.shape[0], 0.5, backend.factor)
    sem = semantic_image(image.astype(np.float64), g)
    z = backend.encode(sem)
    return Source(image.astype(np.float64), sem, z.reshape(z.shape[0], -1).T), State(g, backend)


def _semantic() -> SemanticPalette:
    return SemanticPalette(
        coarse_entries=6,
        fine_entries=20,
        palette_step=0.5,
        step=1.5,
        deadzone=0.2,
        index_penalty=0.5,
        content_classes=3,
    )


def _chain():
    return [
        _semantic(),
        PaletteSplits(0.5),
        LatentRefinement(0.75, 0.2),
        LatentRefinement(0.3, 0.2),
        TexturePhoto(40, blur=0.5),
        TextureResidual(30),
        TexturePhoto(60),
    ]


FIELDS = ("latent", "coarse_index", "fine_index", "fine_parent", "pixels")


def _assert_same(decoded: State, encoded: State) -> None:
    for name in FIELDS:
        a, b = getattr(decoded, name), getattr(encoded, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=name)


def _snapshot(state: State) -> State:
    return State(
        state.geometry,
        state.backend,
        *(None if getattr(state, f) is None else np.copy(getattr(state, f)) for f in FIELDS),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_brick_decodes_to_the_state_its_encoder_left(image, backend):
    source, enc = _start(image, BACKENDS[backend])
    dec = State(enc.geometry, enc.backend)
    for layer, brick in enumerate(_chain()):
        before = _snapshot(enc)
        payload = brick.encode(source, enc)
        assert isinstance(payload, bytes) and payload
        if getattr(brick, "standalone", False):
            fresh = State(enc.geometry, enc.backend)
            brick.decode(fresh, payload, layer)
            np.testing.assert_array_equal(fresh.pixels, enc.pixels)
        brick.decode(dec, payload, layer)
        _assert_same(dec, enc)
        changed = [
            f
            for f in FIELDS
            if not np.array_equal(
                getattr(before, f) if getattr(before, f) is not None else np.zeros(0),
                getattr(enc, f) if getattr(enc, f) is not None else np.zeros(0),
            )
        ]
        assert changed, f"layer {layer} ({type(brick).__name__}) moved no state"


def test_latent_layers_move_the_reconstruction_towards_the_source(image):
    source, state = _start(image, BACKENDS["dct"])
    errors = []
    for brick in _chain()[:4]:
        brick.encode(source, state)
        errors.append(float(((state.latent - source.vectors) ** 2).mean()))
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert state.latent.shape == source.vectors.shape


def test_semantic_layer_state(image):
    source, state = _start(image, BACKENDS["dct"])
    brick = _semantic()
    brick.encode(source, state)
    k0 = int(state.coarse_index.max()) + 1
    assert k0 <= brick.coarse_entries
    assert state.coarse_index.shape == (state.geometry.positions,)
    assert state.fine_index is state.coarse_index  # no splits yet: coarse is the finest
    np.testing.assert_array_equal(state.fine_parent, np.arange(k0))
    assert state.pixels is None  # latent layers leave rendering to whoever needs pixels


def test_splits_refine_the_coarse_state(image):
    source, state = _start(image, BACKENDS["dct"])
    _semantic().encode(source, state)
    coarse = state.coarse_index.copy()
    PaletteSplits(0.5).encode(source, state)
    np.testing.assert_array_equal(state.fine_parent[state.fine_index], coarse)
    assert len(state.fine_parent) > int(coarse.max()) + 1
    assert np.all(np.diff(state.fine_parent) >= 0)


def test_encoding_is_deterministic(image):
    payloads = []
    for _ in range(2):
        source, state = _start(image, BACKENDS["dct"])
        payloads.append([brick.encode(source, state) for brick in _chain()])
    assert payloads[0] == payloads[1]


def test_flags():
    """Only a photo texture stands alone (the container records needs from it); only the
    residual texture is coded against rendered pixels (batches render before it)."""
    chain = _chain()
    assert [getattr(b, "standalone", False) for b in chain] == [
        False,
        False,
        False,
        False,
        True,
        False,
        True,
    ]
    assert [getattr(b, "reads_pixels", False) for b in chain] == [
        False,
        False,
        False,
        False,
        False,
        True,
        False,
    ]


def test_photo_layer_ignores_earlier_state_and_blur_is_encoder_only(image):
    source, state = _start(image, BACKENDS["dct"])
    sharp = TexturePhoto(60).encode(source, state)
    blurred = TexturePhoto(60, blur=2.0).encode(source, state)
    assert len(blurred) < len(sharp)
    out = State(state.geometry, state.backend)
    TexturePhoto(60).decode(out, blurred, 4)  # the decoder needs no blur to read it
    np.testing.assert_array_equal(out.pixels, state.pixels)
    assert np.abs(out.pixels - image).mean() < 12


def test_residual_layer_adds_to_the_current_reconstruction(image):
    source, state = _start(image, BACKENDS["dct"])
    for brick in _chain()[:4]:
        brick.encode(source, state)
    before = state.image().copy()
    TextureResidual(60).encode(source, state)
    assert np.abs(state.pixels - image).mean() < np.abs(before - image).mean()


# -- corrupt payloads ---------------------------------------------------------------------------


def _decoder_after(image, count: int):
    """A decoder state that has read the first ``count`` layers of ``_chain()``."""
    source, enc = _start(image, BACKENDS["dct"])
    dec = State(enc.geometry, enc.backend)
    for layer, brick in enumerate(_chain()[:count]):
        brick.decode(dec, brick.encode(source, enc), layer)
    return dec


@pytest.mark.parametrize("layer", range(4))
def test_invalid_entropy_data_raises_vcmerror_naming_the_layer(image, layer):
    state = _decoder_after(image, layer)
    with pytest.raises(VCMError, match=f"^layer {layer}: entropy-coded data is malformed"):
        _chain()[layer].decode(state, b"\xff" * 16, layer)


def test_a_palette_larger_than_the_grid_is_refused(image):
    state = _decoder_after(image, 0)
    w = LayerWriter()
    w.uniform(MAX_PALETTE - 1, MAX_PALETTE)
    with pytest.raises(
        VCMError,
        match=f"layer 0: palette of {MAX_PALETTE} entries for {state.geometry.positions} positions",
    ):
        _semantic().decode(state, w.getvalue(), 0)


@pytest.mark.parametrize("layer", range(4))
def test_random_payloads_raise_vcmerror_or_decode(image, layer):
    """Garbage that got past the CRC: VCMError or a state of the right shapes, nothing else."""
    base = _decoder_after(image, layer)
    rng = np.random.default_rng(layer)
    for _ in range(15):
        state = _snapshot(base)
        payload = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
        try:
            _chain()[layer].decode(state, payload, layer)
        except VCMError:
            continue
        assert state.latent.shape == (state.geometry.positions, DCTBackend.channels)
        assert state.fine_index.max() < len(state.fine_parent)


@pytest.mark.parametrize("brick", [TexturePhoto(50), TextureResidual(50)], ids=type)
def test_texture_garbage_raises_vcmerror(image, brick):
    state = _decoder_after(image, 4)
    with pytest.raises(VCMError, match="^layer 5: texture data is malformed"):
        brick.decode(state, b"\x00\x00\x00\x1cftypavif" + bytes(40), 5)


@pytest.mark.parametrize("brick", [TexturePhoto(50), TextureResidual(50)], ids=type)
def test_texture_of_another_size_is_refused(image, brick):
    state = _decoder_after(image, 4)
    buf = io.BytesIO()
    Image.new("RGB", (32, 16)).save(buf, format="AVIF")
    with pytest.raises(VCMError, match=r"^layer 5: texture is 32x16, image is 128x96$"):
        brick.decode(state, buf.getvalue(), 5)


# -- small pieces ----------------------------------------------------------------------------------


def test_geometry():
    g = Geometry.of(101, 37, 0.5, 8)
    assert (g.semantic_width, g.semantic_height) == (50, 18)  # round() of the scaled size
    assert g.latent_shape == (3, 7)  # ceil to whole blocks
    assert g.positions == 21
    tiny = Geometry.of(1, 1, 0.5, 8)
    assert (tiny.semantic_width, tiny.semantic_height, tiny.positions) == (1, 1, 1)


def test_semantic_image_is_padded_to_the_grid_and_in_range(image):
    g = Geometry.of(image.shape[1] - 3, image.shape[0] - 5, 0.5, 8)
    sem = semantic_image(image[:-5, :-3].astype(np.float64), g)
    h, w = g.latent_shape
    assert sem.shape == (h * 8, w * 8, 3)
    assert sem.min() >= 0 and sem.max() <= 1
    last = g.semantic_height - 1  # edge padding repeats the last row
    assert np.all(sem[last:] == sem[last : last + 1])


def test_deadzone_quantise():
    values = np.array([-3.1, -1.2, -0.69, -0.5, 0.0, 0.5, 0.69, 0.71, 1.2, 3.1])
    np.testing.assert_array_equal(
        deadzone_quantise(values, 1.0, 0.0), [-3, -1, -1, -1, 0, 1, 1, 1, 1, 3]
    )
    out = deadzone_quantise(values, 1.0, 0.2)  # zero bin is |v| < 0.7
    np.testing.assert_array_equal(out, [-3, -1, 0, 0, 0, 0, 0, 1, 1, 3])
    np.testing.assert_array_equal(deadzone_quantise(-values, 1.0, 0.2), -out)
    np.testing.assert_array_equal(deadzone_quantise(values * 4, 4.0, 0.2), out)
    assert out.dtype == np.int32


@pytest.mark.parametrize("seed", [0, 1])
def test_index_map_coder_round_trip_with_groups(seed):
    """Maps whose alphabet differs per position (a split's children), contexts per group;
    one-letter positions cost nothing and decode as 0."""
    rng = np.random.default_rng(seed)
    shape = (9, 11)
    groups = rng.integers(0, 4, shape[0] * shape[1])
    alphabets = np.array([1, 2, 5, 40])[groups]
    symbols = (rng.random(len(groups)) * alphabets).astype(np.int64)
    w = LayerWriter()
    IndexMapCoder(shape).encode(w, symbols, alphabets, groups)
    out = IndexMapCoder(shape).decode(LayerReader(w.getvalue(), 1), alphabets, groups)
    np.testing.assert_array_equal(out, symbols)


def test_a_coherent_index_map_is_cheap():
    shape = (16, 16)
    flat = np.zeros(256, dtype=np.int64)
    noisy = np.random.default_rng(2).integers(0, 8, 256)
    sizes = []
    for symbols in (flat, noisy):
        w = LayerWriter()
        IndexMapCoder(shape).encode(w, symbols, np.full(256, 8), np.zeros(256))
        sizes.append(len(w.getvalue()))
    assert sizes[0] * 8 < 256 * 0.25 and sizes[1] > 4 * sizes[0]
