"""Datasets as ``(N, 1, 28, 28)`` float32 images in [0, 1] (background 0) with int64 labels.

``load_dataset(name, split, data_dir=None)`` reads one of :data:`DATASETS`:

- ``typeface``: digits rendered from the machine's fonts (offline, the default);
- ``digits``: scikit-learn's 8x8 handwritten digits, scaled to 28x28 (offline);
- ``mnist`` and ``fashion-mnist``: through torchvision, from a torchvision-layout folder
  (read only) or downloaded to the cache;
- ``tmnist``: the Typeface-MNIST CSV from Kaggle.

Fonts and rendering live in :mod:`xwp.data.typeface`, image reading in :mod:`xwp.data.images`, the
IDX and CSV readers in :mod:`xwp.data.files`; their public names are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xwp.data.files import read_tmnist_cached, read_tmnist_csv, read_torchvision
from xwp.data.images import IMAGE_FORMATS, image_to_input, load_image, to_gray, to_mnist_layout
from xwp.data.typeface import DIGITS, SPLITS, build_typeface, font_files, typeface_arrays
from xwp.errors import XWPError
from xwp.models import check_seed
from xwp.safety import is_regular_file

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass
class ImageSet:
    """Images ``(N, 1, 28, 28)`` float32 in [0, 1], labels ``(N,)`` int64, class names.

    ``groups`` names the font of each image where there is one (typeface, tmnist).
    Indexing gives ``(image, label)`` pairs, so an ImageSet works as a torch Dataset.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    groups: list[str] | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        """Number of images."""
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image (1, 28, 28), label)``."""
        return self.images[i], self.labels[i]

    def subset(self, indices) -> ImageSet:
        """The images at ``indices`` (a sequence or tensor of ints)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        groups = [self.groups[i] for i in idx.tolist()] if self.groups else None
        return ImageSet(
            self.images[idx], self.labels[idx], self.classes, self.name, self.split, groups, dict(self.info)
        )

    def sample(self, n: int, seed: int = 0) -> ImageSet:
        """``n`` images drawn without replacement with a seeded generator."""
        if n > len(self):
            raise XWPError(f"asked for {n} images but the {self.name} {self.split} split has {len(self)}")
        if n < 1:
            raise XWPError(f"the number of images must be at least 1, got {n}")
        gen = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=gen)[:n].sort().values)


@dataclass(frozen=True)
class DatasetInfo:
    """One entry of :data:`DATASETS`."""

    name: str
    label: str
    description: str
    loader: Callable[[str, str | None, int], ImageSet]
    needs_path: bool = False
    offline: bool = True


DATASETS: dict[str, DatasetInfo] = {}


def _register(name: str, label: str, description: str, needs_path: bool = False, offline: bool = True):
    """Decorator adding a loader ``loader(split, data_dir, seed) -> ImageSet`` to DATASETS."""

    def wrap(loader):
        DATASETS[name] = DatasetInfo(name, label, description, loader, needs_path, offline)
        return loader

    return wrap


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None, seed: int = 0) -> ImageSet:
    """Load a dataset split as an :class:`ImageSet`.

    Args:
        name: one of :data:`DATASETS` (``typeface``, ``digits``, ``mnist``,
            ``fashion-mnist``, ``tmnist``).
        split: ``"train"`` or ``"test"``.
        data_dir: for ``mnist``/``fashion-mnist`` a folder in torchvision's layout
            (``DIR/FashionMNIST/raw/*.gz``), never written to; for ``tmnist`` the CSV
            file or its folder; for ``typeface`` an optional folder of fonts to use
            instead of the machine's.
        seed: seed of the typeface rendering and of the font-based splits.
    """
    if not isinstance(name, str):
        raise XWPError(f"the dataset name must be a text, got {type(name).__name__}")
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise XWPError(f"data_dir must be a path, got {type(data_dir).__name__}")
    seed = check_seed(seed)
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise XWPError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise XWPError(f"split must be 'train' or 'test', got {str(split)[:40]!r}")
    return DATASETS[key].loader(split, None if data_dir in (None, "") else str(data_dir), seed)


__all__ = [
    "DATASETS",
    "DIGITS",
    "FASHION_CLASSES",
    "IMAGE_FORMATS",
    "SPLITS",
    "DatasetInfo",
    "ImageSet",
    "to_gray",
    "build_typeface",
    "font_files",
    "image_to_input",
    "load_dataset",
    "load_image",
    "read_tmnist_csv",
    "tmnist_from_bytes",
    "tmnist_split",
    "to_mnist_layout",
]


@_register(
    "typeface",
    "Typeface digits (built in)",
    "Digits 0-9 rendered from every font on this machine, MNIST layout; test fonts are unseen.",
)
def _load_typeface(split: str, data_dir: str | None, seed: int) -> ImageSet:
    """Typeface digits from the cache, built on first use."""
    arrays = typeface_arrays(split, data_dir, seed)
    images = torch.from_numpy(arrays[f"{split}_images"].astype(np.float32) / 255.0)[:, None]
    groups = [str(g) for g in arrays[f"{split}_groups"]]
    info = {"fonts": len(arrays["fonts"]), "families": len({g.split(" (")[0] for g in groups})}
    return ImageSet(images, torch.from_numpy(arrays[f"{split}_labels"]), DIGITS, "typeface", split, groups, info)


