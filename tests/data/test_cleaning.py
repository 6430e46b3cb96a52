"""Photo cleaning and the 'unlike the training data' warning, on synthetic photos of rendered digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xwp.data.cleaning import (
    build_reference,
    clean_photo,
    otsu_threshold,
    photo_to_input,
    unlike_training,
)
from xwp.data.datasets import image_to_input
from xwp.errors import XWPError


def render(digit: str, size: int = 200) -> np.ndarray:
    """A clean white-on-black rendering of ``digit`` (matplotlib's DejaVu Sans)."""
    import matplotlib.font_manager as fm
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("L", (size, size), 0)
    font = ImageFont.truetype(fm.findfont("DejaVu Sans"), int(size * 0.8))
    ImageDraw.Draw(im).text((size / 2, size / 2), digit, fill=255, font=font, anchor="mm", stroke_width=3)
    return np.asarray(im, np.float32) / 255


def photo(clean: np.ndarray, seed: int, sigma: float, dark: bool) -> np.ndarray:
    """A 'phone photo' of ``clean``: uneven light (a gradient across the page) plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    h, w = clean.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    if dark:  # pencil on paper lit from one side
        img = (0.55 + 0.35 * xx + 0.1 * yy) * (1 - clean) + 0.15 * clean
    else:  # chalk on a board
        img = (0.1 + 0.2 * xx) * (1 - clean) + 0.85 * clean
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 1).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return float(a @ b / a.norm() / b.norm())


CASES = [(d, dark, sigma) for d in "0123456789" for dark in (True, False) for sigma in (0.06, 0.12)]


@pytest.fixture(scope="module")
def reference(typeface, trained):
    """Calibrated on the first 1000 test images; the rest stay held out."""
    return build_reference(typeface[0].images, typeface[1].images[:1000], trained)


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.2, 0.03, 5000), rng.normal(0.8, 0.03, 1000)])
    assert 0.3 < otsu_threshold(v) < 0.7


def test_noisy_photos_come_out_clean():
    worst_iou, worst_cos, best_naive = 1.0, 1.0, 0.0
    for d, dark, sigma in CASES:
        clean = render(d)
        p = photo(clean, int(d), sigma, dark)
        x, cl = photo_to_input(p)
        assert cl.dark_ink == dark
        want = image_to_input(clean, invert=False)
        worst_iou = min(worst_iou, iou(cl.mask, clean > 0.5))
        worst_cos = min(worst_cos, cosine(x, want))
        best_naive = max(best_naive, cosine(image_to_input(p), want))
    # measured: ink IoU >= 0.966, layout cosine >= 0.867; without cleaning the cosine is at most 0.637
    assert worst_iou > 0.94 and worst_cos > 0.85 and best_naive < 0.7


def test_cleaned_photos_are_classified_and_not_warned(trained, reference):
    cleaned_ok = naive_ok = 0
    for d, dark, sigma in CASES:
        p = photo(render(d), int(d), sigma, dark)
        x, cl = photo_to_input(p)
        cleaned_ok += int(trained(x.reshape(1, -1)).argmax()) == int(d)
        naive_ok += int(trained(image_to_input(p).reshape(1, -1)).argmax()) == int(d)
        assert unlike_training(x, reference, trained, cl) is None
    # measured: 40/40 after cleaning, 19/40 without
    assert cleaned_ok >= 38 and naive_ok < cleaned_ok


def test_pure_noise_is_refused_or_warned(reference, trained):
    rng = np.random.default_rng(0)
    for img in (np.clip(0.5 + rng.normal(0, 0.2, (200, 200)), 0, 1), rng.random((200, 200))):
        with pytest.raises(XWPError, match="no ink found"):
            clean_photo(img.astype(np.float32))
    mild = (0.5 + rng.normal(0, 0.05, (200, 200))).astype(np.float32)  # passes the threshold in specks
    x, cl = photo_to_input(mild)
    warning = unlike_training(x, reference, trained, cl)
    assert warning is not None and "unlike the training data" in warning and "barely stand out" in warning
    assert unlike_training(x, cleaned=cl) is not None  # the photo's own facts suffice
    for _ in range(5):  # noise that skips the cleaning (a 28x28 input) is caught by the reference
        assert unlike_training(torch.rand(1, 1, 28, 28), reference, trained) is not None


def test_clean_digits_pass_without_warning(typeface, reference, trained):
    held = typeface[1].images[1000:]
    warned_plain = sum(unlike_training(held[i : i + 1], reference, trained) is not None for i in range(len(held)))
    warned_cleaned = 0
    for i in range(0, len(held), 4):
        x, cl = photo_to_input(held[i, 0].numpy())
        warned_cleaned += unlike_training(x, reference, trained, cl) is not None
    # measured: 3 of 1280 held-out test images (0.2 %) and 2 of 320 through the cleaning
    assert warned_plain <= 0.01 * len(held) and warned_cleaned <= 0.02 * (len(held) / 4)
    x, cl = photo_to_input(held[0, 0].numpy())
    assert cl.components == 1 and unlike_training(x, reference, trained, cl) is None


def test_large_photos_are_shrunk_first():
    p = photo(render("3", 1200), 0, 0.06, True)
    cl = clean_photo(p)
    assert max(cl.mask.shape) == 256 and cl.components == 1


def test_bad_images_are_refused():
    for bad in (np.zeros((4, 4)), np.full((50, 50), np.nan), np.zeros((3, 50, 50))):
        with pytest.raises(XWPError):
            clean_photo(bad)
    with pytest.raises(XWPError):
        clean_photo(np.full((50, 50), 0.7, np.float32))  # a blank page


def framed(p: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo on a 250x250 page whose left and bottom edges show a dark table; and the true ink."""
    canvas = np.full((250, 250), 0.8, np.float32)
    canvas[25:225, 25:225] = p
    canvas[:, :22] = 0.1
    canvas[-22:, :] = 0.12
    canvas = np.clip(canvas + np.random.default_rng(1).normal(0, 0.03, canvas.shape), 0, 1).astype(np.float32)
    truth = np.zeros((250, 250), bool)
    truth[25:225, 25:225] = clean > 0.5
    return canvas, truth


def test_a_table_edge_along_the_border_is_dropped():
    worst = 1.0
    for d in "0123456789":
        clean = render(d)
        canvas, truth = framed(photo(clean, int(d), 0.06, True), clean)
        cl = clean_photo(canvas)
        assert cl.frame_removed
        worst = min(worst, iou(cl.mask, truth))
    assert worst > 0.93  # measured: 0.968


def test_a_tightly_cropped_bold_digit_is_kept():
    worst = 1.0
    for d in "0123456789":
        clean = render(d)
        rows, cols = np.flatnonzero((clean > 0.5).any(1)), np.flatnonzero((clean > 0.5).any(0))
        crop = (slice(rows[0] - 3, rows[-1] + 4), slice(cols[0] - 3, cols[-1] + 4))  # 3-pixel margin
        for dark in (True, False):
            cl = clean_photo(photo(clean, 0, 0.06, dark)[crop])  # ink covers 35-54 % of the image
            assert cl.dark_ink == dark and not cl.frame_removed
            worst = min(worst, iou(cl.mask, clean[crop] > 0.5))
    assert worst > 0.95  # measured: 0.991
