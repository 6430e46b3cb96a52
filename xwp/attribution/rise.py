"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018)."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F

from xwp.attribution.common import Target, as_model_input, output_fn, resolve_target
from xwp.attribution.registry import Method, register
from xwp.devices import run_chunked
from xwp.errors import XWPError


@functools.lru_cache(maxsize=8)
def rise_masks(
    n_masks: int, grid_size: int, p_keep: float, height: int, width: int, seed: int, device: str = "cpu"
) -> torch.Tensor:
    """RISE masks ``(N, H, W)``: random ``s x s`` binary grids, bilinearly upsampled, randomly shifted.

    Petsiuk et al. (2018): cell = ceil(H / s); each grid of keep-probability ``p`` is
    upsampled to ``(s + 1) * cell`` and cropped at a random offset in ``[0, cell)``.
    The result is cached and read-only.
    """
    gen = torch.Generator().manual_seed(seed)
    cell_h, cell_w = math.ceil(height / grid_size), math.ceil(width / grid_size)
    grid = (torch.rand(n_masks, 1, grid_size, grid_size, generator=gen) < p_keep).float()
    up = F.interpolate(grid, size=((grid_size + 1) * cell_h, (grid_size + 1) * cell_w), mode="bilinear")
    up = up[:, 0]  # (N, (s+1)ch, (s+1)cw)
    dy = torch.randint(0, cell_h, (n_masks,), generator=gen)
    dx = torch.randint(0, cell_w, (n_masks,), generator=gen)
    rows = dy[:, None] + torch.arange(height)  # (N, H)
    cols = dx[:, None] + torch.arange(width)  # (N, W)
    n = torch.arange(n_masks)[:, None, None]
    masks = up[n, rows[:, :, None], cols[:, None, :]]  # (N, H, W)
    return masks.to(device)


@register(
    "rise",
    "RISE",
    "perturbation",
    "Average of random smooth masks weighted by the target probability they keep.",
    "Petsiuk, Das & Saenko 2018",
    rank=60,
    tags=("evaluate", "study", "figure"),
)
class RISE(Method):
    """Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018).

    Saliency of class ``t`` at pixel ``j``: ``sum_k f_t(x * M_k) M_k[j] / (N p)`` over ``N``
    random masks ``M_k`` (:func:`rise_masks`). Batched: every image of the batch is
    multiplied by a chunk of masks and all go through the model in one pass.

    Args:
        model: any classifier returning logits for ``(B, ..., H, W)`` inputs.
        output: the score ``f``: ``"softmax"`` (default), ``"logits"`` or a callable.
        n_masks, grid_size, p_keep, seed: the masks (:func:`rise_masks`).
        batch_rows: masked images per forward pass.

    Every option may also be given to ``attribute`` for one call.
    """

    defaults = {"output": "softmax", "n_masks": 2000, "grid_size": 7, "p_keep": 0.5, "seed": 0, "batch_rows": 8192}

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Saliency maps shaped like ``inputs`` (masks span the last two dimensions)."""
        o = self.call_options(overrides)
        n_masks, p_keep = o["n_masks"], o["p_keep"]
        x = as_model_input(inputs, self.model)
        if x.dim() == 2:  # flat square images
            side = math.isqrt(x.shape[1])
            if side * side != x.shape[1]:
                raise XWPError("RISE needs image-shaped inputs (B, ..., H, W)")
            x = x.reshape(x.shape[0], side, side)
        if not 0 < p_keep <= 1:
            raise XWPError(f"p_keep must be in (0, 1], got {p_keep}")
        out_fn = output_fn(o["output"])
        bsz, (h, w) = x.shape[0], x.shape[-2:]
        masks = rise_masks(n_masks, o["grid_size"], p_keep, h, w, o["seed"], str(x.device)).to(x.dtype)  # (N, H, W)
        t = resolve_target(target, self.model(x))  # (B,)
        scores = torch.empty(bsz, n_masks, dtype=x.dtype, device=x.device)  # (B, N)
        per_chunk = max(1, o["batch_rows"] // bsz)
        mask_view = (n_masks,) + (1,) * (x.dim() - 3) + (h, w)

        def work(start: int, stop: int) -> None:
            m = masks[start:stop].reshape((stop - start,) + mask_view[1:])  # (n, ..., H, W)
            xm = x[:, None] * m[None]  # (B, n, ..., H, W)
            out = out_fn(self.model(xm.reshape((-1,) + x.shape[1:])))  # (B*n, C)
            out = out.reshape(bsz, stop - start, -1)  # (B, n, C)
            scores[:, start:stop] = out.gather(2, t.view(bsz, 1, 1).expand(-1, stop - start, 1))[..., 0]

        run_chunked(n_masks, per_chunk, work)
        sal = scores @ masks.reshape(n_masks, -1) / (n_masks * p_keep)  # (B, H*W)
        sal = sal.reshape((bsz,) + (1,) * (x.dim() - 3) + (h, w)).expand(x.shape)  # channels share a map
        return sal.reshape(inputs.shape).to(inputs.device)
