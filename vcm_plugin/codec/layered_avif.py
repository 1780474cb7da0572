"""Layered (progressive) AVIF through the libavif that Pillow's wheel ships, called with ctypes.

One AV1 image item holds up to four layers; each is the same picture at a higher quality,
predicted from the layer before it (libaom codes it as an inter frame against that layer's
reconstruction). So a layer costs only what it adds, and decoding layer ``j`` needs the bytes
of layers ``0..j`` and nothing after them. libavif writes the file header (``ftyp``/``meta``)
first and the layers' data after it in layer order; the texture chain stores the file cut at
the layer boundaries (``avifDecoderNthImageMaxExtent``), one piece per stream layer.

Why ctypes: neither Pillow nor imagecodecs exposes libavif's layered encoder
(``extraLayerCount``), and Pillow's manylinux/macOS wheels already carry a libavif 1.x with
libaom (encoder) and dav1d (decoder); binding that library adds no dependency and no build
step. Only the leading fields of libavif's structs are declared: libavif 1.x appends fields
at the end of ``avifEncoder``/``avifDecoder`` ("Version 1.0.0 ends here" in ``avif.h``), so
these offsets hold for every 1.x release. ``library()`` refuses any other major version.

Determinism: one libaom thread (its bytes depend on the thread count); AV1 decoding is
bit-exact, so every machine decodes a layer to the same pixels.
"""

from __future__ import annotations

import ctypes as C
import ctypes.util
import functools
import glob
import os
import struct

import numpy as np

from vcm_plugin.errors import VCMError

#: AV1 allows at most four layers (operating points) in one image item.
MAX_LAYERS = 4
_CODEC_AOM = 1
_RGB_FORMAT_RGB = 0
_PIXEL_FORMATS = {"444": 1, "420": 3}
_RESULT_OK = 0


class _RGBImage(C.Structure):
    _fields_ = [
        ("width", C.c_uint32),
        ("height", C.c_uint32),
        ("depth", C.c_uint32),
        ("format", C.c_int),
        ("chromaUpsampling", C.c_int),
        ("chromaDownsampling", C.c_int),
        ("avoidLibYUV", C.c_int),
        ("ignoreAlpha", C.c_int),
        ("alphaPremultiplied", C.c_int),
        ("isFloat", C.c_int),
        ("maxThreads", C.c_int),
        ("pixels", C.c_void_p),
        ("rowBytes", C.c_uint32),
    ]


class _Encoder(C.Structure):  # the leading fields of avifEncoder (libavif 1.x)
    _fields_ = [
        ("codecChoice", C.c_int),
        ("maxThreads", C.c_int),
        ("speed", C.c_int),
        ("keyframeInterval", C.c_int),
        ("timescale", C.c_uint64),
        ("repetitionCount", C.c_int),
        ("extraLayerCount", C.c_uint32),
        ("quality", C.c_int),
    ]


class _Decoder(C.Structure):  # the leading fields of avifDecoder (libavif 1.x)
    _fields_ = [
        ("codecChoice", C.c_int),
        ("maxThreads", C.c_int),
        ("requestedSource", C.c_int),
        ("allowProgressive", C.c_int),
        ("allowIncremental", C.c_int),
        ("ignoreExif", C.c_int),
        ("ignoreXMP", C.c_int),
        ("imageSizeLimit", C.c_uint32),
        ("imageDimensionLimit", C.c_uint32),
        ("imageCountLimit", C.c_uint32),
        ("strictFlags", C.c_uint32),
        ("image", C.c_void_p),
        ("imageIndex", C.c_int),
        ("imageCount", C.c_int),
    ]


class _RWData(C.Structure):
    _fields_ = [("data", C.c_void_p), ("size", C.c_size_t)]


class _Extent(C.Structure):
    _fields_ = [("offset", C.c_uint64), ("size", C.c_size_t)]


def _candidates() -> list[str]:
    """Pillow's bundled libavif first (the one its AVIF plugin uses), then the system's."""
    import PIL

    root = os.path.dirname(PIL.__file__)
    found = sorted(glob.glob(os.path.join(root, os.pardir, "pillow.libs", "libavif*")))
    found += sorted(glob.glob(os.path.join(root, ".dylibs", "libavif*")))
    system = ctypes.util.find_library("avif")
    return found + ([system] if system else [])


