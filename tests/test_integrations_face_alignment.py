"""face-alignment integration with the real ``face_alignment.FaceAlignment``.

The FAN weights (2DFAN4-11f355bf06.pth.tar) cannot be downloaded on these machines, so the
fixture writes a *randomly initialised* FAN checkpoint of that exact name into a temporary
``$TORCH_HOME/hub/checkpoints`` (where torch hub looks first). face-alignment then constructs
offline and runs its real code path end to end, but its landmarks are meaningless: these tests
check plumbing (shapes, which layers were decoded), never landmark accuracy. Face boxes come
from the ground-truth points of a 300-W HELEN image, or from dlib's HOG detector (no download).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VCM_SHARED_DIR", REPO.parent / "shared"))
HELEN = SHARED / "data" / "300w-helen-test"
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"  # face_alignment.api.models_urls['2DFAN-4']
pytestmark = [
    pytest.mark.needs_framework("face_alignment", "dlib"),
    pytest.mark.needs_shared("data/300w-helen-test"),
]


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    import torch
    from face_alignment.models import FAN

    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), ckpt / FAN_FILE)  # random weights: plumbing only
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="module")
def face():
    """One 300-W HELEN face (downscaled to keep the test fast) and its box from the GT points."""
    from PIL import Image

    meta = json.loads((HELEN / "landmarks.json").read_text())["images"]
    name = sorted(meta)[0]
    img = Image.open(HELEN / "images" / name).convert("RGB")
    pts = np.asarray(meta[name]["landmarks68"], dtype=np.float64) - 1.0  # 1-based -> 0-based
    scale = 320 / max(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    pts *= scale
    box = np.array([*pts.min(0), *pts.max(0)])
    return np.asarray(img), box


@pytest.fixture(scope="module")
def wrapper(torch_home):
    from face_alignment import FaceAlignment

    from vcm_plugin.integrations.face_alignment import VCMFaceAlignment

    w = VCMFaceAlignment.create(
        "2D", device="cpu", layers=1, face_detector="dlib", flip_input=False
    )
    assert isinstance(w.fa, FaceAlignment)
    return w


def test_face_alignment_stream_decodes_only_requested_layers(wrapper, face, tmp_path):
    from vcm_plugin import Codec

    img, box = face
    codec = Codec()
    blob = codec.encode(img)
    n = codec.inspect(blob).num_layers
    one_layer = codec.truncate(blob, layers=1)

    lm = wrapper.get_landmarks_from_image(blob, detected_faces=[box])
    assert isinstance(lm, list) and len(lm) == 1 and lm[0].shape == (68, 2)
    assert np.isfinite(lm[0]).all()
    assert wrapper.last_decode["source"] == "stream"
    assert wrapper.last_decode["layers"] == 1
    assert wrapper.last_decode["bytes"] == len(one_layer)
    if n > 1:
        assert len(one_layer) < len(blob)

    # from a file: only the header and layer 0 are read, and the pixels are the same
    path = tmp_path / "face.vcm"
    path.write_bytes(blob)
    from_file = wrapper.decode(path)
    assert wrapper.last_decode == {
        "layers": 1,
        "num_layers": 1,
        "bytes": len(one_layer),
        "source": "stream",
    }
    np.testing.assert_array_equal(from_file, codec.decode(blob, layers=1))


def test_face_alignment_image_roundtrip_and_all_layers(wrapper, face):
    from vcm_plugin.integrations.face_alignment import VCMFaceAlignment

    img, box = face
    decoded = wrapper.decode(img)  # an ordinary image is round-tripped at the wrapper's layers
    assert decoded.shape == img.shape and decoded.dtype == np.uint8
    assert wrapper.last_decode["source"] == "image" and wrapper.last_decode["layers"] == 1

    full = VCMFaceAlignment(wrapper.fa, layers=None)
    lm, scores, boxes = full.get_landmarks_from_image(
        img, detected_faces=[box], return_bboxes=True, return_landmark_score=True
    )
    assert lm[0].shape == (68, 2) and scores[0].shape == (68,) and len(boxes) == 1
    assert full.last_decode["layers"] == full.last_decode["num_layers"] >= 1


def test_face_alignment_with_dlib_detector(wrapper, face):
    img, _ = face
    # no boxes given: face_alignment runs its own (dlib HOG) detector on the decoded image
    result = wrapper.get_landmarks_from_image(img, return_bboxes=True)
    landmarks, _, boxes = result
    if landmarks is not None:  # the semantic layer may hide the face from HOG: both are valid
        assert len(landmarks) == len(boxes) >= 1
        assert all(lm.shape == (68, 2) for lm in landmarks)


def test_face_alignment_bad_options(wrapper):
    from vcm_plugin import VCMError
    from vcm_plugin.integrations.face_alignment import VCMFaceAlignment

    with pytest.raises(VCMError):
        VCMFaceAlignment(wrapper.fa, layers=(1, 2))
    with pytest.raises(VCMError):
        VCMFaceAlignment(object())
    with pytest.raises(VCMError):
        wrapper.get_landmarks_from_image(b"not a stream at all")
    with pytest.raises(VCMError):
        VCMFaceAlignment.create("4D")
