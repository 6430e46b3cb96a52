"""Streamlit glue for the app: session models, cached loaders and one function per page action.

The only core module that imports streamlit. Every user's models live in
``st.session_state`` (one dict per session, switched in the sidebar). What
``st.cache_resource`` shares between users is read-only: the default model (trained
once, written atomically under :func:`xwp.config.cache_dir`, so restarts start
instantly) and the datasets. Nothing shared is trained, hooked or written to: XWP and
XWPc never modify a model, and the Captum methods that attach state work on copies.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

import xwp
from xwp import plots
from xwp.attribution import METHODS, make_method
from xwp.checkpoint import Checkpoint, checkpoint_bytes, load_checkpoint, save_checkpoint
from xwp.config import LIMITS, atomic_write, cache_dir, env_int
from xwp.data import DATASETS, ImageSet, image_to_input, load_dataset, load_image
from xwp.errors import TrainingDiverged, XWPError
from xwp.evaluation import Evaluation, check_request, evaluate, format_table
from xwp.metrics import METRICS
from xwp.models import MLP, check_sizes, parse_hidden
from xwp.train import Progress, check_settings, predict, train, training_meta

# --------------------------------------------------------------------------- session keys

MODELS_KEY = "xwp_models"  # dict name -> SessionModel, in the order they were added
ACTIVE_KEY = "xwp_active_model"  # the sidebar's selectbox: name of the active model
PENDING_KEY = "xwp_pending_active"  # a model to activate on the next run (set after the sidebar is drawn)
FLASH_KEY = "xwp_flash"  # messages shown once as toasts on the next run
PARTIAL_KEY = "xwp_training_in_progress"  # snapshot of a running training (last complete epoch)
RESULT_KEY = "xwp_training_result"  # the last training's outcome, shown on the Train page
STOP_KEY = "xwp_stop_training"
UPLOADS_KEY = "xwp_uploads"  # file_id -> error message (None: loaded) for uploaded checkpoints
COMPARE_KEY = "xwp_comparison"  # the last evaluation, kept across page switches
MEMO_KEY = "xwp_memo"  # attributions and figures already computed in this session
WANTED_PAGE_KEY = "xwp_wanted_page"  # a page opened before the router ran (see routed())

MAX_SESSION_MODELS = 8
#: less empty space above the page title, so a projected page shows more of its figures
STYLE = "<style>[data-testid='stMainBlockContainer'] {padding-top: 2.5rem;}</style>"
EXPLAIN_DEFAULT = ("xwp", "xwpc", "ig", "occlusion")
FIG_DPI = 100


@dataclass(frozen=True)
class PageInfo:
    """One page of the app, for the router, the Home page's cards and links."""

    path: str
    title: str
    icon: str
    summary: str


PAGES = (
    PageInfo("pages/home.py", "Home", ":material/home:", "What XWP and XWPᶜ are, and how to cite the paper."),
    PageInfo(
        "pages/train.py",
        "Train",
        ":material/model_training:",
        "Train a network on typeface digits, scikit-learn digits, MNIST, Fashion-MNIST or TMNIST; download "
        "and upload checkpoints.",
    ),
    PageInfo(
        "pages/weights.py",
        "Weights",
        ":material/grid_view:",
        "The first-layer weight patterns (the paper's Figure 2): trained, initial or their difference.",
    ),
    PageInfo(
        "pages/explain.py",
        "Explain",
        ":material/draw:",
        "Draw a digit, pick a test image or upload one, and compare the heatmaps of XWP, XWPᶜ and the baselines.",
    ),
    PageInfo(
        "pages/compare.py",
        "Compare",
        ":material/leaderboard:",
        "Average Drop, Deletion and Insertion AUC over many test images (the paper's Table 1 and Figure 4).",
    ),
)


# --------------------------------------------------------------------------- session models


@dataclass(eq=False)
class SessionModel:
    """A model of this session: the network, its initial state (None if unknown) and metadata."""

    name: str
    model: MLP
    initial_model: MLP | None
    meta: dict[str, Any]
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @classmethod
    def from_checkpoint(cls, name: str, ckpt: Checkpoint) -> SessionModel:
        """Wrap a loaded :class:`~xwp.checkpoint.Checkpoint`."""
        return cls(name, ckpt.model, ckpt.initial_model, dict(ckpt.meta))

    @property
    def classes(self) -> list[str]:
        """Class names (from the metadata, else 0..C-1)."""
        names = self.meta.get("classes")
        if isinstance(names, list) and len(names) == self.model.sizes[-1]:
            return [str(c) for c in names]
        return [str(i) for i in range(self.model.sizes[-1])]

    @property
    def has_initial(self) -> bool:
        """Whether the initial weights are known (XWP and XWPc need them)."""
        return self.initial_model is not None

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy recorded when the model was trained, if any."""
        acc = self.meta.get("test_accuracy")
        return float(acc) if isinstance(acc, int | float) else None

    def dataset_label(self) -> str:
        """Human name of the training dataset."""
        name = self.meta.get("dataset")
        if name in DATASETS:
            label = DATASETS[name].label
            if self.meta.get("upload_name"):
                label += f" ({self.meta['upload_name']})"
            return label
        return str(name) if name else "unknown"


def session_models() -> dict[str, SessionModel]:
    """The models of this session, by name."""
    return st.session_state.setdefault(MODELS_KEY, {})


def active_model() -> SessionModel | None:
    """The model chosen in the sidebar (None before the first one exists)."""
    models = session_models()
    name = st.session_state.get(ACTIVE_KEY)
    if name in models:
        return models[name]
    return next(reversed(models.values()), None)


def require_model() -> SessionModel:
    """The active model, or a message saying how to get one and the end of this page's run."""
    entry = active_model()
    if entry is None:
        st.info("There is no model in this session yet: train one on the **Train** page or upload a checkpoint there.")
        train_page = PAGES[1]
        st.page_link(train_page.path, label=f"Go to {train_page.title}", icon=train_page.icon)
        st.stop()
    return entry


