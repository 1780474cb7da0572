"""Build the fuzz seeds and the malformed-stream corpus in ``tests/data``.

    python tests/data/make_malformed.py            # corpus from the committed seeds
    python tests/data/make_malformed.py --seeds    # re-encode the seeds first (after a format
                                                   # or preset change), then the corpus

Seeds (``seeds/*.vcm``) are valid streams of both presets at odd image sizes; the fuzz harness
(``tools/fuzz.py``) starts from them. The corpus (``malformed/*.vcm``) holds one stream per
malformation and ``malformed/MANIFEST.json`` says, per file, which calls must raise VCMError
and a regular expression its message must match (``tests/test_fuzz_corpus.py`` checks both).
Why files and not code: they are the streams a reader of old files or a flaky link would
hand us, and they stay fixed while the encoder changes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
CORPUS = HERE / "malformed"

#: (preset, height, width, content): odd sizes, 1x1, thin, flat, noise, photo. Stream version
#: 2 (the presets of 0.1), and 0.4's tae (version 3, latent layers then a layered AVIF).
SEED_SPECS = [
    ("fast", 1, 1, "photo"),
    ("fast", 2, 3, "noise"),
    ("fast", 3, 97, "photo"),
    ("fast", 17, 23, "photo"),
    ("fast", 48, 64, "photo"),
    ("fast", 40, 9, "flat"),
    ("fast", 31, 45, "noise"),
    ("fast", 96, 72, "photo"),
    ("tae-residual", 1, 1, "photo"),
    ("tae-residual", 17, 23, "photo"),
    ("tae-residual", 48, 64, "photo"),
    ("tae-residual", 9, 40, "noise"),
    ("tae", 17, 23, "photo"),  # 0.4: the layered-AVIF texture chain (stream version 3)
    ("tae", 48, 64, "photo"),
]
#: file-name tag per preset: 0.1's generator preset (now "tae-residual") kept the name "tae"
TAGS = {"tae-residual": "tae", "tae": "tae04"}

_FIXED = struct.Struct("<4sBBBBII8s")
_ENTRY = struct.Struct("<III")
HEADER_FIELDS = [  # (name, start, end) inside the fixed part
    ("magic", 0, 4),
    ("version", 4, 5),
    ("backend", 5, 6),
    ("preset", 6, 7),
    ("count", 7, 8),
    ("width", 8, 12),
    ("height", 12, 16),
    ("config_hash", 16, 24),
]


def seed_image(height: int, width: int, content: str) -> np.ndarray:
    from skimage import data

    if content == "flat":
        return np.full((height, width, 3), (90, 140, 200), np.uint8)
    if content == "noise":
        rng = np.random.default_rng(height * 1000 + width)
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.ascontiguousarray(data.astronaut()[100 : 100 + height, 180 : 180 + width])


def make_seeds() -> None:
    import torch

    from vcm_plugin import Codec

    torch.set_num_threads(1)
    SEEDS.mkdir(exist_ok=True)
    for old in SEEDS.glob("*.vcm"):
        old.unlink()
    codecs: dict[str, Codec] = {}
    for preset, h, w, content in SEED_SPECS:
        codec = codecs.setdefault(preset, Codec.from_preset(preset))
        blob = codec.encode(seed_image(h, w, content))
        tag = TAGS.get(preset, preset)
        (SEEDS / f"{tag}-{h}x{w}-{content}.vcm").write_bytes(blob)


def entropy_digest(blob: bytes) -> str:
    """Digest of what the range decoder produced: index maps and the latent after every latent
    layer (integers times preset steps), before any float convolution."""
    from vcm_plugin.codec import api, container
    from vcm_plugin.codec.layers import Geometry, State, TextureLayer, TextureResidual

    header = container.parse_header(blob, 1 << 40)
    preset = api.PRESET_BY_ID[header.preset_id]
    backend = api._backend(preset.backend)
    state = State(
        Geometry.of(header.width, header.height, preset.semantic_scale, backend.factor), backend
    )
    h = hashlib.sha256()
    for i, brick in enumerate(api._bricks(preset)[: header.num_layers]):
        if isinstance(brick, (TextureResidual, TextureLayer)):  # pixels, not range-coded
            break
        brick.decode(state, container.layer_payload(blob, header, i), i)
        for part in (state.coarse_index, state.fine_index, state.latent):
            if part is not None:
                h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def write_digests() -> None:
    """Entropy digests of the seeds: the cross-machine reference ``test_determinism`` checks."""
    digests = {name: entropy_digest(blob) for name, blob in load_seeds().items()}
    (SEEDS / "DIGESTS.json").write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


def load_seeds() -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(SEEDS.glob("*.vcm"))}


# --------------------------------------------------------------------------------------------
# Stream surgery that keeps (or deliberately breaks) the CRCs


def table_start() -> int:
    return _FIXED.size


def num_layers(blob: bytes) -> int:
    return blob[7]


def header_end(blob: bytes) -> int:
    return _FIXED.size + num_layers(blob) * _ENTRY.size + 4


def entry(blob: bytes, i: int) -> tuple[int, int, int]:
    return _ENTRY.unpack_from(blob, _FIXED.size + i * _ENTRY.size)


def payloads(blob: bytes) -> list[bytes]:
    out = []
    for i in range(num_layers(blob)):
        offset, length, _ = entry(blob, i)
        out.append(blob[offset : offset + length])
    return out


def refix_crc(head: bytes | bytearray, rest: bytes = b"") -> bytes:
    """A header whose CRC matches its (edited) bytes: what a crafted stream carries."""
    head = bytes(head)
    return head + struct.pack("<I", zlib.crc32(head)) + rest


def edit_header(blob: bytes, fmt: str, at: int, *values: int, fix_crc: bool = True) -> bytes:
    """Overwrite header fields (struct ``fmt`` at byte ``at``), re-CRC unless told not to."""
    end = header_end(blob) - 4
    head = bytearray(blob[:end])
    struct.pack_into(fmt, head, at, *values)
    if not fix_crc:
        return bytes(head) + blob[end:]
    return refix_crc(head, blob[end + 4 :])


def edit_entry(blob: bytes, i: int, column: int, value: int) -> bytes:
    """Set offset (0), length (1) or crc (2) of layer ``i`` in the table, header CRC fixed."""
    return edit_header(blob, "<I", _FIXED.size + i * _ENTRY.size + 4 * column, value)


def repack(blob: bytes, layers: list[bytes], **fields: int) -> bytes:
    """Same header fields (unless overridden), new layers, every CRC valid."""
    from vcm_plugin.codec import container

    magic, version, backend, preset, _n, width, height, chash = _FIXED.unpack_from(blob)
    del magic, version
    return container.pack(
        fields.get("backend", backend),
        fields.get("preset", preset),
        fields.get("width", width),
        fields.get("height", height),
        chash,
        layers,
    )


def flip(blob: bytes, pos: int, mask: int = 0x10) -> bytes:
    out = bytearray(blob)
    out[pos] ^= mask
    return bytes(out)


def png_bytes(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


def avif_bytes(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buf, format="AVIF", quality=50)
    return buf.getvalue()


def crafted_palette_layer(k0: int, channels: int) -> bytes:
    """Layer 0 that declares ``k0`` palette entries and nothing else."""
    from vcm_plugin.codec.entropy import LayerWriter, laplace_scale

    unit = float(laplace_scale(64))
    w = LayerWriter()
    w.uniform(k0 - 1, 256)
    w.uniform(np.full(channels, 64), 256)
    w.laplace(np.zeros((k0, channels)), np.full((k0, channels), unit))
    return w.getvalue()


def crafted_split_layers(
    width: int, height: int, coarse_entries: int, children: int, channels: int = 32, seed: int = 0
) -> list[bytes]:
    """Layers 0 and 1, validly range-coded, with ``coarse_entries`` palette entries each split
    into ``children``: the largest index-map alphabets the format can carry (256 x 256 once
    made the decoder allocate 256 dense 129 MiB context tables)."""
    from vcm_plugin.codec.entropy import LayerWriter, laplace_scale
    from vcm_plugin.codec.layers import Geometry, IndexMapCoder

    g = Geometry.of(width, height, 0.5, 8)
    n, k0 = g.positions, coarse_entries
    unit = float(laplace_scale(64))  # the scale a decoder derives from mean-|symbol| code 64
    rng = np.random.default_rng(seed)
    coarse = np.arange(n) % k0
    w = LayerWriter()
    w.uniform(k0 - 1, 256)
    w.uniform(np.full(channels, 64), 256)
    w.laplace(np.zeros((k0, channels)), np.full((k0, channels), unit))
    IndexMapCoder(g.latent_shape).encode(w, coarse, np.full(n, k0), np.zeros(n))
    w.uniform(np.full(k0, 64), 256)
    w.uniform(np.full(channels, 64), 256)
    w.laplace(np.zeros((n, channels)), np.full((n, channels), unit))
    layer0 = w.getvalue()
    w = LayerWriter()
    kids = np.full(k0, children)
    w.uniform(kids - 1, 256)
    IndexMapCoder(g.latent_shape).encode(w, rng.integers(0, children, n), kids[coarse], coarse)
    w.uniform(np.full(channels, 64), 256)
    w.laplace(np.zeros((k0 * children, channels)), np.full((k0 * children, channels), unit))
    return [layer0, w.getvalue()]


# --------------------------------------------------------------------------------------------
# The corpus

ALL = ("decode", "inspect", "truncate")
Case = tuple[str, bytes, tuple[str, ...], str]  # name, stream, calls that must fail, message


def corpus_cases(seeds: dict[str, bytes]) -> list[Case]:
    base = seeds["fast-17x23-photo"]
    tae = seeds["tae-17x23-photo"]
    n = num_layers(base)
    hend = header_end(base)
    cases: list[Case] = [
        ("empty", b"", ALL, "empty stream"),
        (
            "random-bytes",
            bytes(np.random.default_rng(1).integers(0, 256, 300, np.uint8)),
            ALL,
            "wrong magic",
        ),
    ]
    # truncation at (the start and the middle of) every header field and table entry
    for name, start, end in HEADER_FIELDS:
        for cut, where in ((start, "start"), ((start + end) // 2, "mid")):
            if cut == 0 or (where == "mid" and (start + end) // 2 == start):
                continue
            cases.append((f"trunc-{name}-{where}", base[:cut], ALL, "truncated header"))
    for i in range(n):
        for column, label in enumerate(("offset", "length", "crc")):
            cut = _FIXED.size + i * _ENTRY.size + 4 * column + 2
            cases.append((f"trunc-table{i}-{label}", base[:cut], ALL, "truncated header"))
    cases.append(("trunc-header-crc", base[: hend - 2], ALL, "truncated header"))
    cases.append(("trunc-after-header", base[:hend], ALL, "truncated inside layer 0"))
    cases.append(("trunc-inside-layer0", base[: hend + 5], ALL, "truncated inside layer 0"))
    # each layer's CRC broken: in the payload, and in the table (header CRC fixed)
    for i in range(n):
        offset, length, crc = entry(base, i)
        cases.append(
            (
                f"crc-payload-layer{i}",
                flip(base, offset + length // 2),
                ALL,
                f"layer {i} CRC mismatch",
            )
        )
        cases.append(
            (f"crc-table-layer{i}", edit_entry(base, i, 2, crc ^ 1), ALL, f"layer {i} CRC mismatch")
        )
    cases.append(("crc-header", flip(base, 9, 0x01), ALL, "header CRC mismatch"))
    cases.append(
        (
            "crc-header-unfixed-width",
            edit_header(base, "<I", 8, 1000, fix_crc=False),
            ALL,
            "header CRC mismatch",
        )
    )
    # lengths past the end / offsets that overlap or leave gaps
    first = repack(base, payloads(base)[:1])
    cases.append(
        (
            "length-past-end-single-layer",
            edit_entry(first, 0, 1, 0xFFFFFFFF),
            ALL,
            "truncated inside layer 0",
        )
    )
    for i in range(n - 1):
        cases.append(
            (
                f"length-past-end-layer{i}",
                edit_entry(base, i, 1, 0xFFFFFFFF),
                ALL,
                f"layer {i + 1} starts at byte .* contiguous",
            )
        )
    cases.append(("length-zero-layer1", edit_entry(base, 1, 1, 0), ALL, "contiguous|length 0"))
    last_zero = edit_entry(base, n - 1, 1, 0)
    cases.append((f"length-zero-layer{n - 1}", last_zero, ALL, f"layer {n - 1} has length 0"))
    cases.append(
        (
            "offset-overlap-layer1",
            edit_entry(base, 1, 0, entry(base, 0)[0]),
            ALL,
            "layer 1 starts at byte .* contiguous",
        )
    )
    cases.append(
        (
            "offset-overlap-last",
            edit_entry(base, n - 1, 0, entry(base, n - 1)[0] - 7),
            ALL,
            f"layer {n - 1} starts at byte .* contiguous",
        )
    )
    cases.append(
        (
            "offset-gap-layer2",
            edit_entry(base, 2, 0, entry(base, 2)[0] + 3),
            ALL,
            "layer 2 starts at byte .* contiguous",
        )
    )
    cases.append(
        (
            "offset-past-end-layer0",
            edit_entry(base, 0, 0, 0xFFFFFFF0),
            ALL,
            "layer 0 starts at byte .* contiguous",
        )
    )
    # absurd dimensions
    for label, w, h, calls, msg in (
        ("huge", 0xFFFFFFFF, 0xFFFFFFFF, ALL, "pixel limit"),
        ("just-over-limit", 9460, 9460, ALL, "pixel limit"),
        ("zero-width", 0, 23, ALL, "bad image size 0x23"),
        ("zero-height", 17, 0, ALL, "bad image size 17x0"),
        ("thin", 80_000_000, 1, ("decode",), "latent grid"),
        ("tall", 1, 80_000_000, ("decode",), "latent grid"),
    ):
        cases.append((f"dims-{label}", edit_header(base, "<II", 8, w, h), calls, msg))
    # ids: backend, preset, version, magic, layer count, configuration
    cases.append(("backend-unknown", edit_header(base, "<B", 5, 9), ALL, "unknown backend id 9"))
    cases.append(
        (
            "backend-mismatch",
            edit_header(base, "<B", 5, 2),
            ALL,
            "backend id 2 does not match preset 'fast'",
        )
    )
    cases.append(("preset-unknown", edit_header(base, "<B", 6, 77), ALL, "unknown preset id 77"))
    cases.append(("preset-zero", edit_header(base, "<B", 6, 0), ALL, "unknown preset id 0"))
    for version in (0, 1, 4, 255):
        cases.append(
            (
                f"version-{version}",
                edit_header(base, "<B", 4, version),
                ALL,
                f"unsupported stream version {version}",
            )
        )
    cases.append(("magic-wrong", b"\x89VCN" + base[4:], ALL, "wrong magic"))
    cases.append(("magic-png", png_bytes(4, 4), ALL, "wrong magic"))
    for count in (0, 17, 255):
        cases.append(
            (f"count-{count}", edit_header(base, "<B", 7, count), ALL, f"bad layer count {count}")
        )
    cases.append(
        (
            "count-more-than-preset",
            repack(base, payloads(base) + [b"extra"]),
            ALL,
            f"declares {n + 1} layers; preset 'fast' has {n}",
        )
    )
    cases.append(
        (
            "config-hash",
            edit_header(base, "<B", 16, base[16] ^ 0xFF),
            ("decode",),
            "config hash mismatch",
        )
    )
    cases.append(
        (
            "tae-preset-on-default-layers",
            repack(base, payloads(base), backend=2, preset=2),
            ("decode",),
            "config hash mismatch",
        )
    )
    # payloads with valid CRCs that the layer decoders must refuse
    layers = payloads(base)
    cases.append(
        (
            "palette-larger-than-grid",
            repack(base, [crafted_palette_layer(200, 32)] + layers[1:]),
            ("decode",),
            "layer 0: palette of 200 entries for 2 positions",
        )
    )
    cases.append(
        (
            "texture-is-png",
            repack(base, layers[:3] + [png_bytes(23, 17)] + layers[4:]),
            ("decode",),
            "layer 3: texture data is malformed",
        )
    )
    cases.append(
        (
            "texture-wrong-size",
            repack(base, layers[:3] + [avif_bytes(24, 17)] + layers[4:]),
            ("decode",),
            "layer 3: texture is 24x17, image is 23x17",
        )
    )
    cases.append(
        (
            "texture-truncated-avif",
            repack(base, layers[:4] + [layers[4][: len(layers[4]) // 2]]),
            ("decode",),
            "layer 4: texture data is malformed",
        )
    )
    cases.append(("tae-crc-layer2", flip(tae, entry(tae, 2)[0]), ALL, "layer 2 CRC mismatch"))
    cases.append(
        ("tae-version-9", edit_header(tae, "<B", 4, 9), ALL, "unsupported stream version 9")
    )
    return cases


def build(out: Path = CORPUS) -> dict[str, dict]:
    """Write the corpus and its manifest; returns the manifest."""
    cases = corpus_cases(load_seeds())
    out.mkdir(exist_ok=True)
    for old in out.glob("*.vcm"):
        old.unlink()
    manifest = {}
    for name, blob, calls, message in cases:
        assert name not in manifest, name
        (out / f"{name}.vcm").write_bytes(blob)
        manifest[name] = {"calls": list(calls), "match": message}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", action="store_true", help="re-encode the seed streams first")
    args = ap.parse_args(argv)
    if args.seeds or not any(SEEDS.glob("*.vcm")):
        make_seeds()
        write_digests()
    manifest = build()
    print(f"{len(load_seeds())} seeds, {len(manifest)} malformed streams in {HERE}")


if __name__ == "__main__":
    main()
