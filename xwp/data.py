"""Datasets as ``(N, 1, 28, 28)`` float32 images in [0, 1] (background 0) with int64 labels.

``load_dataset(name, split, data_dir=None)`` reads one of :data:`DATASETS`:

- ``typeface``: digits rendered from the machine's fonts (offline, the default);
- ``digits``: scikit-learn's 8x8 handwritten digits, scaled to 28x28 (offline);
- ``mnist`` and ``fashion-mnist``: through torchvision, from a torchvision-layout folder
  (read only) or downloaded to the cache;
- ``tmnist``: the Typeface-MNIST CSV from Kaggle.

Also here: :func:`to_mnist_layout`, the MNIST preprocessing (crop, fit into 20x20, centre
of mass at the centre of 28x28) shared by the typeface renderer, the drawing canvas and
uploaded images, and :func:`load_image`, a careful image reader.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import math
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xwp.config import LIMITS, atomic_write, cache_dir
from xwp.errors import XWPError

SPLITS = ("train", "test")
DIGITS = [str(d) for d in range(10)]
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
TYPEFACE_VERSION = 1


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
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise XWPError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise XWPError(f"split must be 'train' or 'test', got {split!r}")
    return DATASETS[key].loader(split, None if data_dir in (None, "") else str(data_dir), seed)


# --------------------------------------------------------------------------- preprocessing


def to_mnist_layout(
    img: np.ndarray, box: int = 20, scale: float = 1.0, jitter: tuple[int, int] = (0, 0), threshold: float = 0.05
) -> np.ndarray:
    """MNIST preprocessing of a white-on-black image ``(H, W)`` in [0, 1].

    Crop to the ink, resize so the longer side fills ``box * scale`` pixels (aspect
    kept, antialiased), then paste into 28x28 with the centre of mass at the centre
    (plus an optional integer ``jitter``). Returns float32 ``(28, 28)`` with maximum 1.
    """
    from PIL import Image

    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise XWPError(f"expected a grayscale image, got shape {img.shape}")
    peak = float(img.max()) if img.size else 0.0
    if not np.isfinite(img).all() or peak <= 0:
        raise XWPError("the image is blank: draw or upload a digit (light strokes on a dark background)")
    ink = img > threshold * peak
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    crop = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] / peak
    h, w = crop.shape
    side = max(1.0, box * scale)
    f = side / max(h, w)
    new_h, new_w = max(1, round(h * f)), max(1, round(w * f))
    small = np.asarray(Image.fromarray(crop).resize((new_w, new_h), Image.Resampling.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0, None)
    if small.max() <= 0:
        small = np.ones_like(small)
    small /= small.max()
    ys, xs = np.mgrid[0:new_h, 0:new_w]
    mass = small.sum()
    cy, cx = (ys * small).sum() / mass, (xs * small).sum() / mass
    top = int(round(13.5 - cy)) + jitter[0]  # pixel centres run 0..27: the middle is 13.5
    left = int(round(13.5 - cx)) + jitter[1]
    out = np.zeros((28, 28), dtype=np.float32)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(28, top + new_h), min(28, left + new_w)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = small[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def load_image(source: str | os.PathLike | bytes | io.IOBase, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file (PNG, JPEG, ...) as a grayscale ``(H, W)`` float array in [0, 1].

    Handles palette, RGBA (composited on the background that contrasts with the ink),
    16-bit and float images; refuses non-images, images larger than ``max_pixels``
    (decompression bombs) and images smaller than 8x8 with a clear message.
    """
    from PIL import Image, UnidentifiedImageError

    max_pixels = max_pixels or LIMITS.max_image_pixels
    data = source.read() if isinstance(source, io.IOBase) else source
    try:
        stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else open(data, "rb")  # noqa: SIM115
    except OSError as e:
        raise XWPError(f"cannot open image {data}: {e.strerror}") from None
    with stream, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own pixel limit applies below
        try:
            with Image.open(stream) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise XWPError(f"the image is {w}x{h} pixels; the limit is {max_pixels:,} pixels")
                if min(w, h) < LIMITS.min_image_side:
                    raise XWPError(
                        f"the image is {w}x{h} pixels; it must be at least {LIMITS.min_image_side} pixels on each side"
                    )
                im.load()
                return _to_gray(im)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
            if isinstance(e, XWPError):
                raise
            raise XWPError("not a readable image file (damaged, or not an image): upload a PNG or JPEG file") from None


