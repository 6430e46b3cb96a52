"""What ``st.cache_resource`` shares between sessions: datasets and the default model.

Everything shared is read-only: the default model (trained once as a job on the compute executor,
written atomically under :func:`xwp.config.cache_dir`, so restarts start instantly) and
the datasets. Nothing shared is trained, hooked or written to: XWP and XWPc never modify
a model, and the Captum methods that attach state work on copies.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path

import streamlit as st

import xwp
from xwp.app import safe
from xwp.app.session import SessionModel
from xwp.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from xwp.config import atomic_write, cache_dir, setting
from xwp.data.datasets import DATASETS, ImageSet, load_dataset
from xwp.data.images import IMAGE_SHAPE
from xwp.errors import XWPError
from xwp.serve.compute import NORMAL, TaskContext, get_executor
from xwp.serve.storage import read_regular, snapshot_bytes, snapshots_from_bytes
from xwp.train import Progress, TrainConfig, build_model, fit
from xwp.viz.replay import SnapshotRecorder

DEFAULT_NAME = "Default: typeface digits"

# --------------------------------------------------------------------------- datasets


@st.cache_resource(show_spinner=False, max_entries=12)
def _shared_dataset(name: str, split: str, data_dir: str | None) -> ImageSet:
    """A dataset split, loaded once for every session; never modified."""
    return load_dataset(name, split, data_dir)


def dataset(name: str, split: str, data_dir: str | None = None) -> ImageSet:
    """A dataset split from the shared cache, with a spinner while it loads.

    ``data_dir`` must lie inside the allowed data folders (:func:`xwp.config.allowed_data_path`):
    every path that reaches a loader from the app passes here.
    """
    if name not in DATASETS:
        raise XWPError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    data_dir = safe.visitor_path(data_dir)
    with st.spinner(f"Loading {DATASETS[name].label} ({split} split)…", show_time=True):
        try:
            return _shared_dataset(name, split, data_dir or None)
        except XWPError as e:
            raise XWPError(for_app_users(str(e), name)) from None


def for_app_users(message: str, name: str) -> str:
    """A core data error reworded for the app: no command-line flags, the operator configures the data folder."""
    if "--data-dir" not in message:
        return message
    head = message.split(". Put the", 1)[0].split(" passed as --data-dir", 1)[0]
    head = re.sub(r"\s*\([A-Za-z.]*(Error|Exception)\)", "", head)  # no Python class names for app users
    label = DATASETS[name].label if name in DATASETS else name
    return (
        f"{head}. {label} is not available on this server: the operator must configure a data folder that "
        "holds its files (see the help of the Data folder field), or pick a built-in dataset."
    )


def test_set(entry: SessionModel) -> ImageSet:
    """The test split of the dataset ``entry`` was trained on.

    From the folder or upload it was trained from in this session, else the operator's
    folders or the built-in datasets; never a folder its metadata names.
    """
    name = entry.meta.get("dataset")
    if name not in DATASETS:
        raise XWPError(
            "this model's checkpoint does not say which dataset it was trained on, so there are no "
            "test images for it; draw or upload an image on the Explain page instead"
        )
    kind, where = safe.test_source(entry.uid, name)
    try:
        data = safe.upload_test_set(where) if kind == "upload" else dataset(name, "test", where)
    except XWPError as e:
        raise XWPError(f"the test images of this model's dataset are not available here: {e}") from None
    if len(data.classes) != entry.model.n_classes or data.images[0].numel() != entry.model.n_inputs:
        raise XWPError(f"the {name} test images do not fit this model ({entry.model.describe()})")
    return data


# --------------------------------------------------------------------------- default model


def default_config() -> TrainConfig:
    """Settings of the default model (``XWP_DEFAULT_EPOCHS`` shortens it, e.g. for tests)."""
    return TrainConfig(epochs=max(1, setting("XWP_DEFAULT_EPOCHS")))


def default_model_path() -> Path:
    """Where the default model is kept on disk (one file per settings and xwp version)."""
    s = default_config()
    arch = "-".join(str(h) for h in (math.prod(IMAGE_SHAPE), *s.hidden, 10))
    return cache_dir() / f"default-{s.dataset}-{arch}-e{s.epochs}-s{s.seed}-v{xwp.__version__}.safetensors"


@st.cache_resource(show_spinner=False, max_entries=4)
def _shared_checkpoint(path: str, mtime_ns: int) -> Checkpoint:
    """The default model loaded once per file version and shared read-only by every session."""
    return load_checkpoint(path)


def _load_default(path: Path) -> Checkpoint | None:
    """The default model from disk, or None if it is missing or damaged."""
    try:
        return _shared_checkpoint(str(path), path.stat().st_mtime_ns)
    except (FileNotFoundError, XWPError):
        return None


class DefaultTrainer:
    """Trains the default model once, as a job on the compute executor, and writes it atomically to ``path``.

    Sessions only watch its progress, so a click or a closed tab during the first open does
    not restart the training, and concurrent first sessions share one run. It runs at
    ``NORMAL`` priority: ahead of queued trainings and comparisons, behind live strokes.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fraction, self.message, self.error = 0.0, "Rendering the typeface digits from this machine's fonts…", None
        self.done = threading.Event()
        self.job = get_executor().submit_task(self._run, priority=NORMAL)
        self.job.future.add_done_callback(self._finished)

    def _run(self, ctx: TaskContext) -> None:
        """Load the data, train, save (on the executor's worker)."""

        def progress(p: Progress) -> None:
            self.fraction = p.fraction
            self.message = f"Training the default model: epoch {p.epoch}/{p.epochs}, loss {p.loss:.3f}"
            ctx.tick()

        config = default_config()
        model = build_model(config, IMAGE_SHAPE, 10)  # one image's shape: an MLP or a CNN
        recorder = SnapshotRecorder(model, then=progress)  # for the Weights page's training replay
        fitted = fit(config, model=model, progress=recorder, report_every=10)
        atomic_write(snapshots_path(self.path), snapshot_bytes(recorder.snapshots))
        save_checkpoint(self.path, fitted.model.cpu(), {"name": DEFAULT_NAME, **fitted.meta})

    def _finished(self, future) -> None:
        """Any failure becomes :attr:`error` (reported to every waiting session); then wake them."""
        e = future.exception()
        if e is not None:
            self.error = str(e) if isinstance(e, XWPError) else f"{type(e).__name__}: {e}"
        self.done.set()