def unique_name(base: str) -> str:
    """``base``, or ``base (2)``, ``base (3)``... if a model of this session already has that name."""
    models = session_models()
    name, k = base.strip() or "model", 2
    while name in models:
        name = f"{base} ({k})"
        k += 1
    return name


def add_model(entry: SessionModel, rerun: bool = False) -> None:
    """Keep ``entry`` in this session, make it the active model and optionally rerun to show it."""
    models = session_models()
    models[entry.name] = entry
    while len(models) > MAX_SESSION_MODELS:
        oldest = next(iter(models))
        del models[oldest]
        flash(f"Removed the oldest model “{oldest}” (a session keeps at most {MAX_SESSION_MODELS}).")
    st.session_state[PENDING_KEY] = entry.name
    if rerun:
        st.rerun()


def flash(message: str) -> None:
    """Show ``message`` as a toast on the next run (survives ``st.rerun``)."""
    st.session_state.setdefault(FLASH_KEY, []).append(message)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show an :class:`~xwp.errors.XWPError` raised in the block as ``st.error`` and carry on."""
    try:
        yield
    except XWPError as e:
        st.error(str(e), icon=":material/error:")


def _memo() -> dict:
    """Per-session store for results already computed (a throwaway dict outside Streamlit)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx(suppress_warning=True) is None:
        return {}
    return st.session_state.setdefault(MEMO_KEY, {})


# --------------------------------------------------------------------------- routing and sidebar


def routed(page: str) -> None:
    """Make sure streamlit_app.py routes this run; call first thing on every page (``page``: its path).

    Until the router has called ``st.navigation`` once in this server process, Streamlit
    treats the pages/ folder as an old-style multipage app: a page URL opened first after a
    restart would run the page alone, without the page config, sidebar and default model.
    Such a run goes through the router and comes back to ``page``.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if getattr(PagesManager, "uses_pages_directory", False):
        st.session_state[WANTED_PAGE_KEY] = page
        st.switch_page("streamlit_app.py")


def sidebar() -> None:
    """Prepare the session (default model, interrupted training) and draw the model switcher."""
    wanted = st.session_state.pop(WANTED_PAGE_KEY, None)
    if wanted:
        st.switch_page(wanted)
    st.html(STYLE)
    for message in st.session_state.pop(FLASH_KEY, []):
        st.toast(message)
    _finish_interrupted_training()
    models = session_models()
    if not models:
        try:
            add_model(default_model())
        except XWPError as e:
            st.error(f"The default model could not be prepared ({e}). Train one on the Train page.")
    pending = st.session_state.pop(PENDING_KEY, None)
    if pending in models:
        st.session_state[ACTIVE_KEY] = pending
    elif models and st.session_state.get(ACTIVE_KEY) not in models:
        st.session_state[ACTIVE_KEY] = next(reversed(models))
    with st.sidebar:
        if not models:
            st.caption("No model yet.")
            return
        st.selectbox(
            "Active model",
            list(models),
            key=ACTIVE_KEY,
            help="Every page uses this model. Models you train or upload are added here; "
            f"they belong to your browser session only (at most {MAX_SESSION_MODELS}).",
        )
        entry = active_model()
        acc = entry.test_accuracy
        rows = [
            ("Dataset", entry.dataset_label()),
            ("Architecture", entry.model.describe()),
            ("Test accuracy", f"{acc:.1%}" if acc is not None else "not recorded"),
            ("Initial state", "kept (XWP works)" if entry.has_initial else "missing (no XWP/XWPᶜ)"),
        ]
        st.markdown("\n".join(f"- **{k}:** {v}" for k, v in rows))


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


def check_upload(data: bytes) -> bytes:
    """Refuse an upload above :data:`LIMITS` ``.max_upload_bytes``; return it otherwise."""
    if len(data) > LIMITS.max_upload_bytes:
        raise XWPError(
            f"the file is {len(data) / 2**20:.0f} MB; uploads are limited to "
            f"{LIMITS.max_upload_bytes // 2**20} MB (XWP_MAX_UPLOAD_MB)"
        )
    return data


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


def default_settings() -> TrainSettings:
    """Settings of the default model (``XWP_DEFAULT_EPOCHS`` shortens it, e.g. for tests)."""
    return TrainSettings(epochs=max(1, env_int("XWP_DEFAULT_EPOCHS", 10)), name="Default: typeface digits")


def default_model_path() -> Path:
    """Where the default model is kept on disk (one file per settings and xwp version)."""
    s = default_settings()
    arch = "-".join(str(h) for h in (784, *parse_hidden(s.hidden), 10))
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
    """Trains the default model once, in a background thread, and writes it atomically to ``path``.

    Sessions only watch its progress, so a click or a closed tab during the first open does
    not restart the training, and concurrent first sessions share one run.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fraction, self.message, self.error = 0.0, "Rendering the typeface digits from this machine's fonts…", None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="xwp-default-model", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        """Load the data, train, save; any failure becomes :attr:`error`."""
        s = default_settings()
        try:
            train_set = load_dataset(s.dataset, "train")
            test = load_dataset(s.dataset, "test")
            model = MLP((784, *parse_hidden(s.hidden), len(train_set.classes)), seed=s.seed, init=s.init)

            def progress(p: Progress) -> None:
                self.fraction = p.fraction
                self.message = f"Training the default model: epoch {p.epoch}/{p.epochs}, loss {p.loss:.3f}"

            history = train(model, train_set, test, progress=progress, **s.fit)
            meta = {"name": s.name, **training_meta(s.dataset, None, train_set.classes, history, **s.fit)}
            save_checkpoint(self.path, model.cpu(), meta)
        except Exception as e:  # reported to every waiting session, never raised in this thread
            self.error = str(e) if isinstance(e, XWPError) else f"{type(e).__name__}: {e}"
        finally:
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


