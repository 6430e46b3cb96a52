"""Cleaning photos of digits before the MNIST layout, and a warning for inputs unlike the training data.

A phone photo of a digit on paper has uneven light, paper texture and sensor noise; the
plain layout (:func:`xwp.data.image_to_input`) keeps all of it as a grey box. The steps:

1. shrink the photo to at most 256 pixels a side (bounded time; a digit needs no more);
2. estimate the background with a large median filter (window a quarter of the image, on a
   64-pixel copy) and subtract it, which removes gradients and shadows;
3. decide the polarity (dark ink on light paper, or light on dark): from the border when at
   least 3/4 of it lies on one side of the global Otsu threshold, else from which tail of the
   residual holds more pixels beyond 4 standard deviations of the noise (estimated from
   differences of neighbouring pixels);
4. threshold with Otsu's method (Otsu 1979), never below 3 noise standard deviations;
5. drop pieces lying along the border (a table edge, a shadow) when a sizeable piece lies
   away from it, then connected components smaller than 10 % of the largest (specks);
6. crop to the ink and hand it to :func:`xwp.data.image_to_input` (MNIST layout).

:func:`unlike_training` then says, in one line, when an input looks like nothing the model
was trained on: no clear strokes in the photo (low contrast, ink scattered over many
pieces), a layout far from every training image (nearest-neighbour distance beyond what
test images reach), or a model energy ``-logsumexp(logits)`` above the test images' range
(Liu et al. 2020, "Energy-based Out-of-distribution Detection", NeurIPS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xwp.data.datasets import image_to_input
from xwp.errors import XWPError

MAX_SIDE = 256
BACKGROUND_SIDE = 64
MIN_COMPONENT_SHARE = 0.10
FRAME_CONTACT = 0.05  # a piece touching more than this share of the border's pixels is a frame
MIN_INNER_AREA = 0.002  # a piece away from the border this large (share of the image) is a candidate digit
#: median ink signal over the noise below which strokes "barely stand out": thresholded pure noise
#: gives about 3.3, a photo whose digit a person reads easily (noise 0.12 on 0.6 contrast) about 5
MIN_CONTRAST = 4.0
MAX_PIECES = 6
#: the reference's limits are the test images' q-quantiles widened by this factor (fewer false alarms)
MARGIN = 1.25


@dataclass
class Cleaned:
    """What :func:`clean_photo` found: the ink image and the facts the familiarity check uses."""

    image: np.ndarray  # white ink on black, cropped to the ink, float32 in [0, 1]
    mask: np.ndarray  # bool, the kept ink at the (shrunk) photo's size
    dark_ink: bool  # True: dark ink on light paper
    threshold: float  # on the background-subtracted ink signal
    noise: float  # robust standard deviation of the background
    contrast: float  # median ink signal over the noise
    components: int  # kept connected components
    removed: int  # components dropped as specks
    ink_fraction: float  # kept ink pixels / all pixels
    frame_removed: bool = False  # a table edge, shadow or frame along the border was dropped

    @property
    def polarity(self) -> str:
        """``"dark on light"`` or ``"light on dark"``."""
        return "dark on light" if self.dark_ink else "light on dark"


def _shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """``gray`` resized (area-averaged) so its longer side is at most ``side``."""
    from PIL import Image

    h, w = gray.shape
    f = side / max(h, w)
    if f >= 1:
        return gray
    size = (max(2, round(w * f)), max(2, round(h * f)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX), dtype=np.float32)


def estimate_background(gray: np.ndarray, ink: np.ndarray | None = None) -> np.ndarray:
    """The paper's light (or the board's dark) at every pixel, estimated without the ink.

    Without ``ink``: a median filter a quarter of the image wide (on a 64-pixel copy).
    With an ``ink`` mask: a normalised convolution over the pixels outside the (widened)
    mask, so a bold digit covering most of a window does not darken its own background.
    """
    from PIL import Image
    from scipy.ndimage import binary_dilation, gaussian_filter, median_filter

    small = _shrink(gray, BACKGROUND_SIDE)
    if ink is None:
        bg = median_filter(small, size=max(3, (max(small.shape) // 4) | 1), mode="reflect")
    else:
        h, w = small.shape
        m = np.asarray(Image.fromarray(ink.astype(np.float32)).resize((w, h), Image.Resampling.BOX)) > 0
        keep = ~binary_dilation(m, iterations=1)
        if keep.sum() < 0.05 * keep.size:  # (almost) all ink: a flat background at the ink-free level
            return np.full(gray.shape, float(np.median(gray[~ink])) if (~ink).any() else 0.0, np.float32)
        sigma = max(small.shape) / 8
        num = gaussian_filter(np.where(keep, small, 0).astype(np.float64), sigma, mode="reflect")
        den = gaussian_filter(keep.astype(np.float64), sigma, mode="reflect")
        bg = np.where(den > 1e-3, num / np.maximum(den, 1e-3), float(np.median(small[keep]))).astype(np.float32)
    h, w = gray.shape
    return np.asarray(Image.fromarray(bg).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (Otsu 1979): the cut that maximises the between-class variance of ``values``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return hi
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = (w0 * w1 * (mu0 - mu1) ** 2)[:-1]
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a flat top (an empty gap): take its middle
    return float(edges[1:][best].mean())


def noise_level(gray: np.ndarray) -> float:
    """The noise's standard deviation from differences of neighbouring pixels (robust: edges are few)."""
    dx = np.diff(gray, axis=1).ravel()
    dy = np.diff(gray, axis=0).ravel()
    mad = float(np.median(np.abs(np.concatenate([dx, dy]))))
    return max(1.4826 * mad / np.sqrt(2.0), 1e-3)