@functools.cache
def library() -> C.CDLL:
    """The loaded libavif with its signatures declared; VCMError when none usable is here."""
    tried = []
    for path in _candidates():
        try:
            lib = C.CDLL(path)
        except OSError as exc:
            tried.append(f"{path}: {exc}")
            continue
        lib.avifVersion.restype = C.c_char_p
        version = lib.avifVersion().decode()
        if not version.startswith("1."):
            tried.append(f"{path}: libavif {version}, need 1.x")
            continue
        names = C.create_string_buffer(256)
        lib.avifCodecVersions(names)
        if b"aom" not in names.value:
            tried.append(f"{path}: libavif {version} has no aom encoder ({names.value.decode()})")
            continue
        _declare(lib)
        return lib
    raise VCMError(
        "layered AVIF needs libavif 1.x with libaom, as Pillow's Linux and macOS wheels ship it; "
        + ("none found" if not tried else "; ".join(tried))
    )


def _declare(lib: C.CDLL) -> None:
    p = C.c_void_p
    enc, dec = C.POINTER(_Encoder), C.POINTER(_Decoder)
    signatures = {
        "avifImageCreate": (p, [C.c_uint32, C.c_uint32, C.c_uint32, C.c_int]),
        "avifImageDestroy": (None, [p]),
        "avifRGBImageSetDefaults": (None, [C.POINTER(_RGBImage), p]),
        "avifImageRGBToYUV": (C.c_int, [p, C.POINTER(_RGBImage)]),
        "avifImageYUVToRGB": (C.c_int, [p, C.POINTER(_RGBImage)]),
        "avifEncoderCreate": (enc, []),
        "avifEncoderDestroy": (None, [enc]),
        "avifEncoderAddImage": (C.c_int, [enc, p, C.c_uint64, C.c_uint32]),
        "avifEncoderFinish": (C.c_int, [enc, C.POINTER(_RWData)]),
        "avifRWDataFree": (None, [C.POINTER(_RWData)]),
        "avifDecoderCreate": (dec, []),
        "avifDecoderDestroy": (None, [dec]),
        "avifDecoderSetIOMemory": (C.c_int, [dec, p, C.c_size_t]),
        "avifDecoderParse": (C.c_int, [dec]),
        "avifDecoderNthImage": (C.c_int, [dec, C.c_uint32]),
        "avifDecoderNthImageMaxExtent": (C.c_int, [dec, C.c_uint32, C.POINTER(_Extent)]),
        "avifResultToString": (C.c_char_p, [C.c_int]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


def _check(result: int, what: str) -> None:
    if result != _RESULT_OK:
        raise VCMError(f"{what}: {library().avifResultToString(result).decode()}")


def _yuv_image(pixels: np.ndarray, pixel_format: str) -> int:
    lib = library()
    h, w, _ = pixels.shape
    image = lib.avifImageCreate(w, h, 8, _PIXEL_FORMATS[pixel_format])
    if not image:
        raise MemoryError("avifImageCreate failed")
    rgb = _RGBImage()
    lib.avifRGBImageSetDefaults(C.byref(rgb), image)
    rgb.format = _RGB_FORMAT_RGB
    rgb.pixels = pixels.ctypes.data
    rgb.rowBytes = w * 3
    try:
        _check(lib.avifImageRGBToYUV(image, C.byref(rgb)), "RGB to YUV")
    except VCMError:
        lib.avifImageDestroy(image)
        raise
    return image


def encode(
    pixels: np.ndarray,
    qualities: tuple[int, ...],
    speed: int,
    pixel_format: str,
    threads: int = 1,
    first: np.ndarray | None = None,
) -> list[bytes]:
    """(H, W, 3) uint8 -> the layered AVIF file cut into one piece per layer: piece 0 holds the
    file header (and the total length, 4 bytes big-endian, first), piece ``j`` the data of
    layer ``j``. ``qualities`` (libavif's 0..100 scale), one per layer, rising. ``first``: the
    picture layer 0 codes when it is not ``pixels`` (same size; the layers after it code
    ``pixels``, predicted from layer 0's reconstruction as always). ``threads``: libaom's; the
    bytes depend on it, so the texture chain keeps one (the ablation measures two). libavif
    codes speeds 7 and up with libaom's real-time mode."""
    if not 1 <= len(qualities) <= MAX_LAYERS:
        raise VCMError(f"layered AVIF holds 1 to {MAX_LAYERS} layers, got {len(qualities)}")
    if first is not None and first.shape != pixels.shape:
        raise VCMError(f"layered AVIF: first layer's picture {first.shape} is not {pixels.shape}")
    lib = library()
    pictures = [pixels] if first is None else [first, pixels]  # layer 0's, then the rest's
    images: list[int] = []
    encoder = lib.avifEncoderCreate()
    output = _RWData()
    try:
        for picture in pictures:  # one at a time, so a failed conversion frees the ones before
            images.append(_yuv_image(np.ascontiguousarray(picture, dtype=np.uint8), pixel_format))
        settings = encoder.contents
        settings.codecChoice = _CODEC_AOM
        settings.maxThreads = threads
        settings.speed = speed
        settings.extraLayerCount = len(qualities) - 1
        for j, quality in enumerate(qualities):
            settings.quality = quality
            image = images[0] if j == 0 else images[-1]
            _check(lib.avifEncoderAddImage(encoder, image, 1, 0), "layered AVIF encode")
        _check(lib.avifEncoderFinish(encoder, C.byref(output)), "layered AVIF encode")
        data = C.string_at(output.data, output.size)
    finally:
        lib.avifRWDataFree(C.byref(output))
        lib.avifEncoderDestroy(encoder)
        for image in images:
            lib.avifImageDestroy(image)
    ends = [offset + size for offset, size in _extents(data, len(qualities))]
    ends[-1] = len(data)
    if ends != sorted(ends) or ends[0] <= 0:
        raise VCMError(f"layered AVIF: layer data out of order ({ends})")
    starts = [0, *ends[:-1]]
    pieces = [data[a:b] for a, b in zip(starts, ends, strict=True)]
    pieces[0] = struct.pack(">I", len(data)) + pieces[0]
    return pieces


def _open(data: bytes, layers: int | None, width: int = 0, height: int = 0):
    lib = library()
    decoder = lib.avifDecoderCreate()
    settings = decoder.contents
    settings.allowProgressive = 1
    settings.maxThreads = 1
    if width:
        settings.imageDimensionLimit = max(width, height)
        settings.imageSizeLimit = width * height
    buffer = C.create_string_buffer(data, len(data))
    try:
        _check(lib.avifDecoderSetIOMemory(decoder, buffer, len(data)), "layered AVIF")
        _check(lib.avifDecoderParse(decoder), "layered AVIF")
        if layers is not None and settings.imageCount != layers:
            raise VCMError(f"layered AVIF has {settings.imageCount} layers, expected {layers}")
    except BaseException:
        lib.avifDecoderDestroy(decoder)
        raise
    return decoder, buffer


def _extents(data: bytes, layers: int) -> list[tuple[int, int]]:
    decoder, _buffer = _open(data, layers)
    try:
        out = []
        for k in range(layers):
            extent = _Extent()
            _check(
                library().avifDecoderNthImageMaxExtent(decoder, k, C.byref(extent)),
                "layered AVIF",
            )
            out.append((extent.offset, extent.size))
        return out
    finally:
        library().avifDecoderDestroy(decoder)


def decode(pieces: list[bytes], layers: int, width: int, height: int) -> np.ndarray:
    """Layer ``len(pieces) - 1`` of a ``layers``-layer file from its first pieces ->
    (H, W, 3) uint8. The absent tail of the file is zero-filled: decoding a layer reads no byte
    of the layers after it. VCMError on anything malformed or of another size."""
    if not 1 <= len(pieces) <= layers <= MAX_LAYERS or len(pieces[0]) < 4:
        raise VCMError("layered AVIF: malformed layer pieces")
    (total,) = struct.unpack(">I", pieces[0][:4])
    data = pieces[0][4:] + b"".join(pieces[1:])
    # above any lossy AV1 coding of this image (raw 8-bit 4:4:4 is 3 bytes a pixel): what a
    # hostile length can make the zero-filled tail allocate
    bound = 4 * width * height + (1 << 20)
    if not len(data) <= total <= bound:
        raise VCMError(f"layered AVIF: declared length {total} does not fit its pieces")
    data += bytes(total - len(data))
    lib = library()
    decoder, _buffer = _open(data, layers, width, height)
    try:
        _check(lib.avifDecoderNthImage(decoder, len(pieces) - 1), "layered AVIF decode")
        rgb = _RGBImage()
        lib.avifRGBImageSetDefaults(C.byref(rgb), decoder.contents.image)
        if (rgb.width, rgb.height) != (width, height):
            raise VCMError(f"layered AVIF is {rgb.width}x{rgb.height}, image is {width}x{height}")
        rgb.format = _RGB_FORMAT_RGB
        rgb.depth = 8
        out = np.empty((height, width, 3), dtype=np.uint8)
        rgb.pixels = out.ctypes.data
        rgb.rowBytes = width * 3
        _check(lib.avifImageYUVToRGB(decoder.contents.image, C.byref(rgb)), "YUV to RGB")
        return out
    finally:
        lib.avifDecoderDestroy(decoder)