# --------------------------------------------------------------------------- training


@dataclass
class TrainSettings:
    """What the Train page asks for."""

    dataset: str = "typeface"
    data_dir: str | None = None
    hidden: str = "400,100"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    init: str = "torch"
    seed: int = 0
    name: str = ""
    upload_name: str | None = None

    @property
    def fit(self) -> dict[str, Any]:
        """The keyword arguments of :func:`xwp.train` (the seed also draws the initial weights)."""
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "seed": self.seed,
        }


def check_hidden(text: str) -> tuple[int, ...]:
    """Hidden sizes from text, within :data:`xwp.config.LIMITS`."""
    hidden = parse_hidden(text)
    check_sizes((1, *hidden, 1))
    return hidden


def train_model(s: TrainSettings) -> None:
    """Train a new model with live progress; keep it, make it active and rerun to show the result.

    A Stop click (or any other interruption) ends this run; the next run keeps the model
    of the last complete epoch (see :func:`_finish_interrupted_training`).
    """
    hidden = check_hidden(s.hidden)
    check_settings(s.epochs, s.lr, s.batch_size, s.optimizer)  # before the data is loaded
    train_set = dataset(s.dataset, "train", s.data_dir)
    test = dataset(s.dataset, "test", s.data_dir)
    model = MLP((train_set.images[0].numel(), *hidden, len(train_set.classes)), seed=s.seed, init=s.init)
    name = unique_name(s.name.strip() or f"{s.dataset} {model.describe()}")
    meta = {
        "name": name,
        "upload_name": s.upload_name,
        **training_meta(s.dataset, s.data_dir, train_set.classes, **s.fit),
    }
    partial = {"name": name, "epochs": s.epochs, "checkpoint": None, "epochs_done": 0}
    st.session_state[PARTIAL_KEY] = partial
    top = st.columns([1, 3], vertical_alignment="center")
    top[0].button(
        "Stop training",
        key=STOP_KEY,
        icon=":material/stop_circle:",
        type="primary",
        help="Stop now and keep the model from the last complete epoch.",
    )
    top[1].caption(
        f"Training **{name}** ({model.describe()}, {len(train_set):,} images). "
        "**Stop** keeps the model of the last complete epoch; before the first epoch ends nothing is kept."
    )
    bar = st.progress(0.0, text="Starting…")
    chart = st.empty()

    def progress(p: Progress) -> bool:
        bar.progress(p.fraction, text=f"Epoch {p.epoch}/{p.epochs} · step {p.step}/{p.steps} · loss {p.loss:.4g}")
        if p.epoch_done and p.history.diverging:
            return False  # no point in more epochs; reported below
        if p.epoch_done:
            info = {**meta, "test_accuracy": p.history.test_accuracy[-1], "history": p.history.as_dict()}
            partial.update(checkpoint=checkpoint_bytes(model, info), epochs_done=p.epoch)
            chart.image(plots.png_bytes(plots.training_figure(p.history.as_dict(), f"Training {name}"), dpi=80))
        return True

    try:
        history = train(model, train_set, test, progress=progress, **s.fit)
    except TrainingDiverged as e:
        st.session_state.pop(PARTIAL_KEY, None)
        raise XWPError(f"{e} The diverged model was discarded; nothing was added to your models.") from None
    except XWPError:
        st.session_state.pop(PARTIAL_KEY, None)
        raise
    st.session_state.pop(PARTIAL_KEY, None)
    if history.diverging:
        raise XWPError(
            f"training diverged: after epoch {history.epochs} the loss was {history.loss[-1]:.3g}, more "
            f"than twice the chance level {history.chance_loss:.2f}. The model was discarded; lower the "
            f"learning rate (now {s.lr:g}) and train again."
        )
    model.cpu()
    meta.update(test_accuracy=history.test_accuracy[-1], history=history.as_dict())
    entry = SessionModel(name, model, model.initial_model(), meta)
    _store_result(entry, test, f"Trained **{name}** for {history.epochs} epochs.", "success")
    add_model(entry, rerun=True)


