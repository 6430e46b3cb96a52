"""Removal operators: what "removing a feature" means when a map is scored.

Every operator answers one question with one signature::

    op.logits(model, inputs, keep) -> (N, C)

the model's logits for ``inputs`` ``(N, ...)`` with the features where ``keep`` ``(N, D)`` is
False removed. Input-space operators also expose ``op.fill(inputs, keep)`` (the modified
images); model-space operators (deactivation, weight reversion) change what the network
computes instead, without modifying the model.

- ``zero``: removed pixels take the value 0 (the paper's protocol);
- ``mean``: the training set's per-pixel mean (passed in as ``train_mean``);
- ``blur``: the pixel of a Gaussian-blurred copy of the image (sigma in pixels);
- ``road``: noisy linear imputation (Rong et al., "A Consistent and Efficient Evaluation
  Strategy for Attribution Methods", ICML 2022): every removed pixel becomes the weighted
  mean of its 8 neighbours (weights 1/6 direct, 1/12 diagonal), all removed pixels solved
  together as one sparse linear system, plus Gaussian noise (std 0.01);
- ``deactivation``: the removed input is switched off inside the network (its contribution
  to the first pre-activation is dropped); for an MLP this is identical to ``zero``;
- ``revert``: the removed pixel's first-layer weights go back to their initial values W0 -
  XWP's own notion of removal. It favours XWP by construction (XWP scores exactly this
  change, one pixel at a time); use it to ask whether rankings survive, never to crown XWP.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.linalg import spsolve
from torch import nn

from xwp.attribution import split_first_linear
from xwp.errors import XWPError
from xwp.models import MLP

#: ROAD's neighbour weights (Rong et al. 2022, code release): direct 1/6, diagonal 1/12 (sum 1)
ROAD_NEIGHBOURS = (
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
)


def image_shape(inputs: torch.Tensor, shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the images in ``inputs``: given, from a 4-D batch, or square."""
    if shape is not None:
        return tuple(shape)  # type: ignore[return-value]
    if inputs.dim() == 4:
        return tuple(inputs.shape[1:])  # type: ignore[return-value]
    d = inputs[0].numel()
    side = math.isqrt(d)
    if side * side != d:
        raise XWPError(f"cannot infer an image shape for {d} features; pass shape=(C, H, W)")
    return (1, side, side)


