"""xwp: weight-perturbation attribution (XWP, XWPc) for networks with a dense or convolutional first layer.

The core is importable without Streamlit::

    import xwp
    model = xwp.MLP((784, 400, 100, 10), seed=0)
    history = xwp.train(model, xwp.load_dataset("typeface", "train"), xwp.load_dataset("typeface", "test"))
    maps = xwp.XWP(model).attribute(images, target=labels)

``import xwp`` is cheap: each name below is imported from its module on first use (PEP 562),
so the app's router can draw its navigation before torch is loaded. ``xwp.train`` is the
training function, as it always was, even after the module ``xwp.train`` has been imported.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from xwp._version import __version__ as __version__

#: public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(("METHODS", "RISE", "XWP", "XWPc", "attribute", "make_method"), "xwp.attribution"),
    **dict.fromkeys(("Checkpoint", "load_checkpoint", "save_checkpoint"), "xwp.checkpoint"),
    **dict.fromkeys(("DATASETS", "ImageSet", "load_dataset"), "xwp.data"),
    **dict.fromkeys(("TrainingDiverged", "XWPError"), "xwp.errors"),
    **dict.fromkeys(("Evaluation", "evaluate"), "xwp.evaluation.protocol"),
    **dict.fromkeys(("METRICS", "average_drop", "deletion_auc", "insertion_auc"), "xwp.evaluation.metrics"),
    **dict.fromkeys(("CNN", "MLP"), "xwp.models"),
    **dict.fromkeys(("History", "TrainConfig", "fit", "train"), "xwp.train"),
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from xwp.attribution import METHODS, RISE, XWP, XWPc, attribute, make_method  # noqa: F401
    from xwp.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: F401
    from xwp.data import DATASETS, ImageSet, load_dataset  # noqa: F401
    from xwp.errors import TrainingDiverged, XWPError  # noqa: F401
    from xwp.evaluation.metrics import METRICS, average_drop, deletion_auc, insertion_auc  # noqa: F401
    from xwp.evaluation.protocol import Evaluation, evaluate  # noqa: F401
    from xwp.models import CNN, MLP  # noqa: F401
    from xwp.train import History, TrainConfig, fit, train  # noqa: F401


class _Facade(types.ModuleType):
    """The package module: public names on first use; a submodule never hides a public name of the same name."""

    def __getattr__(self, name: str) -> Any:
        if name in _EXPORTS:
            value = getattr(importlib.import_module(_EXPORTS[name]), name)
            types.ModuleType.__setattr__(self, name, value)
            return value
        try:  # xwp.models, xwp.viz, ...: a submodule not imported yet
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        # importing the submodule xwp.train sets xwp.train to that module: keep the function
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        types.ModuleType.__setattr__(self, name, value)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *_EXPORTS})


sys.modules[__name__].__class__ = _Facade
