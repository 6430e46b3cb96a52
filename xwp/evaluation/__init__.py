"""Evaluation: how good is a map.

Removal operators (:mod:`~xwp.evaluation.removal`), the
deletion/insertion curves and per-image scores (:mod:`~xwp.evaluation.faithfulness`), the
metrics table (:mod:`~xwp.evaluation.metrics`), statistics (:mod:`~xwp.evaluation.stats`),
output spaces (:mod:`~xwp.evaluation.scales`), the protocol that runs it all on a dataset
(:mod:`~xwp.evaluation.protocol`: :func:`evaluate`), sanity checks
(:mod:`~xwp.evaluation.sanity`) and the initial-state ablation (:mod:`~xwp.evaluation.ablation`).
"""

from xwp.evaluation.metrics import METRICS, PINNED, average_drop, deletion_auc, insertion_auc
from xwp.evaluation.protocol import DEFAULT_METHODS, Evaluation, combine, evaluate, summarize
from xwp.evaluation.removal import REMOVALS, make_removal

__all__ = [
    "DEFAULT_METHODS",
    "METRICS",
    "PINNED",
    "REMOVALS",
    "Evaluation",
    "average_drop",
    "combine",
    "deletion_auc",
    "evaluate",
    "insertion_auc",
    "make_removal",
    "summarize",
]