def _finish_interrupted_training() -> None:
    """If a training run was interrupted (Stop, a page switch), keep its last complete epoch."""
    partial = st.session_state.pop(PARTIAL_KEY, None)
    if partial is None:
        return
    if partial["checkpoint"] is None:
        st.session_state[RESULT_KEY] = {
            "level": "warning",
            "note": f"Training of “{partial['name']}” was stopped before its first epoch finished; no model was kept.",
        }
        return
    ckpt = load_checkpoint(partial["checkpoint"])
    entry = SessionModel.from_checkpoint(partial["name"], ckpt)
    entry.meta["epochs_done"] = partial["epochs_done"]
    note = (
        f"Training was stopped after epoch {partial['epochs_done']} of {partial['epochs']}; "
        f"the model from that epoch was kept as **{entry.name}**."
    )
    try:
        test = test_set(entry)
    except XWPError:
        test = None
    _store_result(entry, test, note, "warning")
    add_model(entry)
    flash(f"Kept “{entry.name}” from its last complete epoch.")


def confusion_matrix(model: MLP, data: ImageSet) -> np.ndarray:
    """Counts ``(C, C)`` of true (rows) against predicted (columns) classes."""
    c = len(data.classes)
    pred = predict(model, data.images).numpy()
    return np.bincount(data.labels.numpy() * c + pred, minlength=c * c).reshape(c, c)


def _store_result(entry: SessionModel, test: ImageSet | None, note: str, level: str) -> None:
    """Remember a training outcome (figures as PNG) for the Train page."""
    history = entry.meta.get("history") or {}
    result = {
        "level": level,
        "note": note,
        "name": entry.name,
        "accuracy": entry.test_accuracy,
        "epochs": len(history.get("loss", [])),
        "seconds": sum(history.get("seconds", [])),
    }
    if history.get("loss"):
        result["history_png"] = plots.png_bytes(plots.training_figure(history, f"Training {entry.name}"), FIG_DPI)
    if test is not None:
        matrix = confusion_matrix(entry.model, test)
        fig = plots.confusion_figure(matrix, test.classes, f"Confusion matrix, {len(test):,} test images")
        result["confusion_png"] = plots.png_bytes(fig, FIG_DPI)
    st.session_state[RESULT_KEY] = result


def show_training_result() -> None:
    """The outcome of the last training of this session: message, accuracy, curves and confusion matrix."""
    result = st.session_state.get(RESULT_KEY)
    if not result:
        return
    getattr(st, result["level"])(result["note"])
    if "name" not in result:
        return
    cols = st.columns(3)
    acc = result.get("accuracy")
    cols[0].metric("Test accuracy", f"{acc:.2%}" if acc is not None else "—")
    cols[1].metric("Epochs", result["epochs"])
    cols[2].metric("Training time", f"{result['seconds']:.1f} s")
    left, right = st.columns([3, 2])
    if "history_png" in result:
        left.image(result["history_png"])
    if "confusion_png" in result:
        right.image(result["confusion_png"])


# --------------------------------------------------------------------------- checkpoints


def checkpoint_file(entry: SessionModel) -> tuple[bytes, str]:
    """The model as checkpoint bytes and a file name (computed once per model)."""
    memo = _memo()
    key = ("checkpoint", entry.uid)
    if key not in memo:
        memo[key] = checkpoint_bytes(entry.model, entry.meta)  # sizes, init, seed, versions: from the model
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in entry.name).strip("-") or "model"
    return memo[key], f"{stem}.safetensors"


def load_uploaded_checkpoint(upload) -> None:
    """Add an uploaded checkpoint to this session once; a bad file shows why and changes nothing."""
    if upload is None:
        return
    seen = st.session_state.setdefault(UPLOADS_KEY, {})
    if upload.file_id in seen:
        if seen[upload.file_id]:
            st.error(seen[upload.file_id], icon=":material/error:")
        return
    try:
        ckpt = load_checkpoint(check_upload(upload.getvalue()), require_initial=False)
        if not isinstance(ckpt.model, MLP):  # CNN checkpoints load in the library and CLI, not yet in the app
            raise XWPError(f"this is a {ckpt.model.describe()} checkpoint; the app shows MLPs only for now")
    except XWPError as e:
        seen[upload.file_id] = f"{upload.name}: {e}. Your other models are unchanged."
        st.error(seen[upload.file_id], icon=":material/error:")
        return
    seen[upload.file_id] = None
    entry = SessionModel.from_checkpoint(unique_name(Path(upload.name).stem), ckpt)
    if not entry.has_initial:
        flash(f"“{entry.name}” has no initial state: XWP and XWPᶜ are unavailable for it.")
    flash(f"Loaded “{entry.name}” ({entry.model.describe()}).")
    add_model(entry, rerun=True)


# --------------------------------------------------------------------------- inputs


