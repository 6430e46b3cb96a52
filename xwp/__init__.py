"""xwp: weight-perturbation attribution (XWP, XWPc) for networks with a dense or convolutional first layer.

The core is importable without Streamlit::

    import xwp
    model = xwp.MLP((784, 400, 100, 10), seed=0)
    history = xwp.train(model, xwp.load_dataset("typeface", "train"), xwp.load_dataset("typeface", "test"))
    maps = xwp.XWP(model).attribute(images, target=labels)
"""

__version__ = "0.1.0"

from xwp.attribution import METHODS, RISE, XWP, XWPc, attribute, make_method  # noqa: E402
from xwp.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from xwp.data import DATASETS, ImageSet, load_dataset  # noqa: E402
from xwp.errors import TrainingDiverged, XWPError  # noqa: E402
from xwp.evaluation import Evaluation, evaluate  # noqa: E402
from xwp.metrics import METRICS, average_drop, deletion_auc, insertion_auc  # noqa: E402
from xwp.models import CNN, MLP  # noqa: E402
from xwp.train import History, train  # noqa: E402

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
    "TrainingDiverged",
    "XWPError",
    "XWPc",
    "attribute",
    "average_drop",
    "deletion_auc",
    "evaluate",
    "insertion_auc",
    "load_checkpoint",
    "load_dataset",
    "make_method",
    "save_checkpoint",
    "train",
]