def _to_gray(im) -> np.ndarray:
    """Any PIL image as grayscale float in [0, 1]; alpha composited onto a contrasting background."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return np.clip(arr / top, 0, 1).astype(np.float32)
    if im.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        lum = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        alpha = rgba[..., 3]
        if alpha.min() < 1.0:
            if alpha.max() == 0:
                return np.zeros_like(lum)
            ink = (lum * alpha).sum() / alpha.sum()  # mean brightness of what is drawn
            background = 1.0 if ink < 0.5 else 0.0
            return (lum * alpha + background * (1 - alpha)).astype(np.float32)
        return lum.astype(np.float32)
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def image_to_input(gray: np.ndarray, invert: bool | None = None, min_extent: float = 0.1) -> torch.Tensor:
    """A grayscale image ``(H, W)`` in [0, 1] as a model input ``(1, 1, 28, 28)`` in MNIST layout.

    ``invert=None`` decides from the border: a light border means dark ink on a light
    background, which is inverted to white on black. The border's level counts as
    background. Ink spanning less than ``min_extent`` of the image's longer side (a dot,
    a speck of dust) is refused: blown up to 20x20 pixels it would be no digit at all.
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise XWPError(f"expected a grayscale image of at least 2x2 pixels, got shape {gray.shape}")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if invert is None:
        invert = float(np.median(border)) > 0.5
    if invert:
        gray, border = 1.0 - gray, 1.0 - border
    gray = np.clip(gray - float(np.median(border)), 0, None)  # the background becomes 0
    peak = float(gray.max()) if np.isfinite(gray).all() else 0.0
    if peak < 0.05:
        raise XWPError("the image is blank: draw or upload a digit (light strokes on a dark background)")
    ink = gray > 0.25 * peak
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    extent = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) / max(gray.shape)
    if extent < min_extent:
        raise XWPError(
            f"the drawing is too small to be a digit (it spans {100 * extent:.0f}% of the image); "
            "draw the digit larger, filling most of the box"
        )
    return torch.from_numpy(to_mnist_layout(gray))[None, None]


# --------------------------------------------------------------------------- typeface digits

EXCLUDED_FONTS = (
    "dingbat",
    "d050000l",
    "symbol",
    "cmsy",
    "cmex",
    "last resort",
    "sizeonesym",
    "keyboard",
    "initials",
    "stixsize",
    "lastresort",
)


def font_files(font_dir: str | None = None) -> list[str]:
    """Font files that have all ten digits: matplotlib's own plus the system's (or ``font_dir``'s)."""
    import matplotlib
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    if font_dir is not None:
        if not os.path.isdir(font_dir):
            raise XWPError(f"font folder {font_dir} does not exist")
        paths = [str(p) for p in Path(font_dir).rglob("*") if p.suffix.lower() in (".ttf", ".otf")]
    else:
        mpl_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        paths = [str(p) for p in mpl_dir.glob("*.ttf")] + font_manager.findSystemFonts(fontext="ttf")
    usable = []
    for path in sorted(set(paths)):
        name = os.path.basename(path).lower()
        if any(x in name for x in EXCLUDED_FONTS):
            continue
        try:
            charmap = FT2Font(path).get_charmap()
        except Exception:  # unreadable font file: skip it
            continue
        if all(ord(d) in charmap for d in DIGITS):
            usable.append(path)
    if not usable:
        raise XWPError("no font with the digits 0-9 was found: install matplotlib's fonts or pass a font folder")
    return usable


