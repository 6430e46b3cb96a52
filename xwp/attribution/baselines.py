"""Sanity baselines every attribution method must beat."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from xwp.attribution.common import Target
from xwp.attribution.registry import Method, register


def image_seed(seed: int, image: torch.Tensor) -> int:
    """A 63-bit generator seed from ``seed`` and a BLAKE2b hash of one image's values.

    The image is hashed as contiguous float64 (float32 and float64 copies of an image agree,
    -0.0 counts as 0.0), so the seed depends on the pixels, not on dtype, device or batch.
    """
    values = (image.detach().to("cpu", torch.float64) + 0.0).contiguous().numpy()
    return _seed_of_bytes(seed, values.tobytes())


def _seed_of_bytes(seed: int, data: bytes) -> int:
    """A 63-bit seed from a BLAKE2b hash of ``data`` keyed by ``seed``."""
    digest = hashlib.blake2b(data, digest_size=8, key=str(int(seed)).encode()[:64]).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


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
    """Uniform random scores: the random-order baseline every method must beat.

    Each image's map is drawn from its own generator, seeded by ``(seed, the image's
    content)`` (:func:`image_seed`), so an image gets the same map in any batch, at any
    position, and two different images get different maps.
    """

    defaults = {"seed": 0}
    per_image_deterministic = True  # one generator per image: batching cannot change a map

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Random attributions shaped like ``inputs`` (target is ignored); dimension 0 is the batch."""
        seed = self.call_options(overrides)["seed"]
        if inputs.dim() == 0:
            return self.attribute(inputs.reshape(1), target, **overrides).reshape(())
        images = (inputs.detach().to("cpu", torch.float64) + 0.0).contiguous()  # one copy for the batch
        rows = images.reshape(images.shape[0], -1).numpy()  # (B, D): each image's bytes, hashed per image
        maps = torch.empty(rows.shape, dtype=torch.float64)
        gen = torch.Generator()
        for b in range(rows.shape[0]):
            gen.manual_seed(_seed_of_bytes(seed, rows[b].tobytes()))  # resets the whole state
            torch.rand(rows.shape[1], generator=gen, dtype=torch.float64, out=maps[b])
        return maps.reshape(inputs.shape).to(inputs.dtype).to(inputs.device)
