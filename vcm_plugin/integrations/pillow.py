"""Pillow plugin for ``.vcm`` streams: importing this module registers the "VCM" format.

    import vcm_plugin.integrations.pillow  # registers the plugin
    from PIL import Image

    im = Image.open("photo.vcm")          # lazy: only the header is read
    im.info["num_layers"]                 # layers in the stream
    im.info["analytics_point"]            # the preset's analytics operating point
    im.layers = 1                         # optional, before the pixels are touched:
    im.load()                             # decode the semantic layer only (default: the
                                          # best point the file holds, as every Pillow
                                          # format; im.layers = "analytics": that point)
    Image.open("photo.png").save("photo.vcm", preset="tae", layers=None)

Fewer layers: set ``im.layers = k`` after ``Image.open`` and before any pixel access (the way
ICNS uses ``im.size``), or call ``open_vcm(path, layers=k)``. Only the bytes of those layers are
read from the file.

Behaves like Pillow's own formats where they have a rule:

* A file cut short inside the layers asked for raises ``OSError`` ("image file is truncated")
  on load, unless ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set: then the highest operating point
  whose layers are complete is decoded, with a ``TruncatedStreamWarning``.
* ``save`` refuses images with transparency (RGBA, LA, PA, P/L/RGB with a transparency key)
  with ``VCMError``, as ``Codec.encode`` refuses RGBA arrays and ``vcm encode`` refuses such
  files (the same rule, ``vcm_plugin.codec.imagefile``): the format has no alpha, and dropping
  it silently would change the picture. Gray, palette, CMYK and 16-bit images become RGB.
* ``save`` applies the EXIF orientation first (``ImageOps.exif_transpose``): the stream keeps
  no EXIF, so the pixels are stored upright.
* ``save`` keywords: ``preset`` (codec preset) and ``layers`` (keep only the first k layers).
  There is no ``quality``: one stream holds every operating point; ``quality=`` raises a
  ``VCMError`` that says so and names the valid options.
* ``draft()`` and ``reduce()`` do not pick fewer layers: every operating point decodes at full
  size, and fewer layers is not the cheap path on the default preset (its full point is one
  AVIF texture layer, ~0.04 s for a Kodak image; the latent points run the generator,
  ~2-3 s on a CPU). ``thumbnail()`` therefore decodes the point set in ``im.layers``.
"""

from __future__ import annotations

import os
import warnings
from typing import IO, Any

from PIL import ExifTags, Image, ImageFile, ImageOps

from vcm_plugin.codec.api import TruncatedStreamWarning
from vcm_plugin.codec.container import MAGIC as VCM_MAGIC
from vcm_plugin.codec.container import read_header
from vcm_plugin.codec.imagefile import pil_to_rgb
from vcm_plugin.codec.layerspec import fixed_layers
from vcm_plugin.codec.presets import DEFAULT_PRESET
from vcm_plugin.codec.streaminfo import StreamInfo
from vcm_plugin.errors import TruncatedStream, VCMError
from vcm_plugin.integrations._core import (
    ANALYTICS,
    decode_layers,
    get_codec,
    read_prefix,
    resolve_point,
)

__all__ = ["VCMImageFile", "open_vcm", "register"]

FORMAT = "VCM"
EXTENSION = ".vcm"
MIME = "image/x-vcm"
SAVE_OPTIONS = ("preset", "layers")


def _accept(prefix: bytes) -> bool:
    return prefix[: len(VCM_MAGIC)] == VCM_MAGIC


class VCMImageFile(ImageFile.ImageFile):
    """A ``.vcm`` stream opened by Pillow. ``layers``: which operating point ``load()``
    decodes (None, the default: the best the file holds, every layer, as a person opening an
    image with Pillow expects; ``"analytics"``: the preset's analytics point, which the
    framework integrations decode by default; k: point k). ``info``: ``analytics_point``,
    ``num_layers``, ``layer_bytes``, ``point_layers`` (per operating point, the layers it
    reads: in the generator preset a texture point is the texture chain up to it), and after
    loading ``layers_decoded``, ``preset``, ``backend``."""

    format = FORMAT
    format_description = "VCM scalable image for machine vision (vcm_plugin)"

    def _open(self) -> None:
        assert self.fp is not None
        try:
            self._vcm = read_header(self.fp)
        except VCMError as e:
            raise SyntaxError(f"not a valid VCM stream: {e}") from e
        header = self._vcm.header
        self._size = (header.width, header.height)
        self._mode = "RGB"
        self.layers: int | str | None = None
        self.info["analytics_point"] = resolve_point(ANALYTICS, header)
        self.info["num_layers"] = header.num_layers
        self.info["layer_bytes"] = list(header.lengths)
        self.info["point_layers"] = [
            header.point_layers(k) for k in range(1, header.num_layers + 1)
        ]
        self.tile = [ImageFile._Tile("vcm", (0, 0, *self.size), 0, None)]

    def load(self) -> Any:
        if self.tile:
            layers = fixed_layers(self.layers, "Pillow's load()", "im.layers")
            self.tile = [self.tile[0]._replace(args=(layers, self._vcm, self.info))]
        return super().load()


