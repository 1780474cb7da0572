"""Coverage-guided fuzzing of the decoder: ``Codec.decode``, ``inspect``, ``truncate`` and the
Pillow plugin's ``Image.open`` / ``load``.

    python tools/fuzz.py --runs 1000000 --jobs 2 --out runs/fuzz --max-time 10800
    python tools/fuzz.py --replay runs/fuzz/findings/FILE.bin      # re-run one input, show it
    python tools/fuzz.py --seeds DIR ...   # other valid streams to start from (tests/data/seeds)

The contract under test: any byte string gives a correct image or a ``VCMError`` (Pillow: its
``UnidentifiedImageError`` / ``DecompressionBombError`` at open, ``VCMError`` or, for a
truncated stream, ``OSError`` at load, as Pillow's own formats) - never
another exception type, a hang or an unbounded allocation.

Why structure-aware: layer payloads carry CRCs, so byte mutations of a stream almost never get
past ``complete_layers``. The first byte of a fuzz input picks a *strategy* (a recipe in the
table :data:`RECIPES`) that turns the rest into a stream: raw bytes, header edits with the
header CRC fixed, payload edits repacked with valid CRCs (``container.pack``), range-coded
payloads written with ``LayerWriter`` from fuzzed integers (palette sizes, index symbols, split
counts, scale codes), new geometry around old payloads, layers spliced across streams and
presets, layer lists edited, cuts, and mutated or foreign AVIF texture payloads. libFuzzer
(atheris) mutates those bytes and keeps the ones that reach new code in ``vcm_plugin``; without
atheris a random engine drives the same harness.

Workers are separate processes (one torch thread each); a worker that dies (libFuzzer timeout,
RSS limit, a crash) is restarted with the runs it had left and its artefact is kept under
``OUT/findings``. ``OUT/summary.json`` holds inputs, seconds, exceptions by type, hangs, peak
RSS and the slowest input.

This is a tool beside the tests, not part of the installed packages: it edits headers with the
container's own layout (:mod:`vcm_plugin.codec.container`'s ``FIELD_OFFSETS``, ``TABLE_ENTRY``,
``HEADER_CRC``) and uses only public ``vcm_plugin`` names. ``tests/test_fuzz.py`` runs it for 20k
inputs; ``tests/data/make_malformed.py`` writes the seeds.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import struct
import subprocess
import sys
import time
import traceback
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: The default corpus: valid streams of both presets (``tests/data/make_malformed.py``).
SEED_DIR = REPO / "tests" / "data" / "seeds"
#: Pixel limit of the decoding codec and Pillow in the workers: decode time is linear in the
#: declared size, and the fuzzer should spend its time on parsing, not on megapixel bicubics.
FUZZ_MAX_PIXELS = 1 << 18
HANG_S = 5.0  # an input slower than this is a hang (the bound)
KILL_S = 20  # libFuzzer / watchdog hard limit per input
RSS_LIMIT_MB = 3072

_INTERESTING = (
    0,
    1,
    2,
    3,
    7,
    8,
    9,
    15,
    16,
    17,
    127,
    128,
    255,
    256,
    4095,
    65535,
    65536,
    9460,
    1 << 20,
    1 << 24,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFE,
    0xFFFFFFFF,
)


class Reader:
    """Fuzz bytes consumed as small integers; past the end everything reads as zero, so every
    byte string is a valid recipe."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + max(n, 0)]
        self.pos += len(out)
        return out

    def u8(self) -> int:
        b = self.take(1)
        return b[0] if b else 0

    def u16(self) -> int:
        return int.from_bytes(self.take(2).ljust(2, b"\0"), "little")

    def u32(self) -> int:
        return int.from_bytes(self.take(4).ljust(4, b"\0"), "little")

    def rest(self) -> bytes:
        return self.take(len(self.data))

    def value(self, old: int, bits: int) -> int:
        """A new value for a ``bits``-wide field: random, nearby, a flipped bit or a classic."""
        mask = (1 << bits) - 1
        mode = self.u8() % 4
        if mode == 0:
            return self.u32() & mask
        if mode == 1:
            return (old + self.u8() - 128) & mask
        if mode == 2:
            return old ^ (1 << (self.u8() % bits))
        return _INTERESTING[self.u8() % len(_INTERESTING)] & mask