def canvas_to_input(rgba: np.ndarray | None) -> torch.Tensor | None:
    """A canvas drawing (RGBA or grey, white on black) as a model input ``(1, 1, 28, 28)``; None if blank.

    A drawing too small to be a digit (one dot) raises :class:`~xwp.errors.XWPError` saying so.
    """
    if rgba is None:
        return None
    a = np.asarray(rgba, dtype=np.float32) / 255.0
    if a.ndim == 3:
        gray = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if a.shape[-1] >= 3 else a[..., 0]
        if a.shape[-1] == 4:
            gray = gray * a[..., 3]  # composited on the black background
    else:
        gray = a
    if gray.size == 0 or float(gray.max()) < 0.1:
        return None
    return image_to_input(gray, invert=False)  # a dot too small to be a digit raises XWPError


def upload_to_input(data: bytes) -> torch.Tensor:
    """An uploaded image file as a model input (dark-on-light images are inverted)."""
    return image_to_input(load_image(check_upload(data)))


def test_image(entry: SessionModel, label: int, k: int) -> tuple[torch.Tensor, int]:
    """The ``k``-th test image of class ``label`` and its index in the test split."""
    data = test_set(entry)
    idx = torch.nonzero(data.labels == label).flatten()
    if len(idx) == 0:
        raise XWPError(f"the test split has no image of class {entry.classes[label]}")
    i = int(idx[min(max(k, 0), len(idx) - 1)])
    return data.images[i : i + 1], i


def class_count(entry: SessionModel, label: int) -> int:
    """How many test images have class ``label`` (0 if the test split is unavailable)."""
    try:
        return int((test_set(entry).labels == label).sum())
    except XWPError:
        return 0


def input_preview(x: torch.Tensor, scale: int = 5) -> np.ndarray:
    """A model input as a grey image enlarged with square pixels (what the network sees)."""
    img = x.detach().reshape(28, 28).clamp(0, 1).numpy()
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


# --------------------------------------------------------------------------- explanations


def method_problem(entry: SessionModel, name: str) -> str | None:
    """Why method ``name`` cannot explain ``entry`` (None if it can)."""
    spec = METHODS[name]
    if spec.needs_initial and not entry.has_initial:
        return (
            f"{spec.label} needs the network's initial weights, which this checkpoint does not have. "
            "Train a model on the Train page (xwp keeps the initial state) to use it."
        )
    return None


_FLOAT64: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _float64(model: MLP | None) -> MLP | None:
    """A float64 copy of ``model``, made once per model object (so the shared default model gets one copy)."""
    if model is None:
        return None
    copy64 = _FLOAT64.get(model)
    if copy64 is None:
        copy64 = _FLOAT64[model] = copy.deepcopy(model).double().eval()
    return copy64


def attribution_method(entry: SessionModel, name: str):
    """Method ``name`` for ``entry``, run in float64.

    A confident prediction has a softmax output within 1e-6 of 1, where float32 keeps only
    a few distinct values. XWP and XWPc difference ``1 - p`` and stay exact in float32, but
    the baselines that perturb softmax outputs (Occlusion, Shapley, ...) would show rounding
    noise. Float64 costs about a millisecond more per stroke.
    """
    return make_method(name, _float64(entry.model), _float64(entry.initial_model))


def _attribution(entry: SessionModel, name: str, x: torch.Tensor, target: int) -> tuple[np.ndarray, float]:
    """One method's map ``(28, 28)`` and seconds, remembered per (model, input, target, method)."""
    memo = _memo()
    key = ("attr", entry.uid, name, target, hashlib.blake2b(x.numpy().tobytes(), digest_size=12).hexdigest())
    if key not in memo:
        method = attribution_method(entry, name)
        t0 = time.perf_counter()
        a = method.attribute(x.double(), target=target)
        memo[key] = (a.detach().reshape(28, 28).double().numpy(), time.perf_counter() - t0)
        if len(memo) > 256:
            memo.pop(next(iter(memo)))
    return memo[key]