def _polarity(gray: np.ndarray, noise: float) -> tuple[bool, np.ndarray | None]:
    """Dark ink on light paper (True) or not, and a first ink mask when the border decided it.

    The border is mostly paper: if at least 3/4 of it falls on one side of the global Otsu
    threshold, that side is the background (this holds for tight crops, where the ink covers
    half the image). Otherwise (a table along two edges, a shadow) the residual from a median
    background decides: the ink is the side with more pixels beyond 4 noise standard deviations.
    """
    t0 = otsu_threshold(gray)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    light = float((border > t0).mean())
    if light >= 0.75:
        return True, gray < t0
    if light <= 0.25:
        return False, gray > t0
    d = gray - estimate_background(gray)
    return int((d < -4 * noise).sum()) >= int((d > 4 * noise).sum()), None


def _pieces(labels: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
    """Labels of the connected pieces to keep, and whether a frame along the border was dropped.

    A piece that lies along the border (more than :data:`FRAME_CONTACT` of the border's
    pixels: a table edge or a shadow around the page) is dropped when there is a sizeable
    piece away from it (at least :data:`MIN_INNER_AREA` of the image). Then pieces smaller
    than :data:`MIN_COMPONENT_SHARE` of the largest remaining one are dropped as specks.
    """
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]  # (n,)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    contact = np.bincount(edge, minlength=n + 1)[1:] / edge.size  # (n,) share of the border
    frame = contact > FRAME_CONTACT
    inner = ~frame & (contact == 0) & (areas >= MIN_INNER_AREA * labels.size)
    drop_frame = bool(frame.any() and inner.any())
    candidates = ~frame if drop_frame else np.ones(n, dtype=bool)
    biggest = areas[candidates].max()
    return np.flatnonzero(candidates & (areas >= MIN_COMPONENT_SHARE * biggest)) + 1, drop_frame


def clean_photo(gray: np.ndarray) -> Cleaned:
    """Separate the ink of a photographed digit from its background (see the module docstring).

    ``gray``: ``(H, W)`` in [0, 1], e.g. from :func:`xwp.data.load_image`. Raises
    :class:`XWPError` for an image without any ink.
    """
    from scipy.ndimage import label

    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) < 8 or not np.isfinite(gray).all():
        raise XWPError(f"expected a finite grayscale image of at least 8x8 pixels, got shape {gray.shape}")
    gray = _shrink(gray, MAX_SIDE)
    noise = noise_level(gray)
    dark, mask = _polarity(gray, noise)
    for _ in range(2):  # each pass estimates the background without the ink found so far
        d = gray - estimate_background(gray, mask if mask is not None and mask.any() else None)
        s = -d if dark else d
        mask = s > max(otsu_threshold(s), 3 * noise)
    threshold = max(otsu_threshold(s), 3 * noise)
    mask = s > threshold
    if not mask.any():
        raise XWPError(
            "no ink found: the image looks like a blank page or pure noise, not a digit; "
            "upload a photo of a digit with clear strokes"
        )
    labels, n = label(mask, structure=np.ones((3, 3), dtype=bool))
    keep_ids, framed = _pieces(labels, n)
    keep = np.isin(labels, keep_ids)
    ink = np.where(keep, np.clip(s / max(float(np.percentile(s[keep], 95)), 1e-6), 0, 1), 0).astype(np.float32)
    rows, cols = np.flatnonzero(keep.any(1)), np.flatnonzero(keep.any(0))
    pad = max(1, round(0.05 * max(rows[-1] - rows[0], cols[-1] - cols[0])))
    r0, r1 = max(0, rows[0] - pad), min(ink.shape[0], rows[-1] + pad + 1)
    c0, c1 = max(0, cols[0] - pad), min(ink.shape[1], cols[-1] + pad + 1)
    return Cleaned(
        image=ink[r0:r1, c0:c1],
        mask=keep,
        dark_ink=dark,
        threshold=threshold,
        noise=noise,
        contrast=float(np.median(s[keep])) / noise,
        components=len(keep_ids),
        removed=int(n - len(keep_ids)),
        frame_removed=framed,
        ink_fraction=float(keep.mean()),
    )


