"""Merging explain requests: which methods may be batched, their key, one call split per request.

Used by :class:`xwp.serve.compute.ComputeExecutor`: requests that wait together with one
key run as one ``attribute`` call on the concatenated images.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch

from xwp.errors import XWPError


def is_batchable(method: Any) -> bool:
    """Whether ``method.attribute`` gives each image the same result in any batch (so requests may merge).

    A method declares it with a ``per_image_deterministic`` attribute; XWP and XWPc are
    (eqs. 3-5 of Lympelopoulos & Kanellopoulou 2026 are per image, no random draws), seeded
    stochastic methods (RISE masks, random baselines, sampling) are not: their draws depend
    on the batch, so merging would change results.
    """
    flag = getattr(method, "per_image_deterministic", None)
    if flag is not None:
        return bool(flag)
    from xwp.attribution import XWP, XWPc

    return isinstance(method, XWP | XWPc)


def batch_key(model_id: Hashable, method: str, options: dict[str, Any] | None, target: Any) -> tuple:
    """The key under which explain requests may merge: model, method, options and target mode."""
    opts = tuple(sorted((k, repr(v)) for k, v in (options or {}).items()))
    return (model_id, method, opts, "predicted" if target is None else "given")


def _targets(target: Any, n: int) -> torch.Tensor:
    """A request's target as ``(n,)`` long indices (an int is repeated)."""
    t = torch.as_tensor(target).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise XWPError(f"target has {t.numel()} entries for {n} images")
    return t


def attribute_batch(method: Any, items: list[tuple[torch.Tensor, Any]]) -> list[torch.Tensor]:
    """Run ``method.attribute`` once on the concatenated inputs and split the result per request."""
    sizes = [x.shape[0] for x, _ in items]
    x = torch.cat([x for x, _ in items])
    if items[0][1] is None:
        target = None
    else:
        target = torch.cat([_targets(t, n) for (_, t), n in zip(items, sizes, strict=True)])
    out = method.attribute(x, target=target)
    return list(torch.split(out, sizes))


def predict_batch(model: torch.nn.Module, items: list[torch.Tensor]) -> list[torch.Tensor]:
    """Softmax probabilities of the concatenated inputs, split per request."""
    sizes = [x.shape[0] for x in items]
    with torch.no_grad():
        p = torch.softmax(model(torch.cat(items)), dim=1)
    return list(torch.split(p, sizes))
