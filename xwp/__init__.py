"""xwp: weight-perturbation attribution (XWP, XWPc) for networks with a dense or convolutional first layer.

The core is importable without Streamlit::

    import xwp
    model = xwp.MLP((784, 400, 100, 10), seed=0)
    history = xwp.train(model, xwp.load_dataset("typeface", "train"), xwp.load_dataset("typeface", "test"))
    maps = xwp.XWP(model).attribute(images, target=labels)
"""

from xwp._version import __version__
from xwp.attribution import METHODS, RISE, XWP, XWPc, attribute, make_method
from xwp.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from xwp.data.datasets import DATASETS, ImageSet, load_dataset
from xwp.errors import TrainingDiverged, XWPError
from xwp.evaluation.metrics import METRICS, average_drop, deletion_auc, insertion_auc
from xwp.evaluation.protocol import Evaluation, evaluate
from xwp.models import CNN, MLP
from xwp.train import History, TrainConfig, fit, train

__all__ = [
    "CNN",
    "DATASETS",
    "METHODS",
    "METRICS",
    "MLP",
    "RISE",
    "XWP",
    "Checkpoint",
    "Evaluation",
    "History",
    "ImageSet",
    "TrainConfig",
    "TrainingDiverged",
    "XWPError",
    "XWPc",
    "__version__",
    "attribute",
    "average_drop",
    "deletion_auc",
    "evaluate",
    "fit",
    "insertion_auc",
    "load_checkpoint",
    "load_dataset",
    "make_method",
    "save_checkpoint",
    "train",
]
