"""Images a user hands the app (canvas drawings, uploaded files) as model inputs, and PNG encoding.

Plain numpy/torch/Pillow: the app's Explain page and the tests use the same functions.
The MNIST layout itself (crop, fit into 20x20, centre of mass) is :func:`xwp.data.image_to_input`.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from xwp.config import LIMITS
from xwp.data import image_to_input, load_image
from xwp.errors import XWPError


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
    img = x.detach().reshape(28, 28).clamp(0, 1).numpy()
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


def png(rgb: np.ndarray) -> bytes:
    """An RGB or grey ``uint8`` array as PNG bytes (fast settings: these are small, flat images)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
