"""Attribution methods: XWP, XWPc, RISE, Captum-backed baselines and related work, in one registry.

Every method follows Captum's contract: ``Method(model).attribute(inputs, target=...)``
returns a tensor shaped like ``inputs``. :data:`METHODS` maps a short name to a
:class:`MethodSpec`; the CLI, the app, the evaluation and the tests all read it, so a
method registered here shows up everywhere.

One module per family: :mod:`~xwp.attribution.registry` (METHODS, ``@register``, tags),
:mod:`~xwp.attribution.weight_perturbation` (XWP, XWPc; their literal definitions in
:mod:`~xwp.attribution.reference`) on
:mod:`~xwp.attribution.first_layer` (a dense or convolutional first layer and the rest), :mod:`~xwp.attribution.captum`
(the Captum baselines), :mod:`~xwp.attribution.rise`, :mod:`~xwp.attribution.baselines`
(random), the related work -- :mod:`~xwp.attribution.pathwise` (Lim et al. 2024),
:mod:`~xwp.attribution.zennit_lrp` (Zennit's LRP composites) and
:mod:`~xwp.attribution.deactivation` (Chanchal et al. 2025, with the ``deactivate`` removal
operator) on :mod:`~xwp.attribution.unroll` (a network as a list of layers) -- and
:mod:`~xwp.attribution.common` (targets, output functions). Importing this package registers
them all.
"""

from xwp.attribution.baselines import RandomAttribution
from xwp.attribution.captum import CaptumMethod, superpixel_mask
from xwp.attribution.common import OutputFn, OutputModel, Target, indicator, output_fn, resolve_target
from xwp.attribution.deactivation import ActivationDeactivation, deactivate
from xwp.attribution.first_layer import FirstLayer, split_first_layer, split_first_linear
from xwp.attribution.pathwise import Pathwise
from xwp.attribution.reference import xwp_reference, xwpc_reference
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
from xwp.attribution.weight_perturbation import XWP, XWPc
from xwp.attribution.zennit_lrp import EpsilonPlusFlatLRP, GammaBoxLRP, ZennitLRP

__all__ = [
    "METHODS",
    "ActivationDeactivation",
    "EpsilonPlusFlatLRP",
    "FirstLayer",
    "GammaBoxLRP",
    "Pathwise",
    "ZennitLRP",
    "deactivate",
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
    "split_first_layer",
    "split_first_linear",
    "superpixel_mask",
    "xwp_reference",
    "xwpc_reference",
]
