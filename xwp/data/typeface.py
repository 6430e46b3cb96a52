"""Built-in typeface digits: 0-9 rendered from the machine's fonts, cached in the cache folder."""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from xwp.config import atomic_write, cache_dir
from xwp.data.images import to_mnist_layout
from xwp.errors import XWPError
from xwp.safety import is_regular_file

SPLITS = ("train", "test")
DIGITS = [str(d) for d in range(10)]
TYPEFACE_VERSION = 1

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
        # only regular files: a FIFO named *.ttf would block the font reader forever
        paths = [
            str(p) for p in Path(font_dir).rglob("*") if p.suffix.lower() in (".ttf", ".otf") and is_regular_file(p)
        ]
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


def typeface_arrays(split: str, data_dir: str | None, seed: int) -> dict[str, np.ndarray]:
    """One split of the typeface digits (and the font list) from the cache, built on first use."""
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
    return arrays
