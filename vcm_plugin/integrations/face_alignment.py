"""face-alignment integration: 68-point landmarks from the layers a landmark model needs.

``VCMFaceAlignment`` wraps a ``face_alignment.FaceAlignment``. Given a ``.vcm`` stream (bytes or
a path) it reads and decodes only the first ``layers`` layers; given an ordinary image (array,
``PIL.Image`` or file) it round-trips it through the codec, so you measure what a receiver of
that operating point would get. Then it calls ``get_landmarks_from_image`` (optionally with
the face boxes you already have: the decode keeps the image size, so boxes stay valid).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vcm_plugin.codec.container import MAGIC as VCM_MAGIC
from vcm_plugin.codec.imagefile import pil_to_rgb, read_rgb
from vcm_plugin.codec.layerspec import fixed_layers
from vcm_plugin.codec.presets import DEFAULT_PRESET
from vcm_plugin.errors import VCMError
from vcm_plugin.integrations._core import (
    ANALYTICS,
    decode_layers,
    get_codec,
    layers_repr,
    read_stream,
    roundtrip_point,
)

__all__ = ["VCMFaceAlignment"]


def _is_stream_path(path: Path) -> bool:
    if path.suffix.lower() == ".vcm":
        return True
    try:
        with path.open("rb") as f:
            return f.read(len(VCM_MAGIC)) == VCM_MAGIC
    except OSError:
        return False


class VCMFaceAlignment:
    """Landmarks on the VCM decode of an image or stream.

    Args:
        fa: a constructed ``face_alignment.FaceAlignment`` (build it as usual; see ``create``).
        layers: operating point decoded ("analytics" = the preset's analytics point, the
            default; 1 = semantic layer only; None = all). A fixed count: landmark
            evaluation is per operating point.
        preset: codec preset used to round-trip ordinary images (streams carry their own).

    After each call ``last_decode`` holds ``layers`` (decoded), ``bytes`` (size of the decoded
    stream prefix) and ``source`` ("stream" or "image").
    """

    def __init__(
        self, fa: Any, layers: int | str | None = ANALYTICS, preset: str = DEFAULT_PRESET
    ) -> None:
        if not hasattr(fa, "get_landmarks_from_image"):
            raise VCMError(f"fa must be a face_alignment.FaceAlignment, got {type(fa).__name__}")
        spec = fixed_layers(layers, "VCMFaceAlignment")
        self.fa = fa
        self.layers = spec
        self.preset = preset
        self.last_decode: dict[str, Any] = {}
        get_codec(preset)

    @classmethod
    def create(
        cls,
        landmarks_type: Any = "2D",
        device: str = "cpu",
        layers: int | str | None = ANALYTICS,
        preset: str = DEFAULT_PRESET,
        **fa_kwargs: Any,
    ) -> VCMFaceAlignment:
        """Build the ``FaceAlignment`` too. ``landmarks_type``: "2D", "2.5D", "3D" or the enum;
        ``fa_kwargs`` go to ``FaceAlignment`` (``face_detector``, ``flip_input`` ...);
        ``compile`` defaults to False (torch.compile costs minutes on a CPU)."""
        import face_alignment

        names = {"2D": "TWO_D", "2.5D": "TWO_HALF_D", "3D": "THREE_D"}
        if isinstance(landmarks_type, str):
            if landmarks_type.upper() not in names:
                raise VCMError(
                    f"landmarks_type must be one of {list(names)}, got {landmarks_type!r}"
                )
            landmarks_type = getattr(face_alignment.LandmarksType, names[landmarks_type.upper()])
        fa_kwargs.setdefault("compile", False)
        fa = face_alignment.FaceAlignment(landmarks_type, device=device, **fa_kwargs)
        return cls(fa, layers=layers, preset=preset)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layers={layers_repr(self.layers)}, "
            f"preset={self.preset!r}, fa={type(self.fa).__name__})"
        )

    def __getattr__(self, name: str) -> Any:
        # everything else (face_detector, get_landmarks_from_batch ...) is the wrapped object's
        if name == "fa":
            raise AttributeError(name)
        return getattr(self.fa, name)

    def decode(self, source: Any) -> np.ndarray:
        """The RGB uint8 image the landmark model will see for ``source``."""
        if isinstance(source, (bytes, bytearray, memoryview)) or (
            isinstance(source, (str, os.PathLike)) and _is_stream_path(Path(source))
        ):
            got = decode_layers(read_stream(source, self.layers), self.layers)
            kind = "stream"
        else:
            got = roundtrip_point(self._as_rgb(source), self.layers, self.preset)
            kind = "image"
        self.last_decode = {
            "layers": got.layers,
            "num_layers": got.num_layers,
            "bytes": got.bytes,
            "source": kind,
        }
        return got.image

    @staticmethod
    def _as_rgb(source: Any) -> np.ndarray:
        if isinstance(source, np.ndarray):
            return source
        import torch
        from PIL import Image

        if isinstance(source, Image.Image):  # the package's one rule (codec.imagefile)
            return pil_to_rgb(source)
        if isinstance(source, (str, os.PathLike)):
            return read_rgb(source, orient=False)  # as face_alignment's own reader: no EXIF
        if isinstance(source, torch.Tensor):  # C x H x W, as face_alignment accepts
            arr = source.detach().cpu().numpy()
            return arr.transpose(1, 2, 0) if arr.ndim == 3 and arr.shape[0] == 3 else arr
        raise VCMError(f"expected an image, a .vcm stream or a path, got {type(source).__name__}")

    def get_landmarks_from_image(
        self,
        image_or_stream: Any,
        detected_faces: list[Any] | None = None,
        return_bboxes: bool = False,
        return_landmark_score: bool = False,
    ) -> Any:
        """``FaceAlignment.get_landmarks_from_image`` on the decoded image; same returns."""
        img = self.decode(image_or_stream)
        return self.fa.get_landmarks_from_image(
            img,
            detected_faces=detected_faces,
            return_bboxes=return_bboxes,
            return_landmark_score=return_landmark_score,
        )

    get_landmarks = get_landmarks_from_image
