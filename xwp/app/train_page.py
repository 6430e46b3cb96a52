"""The Train page's glue: training as a job that outlives the page, its progress and Stop, checkpoints in and out."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from xwp import plots
from xwp.app import jobs
from xwp.app.session import (
    RESULT_KEY,
    UPLOADS_KEY,
    SessionModel,
    add_model,
    flash,
    memo,
    session_models,
    unique_name,
)
from xwp.app.shared import dataset
from xwp.checkpoint import checkpoint_bytes, load_checkpoint
from xwp.compute import JobCancelled, TaskContext
from xwp.data import ImageSet
from xwp.errors import TrainingDiverged, XWPError
from xwp.images import check_upload
from xwp.train import Progress, TrainConfig, build_model, confusion_matrix, fit


def train_model(config: TrainConfig, name: str = "", upload_name: str | None = None) -> None:
    """Start training a new model as a job of this session (it outlives page switches; see :mod:`xwp.app.jobs`).

    ``name``: how the sidebar lists it (default: dataset and architecture); ``upload_name``:
    the uploaded file it was trained from, if any. The data are loaded here (with a spinner);
    the training runs on the compute executor. When it ends, the next run of this session
    adds the model and makes it active (:func:`_collect_training`). Stop keeps the model of
    the last complete epoch.
    """
    config.check()  # before the data is loaded
    train_set = dataset(config.dataset, "train", config.data_dir)
    test = dataset(config.dataset, "test", config.data_dir)
    model = build_model(config, train_set.images[0].numel(), len(train_set.classes))
    owner = jobs.owner()
    taken = {r.extra.get("name") for r in jobs.running(owner, "training")}
    base = name.strip() or f"{config.dataset} {model.describe()}"
    name = unique_name(base)
    k = 2
    while name in taken:  # a running job already claims it
        name, k = unique_name(f"{base} ({k})"), k + 1
    meta = {"name": name, "upload_name": upload_name, **config.meta(train_set.classes)}
    task = _training_task(config, train_set, test, model, name, meta)
    record = jobs.start(owner, "training", f"training “{name}”", task, collect=_collect_training)
    record.extra.update(name=name, epochs=config.epochs, images=len(train_set), arch=model.describe())
    st.session_state.pop(RESULT_KEY, None)


def _training_task(config: TrainConfig, train_set: ImageSet, test: ImageSet, model, name: str, meta: dict):
    """The job's function: train on the executor's worker, keep a checkpoint per epoch, honour Stop."""

    def run(ctx: TaskContext, record: jobs.JobRecord) -> dict:
        last = {"checkpoint": None, "epochs_done": 0}

        def progress(p: Progress) -> bool:
            if ctx.cancelled:
                return False  # ends after this step; the last complete epoch is kept below
            text = f"epoch {p.epoch}/{p.epochs} · step {p.step}/{p.steps} · loss {p.loss:.4g}"
            ctx.tick((p.fraction, text))
            if p.epoch_done and p.history.diverging:
                return False  # no point in more epochs; reported below
            if p.epoch_done:
                record.extra["history"] = p.history.as_dict()
                info = {**meta, "test_accuracy": p.history.test_accuracy[-1], "history": p.history.as_dict()}
                last.update(checkpoint=checkpoint_bytes(model, info), epochs_done=p.epoch)
            return True

        try:
            history = fit(config, train_set, test, model=model, progress=progress, report_every=10).history
        except TrainingDiverged as e:
            raise XWPError(f"{e} The diverged model was discarded; nothing was added to your models.") from None
        except JobCancelled:
            history = None
        if history is not None and history.diverging:
            raise XWPError(
                f"training diverged: after epoch {history.epochs} the loss was {history.loss[-1]:.3g}, more "
                f"than twice the chance level {history.chance_loss:.2f}. The model was discarded; lower the "
                f"learning rate (now {config.lr:g}) and train again."
            )
        if history is None or ctx.cancelled:
            if last["checkpoint"] is None:
                note = f"Training of “{name}” was stopped before its first epoch finished; no model was kept."
                return {"entry": None, "result": {"level": "warning", "note": note}}
            entry = SessionModel.from_checkpoint(name, load_checkpoint(last["checkpoint"]))
            entry.meta["epochs_done"] = last["epochs_done"]
            note = (
                f"Training was stopped after epoch {last['epochs_done']} of {config.epochs}; "
                f"the model from that epoch was kept as **{name}**."
            )
            return {"entry": entry, "result": _result(entry, test, note, "warning")}
        model.cpu()
        meta.update(test_accuracy=history.test_accuracy[-1], history=history.as_dict())
        entry = SessionModel(name, model, model.initial_model(), meta)
        note = f"Trained **{name}** for {history.epochs} epochs."
        return {"entry": entry, "result": _result(entry, test, note, "success")}

    return run


def _collect_training(record: jobs.JobRecord) -> None:
    """In the owner's next run: add the trained model (made active) and keep the outcome for the Train page."""
    outcome, error = record.outcome()
    if error is not None:
        note = "Training was stopped." if isinstance(error, JobCancelled) else jobs.describe(error)
        level = "warning" if isinstance(error, JobCancelled) else "error"
        st.session_state[RESULT_KEY] = {"level": level, "note": note}
        flash(f"{record.label}: {note}")
        return
    st.session_state[RESULT_KEY] = outcome["result"]
    entry = outcome["entry"]
    if entry is None:
        flash(outcome["result"]["note"])
        return
    # the name was free when the job started; a model added since may have taken it
    if entry.name in session_models():
        entry.name = unique_name(entry.name)
        outcome["result"]["name"] = entry.name
    add_model(entry)
    acc = entry.test_accuracy
    flash(f"Training of “{entry.name}” ended" + (f": test accuracy {acc:.1%}." if acc is not None else "."))


