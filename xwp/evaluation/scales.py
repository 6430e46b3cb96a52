"""Score spaces for attribution maps: probability (the paper's), log-odds and logits.

On a confident prediction (``p`` near 1) softmax differences vanish: XWP's map reads
``±2e-05`` and a shared colour scale blanks it. The same methods can explain a score that
does not saturate. Three spaces, for every method that has an ``output`` option:

* ``"probability"``: softmax, the paper's choice (``output="softmax"``);
* ``"log-odds"``: the target's log-odds ``log p_t - log(1 - p_t)``, computed from logits
  with log-sum-exps (exact even when ``p_t`` rounds to 1 in float32);
* ``"logits"``: raw scores before softmax (``output="logits"``).

XWP and XWPc combine per-class outputs with the paper's indicator (eq. 4:
``sum_n I_n out_n``, ``+1`` for the target, ``-1`` otherwise), while Captum methods and RISE
read the target's column. One callable cannot serve both, so :func:`output_for` hands XWP
and XWPc :func:`xwp_log_odds`, whose indicator sum is exactly the target's log-odds, and
every other method :func:`log_odds`. With softmax XWP's score is
``p_t - (1 - p_t)``; its log-odds counterpart ``log p_t - log(1 - p_t)`` is the same contrast
of the target against all other classes, taken in log space.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

from xwp.errors import XWPError

SPACES = ("probability", "log-odds", "logits")

LABELS = {"probability": "Probability (paper)", "log-odds": "Log-odds", "logits": "Logits"}

#: one plain sentence per space: what the ± value of a pixel in a map means (for the app's caption)
MEANING = {
    "probability": (
        "A pixel's value is how much it raises (+, red) or lowers (−, blue) the network's probability for the "
        "explained class, on the 0–1 scale; when the network is already sure (p near 1) there is little room "
        "left, so the values can be tiny."
    ),
    "log-odds": (
        "A pixel's value is how much it raises (+, red) or lowers (−, blue) the log-odds log(p / (1 − p)) of the "
        "explained class; +1 multiplies the odds by e ≈ 2.7, and values do not shrink when the network is sure."
    ),
    "logits": (
        "A pixel's value is how much it raises (+, red) or lowers (−, blue) the explained class's raw score "
        "(its logit, before softmax); logits have no fixed scale, so compare pixels with each other, not with "
        "a threshold."
    ),
}

#: methods that combine outputs with the paper's indicator rather than picking the target's column
INDICATOR_METHODS = ("xwp", "xwpc")


def check_space(space: str) -> str:
    """``space`` if it is one of :data:`SPACES`, else :class:`XWPError`."""
    if space not in SPACES:
        raise XWPError(f"score space must be one of {', '.join(SPACES)}, got {space!r}")
    return space


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """Log-odds ``log p_n - log(1 - p_n)`` of every class, ``(N, C)``, from logits ``(N, C)``.

    ``log(1 - p_n)`` is ``log1p(-p_n)`` for every class but the most probable one (there
    ``p_n <= 1/2``, so no cancellation) and the log-sum-exp of the other logits for the
    most probable one, which stays exact when ``p`` rounds to 1. Differentiable (no
    infinite gradient in an unused branch), so gradient methods can use it.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise XWPError(f"log-odds need logits of shape (N, C) with C >= 2, got {tuple(logits.shape)}")
    lse = torch.logsumexp(logits, 1, keepdim=True)  # (N, 1)
    logp = logits - lse  # (N, C)
    top = logits.argmax(1, keepdim=True)  # (N, 1)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, top, True)
    safe = torch.where(is_top, torch.full_like(logp, -math.log(2.0)), logp)  # keeps log1p away from -1
    log1mp = torch.log1p(-torch.exp(safe))
    others = torch.logsumexp(logits.masked_fill(is_top, -torch.inf), 1, keepdim=True) - lse  # (N, 1)
    log1mp = torch.where(is_top, others.expand_as(log1mp), log1mp)
    return logp - log1mp