def snapshots_path(model_path: Path) -> Path:
    """Where the first-layer snapshots of the default model are kept, beside its checkpoint."""
    return model_path.with_name(model_path.name.replace(".safetensors", ".snapshots.safetensors"))


def default_snapshots() -> dict:
    """First-layer weights per epoch of the default model (empty when they were not recorded)."""
    try:
        data = read_regular(snapshots_path(default_model_path()), 64 * 2**20)
        return snapshots_from_bytes(data)
    except XWPError:
        return {}


@st.cache_resource(show_spinner=False, max_entries=4)
def _default_trainer(path: str) -> DefaultTrainer:
    """The one background training of the default model for ``path`` (shared by all sessions)."""
    return DefaultTrainer(Path(path))


def default_model() -> SessionModel:
    """The default model (paper architecture on typeface digits), trained on first use and cached on disk."""
    path = default_model_path()
    ckpt = _load_default(path)
    if ckpt is None:
        trainer = _default_trainer(str(path))
        box = st.empty()
        with box.container():
            st.info(
                "Preparing the default model (784-400-100-10 on the built-in typeface digits). This happens "
                "once; later sessions and restarts load it from disk instantly.",
                icon=":material/hourglass_top:",
            )
            bar = st.progress(trainer.fraction, text=trainer.message)
            while not trainer.done.wait(0.3):
                bar.progress(trainer.fraction, text=trainer.message)
        box.empty()
        ckpt = _load_default(path)
        if ckpt is None:
            _default_trainer.clear()  # the next run tries again
            raise XWPError(trainer.error or f"the default model could not be written to {path.parent}")
    return SessionModel.from_checkpoint(ckpt.meta.get("name", "Default model"), ckpt)