def _font_family(path: str) -> tuple[str, str] | None:
    """``(family, style)`` of a font file, or None if PIL cannot load it or it is excluded."""
    from PIL import ImageFont

    try:
        family, style = ImageFont.truetype(path, 16).getname()
    except OSError:
        return None
    if any(x in f"{family} {style}".lower() for x in EXCLUDED_FONTS):
        return None
    return family or os.path.basename(path), style or ""


def _render_glyph(path: str, digit: str, stroke: int, size: int = 64) -> np.ndarray:
    """One digit in one font at ``size`` px, white on black, cropped to its ink."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(path, size)
    left, top, right, bottom = font.getbbox(digit, stroke_width=stroke)
    canvas = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), digit, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    ink = arr > 0.1
    if not ink.any():
        return arr[:0, :0]
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    return arr[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _augment(glyph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate, rescale and shift a rendered glyph, then lay it out like MNIST."""
    from PIL import Image

    angle = rng.uniform(-12, 12)
    im = Image.fromarray(glyph).rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    stretch = rng.uniform(0.85, 1.15)
    arr = np.asarray(im, dtype=np.float32)
    if stretch != 1.0:
        h, w = arr.shape
        arr = np.asarray(im.resize((max(1, round(w * stretch)), h), Image.Resampling.BILINEAR), dtype=np.float32)
    jitter = (int(rng.integers(-1, 2)), int(rng.integers(-1, 2)))
    return to_mnist_layout(arr, scale=rng.uniform(0.8, 1.0), jitter=jitter, threshold=0.1)


