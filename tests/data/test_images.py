"""Canvas drawings and uploaded files as model inputs (xwp.data.images), checked against the MNIST layout."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from xwp.config import Limits
from xwp.data import images
from xwp.data.datasets import image_to_input, load_image, to_mnist_layout
from xwp.data.images import canvas_to_input, check_upload, input_preview, png, upload_to_input
from xwp.errors import XWPError


def _stroke_canvas(points, width=18, alpha_background=255) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (280, 280), (0, 0, 0, alpha_background))
    ImageDraw.Draw(im).line(points, fill=(255, 255, 255, 255), width=width, joint="curve")
    return np.asarray(im)


def test_canvas_blank_is_none():
    assert canvas_to_input(None) is None
    assert canvas_to_input(np.zeros((280, 280, 4), np.uint8)) is None
    transparent = np.zeros((280, 280, 4), np.uint8)
    transparent[..., :3] = 255  # white but fully transparent: nothing drawn
    assert canvas_to_input(transparent) is None


def test_canvas_drawing_becomes_mnist_layout():
    rgba = _stroke_canvas([(60, 40), (200, 40), (120, 250)])
    x = canvas_to_input(rgba)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
    img = x[0, 0].numpy()
    assert img.max() == pytest.approx(1.0) and img.min() >= 0
    ys, xs = np.nonzero(img > 0.05)
    assert ys.max() - ys.min() + 1 <= 21 and xs.max() - xs.min() + 1 <= 21  # fits the 20x20 box
    cy, cx = (np.mgrid[0:28, 0:28] * img).reshape(2, -1).sum(1) / img.sum()
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1  # centre of mass in the middle
    gray = rgba[..., :3].mean(-1) / 255.0  # the same drawing as plain grey gives the same input
    np.testing.assert_allclose(img, to_mnist_layout(gray), atol=1e-5)
    # a transparent background (alpha 0) with the same strokes gives the same input
    np.testing.assert_allclose(
        canvas_to_input(_stroke_canvas([(60, 40), (200, 40), (120, 250)], alpha_background=0))[0, 0].numpy(),
        img,
        atol=1e-5,
    )


def test_canvas_grey_and_rgba_agree():
    """A 2-D grey canvas and the same strokes as opaque RGBA give the same input (luma of white is 1)."""
    rgba = _stroke_canvas([(140, 40), (140, 240)])
    grey = rgba[..., 0]
    np.testing.assert_allclose(canvas_to_input(grey).numpy(), canvas_to_input(rgba).numpy(), atol=1e-5)


def test_corpus_canvas_cases():
    from tests.support.corpus import CASES

    for case in (c for c in CASES if c.kind == "canvas"):
        rgba = np.repeat((case.make(None) * 255).astype(np.uint8)[..., None], 4, axis=2)
        rgba[..., 3] = 255
        if case.id == "blank-canvas":
            assert canvas_to_input(rgba) is None  # shown as "draw a digit", not as an error
        else:
            with pytest.raises(XWPError, match=case.expect):
                canvas_to_input(rgba)


def _png_file(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_is_read_and_laid_out_like_the_loader():
    """An uploaded dark-on-light file gives what load_image + image_to_input give (inverted to light on dark)."""
    page = np.full((120, 90), 255, np.uint8)
    page[20:100, 40:52] = 0  # a dark "1" on white paper
    data = _png_file(page)
    x = upload_to_input(data)
    assert x.shape == (1, 1, 28, 28)
    torch.testing.assert_close(x, image_to_input(load_image(data)))
    assert float(x[0, 0, 14, 14]) > 0.5 and float(x[0, 0, 0, 0]) == 0.0  # the stroke is bright, the paper black


def test_upload_limit(monkeypatch):
    monkeypatch.setattr(images, "LIMITS", Limits(max_upload_bytes=1000))
    assert check_upload(b"0" * 1000) == b"0" * 1000
    with pytest.raises(XWPError, match="limited to"):
        check_upload(b"0" * 1001)
    with pytest.raises(XWPError, match="limited to"):
        upload_to_input(b"0" * 2000)
    with pytest.raises(XWPError, match="not a readable image"):
        upload_to_input(b"not an image")


def test_input_preview_has_square_pixels():
    x = torch.rand(1, 1, 28, 28) * 1.4 - 0.2
    big = input_preview(x, 3)
    assert big.shape == (84, 84) and big.min() >= 0 and big.max() <= 1
    np.testing.assert_array_equal(big[::3, ::3], x.reshape(28, 28).clamp(0, 1).numpy())
    np.testing.assert_array_equal(big[1::3, 2::3], big[::3, ::3])


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)])
def test_png_round_trip(shape):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    data = png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)