def xwp_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """Per-class outputs whose eq.-4 indicator sum ``2 out_t - sum_n out_n`` is the target's log-odds.

    With ``L = log_odds(logits)`` and ``S = sum_n L_n``: ``out_n = L_n / 2 - S / (2 (C - 2))``
    for ``C > 2`` (the unique linear solution) and ``L_n / 2`` for two classes (there
    ``L_0 = -L_1``). Pass it as ``output=`` to :class:`xwp.XWP` / :class:`xwp.XWPc`.
    """
    lo = log_odds(logits)
    c = lo.shape[1]
    if c == 2:
        return lo / 2
    return lo / 2 - lo.sum(1, keepdim=True) / (2 * (c - 2))


def target_score(logits: torch.Tensor, target: torch.Tensor | int, space: str) -> torch.Tensor:
    """The target's score ``(N,)`` in ``space``: ``p_t``, its log-odds, or its logit."""
    check_space(space)
    t = torch.as_tensor(target, device=logits.device).long().reshape(-1).expand(logits.shape[0])
    if space == "probability":
        return torch.softmax(logits, 1).gather(1, t[:, None])[:, 0]
    if space == "log-odds":
        return log_odds(logits).gather(1, t[:, None])[:, 0]
    return logits.gather(1, t[:, None])[:, 0]


def output_for(space: str, method: str) -> str | Callable[[torch.Tensor], torch.Tensor]:
    """The ``output=`` option that makes ``method`` explain ``space``."""
    check_space(space)
    if space == "probability":
        return "softmax"
    if space == "logits":
        return "logits"
    return xwp_log_odds if method in INDICATOR_METHODS else log_odds


def method_options(space: str, method: str) -> dict[str, object]:
    """``{"output": ...}`` for a method that has an output option; ``{}`` for one that has none.

    LRP always explains logits and Random has no score; the app should say so beside
    their maps rather than pass an option they do not take.
    """
    from xwp.attribution import METHODS

    spec = METHODS.get(method)
    if spec is None or "output" not in spec.defaults:
        return {}
    return {"output": output_for(space, method)}


def caption(space: str, methods: list[str] | tuple[str, ...] = ()) -> str:
    """The plain sentence for ``space``, plus the notes that apply to ``methods``."""
    text = MEANING[check_space(space)]
    if space == "probability" and any(m in INDICATOR_METHODS for m in methods):
        text += " XWP and XWPᶜ score p − (1 − p), so their values are twice the change in probability."
    if space == "logits" and any(m in INDICATOR_METHODS for m in methods):
        text += " XWP and XWPᶜ score the class's logit minus the sum of the others'."
    if "lrp" in methods and space != "logits":
        text += " LRP always explains logits."
    return text


def robust_peak(a: np.ndarray, q: float = 99.5) -> float:
    """The ``q``-th percentile of ``|a|`` over finite values (0 for an empty or non-finite map)."""
    v = np.abs(np.asarray(a, dtype=np.float64)).ravel()
    v = v[np.isfinite(v)]
    return float(np.percentile(v, q)) if v.size else 0.0


def shared_limit(maps: Mapping[str, np.ndarray], q: float = 99.5) -> float:
    """One colour limit for several maps: the largest of their :func:`robust_peak` values."""
    return max((robust_peak(m, q) for m in maps.values()), default=0.0)


def invisible_maps(maps: Mapping[str, np.ndarray], limit: float, q: float = 99.5, fraction: float = 0.02) -> list[str]:
    """Names of the maps that a colour scale of ``±limit`` would show as blank.

    A map is invisible when its ``q``-th percentile of ``|value|`` is below ``fraction`` of
    ``limit`` (2 %: under the step between neighbouring colours of a 50-colour map).
    """
    if not (math.isfinite(limit) and limit > 0):
        return []
    return [name for name, m in maps.items() if robust_peak(m, q) < fraction * limit]


def invisibility_warning(
    maps: Mapping[str, np.ndarray], limit: float, labels: Mapping[str, str] | None = None
) -> str | None:
    """A one-line warning naming the maps a shared scale hides, or None when every map shows."""
    hidden = invisible_maps(maps, limit)
    if not hidden:
        return None
    names = ", ".join((labels or {}).get(h, h) for h in hidden)
    return (
        f"On the shared colour scale {names} look blank: their values are under 2 % of the largest map's. "
        "Switch to one scale per map, or to log-odds, to see them."
    )