def build_typeface(
    seed: int = 0, font_dir: str | None = None, test_fraction: float = 0.2, min_train: int = 8000, min_test: int = 2000
) -> dict[str, np.ndarray]:
    """Render the typeface digits; fonts are split by family, so test fonts are unseen.

    Every (font, digit) pair is rendered with stroke widths 0-3 px (at 64 px) and
    augmented with rotation (+-12 deg), horizontal stretch (0.85-1.15), scale (0.8-1)
    and a +-1 px shift until each split reaches its minimum size.
    """
    fonts = [(p, fam) for p in font_files(font_dir) if (fam := _font_family(p)) is not None]
    seen, unique = set(), []
    for path, fam in fonts:  # the same face installed twice counts once
        if fam not in seen:
            seen.add(fam)
            unique.append((path, fam[0]))
    families = sorted({f for _, f in unique})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(families))
    n_test = max(1, round(len(families) * test_fraction)) if len(families) > 1 else 0
    test_families = {families[i] for i in order[:n_test]}
    out = {}
    for split, minimum in (("train", min_train), ("test", min_test)):
        chosen = [(p, f) for p, f in unique if (f in test_families) == (split == "test")]
        if not chosen:
            chosen = unique  # a single family: test on the same fonts rather than fail
        per_glyph = max(2, math.ceil(minimum / (10 * len(chosen))))
        images, labels, groups = [], [], []
        split_rng = np.random.default_rng([seed, SPLITS.index(split)])
        for path, family in chosen:
            for d in DIGITS:
                glyphs = [_render_glyph(path, d, s) for s in range(4)]
                if any(g.size == 0 for g in glyphs):
                    continue
                for _ in range(per_glyph):
                    g = glyphs[int(split_rng.integers(0, 4))]
                    images.append(_augment(g, split_rng))
                    labels.append(int(d))
                    groups.append(f"{family} ({os.path.basename(path)})")
        out[f"{split}_images"] = (np.stack(images) * 255).round().astype(np.uint8)
        out[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
        out[f"{split}_groups"] = np.asarray(groups)
    out["fonts"] = np.asarray([p for p, _ in unique])
    return out


def _typeface_cache_path(seed: int, font_dir: str | None) -> Path:
    """Cache file for the typeface digits, keyed by version, seed and the exact font files."""
    h = hashlib.sha256(f"v{TYPEFACE_VERSION}-{seed}".encode())
    for path in font_files(font_dir):
        h.update(f"{path}:{os.path.getsize(path)}".encode())
    return cache_dir() / f"typeface-{h.hexdigest()[:16]}.npz"


@_register(
    "typeface",
    "Typeface digits (built in)",
    "Digits 0-9 rendered from every font on this machine, MNIST layout; test fonts are unseen.",
)
def _load_typeface(split: str, data_dir: str | None, seed: int) -> ImageSet:
    """Typeface digits from the cache, built on first use."""
    path = _typeface_cache_path(seed, data_dir)
    arrays = None
    if path.exists():
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in f.files if k.startswith(f"{split}_") or k == "fonts"}  # one split
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            arrays = None  # a damaged cache file is rebuilt
    if arrays is None:
        arrays = build_typeface(seed, data_dir)
        atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))
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

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _torchvision(cls_name: str, folder: str, split: str, data_dir: str | None) -> tuple:
    """Images and labels through torchvision, never writing into ``data_dir``.

    torchvision unpacks the ``.gz`` files next to themselves, so a given folder is
    mirrored into the cache with links (or copies) and torchvision reads the mirror,
    offline: it finds the files and checks their MD5 instead of downloading.
    """
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    if data_dir is None:
        root = cache_dir() / "data"
        try:
            ds = cls(str(root), train=split == "train", download=True)
        except Exception as e:  # network errors come in many types
            raise XWPError(
                f"{cls_name} is not on this machine and could not be downloaded ({type(e).__name__}). "
                f"Put the four .gz files in DIR/{folder}/raw/ and pass --data-dir DIR (or data_dir=DIR)"
            ) from None
        return ds.data, ds.targets
    src = Path(data_dir) / folder / "raw"
    if not src.is_dir():
        src = Path(data_dir) / "raw" if (Path(data_dir) / "raw").is_dir() else Path(data_dir)
    names = _IDX_FILES["train"] + _IDX_FILES["test"]  # torchvision checks all four
    found = {n: [p for p in (src / n, src / f"{n}.gz") if p.is_file()] for n in names}
    missing = [n for n, ps in found.items() if not ps]
    if missing:
        raise XWPError(
            f"{data_dir} lacks {', '.join(m + '.gz' for m in missing)}; torchvision needs all four {folder} files "
            f"in its layout: DIR/{folder}/raw/*-ubyte.gz"
        )
    for filename, md5 in cls.resources:  # verify first: on a mismatch torchvision would try to download
        stem = filename[: -len(".gz")]
        if (src / stem).is_file():
            continue
        if _md5(src / filename) != md5:
            raise XWPError(
                f"{src / filename} is damaged or not the published file (its MD5 differs); "
                f"copy it again from the original source"
            )
    key = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]
    mirror = cache_dir() / "torchvision" / key
    raw = mirror / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for paths in found.values():
        for p in paths:
            _link_or_copy(p, raw / p.name)
    try:
        ds = cls(str(mirror), train=split == "train", download=True)
        return ds.data, ds.targets
    except Exception as e:
        for n in names:  # a bad unpacked file would be reused next time
            (raw / n).unlink(missing_ok=True)
        detail = " ".join(str(e).split())[:120]
        raise XWPError(
            f"the {folder} files in {src} are damaged ({type(e).__name__}: {detail}); copy them again "
            "from the original source"
        ) from None


def _md5(path: Path) -> str:
    """MD5 of a file, read in 1 MiB blocks."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` refer to ``src`` (symlink, or a copy where links are not allowed)."""
    if dst.is_symlink() or dst.exists():
        if dst.is_symlink() and dst.resolve() == src.resolve():
            return
        if not dst.is_symlink() and dst.stat().st_size == src.stat().st_size:
            return
        dst.unlink()
    try:
        dst.symlink_to(src.resolve())
    except OSError:
        shutil.copyfile(src, dst)


