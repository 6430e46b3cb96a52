"""The Train page's glue: train with live progress and a Stop button, keep the result, checkpoints in and out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from xwp import plots
from xwp.app import safe
from xwp.app.session import (
    CLEAR_NAME_KEY,
    PARTIAL_KEY,
    RESULT_KEY,
    STOP_KEY,
    UPLOADS_KEY,
    SessionModel,
    add_model,
    flash,
    unique_name,
)
from xwp.app.shared import dataset, test_set
from xwp.app.workspace_glue import save_model
from xwp.checkpoint import checkpoint_bytes, load_checkpoint
from xwp.data import ImageSet
from xwp.errors import TrainingDiverged, XWPError
from xwp.replay import SnapshotRecorder
from xwp.train import Progress, TrainConfig, build_model, confusion_matrix, fit
from xwp.uploads import check_upload

MAX_SEEN_UPLOADS = 64  # file ids of uploaded checkpoints remembered per session


def train_model(
    config: TrainConfig, name: str = "", upload_name: str | None = None, upload: bytes | None = None
) -> None:
    """Train a new model with live progress; keep it, make it active and rerun to show the result.

    ``name``: how the sidebar lists it (default: dataset and architecture); ``upload_name``
    and ``upload``: the uploaded TMNIST CSV to train from, if any (checked, parsed in
    memory, never stored). ``config.data_dir`` must lie in the allowed data folders. A Stop
    click (or any other interruption) ends this run; the next run keeps the model of the
    last complete epoch (see :func:`finish_interrupted_training`).
    """
    config.check()  # before the data is loaded
    if upload is not None:
        train_set, test, digest = safe.tmnist_upload_sets(upload, upload_name or "the upload")
        source = ("upload", digest)
    else:
        train_set = dataset(config.dataset, "train", config.data_dir)
        test = dataset(config.dataset, "test", config.data_dir)
        source = ("folder", safe.visitor_path(config.data_dir)) if config.data_dir else None
    model = build_model(config, tuple(train_set.images[0].shape), len(train_set.classes))  # (1, 28, 28): MLP or CNN
    name = unique_name(name.strip() or f"{config.dataset} {model.describe()}")
    meta = {"name": name, "upload_name": upload_name, **config.meta(train_set.classes)}
    meta.pop("data_dir", None)  # a model never carries a server path
    partial = {"name": name, "epochs": config.epochs, "checkpoint": None, "epochs_done": 0, "source": source}
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

    recorder = SnapshotRecorder(model, then=progress)  # first-layer weights per epoch, for the replay
    partial["recorder"] = recorder
    try:
        history = fit(config, train_set, test, model=model, progress=recorder).history
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
            f"learning rate (now {config.lr:g}) and train again."
        )
    model.cpu()
    meta.update(test_accuracy=history.test_accuracy[-1], history=history.as_dict())
    entry = SessionModel(name, model, model.initial_model(), meta)
    safe.remember_source(entry.uid, source)
    _store_result(entry, test, f"Trained **{safe.md(name)}** for {history.epochs} epochs.", "success")
    save_model(entry, recorder.snapshots)
    st.session_state[CLEAR_NAME_KEY] = True  # the next run starts with an empty model name
    add_model(entry, rerun=True)


def finish_interrupted_training() -> None:
    """If a training run was interrupted (Stop, a page switch), keep its last complete epoch."""
    partial = st.session_state.pop(PARTIAL_KEY, None)
    if partial is None:
        return
    if partial["checkpoint"] is None:
        st.session_state[RESULT_KEY] = {
            "level": "warning",
            "note": f"Training of “{safe.md(partial['name'])}” was stopped before its first epoch finished; "
            "no model was kept.",
        }
        return
    ckpt = load_checkpoint(partial["checkpoint"])
    entry = SessionModel.from_checkpoint(partial["name"], ckpt)
    entry.meta["epochs_done"] = partial["epochs_done"]
    safe.remember_source(entry.uid, partial.get("source"))  # its test images: the folder or upload it used
    note = (
        f"Training was stopped after epoch {partial['epochs_done']} of {partial['epochs']}; "
        f"the model from that epoch was kept as **{safe.md(entry.name)}**."
    )
    try:
        test = test_set(entry)
    except XWPError:
        test = None
    _store_result(entry, test, note, "warning")
    recorder = partial.get("recorder")
    save_model(entry, recorder.snapshots if recorder is not None else None)
    st.session_state[CLEAR_NAME_KEY] = True
    add_model(entry)
    flash(f"Kept “{safe.md(entry.name)}” from its last complete epoch.")


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
        fig = plots.training_figure(history, f"Training {entry.name}")
        result["history_png"] = plots.png_bytes(fig, plots.FIG_DPI)
    if test is not None:
        matrix = confusion_matrix(entry.model, test)
        fig = plots.confusion_figure(matrix, test.classes, f"Confusion matrix, {len(test):,} test images")
        result["confusion_png"] = plots.png_bytes(fig, plots.FIG_DPI)
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


def checkpoint_file(entry: SessionModel) -> tuple[Callable[[], bytes], str]:
    """A function that makes the model's checkpoint bytes when the download is clicked, and a file name.

    Nothing is kept: the bytes are built on click (sizes, init, seed, versions from the model),
    so a session never holds a checkpoint buffer per model it offered for download.
    """
    model, meta = entry.model, dict(entry.meta)

    def build() -> bytes:
        return checkpoint_bytes(model, meta)

    stem = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in entry.name).strip("-") or "model"
    return build, f"{stem}.safetensors"


def load_uploaded_checkpoint(upload) -> None:
    """Add an uploaded checkpoint to this session once; a bad file shows why (once) and changes nothing.

    The bytes are checked (:func:`xwp.uploads.check_upload`) before they are parsed and are not
    kept: the session keeps the model only, and remembers the file's id (so a rerun does not
    load it again or repeat its error).
    """
    if upload is None:
        return
    seen = st.session_state.setdefault(UPLOADS_KEY, {})
    if upload.file_id in seen:
        return  # loaded, or its error was shown on the run it arrived
    while len(seen) >= MAX_SEEN_UPLOADS:
        seen.pop(next(iter(seen)))
    try:
        data = upload.getvalue()
        check_upload(data, "checkpoint", upload.name)
        ckpt = load_checkpoint(data, require_initial=False)
    except XWPError as e:
        seen[upload.file_id] = str(e)
        end = "" if str(e).endswith(".") else "."
        st.error(
            f"{safe.md(upload.name, 80)}: {safe.md(e, 300)}{end} Your other models are unchanged.",
            icon=":material/error:",
        )
        return
    finally:
        data = None
    seen[upload.file_id] = None
    entry = SessionModel.from_checkpoint(unique_name(Path(upload.name).stem), ckpt)
    if not entry.has_initial:
        flash(f"“{safe.md(entry.name)}” has no initial state: XWP and XWPᶜ are unavailable for it.")
    flash(f"Loaded “{safe.md(entry.name)}” ({entry.model.describe()}).")
    save_model(entry)
    add_model(entry, rerun=True)