def photo_to_input(gray: np.ndarray) -> tuple[torch.Tensor, Cleaned]:
    """A photo as a model input ``(1, 1, 28, 28)`` in MNIST layout, after :func:`clean_photo`."""
    cleaned = clean_photo(gray)
    return image_to_input(cleaned.image, invert=False), cleaned


# --------------------------------------------------------------------------- unlike the training data


@dataclass
class Reference:
    """What a model's training data looks like, for :func:`unlike_training`."""

    train: torch.Tensor  # (N, 784) a sample of training images, each scaled to unit length
    nn_limit: float  # the q-quantile of test images' distance to their nearest training image
    energy_limit: float | None  # the q-quantile of test images' energy under the model (None: no model)
    ink_range: tuple[float, float]  # the (1-q, q) quantiles of the test images' ink fraction


def _unit(images: torch.Tensor) -> torch.Tensor:
    """Images flattened to ``(N, D)`` and scaled to unit Euclidean length."""
    flat = images.detach().reshape(len(images), -1).float()
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _nn_distance(queries: torch.Tensor, train: torch.Tensor, skip_self: bool = False) -> torch.Tensor:
    """Distance of each unit-length query to its nearest unit-length training image."""
    sims = queries @ train.T  # (Q, N)
    if skip_self:
        sims = sims.masked_fill(sims > 1 - 1e-6, -1.0)
    return (2 - 2 * sims.max(1).values).clamp_min(0).sqrt()


@torch.no_grad()
def energy(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The energy score ``-logsumexp(logits)`` per image (higher: less like the training data)."""
    p = next(model.parameters())
    return -torch.logsumexp(model(images.to(device=p.device, dtype=p.dtype)).float().cpu(), 1)


def _widen(e: float) -> float:
    """An energy limit moved away from typical values by :data:`MARGIN` (energies are usually negative)."""
    return e / MARGIN if e < 0 else e * MARGIN


def build_reference(
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    model: nn.Module | None = None,
    n_train: int = 2000,
    n_test: int = 500,
    q: float = 0.995,
    seed: int = 0,
) -> Reference:
    """A :class:`Reference` from a model's training and test images (samples of ``n_train`` and ``n_test``)."""
    gen = torch.Generator().manual_seed(seed)
    tr = train_images[torch.randperm(len(train_images), generator=gen)[:n_train]]
    te = test_images[torch.randperm(len(test_images), generator=gen)[:n_test]]
    train = _unit(tr)
    dist = _nn_distance(_unit(te), train, skip_self=True)
    ink = (te.reshape(len(te), -1) > 0.5).float().mean(1)
    return Reference(
        train=train,
        nn_limit=MARGIN * float(torch.quantile(dist, q)),
        energy_limit=_widen(float(torch.quantile(energy(model, te), q))) if model is not None else None,
        ink_range=(float(torch.quantile(ink, 1 - q)) / MARGIN, MARGIN * float(torch.quantile(ink, q))),
    )


def unlike_training(
    x: torch.Tensor,
    reference: Reference | None = None,
    model: nn.Module | None = None,
    cleaned: Cleaned | None = None,
) -> str | None:
    """A one-line warning when input ``x`` ``(1, 1, 28, 28)`` looks unlike the training data, else None.

    Uses whatever is given: the cleaning's facts (``cleaned``), the distance to the
    nearest training image and the ink fraction (``reference``), and the model's energy
    (``reference`` built with a model, plus ``model``).
    """
    reasons = []
    if cleaned is not None:
        if cleaned.contrast < MIN_CONTRAST:
            reasons.append(f"its strokes barely stand out from the background (contrast {cleaned.contrast:.1f})")
        if cleaned.components > MAX_PIECES:
            reasons.append(f"the ink is scattered over {cleaned.components} separate pieces")
    if reference is not None:
        dist = float(_nn_distance(_unit(x.reshape(1, -1)), reference.train)[0])
        if dist > reference.nn_limit:
            reasons.append("it is farther from every training image than the test images are")
        ink = float((x.reshape(-1) > 0.5).float().mean())
        lo, hi = reference.ink_range
        if not lo <= ink <= hi:
            reasons.append(f"{100 * ink:.0f} % of it is ink (test images: about {100 * lo:.0f}–{100 * hi:.0f} %)")
        limit = reference.energy_limit
        if model is not None and limit is not None and float(energy(model, x.reshape(1, -1))[0]) > limit:
            reasons.append("the network's outputs are weaker than on the test images")
    if not reasons:
        return None
    return "This input looks unlike the training data, so the prediction may mean little: " + "; ".join(reasons) + "."
