"""Sanity baselines every attribution method must beat."""

from __future__ import annotations

from typing import Any

import torch

from xwp.attribution.common import Target
from xwp.attribution.registry import Method, register


@register(
    "random",
    "Random",
    "baseline",
    "Uniform random scores: the order every method must beat.",
    "-",
    rank=1000,
    tags=("evaluate", "study"),
)
class RandomAttribution(Method):
    """Uniform random scores: the random-order baseline every method must beat."""

    defaults = {"seed": 0}

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Random attributions shaped like ``inputs`` (target is ignored)."""
        seed = self.call_options(overrides)["seed"]
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(inputs.shape, generator=gen, dtype=torch.float64).to(inputs.dtype).to(inputs.device)