def training_progress() -> None:
    """The running trainings of this session: progress, loss curves so far and a Stop button (redrawn every second)."""
    if jobs.registry().records(jobs.owner(), "training"):
        _training_panel()


@st.fragment(run_every=jobs.REFRESH_SECONDS)
def _training_panel() -> None:
    """:func:`training_progress`, redrawn on its own every :data:`~xwp.app.jobs.REFRESH_SECONDS`."""
    jobs.collect()  # an ended training: its model is added and its result stored now
    records = jobs.registry().records(jobs.owner(), "training")
    if not records:
        show_training_result()  # the outcome, here until the next full run draws it below the form
        return
    for r in records:
        with st.container(border=True):
            top = st.columns([1, 3], vertical_alignment="center")
            with top[0]:
                jobs.stop_button(r, key=f"train_stop_{r.id}", label="Stop training")
            x = r.extra
            top[1].caption(
                f"Training **{x.get('name')}** ({x.get('arch')}, {x.get('images', 0):,} images). It keeps running if "
                "you open another page. **Stop** keeps the model of the last complete epoch; before the first "
                "epoch ends nothing is kept."
            )
            st.progress(r.fraction, text=r.message)
            history = x.get("history")
            if history:
                st.image(_history_png(r.id, len(history["loss"]), history, x.get("name")))


def _history_png(job_id: str, epochs: int, history: dict, name: str) -> bytes:
    """The loss and accuracy curves so far, drawn once per job and epoch."""
    store = memo()
    key = ("train-chart", job_id)
    if store.get(key, (None,))[0] != epochs:
        store[key] = (epochs, plots.png_bytes(plots.training_figure(history, f"Training {name}"), dpi=80))
    return store[key][1]


def _result(entry: SessionModel, test: ImageSet | None, note: str, level: str) -> dict:
    """A training outcome (figures as PNG) for the Train page; runs in the job, so no Streamlit calls."""
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
    return result


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


def checkpoint_file(entry: SessionModel) -> tuple[bytes, str]:
    """The model as checkpoint bytes and a file name (computed once per model)."""
    store = memo()
    key = ("checkpoint", entry.uid)
    if key not in store:
        store[key] = checkpoint_bytes(entry.model, entry.meta)  # sizes, init, seed, versions: from the model
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in entry.name).strip("-") or "model"
    return store[key], f"{stem}.safetensors"


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