class Harness:
    """Builds a stream from a fuzz input and runs every entry point on it, keeping counts."""

    def __init__(
        self, out: Path | None, worker: int, runs: int = 0, seed_dir: Path = SEED_DIR
    ) -> None:
        import torch
        from PIL import Image

        import vcm_plugin.integrations.pillow  # noqa: F401  (registers the format)
        from vcm_plugin import Codec, VCMError
        from vcm_plugin.codec import backends, container
        from vcm_plugin.codec.presets import PRESET_BY_ID

        torch.set_num_threads(1)
        Image.MAX_IMAGE_PIXELS = FUZZ_MAX_PIXELS // 2  # Pillow refuses above 2x this
        self.codec = Codec(max_pixels=FUZZ_MAX_PIXELS)  # decodes (pixels cost time)
        self.header_codec = Codec()  # inspect / truncate at the default limit
        self.VCMError = VCMError
        self.container = container
        self.seeds = [p.read_bytes() for p in sorted(Path(seed_dir).glob("*.vcm"))]
        if not self.seeds:
            raise SystemExit(f"no seed streams in {seed_dir}: run tests/data/make_malformed.py")
        self.headers = [container.parse_header(s, 1 << 40) for s in self.seeds]
        #: latent channels of each seed preset's backend (what crafted layers code)
        self.channels = {
            name: backends.create(name).channels
            for name in {PRESET_BY_ID[h.preset_id].backend for h in self.headers}
        }
        for blob in self.seeds:  # load weights and kernels now, not inside the first input
            self.codec.decode(blob)
        self._avif: dict[tuple, bytes] = {}
        self.out = out
        self.worker = worker
        self.runs = runs  # libFuzzer exits without unwinding: flush when the last one is done
        self.t_start = time.perf_counter()
        self.inputs = 0
        self.ok: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.exceptions: Counter[str] = Counter()
        self.warned: Counter[str] = Counter()
        self.strategies: Counter[str] = Counter()
        self.findings: dict[str, dict[str, Any]] = {}
        self.harness_errors = 0
        self.slowest = (0.0, "")
        self.over_1s = 0
        self.hangs = 0
        self._last_flush = 0.0

    # ----------------------------------------------------------------------------------------
    # stream recipes

    def _seed(self, r: Reader) -> tuple[bytes, Any]:
        i = r.u8() % len(self.seeds)
        return self.seeds[i], self.headers[i]

    def _layers(self, blob: bytes, header: Any) -> list[bytes]:
        return [self.container.layer_payload(blob, header, i) for i in range(header.num_layers)]

    def _pack(self, header: Any, layers: list[bytes], **kw: Any) -> bytes:
        return self.container.pack(
            kw.get("backend", header.backend_id),
            kw.get("preset", header.preset_id),
            kw.get("width", header.width),
            kw.get("height", header.height),
            kw.get("chash", header.config_hash),
            layers,
        )

    @staticmethod
    def _edit(payload: bytes, r: Reader) -> bytes:
        """libFuzzer-style edits driven by the fuzz bytes."""
        buf = bytearray(payload)
        for _ in range(1 + r.u8() % 6):
            op = r.u8() % 8
            at = r.u16() % (len(buf) + 1)
            if op == 0 and buf:
                buf[at % len(buf)] ^= 1 << (r.u8() % 8)
            elif op == 1 and buf:
                buf[at % len(buf)] = r.u8()
            elif op == 2:
                buf[at:at] = r.take(r.u8() % 17)
            elif op == 3:
                del buf[at : at + 1 + r.u8() % 64]
            elif op == 4:
                del buf[at:]
            elif op == 5:
                buf += r.take(r.u8() % 65)
            elif op == 6 and buf:
                n = 1 + r.u8() % 32
                buf[at:at] = buf[at % len(buf) : at % len(buf) + n]
            elif op == 7 and buf:
                buf[at % len(buf)] = (0, 0xFF, 0x7F, 0x80)[r.u8() % 4]
        return bytes(buf)

    def build(self, strategy: str, r: Reader) -> bytes:
        """Turn the rest of a fuzz input into a stream (every recipe accepts any bytes)."""
        return RECIPES[strategy](self, r)

    # The recipes of :data:`RECIPES`: each reads what it needs from ``r``, in a fixed order.

    def _raw(self, r: Reader) -> bytes:
        return r.rest()

    def _header(self, r: Reader) -> bytes:
        """Header fields, the magic, the config hash or a layer-table cell edited, the header
        CRC fixed (now and then left stale)."""
        c = self.container
        blob, h = self._seed(r)
        end = h.size - c.HEADER_CRC.size
        head = bytearray(blob[:end])
        at = c.FIELD_OFFSETS
        for _ in range(1 + r.u8() % 3):
            field = r.u8() % 10
            if field < 4:  # version, backend, preset, layer count
                name = ("version", "backend_id", "preset_id", "num_layers")[field]
                head[at[name]] = r.value(head[at[name]], 8)
            elif field < 6:  # width, height
                pos = at[("width", "height")[field - 4]]
                old = struct.unpack_from("<I", head, pos)[0]
                struct.pack_into("<I", head, pos, r.value(old, 32))
            elif field == 6:
                head[at["config_hash"] + r.u8() % 8] ^= 1 + r.u8() % 255
            elif field == 7:
                head[at["magic"] + r.u8() % len(c.MAGIC)] = r.u8()
            else:  # a layer-table cell: offset, length or crc
                entry = c.TABLE_ENTRY[h.version].size
                pos = c.FIXED_HEADER.size + entry * (r.u8() % h.num_layers) + 4 * (r.u8() % 3)
                old = struct.unpack_from("<I", head, pos)[0]
                struct.pack_into("<I", head, pos, r.value(old, 32))
        tail = blob[end + c.HEADER_CRC.size :]
        if r.u8() % 8 == 0:  # leave the header CRC stale now and then
            return bytes(head) + blob[end : end + c.HEADER_CRC.size] + tail
        return bytes(head) + c.HEADER_CRC.pack(zlib.crc32(bytes(head))) + tail

    def _payload_edit(self, r: Reader) -> bytes:
        blob, h = self._seed(r)
        layers = self._layers(blob, h)
        i = r.u8() % len(layers)
        layers[i] = self._edit(layers[i], r)
        return self._pack(h, layers)

    def _payload_replace(self, r: Reader) -> bytes:
        blob, h = self._seed(r)
        layers = self._layers(blob, h)
        i = r.u8() % len(layers)
        layers[i] = r.rest()[:8192]
        return self._pack(h, layers)

    def _geometry(self, r: Reader) -> bytes:
        blob, h = self._seed(r)
        mode = r.u8() % 4
        if mode == 0:
            w, hh = 1 + r.u8() % 96, 1 + r.u8() % 96
        elif mode == 1:
            w, hh = h.width + r.u8() % 5 - 2, h.height + r.u8() % 5 - 2
        elif mode == 2:
            w, hh = h.height, h.width
        else:
            w, hh = r.value(h.width, 32), r.value(h.height, 32)
        return self._pack(h, self._layers(blob, h), width=w & 0xFFFFFFFF, height=hh & 0xFFFFFFFF)

    def _splice(self, r: Reader) -> bytes:
        blob, h = self._seed(r)
        layers = self._layers(blob, h)
        other, oh = self._seed(r)
        olayers = self._layers(other, oh)
        mask = r.u16()
        mixed = [
            olayers[i] if mask >> i & 1 and i < len(olayers) else p for i, p in enumerate(layers)
        ]
        if r.u8() % 2:
            return self._pack(
                h, mixed, backend=oh.backend_id, preset=oh.preset_id, chash=oh.config_hash
            )
        return self._pack(h, mixed)

    def _cut(self, r: Reader) -> bytes:
        blob, _ = self._seed(r)
        cut = r.u32() % (len(blob) + 1)
        return blob[:cut] + r.take(r.u8() % 33)

    def _layer_list(self, r: Reader) -> bytes:
        blob, h = self._seed(r)
        layers = self._layers(blob, h)
        for _ in range(1 + r.u8() % 3):
            op, j = r.u8() % 4, r.u8() % len(layers)
            if op == 0 and len(layers) > 1:
                del layers[j]
            elif op == 1:
                layers.insert(j, layers[j])
            elif op == 2:
                k = r.u8() % len(layers)
                layers[j], layers[k] = layers[k], layers[j]
            else:
                layers.append(r.take(r.u8()))
        return self._pack(h, layers[:16])

    def _texture(self, r: Reader) -> bytes:
        blob, h = self._seed(r)
        layers = self._layers(blob, h)
        i = max(len(layers) - 1 - r.u8() % 2, 0)
        if r.u8() % 2:
            layers[i] = self._edit(layers[i], r)
        else:
            layers[i] = self._foreign_avif(h, r)
        return self._pack(h, layers)

    def _foreign_avif(self, h: Any, r: Reader) -> bytes:
        """AVIF payloads a texture layer does not expect: other sizes, modes, bit patterns."""
        from PIL import Image

        dw, dh = (0, 0) if r.u8() % 2 else (r.u8() % 3 - 1, r.u8() % 3 - 1)
        mode = ("RGB", "L", "RGBA", "RGB")[r.u8() % 4]
        level = r.u8()
        key = (max(h.width + dw, 1), max(h.height + dh, 1), mode, level % 4)
        if key not in self._avif and len(self._avif) < 512:
            buf = io.BytesIO()
            fill = (level * 64) % 256
            im = Image.new(mode, key[:2], fill if mode == "L" else (fill,) * len(mode))
            im.save(buf, format="AVIF", quality=50, speed=10)
            self._avif[key] = buf.getvalue()
        return self._avif.get(key, b"\0\0\0\x18ftypavif")

    def _crafted(self, r: Reader) -> bytes:
        """Range-coded layers 0 and 1 written from fuzzed integers: the decoders' own inputs
        (palette size, palette values, index symbols, split counts, scale codes) at any value
        the format can carry."""
        from vcm_plugin.codec.entropy import LayerWriter
        from vcm_plugin.codec.layers import Geometry, IndexMapCoder
        from vcm_plugin.codec.presets import PRESET_BY_ID

        blob, h = self._seed(r)
        layers = self._layers(blob, h)
        preset = PRESET_BY_ID[h.preset_id]
        channels = self.channels[preset.backend]
        if r.u8() % 2:
            width, height = 1 + r.u8() % 80, 1 + r.u8() % 80
        else:
            width, height = h.width, h.height
        g = Geometry.of(width, height, preset.semantic_scale, 8)
        n = g.positions
        k0 = 1 + r.u8() % (256 if r.u8() % 4 == 0 else 9)

        def symbols(count: int) -> np.ndarray:
            raw = np.frombuffer(r.take(count).ljust(count, b"\0"), np.int8).astype(np.int32)
            return raw * (1 + r.u8() % 3)

        def scales(count: int) -> np.ndarray:
            return np.frombuffer(r.take(count).ljust(count, b"\x40"), np.uint8).astype(np.int32)

        w = LayerWriter()
        w.uniform(k0 - 1, 256)
        codes = scales(channels)
        w.uniform(codes, 256)
        w.laplace(
            symbols(k0 * channels), np.broadcast_to(2.0 ** ((codes - 64) / 8), (k0, channels))
        )
        coarse = np.frombuffer(r.take(n).ljust(n, b"\0"), np.uint8).astype(np.int64) % k0
        if r.u8() % 2:
            coarse[:] = coarse[0]
        IndexMapCoder(g.latent_shape).encode(w, coarse, np.full(n, k0), np.zeros(n))
        entry, channel = scales(k0), scales(channels)
        w.uniform(entry, 256)
        w.uniform(channel, 256)
        w.laplace(
            symbols(n * channels),
            2.0 ** ((entry[coarse][:, None] - 64) / 8) * 2.0 ** ((channel[None, :] - 64) / 8),
        )
        layer0 = w.getvalue() + r.take(r.u8() % 8)
        w = LayerWriter()
        children = 1 + np.frombuffer(r.take(k0).ljust(k0, b"\0"), np.uint8).astype(np.int64) % (
            256 if r.u8() % 4 == 0 else 6
        )
        w.uniform(children - 1, 256)
        local = (
            np.frombuffer(r.take(n).ljust(n, b"\0"), np.uint8).astype(np.int64) % children[coarse]
        )
        IndexMapCoder(g.latent_shape).encode(w, local, children[coarse], coarse)
        total = int(children.sum())
        codes = scales(channels)
        w.uniform(codes, 256)
        w.laplace(
            symbols(min(total * channels, 1 << 16)),
            np.broadcast_to(2.0 ** ((codes - 64) / 8), (total, channels)).ravel()[
                : min(total * channels, 1 << 16)
            ],
        )
        layer1 = w.getvalue() + r.take(r.u8() % 8)
        keep = r.u8() % (len(layers) + 1)
        rest = layers[2:keep] if keep > 2 else []
        return self._pack(h, [layer0, layer1, *rest], width=width, height=height)

    # ----------------------------------------------------------------------------------------
    # running the entry points

    def _call(self, target: str, fn: Any, *args: Any, ok: tuple = ()) -> Any:
        """Run one entry point; VCMError (and ``ok`` types) are refusals, the rest findings."""
        try:
            out = fn(*args)
        except self.VCMError:
            self.refused[target] += 1
            return None
        except ok:
            self.refused[target] += 1
            return None
        except Exception as exc:  # noqa: BLE001 - any other type is what we are looking for
            self._finding(target, exc)
            return None
        self.ok[target] += 1
        return out

    def _finding(self, target: str, exc: BaseException) -> None:
        tb = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in tb if "vcm_plugin" in f.filename] or tb
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        key = f"{target}|{type(exc).__name__}|{where}"
        self.exceptions[type(exc).__name__] += 1
        entry = self.findings.setdefault(key, {"count": 0, "example": None, "message": ""})
        entry["count"] += 1
        if entry["example"] is None and self.out is not None:
            digest = hashlib.sha1(self._data).hexdigest()[:12]
            path = self.out / "findings" / f"{type(exc).__name__}-{digest}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self._data)
            path.with_suffix(".txt").write_text(
                f"{key}\n{exc!r}\n\n" + "".join(traceback.format_exception(exc))
            )
            entry["example"] = str(path)
            entry["message"] = repr(exc)[:300]
            self.flush(force=True)

    def _outcome(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.VCMError:
            return "VCMError"

    def run_targets(self, stream: bytes, sel: int, r: Reader) -> None:
        from PIL import Image, UnidentifiedImageError

        c, hc = self.codec, self.header_codec
        info = self._call("inspect", hc.inspect, stream)
        if info is not None:
            assert_true(isinstance(info["width"], int) and info["complete_layers"] >= 1, info)
        k = r.u8() % 10
        part = self._call("truncate", hc.truncate, stream, k)
        if part is not None:
            again = hc.inspect(part)
            assert_true(again["num_layers"] == k == again["complete_layers"], "truncate")
        layers: Any = (None, 1, r.u8() % 8, (1.0, "1", True, -1, 1 << 40, np.int64(2))[r.u8() % 6])[
            sel & 3
        ]
        source: Any = (stream, bytearray(stream), memoryview(stream))[(sel >> 2) % 3]

        def decode() -> np.ndarray:
            out = c.decode(source, layers)
            assert_true(out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, "dtype")
            if info is not None:
                assert_true(out.shape[:2] == (info["height"], info["width"]), "shape")
            if sel >> 4 & 7 == 7:  # the same stream decodes to the same pixels
                assert_true(np.array_equal(out, c.decode(stream, layers)), "nondeterministic")
            return out

        self._call("decode", decode)
        if part is not None and sel >> 4 & 7 == 6:  # the cut stream is the first k layers

            def same() -> None:
                a, b = self._outcome(c.decode, part), self._outcome(c.decode, stream, k)
                assert_true(
                    type(a) is type(b) and (isinstance(a, str) or np.array_equal(a, b)),
                    "truncate changed the result",
                )

            self._call("truncate-decode", same)

        def pil() -> tuple[int, int]:
            with Image.open(io.BytesIO(stream), formats=["VCM"]) as im:
                if sel & 0xC0 == 0xC0:  # decode (a quarter of the inputs: it costs a decode)
                    im.layers = r.u8() % 8 or None
                    im.load()
                    assert_true(im.mode == "RGB" and im.size == (im.width, im.height), "pil")
                return im.size

        # OSError: a truncated stream at load(), as Pillow's own formats (and the plugin) do
        self._call(
            "pillow", pil, ok=(UnidentifiedImageError, Image.DecompressionBombError, OSError)
        )

    def one(self, data: bytes) -> None:
        """libFuzzer's TestOneInput."""
        self._data = data
        t0 = time.perf_counter()
        r = Reader(data)
        strategy = STRATEGIES[r.u8() % len(STRATEGIES)]
        sel = r.u8()
        self.strategies[strategy] += 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                stream = self.build(strategy, r)
            except self.VCMError:  # pack() refuses e.g. 0 or 17 layers: fall back to raw
                stream = data
            except Exception as exc:  # noqa: BLE001 - a harness bug, not a codec finding
                self.harness_errors += 1
                if self.harness_errors <= 3:
                    print(f"harness error ({strategy}): {exc!r}", file=sys.stderr)
                stream = data
            self.run_targets(stream, sel, r)
        for w in caught:
            self.warned[w.category.__name__] += 1
        self.inputs += 1
        dt = time.perf_counter() - t0
        if dt > 1.0:
            self.over_1s += 1
            self.hangs += dt > HANG_S
        if dt > self.slowest[0]:
            name = ""
            if self.out is not None and dt > 0.2:
                path = self.out / "slowest" / f"w{self.worker}.bin"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                name = str(path)
            self.slowest = (dt, name)
        self.flush()

    def flush(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.out is None or (
            not force and now - self._last_flush < 0.5 and self.inputs != self.runs
        ):
            return
        self._last_flush = now
        path = self.out / "workers" / f"w{self.worker}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats(), indent=1))
        os.replace(tmp, path)

    def stats(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "seconds": round(time.perf_counter() - self.t_start, 1),
            "exceptions": dict(self.exceptions),
            "findings": self.findings,
            "hangs_over_5s": self.hangs,
            "over_1s": self.over_1s,
            "slowest_s": round(self.slowest[0], 3),
            "slowest_input": self.slowest[1],
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "ok": dict(self.ok),
            "refused": dict(self.refused),
            "warnings": dict(self.warned),
            "strategies": dict(self.strategies),
            "harness_errors": self.harness_errors,
        }


#: Strategy name -> recipe ``(harness, fuzz reader) -> stream``. The first byte of an input picks
#: one by its position in this table (so its order is part of every saved input's meaning).
RECIPES: dict[str, Callable[[Harness, Reader], bytes]] = {
    "raw": Harness._raw,
    "header": Harness._header,
    "payload-edit": Harness._payload_edit,
    "payload-replace": Harness._payload_replace,
    "crafted": Harness._crafted,
    "geometry": Harness._geometry,
    "splice": Harness._splice,
    "cut": Harness._cut,
    "layer-list": Harness._layer_list,
    "texture": Harness._texture,
}
STRATEGIES = tuple(RECIPES)


def assert_true(cond: bool, what: Any) -> None:
    if not cond:
        raise AssertionError(f"wrong result: {what}")


# --------------------------------------------------------------------------------------------
# initial inputs, workers, driver


def initial_inputs(seed_dir: Path = SEED_DIR) -> list[bytes]:
    """One input per strategy and seed (plus the raw seeds): the corpus libFuzzer starts from."""
    seeds = sorted(Path(seed_dir).glob("*.vcm"))
    out = []
    rng = random.Random(0)
    for si, path in enumerate(seeds):
        out.append(bytes([0, rng.randrange(256)]) + path.read_bytes())
        for s in range(1, len(STRATEGIES)):
            tail = bytes(rng.randrange(256) for _ in range(48))
            out.append(bytes([s, rng.randrange(256), si]) + tail)
    return out


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """The random engine's mutator (no coverage feedback): a few byte-level edits."""
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(6)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[at % len(buf)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[at % len(buf)] = rng.randrange(256)
        elif op == 2:
            buf[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif op == 3:
            del buf[at : at + rng.randrange(1, 9)]
        elif op == 4 and len(buf) > 2:
            buf[rng.randrange(2)] = rng.randrange(256)  # strategy / selector bytes
        elif op == 5:
            buf += rng.randbytes(rng.randrange(1, 64))
    return bytes(buf)


def worker_main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["vcm_plugin"]):
            harness = Harness(out, args.worker, args.runs, args.seeds)
        lf_args = [
            sys.argv[0],
            f"-runs={args.runs}",
            f"-seed={args.seed}",
            f"-timeout={KILL_S}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-max_total_time={max(int(args.max_time), 1)}",
            "-max_len=8192",
            "-print_final_stats=1",
            "-reload=30",
            f"-artifact_prefix={out / 'findings'}/w{args.worker}-",
            str(out / "corpus"),
            str(out / "initial"),
        ]
        atheris.Setup(lf_args, harness.one)
        try:
            atheris.Fuzz()
        finally:
            harness.flush(force=True)
        return
    import faulthandler

    harness = Harness(out, args.worker, args.runs, args.seeds)
    rng = random.Random(args.seed)
    pool = [p.read_bytes() for p in sorted((out / "initial").glob("*"))]
    current = out / "workers" / f"w{args.worker}.current"
    deadline = time.monotonic() + args.max_time
    for i in range(args.runs):
        if time.monotonic() > deadline:
            break
        data = pool[i] if i < len(pool) else _mutate(rng.choice(pool), rng)
        if i % 64 == 0:
            current.write_bytes(data)
        faulthandler.dump_traceback_later(KILL_S, exit=True)
        harness.one(data)
        faulthandler.cancel_dump_traceback_later()
    harness.flush(force=True)


def _engine(name: str) -> str:
    if name != "auto":
        return name
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "random"
    return "atheris"


def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Start ``jobs`` workers, restart the ones that die, aggregate their statistics."""
    out = Path(args.out)
    for sub in ("initial", "corpus", "findings", "workers"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(initial_inputs(args.seeds)):
        (out / "initial" / f"seed-{i:03d}").write_bytes(data)
    engine = _engine(args.engine)
    t0 = time.monotonic()
    per_job = -(-args.runs // args.jobs)
    done: list[dict[str, Any]] = []
    deaths: list[dict[str, Any]] = []
    procs: dict[int, tuple[subprocess.Popen, int]] = {}
    next_id = 0

    def start(runs: int) -> None:
        nonlocal next_id
        left = args.max_time - (time.monotonic() - t0)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            str(next_id),
            "--out",
            str(out),
            "--runs",
            str(runs),
            "--seed",
            str(args.seed * 1000 + next_id + 1),
            "--max-time",
            str(int(left)),
            "--engine",
            engine,
            "--seeds",
            str(args.seeds),
        ]
        log = open(out / "workers" / f"w{next_id}.log", "wb")  # noqa: SIM115
        procs[next_id] = (
            subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT),
            runs,
        )
        next_id += 1

    for _ in range(args.jobs):
        start(per_job)
    while procs:
        time.sleep(1.0)
        for wid, (proc, runs) in list(procs.items()):
            if proc.poll() is None:
                continue
            del procs[wid]
            stats_path = out / "workers" / f"w{wid}.json"
            stats = json.loads(stats_path.read_text()) if stats_path.exists() else {"inputs": 0}
            done.append(stats)
            left = runs - stats["inputs"]
            tail = (out / "workers" / f"w{wid}.log").read_bytes()[-3000:].decode("utf8", "replace")
            if proc.returncode != 0 and left > 0:
                kind = (
                    "timeout"
                    if "timeout" in tail.lower()
                    else "rss"
                    if "out-of-memory" in tail or "rss limit" in tail
                    else "crash"
                )
                deaths.append(
                    {
                        "worker": wid,
                        "kind": kind,
                        "returncode": proc.returncode,
                        "log_tail": tail[-1200:],
                    }
                )
                print(
                    f"worker {wid} died ({kind}, rc {proc.returncode}); restarting", file=sys.stderr
                )
            if (
                left > 0
                and time.monotonic() - t0 < args.max_time - 5
                and (proc.returncode != 0 or engine == "random")
                and len(deaths) < 50
            ):
                start(left)
    return summarise(done, deaths, engine, time.monotonic() - t0, out)


def summarise(
    done: list[dict[str, Any]], deaths: list[dict[str, Any]], engine: str, seconds: float, out: Path
) -> dict[str, Any]:
    exceptions: Counter[str] = Counter()
    findings: dict[str, Any] = {}
    total = Counter()
    for s in done:
        exceptions.update(s.get("exceptions", {}))
        for key, f in s.get("findings", {}).items():
            agg = findings.setdefault(
                key, {"count": 0, "example": f["example"], "message": f["message"]}
            )
            agg["count"] += f["count"]
        for k in ("ok", "refused", "strategies", "warnings"):
            for name, n in s.get(k, {}).items():
                total[f"{k}.{name}"] += n
    slowest = max(done, key=lambda s: s.get("slowest_s", 0), default={})
    summary = {
        "engine": engine,
        "inputs": sum(s["inputs"] for s in done),
        "seconds": round(seconds, 1),
        "workers": len(done),
        "exceptions_by_type": dict(exceptions),
        "findings": findings,
        "worker_deaths": deaths,
        "hangs_over_5s": sum(s.get("hangs_over_5s", 0) for s in done),
        "inputs_over_1s": sum(s.get("over_1s", 0) for s in done),
        "max_rss_mb": max((s.get("max_rss_mb", 0) for s in done), default=0),
        "slowest_s": slowest.get("slowest_s", 0),
        "slowest_input": slowest.get("slowest_input", ""),
        "harness_errors": sum(s.get("harness_errors", 0) for s in done),
        "counts": dict(sorted(total.items())),
        "corpus_size": len(list((out / "corpus").glob("*"))),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def replay(path: Path, seed_dir: Path = SEED_DIR) -> None:
    """Run one saved input with tracebacks shown (for a finding or the slowest input)."""
    harness = Harness(None, 0, seed_dir=seed_dir)
    data = path.read_bytes()
    t0 = time.perf_counter()
    harness.one(data)
    print(
        json.dumps(
            {"seconds": round(time.perf_counter() - t0, 3), **harness.stats()},
            indent=1,
            default=str,
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1_000_000, help="fuzz inputs in total")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--out", default="runs/fuzz", help="output folder")
    ap.add_argument("--max-time", type=float, default=4 * 3600.0, help="seconds, then stop")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--seeds",
        type=Path,
        default=SEED_DIR,
        help="folder of valid .vcm streams to start from (default: tests/data/seeds)",
    )
    ap.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--replay", type=Path, default=None, help="run one saved input")
    args = ap.parse_args(argv)
    if args.replay is not None:
        replay(args.replay, args.seeds)
        return 0
    if args.worker is not None:
        worker_main(args)
        return 0
    summary = drive(args)
    brief = {k: v for k, v in summary.items() if k not in ("counts", "findings")}
    brief["findings"] = {k: v["count"] for k, v in summary["findings"].items()}
    print(json.dumps(brief, indent=1))
    return 1 if summary["findings"] or summary["hangs_over_5s"] or summary["worker_deaths"] else 0


if __name__ == "__main__":
    sys.exit(main())