class Removal:
    """Base class: an input-space operator defines :meth:`fill`; the logits follow."""

    name = "removal"
    favours: str | None = None

    def fill(self, inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``inputs`` ``(N, ...)`` with the features where ``keep`` ``(N, D)`` is False replaced."""
        raise NotImplementedError

    def baseline(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """``(N, D)``: the value each removed feature takes, when it does not depend on the mask.

        None (the default) when it does (ROAD) or when the operator changes the network
        instead (deactivation, weight reversion). With a baseline, removing features is
        linear in the first layer, which lets :func:`xwp.evaluation.faithfulness.curves` take a shortcut.
        """
        return None

    @torch.no_grad()
    def logits(self, model: nn.Module, inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The model's logits ``(N, C)`` with the features outside ``keep`` removed."""
        return model(self.fill(inputs, keep))

    @torch.no_grad()
    def masked_logits(self, model: nn.Module, images: torch.Tensor, copies: int, keep: torch.Tensor) -> torch.Tensor:
        """Logits ``(B * copies, C)`` of each of ``images`` ``(B, ...)`` under ``copies`` masks (``keep`` image-major).

        Equals ``logits`` on ``copies`` repeats of each image; an operator whose fill value
        depends only on the image (blur) overrides it to compute that value once per image.
        """
        return self.logits(model, _repeat(images, copies), keep)


def _repeat(images: torch.Tensor, copies: int) -> torch.Tensor:
    """``(B * copies, ...)``: each image repeated ``copies`` times in a row."""
    b = images.shape[0]
    return images[:, None].expand(b, copies, *images.shape[1:]).reshape(b * copies, *images.shape[1:])


def _replace(inputs: torch.Tensor, keep: torch.Tensor, baseline: torch.Tensor | float) -> torch.Tensor:
    """``where(keep, inputs, baseline)`` in the shape of ``inputs``."""
    flat = inputs.reshape(inputs.shape[0], -1)
    if isinstance(baseline, torch.Tensor):
        baseline = baseline.to(device=flat.device, dtype=flat.dtype)
        baseline = baseline.reshape(flat.shape[0], -1) if baseline.dim() > 1 else baseline.reshape(-1)
    return torch.where(keep.to(flat.device), flat, baseline).reshape(inputs.shape)


@dataclass
class Zero(Removal):
    """Removed features take ``value`` (0: the paper's protocol)."""

    value: float = 0.0
    name = "zero"

    def fill(self, inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Replace removed features by the constant."""
        return _replace(inputs, keep, self.value)

    def baseline(self, inputs: torch.Tensor) -> torch.Tensor:
        """The constant for every feature."""
        return torch.full_like(inputs.reshape(inputs.shape[0], -1), self.value)


@dataclass
class TrainMean(Removal):
    """Removed pixels take the training set's per-pixel mean ``train_mean`` (``D`` values)."""

    train_mean: torch.Tensor
    name = "mean"

    def fill(self, inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Replace removed features by the per-pixel mean."""
        return _replace(inputs, keep, self.baseline(inputs))

    def baseline(self, inputs: torch.Tensor) -> torch.Tensor:
        """The per-pixel mean for every image."""
        flat = inputs.reshape(inputs.shape[0], -1)
        if self.train_mean.numel() != flat.shape[1]:
            raise XWPError(f"train_mean has {self.train_mean.numel()} values, the images {flat.shape[1]}")
        return self.train_mean.reshape(1, -1).to(device=flat.device, dtype=flat.dtype).expand_as(flat)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` images (radius 3 sigma, reflected borders)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    x = nn.functional.pad(images, (radius, radius, 0, 0), mode="reflect")
    x = nn.functional.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = nn.functional.pad(x, (0, 0, radius, radius), mode="reflect")
    return nn.functional.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


@dataclass
class Blur(Removal):
    """Removed pixels take the value of a Gaussian-blurred copy of the same image (Fong & Vedaldi 2017)."""

    sigma: float = 2.0
    shape: tuple[int, int, int] | None = None
    name = "blur"

    def fill(self, inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Replace removed pixels by the blurred image."""
        return _replace(inputs, keep, self.baseline(inputs))

    def baseline(self, inputs: torch.Tensor) -> torch.Tensor:
        """The blurred image (it does not depend on which pixels are removed)."""
        return self.blurred(inputs)

    def blurred(self, inputs: torch.Tensor) -> torch.Tensor:
        """The blurred copy of every image, ``(N, D)``."""
        c, h, w = image_shape(inputs, self.shape)
        return gaussian_blur(inputs.reshape(-1, c, h, w), self.sigma).reshape(inputs.shape[0], -1)

    @torch.no_grad()
    def masked_logits(self, model: nn.Module, images: torch.Tensor, copies: int, keep: torch.Tensor) -> torch.Tensor:
        """As :meth:`Removal.masked_logits`, blurring each image once instead of each of its copies.

        (Blurring all 200 copies of an image per curve made blur removal 8x slower than zero.)
        """
        xs = _repeat(images, copies)
        return model(_replace(xs, keep, _repeat(self.blurred(images), copies)))


def road_system(image: np.ndarray, keep: np.ndarray) -> tuple[sparse.csc_matrix, np.ndarray, np.ndarray]:
    """ROAD's sparse system ``A v = b`` for one ``(C, H, W)`` image (Rong et al. 2022).

    Unknown ``v`` are the removed pixels; row i says ``s_i v_i - sum_(removed j) w_ij v_j =
    sum_(kept j) w_ij x_j`` with ``s_i`` the summed weight of the pixel's in-image neighbours.
    Returns ``A`` ``(U, U)``, ``b`` ``(U, C)`` and the removed pixels' flat indices ``(U,)``.
    """
    c, h, w = image.shape
    flat = image.reshape(c, -1)
    kept = keep.reshape(-1).astype(bool)
    unknown = np.flatnonzero(~kept)
    var = np.full(h * w, -1)
    var[unknown] = np.arange(unknown.size)
    rows_i, cols_i = unknown // w, unknown % w
    a_rows, a_cols, a_vals = [], [], []
    b = np.zeros((unknown.size, c))
    total = np.zeros(unknown.size)
    for (dr, dc), weight in ROAD_NEIGHBOURS:
        r, col = rows_i + dr, cols_i + dc
        inside = (r >= 0) & (r < h) & (col >= 0) & (col < w)
        ids = np.flatnonzero(inside)
        nb = r[inside] * w + col[inside]
        total[ids] += weight
        known = kept[nb]
        b[ids[known]] += weight * flat[:, nb[known]].T
        a_rows.append(ids[~known])
        a_cols.append(var[nb[~known]])
        a_vals.append(np.full((~known).sum(), -weight))
    a_rows.append(np.arange(unknown.size))
    a_cols.append(np.arange(unknown.size))
    a_vals.append(total)
    a = sparse.csc_matrix(
        (np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))), shape=(unknown.size,) * 2
    )
    return a, b, unknown


def road_impute(image: np.ndarray, keep: np.ndarray, noise: float = 0.01, rng: np.random.Generator | None = None):
    """One ``(C, H, W)`` image with its removed pixels linearly imputed (+ Gaussian noise of std ``noise``).

    A region with no kept pixel at all has no anchor (the system is singular there); a
    1e-9 ridge on the diagonal sends it to 0 and changes well-posed solutions by ~1e-9.
    """
    a, b, unknown = road_system(image, keep)
    out = image.reshape(image.shape[0], -1).astype(np.float64, copy=True)
    if unknown.size == 0:
        return out.reshape(image.shape)
    a = a + 1e-9 * sparse.identity(unknown.size, format="csc")
    v = spsolve(a, b)
    v = v.reshape(unknown.size, -1).T  # (C, U)
    if noise:
        v = v + noise * (rng or np.random.default_rng(0)).standard_normal(v.shape)
    out[:, unknown] = v
    return out.reshape(image.shape)


@dataclass
class NoisyLinearImputation(Removal):
    """ROAD's noisy linear imputation (Rong et al., ICML 2022); one sparse solve per image, on the CPU."""

    noise: float = 0.01
    seed: int = 0
    shape: tuple[int, int, int] | None = None
    name = "road"

    def rng(self, image: np.ndarray, keep: np.ndarray) -> np.random.Generator:
        """The noise generator of one (image, mask): seeded by ``seed`` and both contents, not by batch position.

        (One generator per call made an image's noise, hence its scores, depend on which
        other masks shared its batch, i.e. on the batch size.)
        """
        digest = zlib.crc32(np.ascontiguousarray(keep, dtype=bool).tobytes(), zlib.crc32(image.tobytes()))
        return np.random.default_rng([self.seed, digest])

    def fill(self, inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Impute every image's removed pixels from its kept neighbours."""
        c, h, w = image_shape(inputs, self.shape)
        x = inputs.detach().reshape(-1, c, h, w).double().cpu().numpy()
        k = keep.reshape(x.shape[0], c, h * w).all(1).cpu().numpy()  # a pixel is kept if all its channels are
        out = np.stack([road_impute(x[i], k[i], self.noise, self.rng(x[i], k[i])) for i in range(x.shape[0])])
        return torch.from_numpy(out).to(device=inputs.device, dtype=inputs.dtype).reshape(inputs.shape)


@dataclass
class Deactivation(Removal):
    """Switch removed inputs off inside the network (related-methods spec).

    For a fully connected network the first layer is ``h1 = W x + b``; deactivating input i
    drops its term ``W_i x_i``, which is exactly what setting ``x_i = 0`` does: for an MLP
    this operator equals :class:`Zero` (tested). Networks that are not fully connected need
    the general operator (``xwp.attribution.deactivation.deactivate``) once it is merged.
    """

    name = "deactivation"

    @torch.no_grad()
    def logits(self, model: nn.Module, inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits with the removed inputs' first-layer contributions dropped."""
        try:
            first, rest = split_first_linear(model)
        except XWPError:
            try:
                from xwp.attribution.deactivation import deactivate  # the general operator (branch methods2)
            except ImportError:
                raise XWPError(
                    "deactivation of this network needs xwp.attribution.deactivation (not merged yet)"
                ) from None
            return deactivate(model, inputs, keep)
        x = inputs.reshape(inputs.shape[0], -1)
        w = first.weight
        xk = x * keep.to(device=x.device, dtype=x.dtype)
        h = xk @ w.t() if first.bias is None else torch.addmm(first.bias, xk, w.t())
        return rest(h)


def initial_first_weight(model: nn.Module, initial_model: nn.Module | None) -> torch.Tensor:
    """The first layer's weights at initialisation (``initial_model`` or an ``xwp.MLP``'s own buffers)."""
    if initial_model is not None:
        return split_first_linear(initial_model)[0].weight.detach()
    if isinstance(model, MLP):
        return model.initial_state()["0.weight"]
    raise XWPError("weight reversion needs the initial state: pass initial_model= or use xwp.MLP")


@dataclass
class WeightReversion(Removal):
    """Remove pixel i by reverting its first-layer weights ``W_i`` to the initial ``W0_i`` (XWP's removal).

    ``h1 = b + sum_(kept i) x_i W_i + sum_(removed i) x_i W0_i``. This is the perturbation XWP
    itself scores, one pixel at a time, so it favours XWP (and XWPc) by construction: report
    it only beside input-space operators, as a check that a ranking survives.
    """

    initial_model: nn.Module | None = None
    name = "revert"
    favours = "xwp"

    @torch.no_grad()
    def logits(self, model: nn.Module, inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits with the removed pixels' first-layer weights at their initial values."""
        first, rest = split_first_linear(model)
        w = first.weight
        w0 = initial_first_weight(model, self.initial_model).to(device=w.device, dtype=w.dtype)
        x = inputs.reshape(inputs.shape[0], -1)
        k = keep.to(device=x.device, dtype=x.dtype)
        h = (x * k) @ w.t() + (x * (1 - k)) @ w0.t()
        return rest(h if first.bias is None else h + first.bias)


#: name -> (class, one-line description)
REMOVALS: dict[str, tuple[type[Removal], str]] = {
    "zero": (Zero, "removed pixels set to 0 (the paper's protocol)"),
    "mean": (TrainMean, "removed pixels set to the training set's per-pixel mean"),
    "blur": (Blur, "removed pixels taken from a Gaussian-blurred copy of the image"),
    "road": (NoisyLinearImputation, "noisy linear imputation from neighbouring pixels (ROAD, Rong et al. 2022)"),
    "deactivation": (Deactivation, "removed inputs switched off inside the network (= zero for an MLP)"),
    "revert": (WeightReversion, "removed pixels' first-layer weights reverted to the initial state (favours XWP)"),
}


def make_removal(
    name: str,
    model: nn.Module | None = None,
    initial_model: nn.Module | None = None,
    train_mean: torch.Tensor | None = None,
    **options: float,
) -> Removal:
    """Build the operator ``name`` from :data:`REMOVALS` with what it needs (train mean, initial model)."""
    if name not in REMOVALS:
        raise XWPError(f"unknown removal {name!r}; choose from {', '.join(REMOVALS)}")
    if name == "mean":
        if train_mean is None:
            raise XWPError("the 'mean' removal needs the training set's per-pixel mean (train_mean=)")
        return TrainMean(train_mean, **options)
    if name == "revert":
        if initial_model is None and not isinstance(model, MLP):
            raise XWPError("the 'revert' removal needs the initial state: pass initial_model= or use xwp.MLP")
        return WeightReversion(initial_model)
    return REMOVALS[name][0](**options)
