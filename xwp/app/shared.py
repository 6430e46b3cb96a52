"""What ``st.cache_resource`` shares between sessions: datasets, the default model, uploaded files.

Everything shared is read-only: the default model (trained once in a background thread,
written atomically under :func:`xwp.config.cache_dir`, so restarts start instantly) and
the datasets. Nothing shared is trained, hooked or written to: XWP and XWPc never modify
a model, and the Captum methods that attach state work on copies.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import streamlit as st

import xwp
from xwp.app.session import SessionModel
from xwp.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from xwp.compute import NORMAL, TaskContext, get_executor
from xwp.config import atomic_write, cache_dir, env_int
from xwp.data import DATASETS, ImageSet, load_dataset
from xwp.errors import XWPError
from xwp.images import check_upload
from xwp.train import Progress, TrainConfig, fit

DEFAULT_NAME = "Default: typeface digits"

# --------------------------------------------------------------------------- datasets


@st.cache_resource(show_spinner=False, max_entries=12)
def _shared_dataset(name: str, split: str, data_dir: str | None) -> ImageSet:
    """A dataset split, loaded once for every session; never modified."""
    return load_dataset(name, split, data_dir)


def dataset(name: str, split: str, data_dir: str | None = None) -> ImageSet:
    """A dataset split from the shared cache, with a spinner while it loads."""
    if name not in DATASETS:
        raise XWPError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    with st.spinner(f"Loading {DATASETS[name].label} ({split} split)…", show_time=True):
        return _shared_dataset(name, split, data_dir or None)


def test_set(entry: SessionModel) -> ImageSet:
    """The test split of the dataset ``entry`` was trained on."""
    name = entry.meta.get("dataset")
    if name not in DATASETS:
        raise XWPError(
            "this model's checkpoint does not say which dataset it was trained on, so there are no "
            "test images for it; draw or upload an image on the Explain page instead"
        )
    try:
        data = dataset(name, "test", entry.meta.get("data_dir"))
    except XWPError as e:
        raise XWPError(f"the test images of this model's dataset are not available here: {e}") from None
    if len(data.classes) != entry.model.sizes[-1] or data.images[0].numel() != entry.model.sizes[0]:
        raise XWPError(f"the {name} test images do not fit this model ({entry.model.describe()})")
    return data


# --------------------------------------------------------------------------- uploads


def save_upload(data: bytes, suffix: str) -> str:
    """Store uploaded bytes under the cache (named by content hash) and return the path."""
    check_upload(data)
    path = cache_dir() / "uploads" / f"{hashlib.sha256(data).hexdigest()[:20]}{suffix}"
    if not path.exists():
        atomic_write(path, data)
    return str(path)


def tmnist_upload(data: bytes) -> str:
    """Store an uploaded TMNIST CSV (plain or gzip) and return the path to train from."""
    if not data:
        raise XWPError("the uploaded TMNIST file is empty")
    return save_upload(data, ".csv.gz" if data[:2] == b"\x1f\x8b" else ".csv")


# --------------------------------------------------------------------------- default model


def default_config() -> TrainConfig:
    """Settings of the default model (``XWP_DEFAULT_EPOCHS`` shortens it, e.g. for tests)."""
    return TrainConfig(epochs=max(1, env_int("XWP_DEFAULT_EPOCHS", 10)))


def default_model_path() -> Path:
    """Where the default model is kept on disk (one file per settings and xwp version)."""
    s = default_config()
    arch = "-".join(str(h) for h in (784, *s.hidden, 10))
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

        fitted = fit(default_config(), progress=progress, report_every=10)
        save_checkpoint(self.path, fitted.model.cpu(), {"name": DEFAULT_NAME, **fitted.meta})

    def _finished(self, future) -> None:
        """Any failure becomes :attr:`error` (reported to every waiting session); then wake them."""
        e = future.exception()
        if e is not None:
            self.error = str(e) if isinstance(e, XWPError) else f"{type(e).__name__}: {e}"
        self.done.set()


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
