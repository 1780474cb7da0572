"""torchvision reads a folder tree of ``.vcm`` files (issue 18): ``VCMImageFolder`` and the
by-hand ``DatasetFolder`` recipe, through a ``DataLoader`` with two worker processes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

CLASSES = ("cat", "dog")
pytestmark = pytest.mark.needs_framework("torchvision")


@pytest.fixture(scope="module")
def vcm_tree(tmp_path_factory, photo) -> Path:
    """root/cat/{0,1}.vcm, root/dog/{0,1}.vcm: 48x64 crops of a real photo (fast preset)."""
    from vcm_plugin import Codec

    root = tmp_path_factory.mktemp("tree")
    codec = Codec("fast")
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(2):
            crop = np.ascontiguousarray(photo[40 * c + 20 * i :][:48, :64])
            (root / name / f"{i}.vcm").write_bytes(codec.encode(crop))
    return root


def test_stock_imagefolder_finds_no_vcm_files(vcm_tree):
    from torchvision.datasets import ImageFolder

    with pytest.raises(FileNotFoundError, match="Found no valid file"):
        ImageFolder(str(vcm_tree))


def test_vcm_image_folder_through_dataloader_workers(vcm_tree):
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    from vcm_plugin import Codec
    from vcm_plugin.integrations.torchvision import VCMImageFolder

    ds = VCMImageFolder(vcm_tree, layers=2, transform=T.PILToTensor())
    assert ds.classes == list(CLASSES) and len(ds) == 4
    assert repr(ds.loader) == "VCMLoader(layers=2)"
    pickle.loads(pickle.dumps(ds))  # what a spawn worker receives
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    images, labels = zip(*loader, strict=True)
    assert torch.cat(labels).tolist() == [0, 0, 1, 1]
    assert all(x.shape == (2, 3, 48, 64) and x.dtype == torch.uint8 for x in images)
    path = ds.samples[0][0]
    expect = Codec().decode(Path(path).read_bytes(), layers=2)
    np.testing.assert_array_equal(images[0][0].permute(1, 2, 0).numpy(), expect)


def test_datasetfolder_recipe_with_the_pillow_plugin(vcm_tree):
    """The by-hand recipe the module docstring and the README give."""
    from torch.utils.data import DataLoader
    from torchvision import transforms as T
    from torchvision.datasets import DatasetFolder
    from torchvision.datasets.folder import default_loader

    import vcm_plugin.integrations.pillow  # noqa: F401  (registers the format)

    ds = DatasetFolder(
        str(vcm_tree), loader=default_loader, extensions=(".vcm",), transform=T.PILToTensor()
    )
    labels = [int(y) for _, y in DataLoader(ds, batch_size=1, num_workers=2)]
    assert labels == [0, 0, 1, 1]


def test_bad_layers_raise_vcmerror(vcm_tree):
    from vcm_plugin import VCMError
    from vcm_plugin.integrations.torchvision import VCMImageFolder

    with pytest.raises(VCMError, match="layers"):
        VCMImageFolder(vcm_tree, layers=0)