# --------------------------------------------------------------------------- scikit-learn digits


@_register(
    "digits",
    "scikit-learn digits (8x8, built in)",
    "1,797 handwritten digits from scikit-learn, scaled from 8x8 to MNIST layout; 75/25 split.",
)
def _load_digits(split: str, data_dir: str | None, seed: int) -> ImageSet:
    """scikit-learn's bundled digits, upsampled and laid out like MNIST."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    idx_train, idx_test = train_test_split(
        np.arange(len(bunch.target)), test_size=0.25, random_state=0, stratify=bunch.target
    )
    idx = idx_train if split == "train" else idx_test
    images = []
    for i in idx:
        small = Image.fromarray((bunch.images[i] / 16.0).astype(np.float32))
        images.append(to_mnist_layout(np.asarray(small.resize((32, 32), Image.Resampling.BILINEAR))))
    x = torch.from_numpy(np.stack(images))[:, None]
    return ImageSet(x, torch.from_numpy(bunch.target[idx].astype(np.int64)), DIGITS, "digits", split)


# --------------------------------------------------------------------------- torchvision datasets


def _tv_set(name: str, cls_name: str, folder: str, classes: list[str], split: str, data_dir: str | None) -> ImageSet:
    """An ImageSet from a torchvision MNIST-like dataset."""
    data, targets = read_torchvision(cls_name, folder, split, data_dir)
    images = data.to(torch.float32).div_(255.0)[:, None]
    return ImageSet(images, targets.to(torch.int64), classes, name, split, info={"data_dir": data_dir})


@_register(
    "fashion-mnist",
    "Fashion-MNIST",
    "Zalando's 70,000 clothing images (60k train / 10k test).",
    needs_path=True,
    offline=False,
)
def _load_fashion(split: str, data_dir: str | None, seed: int) -> ImageSet:
    """Fashion-MNIST through torchvision."""
    return _tv_set("fashion-mnist", "FashionMNIST", "FashionMNIST", FASHION_CLASSES, split, data_dir)


@_register(
    "mnist", "MNIST", "LeCun et al.'s 70,000 handwritten digits (60k train / 10k test).", needs_path=True, offline=False
)
def _load_mnist(split: str, data_dir: str | None, seed: int) -> ImageSet:
    """MNIST through torchvision."""
    return _tv_set("mnist", "MNIST", "MNIST", DIGITS, split, data_dir)


# --------------------------------------------------------------------------- TMNIST CSV


@_register(
    "tmnist",
    "TMNIST (Typeface-MNIST CSV)",
    "Kaggle's TMNIST_Data.csv: 29,900 digits in 2,990 Google fonts; split 80/20 by font.",
    needs_path=True,
    offline=True,
)
def _load_tmnist(split: str, data_dir: str | None, seed: int) -> ImageSet:
    """TMNIST from its CSV, split by font family so test fonts are unseen."""
    if data_dir is None:
        raise XWPError(
            "tmnist needs the path of TMNIST_Data.csv (download it from Kaggle: "
            "saurabhvyawahare/tmnist-typeface-mnist) passed as --data-dir or data_dir"
        )
    path = Path(data_dir)
    if path.is_dir():
        path = path / "TMNIST_Data.csv"
    if not is_regular_file(path):
        raise XWPError(f"TMNIST file {path} does not exist or is not a regular file")
    stat = path.stat()
    arrays = read_tmnist_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return tmnist_split(*arrays, split=split, seed=seed, info={"file": str(path)})


def tmnist_from_bytes(data: bytes, split: str = "train", seed: int = 0) -> ImageSet:
    """A TMNIST split from the bytes of an uploaded CSV (plain or .gz), parsed in memory, never stored."""
    if split not in SPLITS:
        raise XWPError(f"split must be 'train' or 'test', got {split!r}")
    return tmnist_split(*read_tmnist_csv(data), split=split, seed=seed, info={"file": "(upload)"})


def tmnist_split(
    images: np.ndarray, labels: np.ndarray, names: np.ndarray, split: str, seed: int = 0, info: dict | None = None
) -> ImageSet:
    """One split of parsed TMNIST rows: 20% of the font families (at least one) are the test fonts."""
    families = np.asarray([n.split("-")[0] for n in names])
    unique = np.unique(families)
    if len(unique) < 2:
        raise XWPError(
            f"the CSV has fonts of only {len(unique)} family; at least 2 are needed, since the split is by font "
            "(names like Family-Style in the 'names' column)"
        )
    rng = np.random.default_rng(seed)
    test_fams = set(unique[rng.permutation(len(unique))[: max(1, round(0.2 * len(unique)))]])
    keep = np.asarray([(f in test_fams) == (split == "test") for f in families])
    x = torch.from_numpy(images[keep].astype(np.float32) / 255.0)[:, None]
    return ImageSet(x, torch.from_numpy(labels[keep]), DIGITS, "tmnist", split, list(names[keep]), dict(info or {}))