def _tv_set(name: str, cls_name: str, folder: str, classes: list[str], split: str, data_dir: str | None) -> ImageSet:
    """An ImageSet from a torchvision MNIST-like dataset."""
    data, targets = _torchvision(cls_name, folder, split, data_dir)
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


def read_tmnist_csv(source: str | os.PathLike | bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a Typeface-MNIST CSV (``names,labels,1,...,784``; pixels 0-255, white on black).

    Returns images ``(N, 28, 28)`` uint8, labels ``(N,)`` and font names ``(N,)``.
    """
    import pandas as pd

    try:
        if isinstance(source, bytes | bytearray):
            buf = io.BytesIO(source)
            if source[:2] == b"\x1f\x8b":
                buf = io.BytesIO(gzip.decompress(source))
            frame = pd.read_csv(buf, low_memory=False)
        else:
            frame = pd.read_csv(source, low_memory=False)
    except FileNotFoundError:
        raise XWPError(f"TMNIST file {source} does not exist") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError) as e:
        raise XWPError(f"not a readable CSV file ({type(e).__name__}); expected TMNIST_Data.csv from Kaggle") from None
    cols = [str(c).strip() for c in frame.columns]
    pixel_cols = [str(i) for i in range(1, 785)]
    if "labels" not in cols:
        raise XWPError(
            f"the CSV has no 'labels' column (its first columns: {', '.join(cols[:4])}); "
            "expected the TMNIST header names,labels,1,...,784"
        )
    missing = [c for c in pixel_cols if c not in cols]
    if missing:
        raise XWPError(f"the CSV lacks {len(missing)} of the 784 pixel columns (first missing: {missing[0]})")
    extra = [c for c in cols if c not in pixel_cols and c not in ("names", "labels")]
    if extra:
        raise XWPError(
            f"the CSV has {len(extra)} unexpected column(s) ({', '.join(extra[:3])}); "
            "expected exactly names,labels,1,...,784"
        )
    frame.columns = cols
    if len(frame) == 0:
        raise XWPError("the CSV has a header but no rows")
    pixels = frame[pixel_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    labels = pd.to_numeric(frame["labels"], errors="coerce").to_numpy(dtype=np.float64)
    bad_rows = np.flatnonzero(np.isnan(pixels).any(1) | np.isnan(labels))
    if len(bad_rows):
        raise XWPError(
            f"row {bad_rows[0] + 2} of the CSV has a non-numeric pixel or label ({len(bad_rows)} rows in all)"
        )
    if pixels.min() < 0 or pixels.max() > 255:
        raise XWPError("pixel values must lie in 0..255")
    if not np.isin(labels, np.arange(10)).all():
        raise XWPError("labels must be the digits 0..9")
    names = frame["names"].astype(str).to_numpy() if "names" in cols else np.asarray(["?"] * len(frame))
    return pixels.reshape(-1, 28, 28).round().astype(np.uint8), labels.astype(np.int64), names


@functools.lru_cache(maxsize=1)
def _read_tmnist_cached(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_tmnist_csv` of an unchanged file, parsed once for both splits (errors are not cached)."""
    return read_tmnist_csv(path)


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
    if not path.is_file():
        raise XWPError(f"TMNIST file {path} does not exist")
    stat = path.stat()
    images, labels, names = _read_tmnist_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    families = np.asarray([n.split("-")[0] for n in names])
    unique = np.unique(families)
    rng = np.random.default_rng(seed)
    test_fams = set(unique[rng.permutation(len(unique))[: max(1, round(0.2 * len(unique)))]])
    keep = np.asarray([(f in test_fams) == (split == "test") for f in families])
    x = torch.from_numpy(images[keep].astype(np.float32) / 255.0)[:, None]
    return ImageSet(x, torch.from_numpy(labels[keep]), DIGITS, "tmnist", split, list(names[keep]), {"file": str(path)})