class _VCMDecoder(ImageFile.PyDecoder):
    """Reads the needed prefix of the stream from the file and decodes it with the codec."""

    _pulls_fd = True

    def decode(self, buffer: bytes | Image.SupportsArrayInterface) -> tuple[int, int]:
        assert self.fd is not None
        layers, probe, info = self.args
        header = probe.header
        self.fd.seek(len(probe.head))  # the header bytes were kept from _open
        blob = read_prefix(self.fd, layers, probe)
        wanted = resolve_point(layers, header)
        try:  # one look at the layers (CRCs) serves the check below and the decode
            meta: StreamInfo | None = get_codec().inspect(blob)
            points = meta.decodable_points
        except TruncatedStream:
            meta, points = None, []
        if wanted not in points:
            below = [k for k in points if k < wanted]
            if not ImageFile.LOAD_TRUNCATED_IMAGES:
                raise OSError(
                    f"image file is truncated (operating point {wanted} asked for; "
                    f"complete points: {points or 'none'}; set "
                    "ImageFile.LOAD_TRUNCATED_IMAGES to decode the highest of them)"
                )
            if not below:
                raise OSError("image file is truncated (no complete layer)")
            warnings.warn(
                f"VCM file truncated: decoded operating point {below[-1]} of the "
                f"{wanted} asked for",
                TruncatedStreamWarning,
                stacklevel=2,
            )
            layers = below[-1]
        assert meta is not None  # a stream with a complete point was inspected
        got = decode_layers(blob, layers, info=meta)  # a Codec decodes every preset
        arr = got.image
        info.update(layers_decoded=got.layers, preset=meta.preset, backend=meta.backend)
        if arr.shape[:2] != (self.state.ysize, self.state.xsize):
            raise VCMError(
                f"decoded size {arr.shape[1]}x{arr.shape[0]} does not match the "
                f"header's {self.state.xsize}x{self.state.ysize}"
            )
        self.set_as_raw(arr.tobytes())
        return -1, 0


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    params = im.encoderinfo
    unknown = sorted(set(params) - set(SAVE_OPTIONS))
    if unknown:
        hint = (
            " (a VCM stream holds every operating point: keep fewer with layers=k)"
            if "quality" in unknown
            else ""
        )
        raise VCMError(
            f"unknown VCM save options {unknown}{hint}; valid: {', '.join(SAVE_OPTIONS)}"
        )
    preset = params.get("preset", DEFAULT_PRESET)
    layers = fixed_layers(params.get("layers"), "save()")
    codec = get_codec(preset)
    if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        im = ImageOps.exif_transpose(im)  # the stream keeps no EXIF: store the pixels upright
    # the rule `vcm encode` and the data-set encoder apply: alpha refused, 16-bit scaled
    blob = codec.encode(pil_to_rgb(im, "image", im.format))
    if layers == ANALYTICS or (layers is not None and layers < codec.inspect(blob).num_layers):
        blob = codec.truncate(blob, layers=layers)
    fp.write(blob)


def open_vcm(
    fp: str | os.PathLike[str] | IO[bytes], layers: int | str | None = None
) -> Image.Image:
    """``Image.open`` for a ``.vcm`` stream, decoding operating point ``layers`` (default: the
    best the file holds, like ``Image.open``) and reading only the bytes of the layers it
    needs."""
    im = Image.open(fp, formats=[FORMAT])
    assert isinstance(im, VCMImageFile)
    im.layers = layers
    im.load()
    return im


def register() -> None:
    """Register the format (done on import; calling it again is harmless)."""
    Image.register_open(FORMAT, VCMImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)
    Image.register_decoder("vcm", _VCMDecoder)


register()