def png(rgb: np.ndarray) -> bytes:
    """An RGB or grey ``uint8`` array as PNG bytes (fast settings: these are small, flat images)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclass
class Explanation:
    """What the Explain page shows for one input: probabilities and one heatmap tile per method.

    The tiles are coloured arrays encoded as PNG (a few milliseconds, so the page can follow
    every stroke); the matplotlib figure with colour bars is only drawn for the download.
    """

    image: np.ndarray  # (28, 28) input
    probs: np.ndarray  # (C,)
    predicted: int
    target: int
    maps: dict[str, np.ndarray]  # method name -> (28, 28)
    limits: dict[str, float]  # method name -> colour limit s (the map is drawn on [-s, s])
    seconds: dict[str, float]
    skipped: dict[str, str]  # method name -> why it was left out
    classes: list[str]
    shared_scale: bool = False
    overlay: bool = False
    input_png: bytes = b""
    tiles: dict[str, bytes] = field(default_factory=dict)  # method name -> PNG

    @property
    def title(self) -> str:
        """E.g. ``Predicted 7 (98%) · explaining 7``."""
        c = self.classes
        return f"Predicted {c[self.predicted]} ({self.probs[self.predicted]:.0%}) · explaining {c[self.target]}"

    def download_png(self) -> bytes:
        """The input and every map as one matplotlib figure with colour bars (for the download)."""
        fig = plots.attribution_figure(
            self.image,
            {METHODS[m].label: a for m, a in self.maps.items()},
            shared_scale=self.shared_scale,
            overlay=self.overlay,
            title=self.title,
        )
        return plots.png_bytes(fig, dpi=120)

    def npy_bytes(self) -> bytes:
        """The maps as one ``.npy`` array ``(methods, 28, 28)`` in the order of :attr:`maps`."""
        buf = io.BytesIO()
        np.save(buf, np.stack(list(self.maps.values())) if self.maps else np.zeros((0, 28, 28)))
        return buf.getvalue()

    def csv_bytes(self) -> bytes:
        """The maps as CSV: one row per pixel (row, col, input value), one column per method."""
        rows, cols = np.divmod(np.arange(784), 28)
        frame = pd.DataFrame({"row": rows, "col": cols, "input": self.image.ravel()})
        for name, a in self.maps.items():
            frame[name] = a.ravel()
        return frame.to_csv(index=False, float_format="%.6g").encode()

    def probability_chart(self) -> tuple[pd.DataFrame, dict]:
        """Data and Vega-Lite spec of the probabilities bar chart (the explained class in red)."""
        frame = pd.DataFrame(
            {
                "class": self.classes,
                "probability": self.probs,
                "explained": [i == self.target for i in range(len(self.classes))],
            }
        )
        spec = {
            "title": "Predicted probabilities",
            "height": {"step": 24},
            "mark": {"type": "bar", "cornerRadiusEnd": 2},
            "encoding": {
                "y": {
                    "field": "class",
                    "type": "nominal",
                    "sort": None,
                    "title": None,
                    "axis": {"labelFontSize": 14, "labelOverlap": False},
                },
                "x": {
                    "field": "probability",
                    "type": "quantitative",
                    "scale": {"domain": [0, 1]},
                    "title": "probability",
                    "axis": {"format": ".0%"},
                },
                "color": {
                    "field": "explained",
                    "type": "nominal",
                    "legend": None,
                    "scale": {"domain": [False, True], "range": ["#9e9e9e", "#c62828"]},
                },
                "tooltip": [{"field": "class"}, {"field": "probability", "format": ".3f"}],
            },
        }
        return frame, spec


def explain(
    entry: SessionModel,
    x: torch.Tensor,
    target: int | None = None,
    methods: Sequence[str] = EXPLAIN_DEFAULT,
    shared_scale: bool = False,
    overlay: bool = False,
    scale: int = 7,
) -> Explanation:
    """Predict ``x`` ``(1, 1, 28, 28)``, attribute it with ``methods`` and colour the maps (the per-stroke path)."""
    x = x.detach().reshape(1, 1, 28, 28).float()
    with torch.no_grad():
        probs = torch.softmax(entry.model(x), dim=1)[0].double().numpy()
    predicted = int(probs.argmax())
    target = predicted if target is None else int(target)
    if not 0 <= target < len(probs):
        raise XWPError(f"the class to explain must be in 0..{len(probs) - 1}, got {target}")
    maps, seconds, skipped = {}, {}, {}
    for name in methods:
        problem = method_problem(entry, name)
        if problem:
            skipped[name] = problem
            continue
        maps[name], seconds[name] = _attribution(entry, name, x, target)
    image = x.reshape(28, 28).numpy()
    shared = plots.symmetric_limit(*maps.values()) if shared_scale and maps else None
    shown = {name: plots.display_map(a, shared) for name, a in maps.items()}  # as the downloaded figure draws them
    limits = {name: s for name, (_, s) in shown.items()}
    ex = Explanation(
        image, probs, predicted, target, maps, limits, seconds, skipped, entry.classes, shared_scale, overlay
    )
    ex.input_png = png((np.clip(image, 0, 1) * 255).round().astype(np.uint8).repeat(scale, 0).repeat(scale, 1))
    ex.tiles = {name: png(plots.heatmap_rgb(a, s, image, overlay, scale=scale)) for name, (a, s) in shown.items()}
    return ex


def colorbar_png() -> bytes:
    """The colour legend strip shown under the heatmaps."""
    return png(plots.colorbar_rgb(280, 12))


def home_example(entry: SessionModel, n: int = 3) -> bytes | None:
    """PNG of XWP and XWPᶜ on ``n`` correctly classified test images of different classes (None if unavailable)."""
    memo = _memo()
    key = ("home", entry.uid, n)
    if key not in memo:
        try:
            data = test_set(entry)
        except XWPError:
            return None
        methods = [m for m in ("xwp", "xwpc") if method_problem(entry, m) is None] or ["ig"]
        labels = data.labels[:256]
        correct = predict(entry.model, data.images[:256]) == labels
        picks: list[int] = []
        for i in torch.nonzero(correct).flatten().tolist():
            if int(labels[i]) not in {int(labels[j]) for j in picks}:
                picks.append(i)
            if len(picks) == n:
                break
        if not picks:
            return None
        x = data.images[picks]
        target = labels[picks]
        maps = {
            METHODS[m].label: attribution_method(entry, m).attribute(x.double(), target=target).numpy() for m in methods
        }
        fig = plots.method_grid(x.numpy(), target.numpy(), entry.classes, maps, size=1.6)
        memo[key] = plots.png_bytes(fig, dpi=FIG_DPI)
    return memo[key]


# --------------------------------------------------------------------------- weights


@dataclass
class WeightPatterns:
    """First-layer patterns ready to draw, in display order."""

    patterns: np.ndarray  # (H, 784)
    order: list[int]  # neuron indices, first shown first
    scores: np.ndarray | None  # (H,) the sort key where there is one
    label: str  # what the patterns are
    drive: np.ndarray  # (C, H) class drive of each unit
    activation: np.ndarray | None  # (H,) unit activations on the chosen image
    figures: dict[Any, Any] = field(default_factory=dict)  # PNGs already drawn from these patterns


def first_layer(entry: SessionModel, view: str) -> np.ndarray:
    """First-layer weights ``(H, 784)``: ``trained``, ``initial`` or ``change`` (trained minus initial)."""
    w = entry.model.linears[0].weight.detach().double().numpy()
    if view == "trained":
        return w
    if not entry.has_initial:
        raise XWPError("this model has no initial state, so only the trained weights can be shown")
    w0 = entry.initial_model.linears[0].weight.detach().double().numpy()
    return w0 if view == "initial" else w - w0


def _units(entry: SessionModel, h1: torch.Tensor) -> torch.Tensor:
    """First-layer outputs as the next layer sees them: ReLU of ``h1`` (logits if there is no hidden layer)."""
    return h1.relu() if len(entry.model.linears) > 1 else h1


def class_drive(entry: SessionModel, reference: torch.Tensor | None) -> np.ndarray:
    """``d logit_c / d a_j`` ``(C, H)`` at ``reference`` (all ReLUs open if None): how much unit j drives class c.

    ``a_j`` is the output of first-layer unit j. With one hidden layer this is the output
    weight ``W2[c, j]``; deeper, the later layers' ReLU gates are those of the reference input.
    """
    model = entry.model
    first = model.linears[0]
    if len(model.linears) == 1:
        return np.eye(first.out_features)
    if reference is None:
        drive = model.linears[-1].weight.detach()
        for layer in reversed(model.linears[1:-1]):
            drive = drive @ layer.weight.detach()
        return drive.double().numpy()
    with torch.no_grad():
        a0 = first(reference.reshape(1, -1).to(first.weight.dtype)).relu()  # (1, H)
    jac = torch.autograd.functional.jacobian(lambda a: model.net[2:](a)[0], a0)  # (C, 1, H)
    return jac[:, 0].detach().double().numpy()


def weight_patterns(
    entry: SessionModel, view: str = "trained", sort: str = "index", cls: int = 0, image_index: int | None = None
) -> WeightPatterns:
    """The first-layer patterns of ``entry`` in the requested order, optionally weighted by activation.

    ``sort``: ``index``, ``norm`` (largest L2 norm of the shown pattern first) or ``drive``
    (largest :func:`class_drive` towards class ``cls`` first, at the mean test image).
    ``image_index``: weight each pattern by its unit's activation on that test image.
    The session keeps the latest patterns and their figures, so a rerun that changes
    nothing here (e.g. another unit for the large view) draws nothing again.
    """
    memo = _memo()
    key = (entry.uid, view, sort, cls, image_index)
    if memo.get("weights", (None,))[0] != key:
        image = None if image_index is None else test_set(entry).images[image_index]
        memo["weights"] = (key, _weight_patterns(entry, view, sort, cls, image))
    return memo["weights"][1]


def _weight_patterns(entry: SessionModel, view: str, sort: str, cls: int, image: torch.Tensor | None) -> WeightPatterns:
    """:func:`weight_patterns`, computed."""
    w = first_layer(entry, view)
    label = {"trained": "trained weights", "initial": "initial weights", "change": "trained − initial"}[view]
    activation = None
    if image is not None:
        first = entry.model.linears[0]
        with torch.no_grad():
            activation = _units(entry, first(image.reshape(1, -1).float()))[0].double().numpy()  # (H,)
        w = w * activation[:, None]
        label += " × activation"
    try:
        reference = test_set(entry).images.mean(0, keepdim=True)
    except XWPError:
        reference = None
    drive = class_drive(entry, reference)
    scores = None
    if sort == "norm":
        scores = np.linalg.norm(w, axis=1)
    elif sort == "drive":
        scores = drive[cls]
    order = list(range(len(w))) if scores is None else [int(i) for i in np.argsort(-scores, kind="stable")]
    return WeightPatterns(w, order, scores, label, drive, activation)


def weights_grid_png(entry: SessionModel, wp: WeightPatterns, count: int, sort: str, cls: int) -> bytes:
    """The grid of the first ``count`` patterns in display order (the paper's Figure 2), as PNG."""
    if ("grid", count) not in wp.figures:
        shown = wp.order[:count]
        titles = [f"#{j}" if wp.scores is None else f"#{j} ({wp.scores[j]:+.2g})" for j in shown]
        order = {"index": "by index", "norm": "largest norm first"}.get(
            sort, f"strongest drivers of {entry.classes[cls]} first"
        )
        fig = plots.weights_grid(wp.patterns, shown, titles=titles, title=f"First layer, {wp.label}; {order}")
        wp.figures[("grid", count)] = figure_png(fig)
    return wp.figures[("grid", count)]


def neuron_png(wp: WeightPatterns, j: int) -> bytes:
    """Unit ``j``'s pattern, large, as PNG (the latest one is kept: a wide layer has thousands of units)."""
    if wp.figures.get("unit", (None,))[0] != j:
        wp.figures["unit"] = (j, figure_png(plots.neuron_figure(wp.patterns[j], f"Unit #{j}: {wp.label}")))
    return wp.figures["unit"][1]


def neuron_stats(entry: SessionModel, wp: WeightPatterns, j: int) -> pd.DataFrame:
    """Numbers about first-layer unit ``j``: norm, range, change from initialisation, bias, drive."""
    w = entry.model.linears[0].weight[j].detach().double().numpy()
    rows = [
        ("weight norm ‖Wⱼ‖", np.linalg.norm(w)),
        ("min weight", w.min()),
        ("max weight", w.max()),
        ("bias", float(entry.model.linears[0].bias[j].detach())),
    ]
    if entry.has_initial:
        w0 = entry.initial_model.linears[0].weight[j].detach().double().numpy()
        change = np.linalg.norm(w - w0)
        rows += [("change from init ‖Wⱼ − Wⱼ⁰‖", change), ("relative change", change / max(np.linalg.norm(w0), 1e-12))]
    if wp.activation is not None:
        rows.append(("activation on the image", wp.activation[j]))
    best = int(np.argmax(wp.drive[:, j]))
    rows += [(f"strongest drive: class {entry.classes[best]}", wp.drive[best, j])]
    return pd.DataFrame({"quantity": [r[0] for r in rows], "value": [float(r[1]) for r in rows]})


# --------------------------------------------------------------------------- comparison


def run_comparison(entry: SessionModel, methods: Sequence[str], n: int, seed: int) -> None:
    """Evaluate ``methods`` on ``n`` test images with a progress bar; keep the result in the session."""
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise XWPError("choose at least one method")
    usable = [m for m in methods if method_problem(entry, m) is None]
    for m in methods:
        if m not in usable:
            st.info(method_problem(entry, m), icon=":material/info:")
    if "random" not in usable:
        usable.append("random")  # the order every method must beat
    data = test_set(entry)
    check_request(data, usable, n)  # before the progress bar
    bar = st.progress(0.0, text="Starting…")

    def progress(fraction: float, message: str) -> None:
        bar.progress(fraction, text=f"Evaluating: {message}")

    t0 = time.perf_counter()
    ev = evaluate(entry.model, data, usable, n=n, seed=seed, initial_model=entry.initial_model, progress=progress)
    bar.empty()
    images = torch.from_numpy(ev.examples["images"])
    st.session_state[COMPARE_KEY] = {
        "uid": entry.uid,
        "model": entry.name,
        "dataset": entry.dataset_label(),
        "seconds": time.perf_counter() - t0,
        "evaluation": ev,
        "predictions": predict(entry.model, images).numpy(),
    }


def comparison() -> dict | None:
    """The last comparison of this session (None if there is none)."""
    return st.session_state.get(COMPARE_KEY)


def comparison_table(ev: Evaluation, correct_only: bool = False) -> pd.io.formats.style.Styler:
    """Table 1 for display: mean ± std per metric (direction in the header), best in bold, seconds per image."""
    table = ev.table_correct() if correct_only else ev.table
    out = format_table(table)
    out["images"] = table["n"].to_numpy()
    styles = pd.DataFrame("", index=out.index, columns=out.columns)
    contenders = (table.index != "random") & (table["n"] > 0)
    best_style = "font-weight: bold; background-color: rgba(198, 40, 40, 0.12)"
    for m, spec in METRICS.items():
        values = pd.Series(np.where(contenders, table[f"{m}_mean"].to_numpy(), np.nan))
        if values.notna().any():
            best = values.idxmax() if spec.higher_is_better else values.idxmin()
            styles.loc[best, f"{spec.label} {spec.arrow}"] = best_style
    return out.style.apply(lambda _: styles, axis=None)


def comparison_figures(result: dict) -> dict[str, bytes]:
    """Deletion curves, insertion curves and the heatmap grid of a comparison as PNG (rendered once)."""
    if "figures" not in result:
        ev: Evaluation = result["evaluation"]
        labels = {m: METHODS[m].label for m in ev.deletion}
        sub = f"{result['dataset']}, {ev.settings['n']} test images"
        ex = ev.examples
        result["figures"] = {
            "deletion": plots.png_bytes(
                plots.curves_figure(
                    {labels[m]: c for m, c in ev.deletion.items()}, "deletion", title=f"Deletion curves ({sub})"
                ),
                FIG_DPI,
            ),
            "insertion": plots.png_bytes(
                plots.curves_figure(
                    {labels[m]: c for m, c in ev.insertion.items()}, "insertion", title=f"Insertion curves ({sub})"
                ),
                FIG_DPI,
            ),
            "grid": plots.png_bytes(
                plots.method_grid(
                    ex["images"],
                    ex["labels"],
                    ex["classes"],
                    {labels[m]: a for m, a in ex["attributions"].items()},
                    predictions=result["predictions"],
                    size=1.5,
                    title="Heatmaps (red: evidence for the true class)",
                ),
                FIG_DPI,
            ),
        }
    return result["figures"]


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes at the app's resolution."""
    return plots.png_bytes(fig, dpi=FIG_DPI)
