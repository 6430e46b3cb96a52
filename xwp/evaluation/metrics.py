"""Faithfulness metrics: one :class:`Metric` per score, owning its computation and its direction.

The computations live in :mod:`xwp.evaluation.faithfulness` (batched in torch, CPU or GPU, any removal
operator from :mod:`xwp.evaluation.removal`, softmax or logit output); the directions come from
:data:`xwp.evaluation.faithfulness.DIRECTIONS`. The protocol (pinned; every number in this project follows it):

- features are ordered by descending attribution, ties broken in a random order seeded by
  ``(seed, image index)`` (NaN attributions count as the least important);
- removing a feature: the ``zero`` operator by default (value 0, the paper's), any other
  from :data:`xwp.evaluation.removal.REMOVALS` on request;
- the target is the true label, and every method explains that class;
- the score is the explained class's softmax probability (``output="softmax"``), its
  logit (``"logits"``) or its log-odds (``"log-odds"``), raw: NOT divided by its value on the
  intact input (``relative=True`` divides and clips to [0, 1], softmax only);
- ``deletion_auc``: 200 steps, step k removes floor(D k / 200) features (D = 784 for
  MNIST-like images), trapezoid rule on [0, 1]; lower is better (Petsiuk et al. 2018);
- ``insertion_auc``: the reverse, starting from the all-removed image; higher is better;
- ``srg``, ``average_drop``, ``faithfulness_correlation``, ``max_sensitivity``,
  ``sparseness``, ``complexity``: see :mod:`xwp.evaluation.faithfulness`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from xwp.evaluation import faithfulness as F
from xwp.evaluation.faithfulness import DROP_FRACTION, STEPS, auc, feature_order, step_counts
from xwp.evaluation.removal import Removal, Zero

__all__ = [
    "DROP_FRACTION",
    "METRICS",
    "STEPS",
    "Metric",
    "auc",
    "average_drop",
    "curves",
    "deletion_auc",
    "feature_order",
    "insertion_auc",
    "step_counts",
]


def _removal(removal: Removal | None, background: float) -> Removal:
    """The operator to use: ``removal`` or a constant ``background`` (0: the protocol's zero)."""
    return removal if removal is not None else Zero(background)


@torch.no_grad()
def target_probability(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax probability of ``target`` for each input ``(B,)``."""
    return torch.softmax(model(inputs), dim=1).gather(1, target[:, None])[:, 0]


def curves(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    attributions: torch.Tensor,
    mode: str = "deletion",
    steps: int = STEPS,
    seed: int = 0,
    rows: int = 4096,
    background: float = 0.0,
    removal: Removal | None = None,
    output: str = "softmax",
    relative: bool = False,
    index=None,
) -> torch.Tensor:
    """Deletion or insertion curves ``(B, steps + 1)`` (MoRF) of the explained class's raw score.

    Point k is the score with the first ``floor(D k / steps)`` features (in
    :func:`feature_order`) removed (deletion) or kept (insertion). ``relative=True`` divides by
    the intact probability and clips to [0, 1] (the old protocol, for comparison only).
    """
    return F.curves(
        model,
        inputs,
        target,
        attributions,
        mode,
        "morf",
        _removal(removal, background),
        output,
        relative,
        steps=steps,
        seed=seed,
        rows=rows,
        index=index,
    )


def deletion_auc(model: nn.Module, inputs: torch.Tensor, target, attributions: torch.Tensor, **kw) -> torch.Tensor:
    """Deletion AUC per image ``(B,)`` (keywords as :func:`curves`); lower is better."""
    return auc(curves(model, inputs, target, attributions, "deletion", **kw).double())


def insertion_auc(model: nn.Module, inputs: torch.Tensor, target, attributions: torch.Tensor, **kw) -> torch.Tensor:
    """Insertion AUC per image ``(B,)`` (keywords as :func:`curves`); higher is better."""
    return auc(curves(model, inputs, target, attributions, "insertion", **kw).double())


def average_drop(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    attributions: torch.Tensor,
    fraction: float = DROP_FRACTION,
    seed: int = 0,
    background: float = 0.0,
    removal: Removal | None = None,
    output: str = "softmax",
    index=None,
) -> torch.Tensor:
    """Per-image ``max(0, p - p') / p`` after removing the top ``floor(fraction D)`` features ``(B,)``.

    Higher is better (Chattopadhyay et al. 2018, as removal); with ``output="logits"`` the
    absolute logit drop ``max(0, s - s')``.
    """
    return F.average_drop(
        model, inputs, target, attributions, _removal(removal, background), output, fraction, seed, index
    )


def _srg(model, inputs, target, attributions, *, removal, output, seed, index, explain=None) -> torch.Tensor:
    """Symmetric relevance gain per image (Blücher et al., TMLR 2024)."""
    kw = dict(removal=removal, output=output, seed=seed, index=index)
    morf = F.curves(model, inputs, target, attributions, "deletion", "morf", **kw)
    lerf = F.curves(model, inputs, target, attributions, "deletion", "lerf", **kw)
    return F.srg(morf.double(), lerf.double())


def _curve_auc(kind: str) -> Callable[..., torch.Tensor]:
    """The AUC of one MoRF curve kind, as a :class:`Metric` computation."""

    def compute(model, inputs, target, attributions, *, removal, output, seed, index, explain=None):
        """AUC of the MoRF ``kind`` curve per image."""
        c = F.curves(model, inputs, target, attributions, kind, "morf", removal, output, seed=seed, index=index)
        return auc(c.double())

    return compute


def _average_drop(model, inputs, target, attributions, *, removal, output, seed, index, explain=None):
    """Average Drop per image."""
    return F.average_drop(model, inputs, target, attributions, removal, output, seed=seed, index=index)


def _faithfulness_correlation(model, inputs, target, attributions, *, removal, output, seed, index, explain=None):
    """Faithfulness correlation per image (Bhatt et al. 2020); the subsets do not depend on the image."""
    return F.faithfulness_correlation(model, inputs, target, attributions, removal, output, seed=seed)


def _max_sensitivity(model, inputs, target, attributions, *, removal, output, seed, index, explain=None):
    """Max-sensitivity per image (Yeh et al. 2019); needs ``explain(inputs, target) -> maps``."""
    if explain is None:
        raise ValueError("max_sensitivity needs the method: pass explain=")
    return F.max_sensitivity(explain, inputs, target, seed=seed, attributions=attributions)


def _map_only(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A computation that reads only the map (sparseness, complexity)."""

    def compute(model, inputs, target, attributions, **_):
        """Score of the map alone."""
        return fn(attributions)

    return compute


@dataclass(frozen=True)
class Metric:
    """A faithfulness metric: its computation and its direction (Quantus-style, without the constructors).

    ``compute(model, inputs, target, attributions, removal=, output=, seed=, index=, explain=)``
    gives one score per image ``(B,)`` (``explain`` only for ``max_sensitivity``). A curve
    metric (``curve`` is ``"deletion"`` or ``"insertion"``) is the AUC of that MoRF curve;
    :func:`xwp.evaluate` keeps its curves and calls :meth:`from_curves`. ``short`` is the
    table-column abbreviation; ``in_paper_table`` marks the paper's Table 1 columns.
    """

    name: str
    label: str
    description: str
    compute: Callable[..., torch.Tensor]
    short: str = ""
    curve: str | None = None
    in_paper_table: bool = False

    @property
    def higher_is_better(self) -> bool:
        """The direction, from :data:`xwp.evaluation.faithfulness.DIRECTIONS`."""
        return F.DIRECTIONS[self.name]

    @property
    def arrow(self) -> str:
        """↑ or ↓."""
        return "↑" if self.higher_is_better else "↓"

    def score(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        target,
        attributions: torch.Tensor,
        seed: int = 0,
        background: float = 0.0,
        removal: Removal | None = None,
        output: str = "softmax",
        index=None,
        explain: F.Explain | None = None,
    ) -> torch.Tensor:
        """Per-image scores ``(B,)`` of ``attributions`` for ``model`` on ``inputs`` and ``target``."""
        return self.compute(
            model,
            inputs,
            target,
            attributions,
            removal=_removal(removal, background),
            output=output,
            seed=seed,
            index=index,
            explain=explain,
        )

    def from_curves(self, curve: torch.Tensor) -> torch.Tensor:
        """Per-image scores ``(B,)`` of a curve metric from its curves ``(B, S)`` (in float64)."""
        if self.curve is None:
            raise ValueError(f"{self.name} is not a curve metric")
        return auc(curve.double())

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is strictly better than ``b`` in this metric's direction."""
        return a > b if self.higher_is_better else a < b


#: every metric, in table order (the first six are the names pinned for scripts)
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "deletion_auc",
            "Deletion AUC",
            "area under the explained class's score while removing features, most relevant first",
            _curve_auc("deletion"),
            short="Del. AUC",
            curve="deletion",
            in_paper_table=True,
        ),
        Metric(
            "insertion_auc",
            "Insertion AUC",
            "area under the explained class's score while adding features to a blank image",
            _curve_auc("insertion"),
            short="Ins. AUC",
            curve="insertion",
        ),
        Metric(
            "srg",
            "SRG",
            "symmetric relevance gain: deletion AUC least relevant first minus most relevant first",
            _srg,
            short="SRG",
        ),
        Metric(
            "average_drop",
            "Average Drop @20%",
            "drop of the explained class's score after removing the top 20% of features",
            _average_drop,
            short="AD",
            in_paper_table=True,
        ),
        Metric(
            "faithfulness_correlation",
            "Faithfulness corr.",
            "correlation between a random subset's summed relevance and the score drop when it is removed",
            _faithfulness_correlation,
            short="FC",
        ),
        Metric(
            "max_sensitivity",
            "Max-sensitivity",
            "largest relative change of the map under small input noise",
            _max_sensitivity,
            short="MaxSens",
        ),
        Metric("sparseness", "Sparseness", "Gini index of the map's magnitudes", _map_only(F.sparseness), short="Gini"),
        Metric(
            "complexity", "Complexity", "entropy of the map's normalised magnitudes", _map_only(F.complexity), short="H"
        ),
    )
}
#: the metric names pinned for scripts, in CSV order
PINNED = ("deletion_auc", "insertion_auc", "srg", "average_drop", "faithfulness_correlation", "max_sensitivity")
