"""Image reading and the MNIST layout: files and drawings to model inputs.

:func:`load_image` reads an image file carefully, :func:`to_mnist_layout` is the MNIST
preprocessing (crop, fit into 20x20, centre of mass at the centre of 28x28) shared by the
typeface renderer, the drawing canvas and uploaded images, and :func:`image_to_input`
turns a grayscale picture into a model input. :func:`canvas_to_input` and
:func:`upload_to_input` are what the app's Explain page hands the model; :func:`png`
encodes the small tiles it shows.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch

from xwp.config import LIMITS
from xwp.errors import XWPError

#: one image as every dataset, upload and drawing is brought to it: 1 channel, 28 x 28 (MNIST's layout)
IMAGE_SHAPE = (1, 28, 28)
IMAGE_SIDE = IMAGE_SHAPE[-1]


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
    middle = (IMAGE_SIDE - 1) / 2  # pixel centres run 0..27: the middle is 13.5
    top = int(round(middle - cy)) + jitter[0]
    left = int(round(middle - cx)) + jitter[1]
    out = np.zeros(IMAGE_SHAPE[1:], dtype=np.float32)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(IMAGE_SIDE, top + new_h), min(IMAGE_SIDE, left + new_w)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = small[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
"""Formats accepted by content (Pillow names); GIF gives its first frame, TIFF its first page."""

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_REFUSED = "not a readable image: upload a PNG, JPEG, BMP, GIF, TIFF or WebP file"


def image_format(head: bytes) -> str:
    """The accepted format that the first bytes of a file announce, else XWPError (the name never counts)."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    raise XWPError(_REFUSED)


def load_image(source: str | os.PathLike | bytes | io.IOBase, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as a grayscale ``(H, W)`` float array in [0, 1].

    Only :data:`IMAGE_FORMATS` are accepted, judged by content, never by the file name
    (an EPS named ``.png`` is refused before any decoder runs). The first frame of a GIF
    and the first page of a TIFF are used; EXIF orientation is applied. Handles palette,
    RGBA (composited on the background that contrasts with the ink), 16-bit and float
    images; refuses images larger than ``max_pixels`` (decompression bombs), smaller than
    8x8, and paths that are not regular files (FIFOs, devices) with a clear message.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from xwp.safety import read_regular

    max_pixels = max_pixels or LIMITS.max_image_pixels
    if isinstance(source, io.IOBase):
        data = source.read(LIMITS.max_upload_bytes + 1)
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = read_regular(source, "image", LIMITS.max_upload_bytes)
    if len(data) > LIMITS.max_upload_bytes:
        raise XWPError(f"the image is larger than {LIMITS.max_upload_bytes / 2**20:.0f} MiB")
    fmt = image_format(bytes(data[:64]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our own pixel limit applies below; EXIF oddities are harmless
        try:
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise XWPError(f"the image is {w}x{h} pixels; the limit is {max_pixels:,} pixels")
                if min(w, h) < LIMITS.min_image_side:
                    raise XWPError(
                        f"the image is {w}x{h} pixels; it must be at least {LIMITS.min_image_side} pixels on each side"
                    )
                im.seek(0)  # GIF: first frame; TIFF: first page
                im.load()
                upright = ImageOps.exif_transpose(im) or im
                return to_gray(upright)
        except XWPError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError):
            raise XWPError(_REFUSED) from None


def to_gray(im) -> np.ndarray:
    """Any PIL image as grayscale float in [0, 1]; alpha composited onto a contrasting background.

    16-bit, 32-bit integer and float images are scaled by their actual value range (lowest
    to highest value), so a 16-bit image that uses only 0..1000 is not called blank; a
    constant image becomes all zeros and non-finite values are refused.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise XWPError("the image contains NaN or infinite values")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if hi <= lo:
            return np.zeros(arr.shape, dtype=np.float32)
        return ((arr - lo) / (hi - lo)).astype(np.float32)
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


# --------------------------------------------------------------------------- app inputs and PNG encoding


def check_upload(data: bytes) -> bytes:
    """Refuse an upload above :data:`LIMITS` ``.max_upload_bytes``; return it otherwise."""
    if len(data) > LIMITS.max_upload_bytes:
        raise XWPError(
            f"the file is {len(data) / 2**20:.0f} MB; uploads are limited to "
            f"{LIMITS.max_upload_bytes // 2**20} MB (XWP_MAX_UPLOAD_MB)"
        )
    return data


def canvas_to_input(rgba: np.ndarray | None) -> torch.Tensor | None:
    """A canvas drawing (RGBA or grey, white on black) as a model input ``(1, 1, 28, 28)``; None if blank.

    A drawing too small to be a digit (one dot) raises :class:`~xwp.errors.XWPError` saying so.
    """
    if rgba is None:
        return None
    a = np.asarray(rgba, dtype=np.float32) / 255.0
    if a.ndim == 3:
        gray = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if a.shape[-1] >= 3 else a[..., 0]
        if a.shape[-1] == 4:
            gray = gray * a[..., 3]  # composited on the black background
    else:
        gray = a
    if gray.size == 0 or float(gray.max()) < 0.1:
        return None
    return image_to_input(gray, invert=False)  # a dot too small to be a digit raises XWPError


def upload_to_input(data: bytes) -> torch.Tensor:
    """An uploaded image file as a model input (dark-on-light images are inverted)."""
    return image_to_input(load_image(check_upload(data)))


def input_preview(x: torch.Tensor, scale: int = 5) -> np.ndarray:
    """A model input as a grey image enlarged with square pixels (what the network sees)."""
    img = x.detach().reshape(IMAGE_SHAPE[1:]).clamp(0, 1).numpy()
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


def png(rgb: np.ndarray) -> bytes:
    """An RGB or grey ``uint8`` array as PNG bytes (fast settings: these are small, flat images)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
