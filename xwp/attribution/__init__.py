"""Attribution methods: XWP, XWPc, RISE and Captum-backed baselines, in one registry.

Every method follows Captum's contract: ``Method(model).attribute(inputs, target=...)``
returns a tensor shaped like ``inputs``. :data:`METHODS` maps a short name to a
:class:`MethodSpec`; the CLI, the app, the evaluation and the tests all read it, so a
method registered here shows up everywhere.

One module per family: :mod:`~xwp.attribution.registry` (METHODS, ``@register``, tags),
:mod:`~xwp.attribution.weight_perturbation` (XWP, XWPc), :mod:`~xwp.attribution.captum`
(the Captum baselines), :mod:`~xwp.attribution.rise`, :mod:`~xwp.attribution.baselines`
(random) and :mod:`~xwp.attribution.common` (targets, output functions). Importing this
package registers them all.
"""

from xwp.attribution.baselines import RandomAttribution
from xwp.attribution.captum import CaptumMethod, superpixel_mask
from xwp.attribution.common import OutputFn, OutputModel, Target, indicator, output_fn, resolve_target
from xwp.attribution.registry import (
    METHODS,
    TAGS,
    Method,
    MethodSpec,
    attribute,
    make_method,
    methods_tagged,
    register,
)
from xwp.attribution.rise import RISE, rise_masks
from xwp.attribution.weight_perturbation import XWP, XWPc, split_first_linear

__all__ = [
    "METHODS",
    "RISE",
    "TAGS",
    "XWP",
    "CaptumMethod",
    "Method",
    "MethodSpec",
    "OutputFn",
    "OutputModel",
    "RandomAttribution",
    "Target",
    "XWPc",
    "attribute",
    "indicator",
    "make_method",
    "methods_tagged",
    "output_fn",
    "register",
    "resolve_target",
    "rise_masks",
    "split_first_linear",
    "superpixel_mask",
]
