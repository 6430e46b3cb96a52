"""Data: datasets, their files, the typeface digits, images and photo cleaning.

The datasets (:mod:`~xwp.data.datasets`), their files (:mod:`~xwp.data.files`: IDX and
TMNIST CSV readers), the typeface digits (:mod:`~xwp.data.typeface`), image reading and the
28x28 layout (:mod:`~xwp.data.images`) and photo cleaning (:mod:`~xwp.data.cleaning`).

``from xwp.data import load_dataset, ImageSet, DATASETS`` is the public entry.
"""

from xwp.data.datasets import (
    DATASETS,
    FASHION_CLASSES,
    DatasetInfo,
    ImageSet,
    load_dataset,
    tmnist_from_bytes,
    tmnist_split,
)
from xwp.data.images import image_to_input, load_image, to_mnist_layout

__all__ = [
    "DATASETS",
    "FASHION_CLASSES",
    "DatasetInfo",
    "ImageSet",
    "image_to_input",
    "load_dataset",
    "load_image",
    "tmnist_from_bytes",
    "tmnist_split",
    "to_mnist_layout",
]
