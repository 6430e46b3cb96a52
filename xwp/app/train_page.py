"""The Train page's glue: training as a job that outlives the page, its progress and Stop, checkpoints in and out.

A training runs on the compute executor as a job of :mod:`xwp.app.jobs`: switching pages
does not stop it, the sidebar shows its progress with a Stop button, and the Train page
its loss curves. The job saves the model to the workspace itself (so a closed tab loses
nothing); the owner's next run adds it to the session and makes it active.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from xwp.app import jobs, safe, workspace_glue
from xwp.app.keys import CLEAR_NAME_KEY, PENDING_KEY, RESULT_KEY, UPLOADS_KEY
from xwp.app.session import (
    SessionModel,
    add_model,
    flash,
    memo,
    session_models,
    unique_name,
)
from xwp.app.shared import dataset
from xwp.app.workspace_glue import save_model
from xwp.checkpoint import checkpoint_bytes, load_checkpoint
from xwp.data.datasets import ImageSet
from xwp.errors import TrainingDiverged, XWPError
from xwp.serve.compute import JobCancelled, TaskContext
from xwp.serve.uploads import check_upload
from xwp.serve.workspace import Workspace
from xwp.train import Progress, TrainConfig, build_model, confusion_matrix, fit
from xwp.viz import plots
from xwp.viz.replay import SnapshotRecorder

MAX_SEEN_UPLOADS = 64  # file ids of uploaded checkpoints remembered per session


def train_model(
    config: TrainConfig, name: str = "", upload_name: str | None = None, upload: bytes | None = None
) -> None:
    """Start training a new model as a job of this session (it outlives page switches; see :mod:`xwp.app.jobs`).

    ``name``: how the sidebar lists it (default: dataset and architecture); ``upload_name``
    and ``upload``: the uploaded TMNIST CSV to train from, if any (checked, parsed in
    memory, never stored). ``config.data_dir`` must lie in the allowed data folders. The
    data are loaded here; the training runs on the compute executor and saves its model to
    the workspace. When it ends, the next run of this session adds the model and makes it
    active (:func:`_collect_training`). Stop keeps the model of the last complete epoch.
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
    owner = jobs.owner()
    taken = {r.extra.get("name") for r in jobs.running(owner, "training")}
    base = name.strip() or f"{config.dataset} {model.describe()}"
    name = unique_name(base)
    k = 2
    while name in taken:  # a running job already claims it
        name, k = unique_name(f"{base} ({k})"), k + 1
    meta = {"name": name, "upload_name": upload_name, **config.meta(train_set.classes)}
    meta.pop("data_dir", None)  # a model never carries a server path
    task = _training_task(config, train_set, test, model, name, meta, workspace_glue.workspace())
    label = f"training “{safe.md(name, 60)}”"
    record = jobs.start(owner, "training", label, task, collect=_collect_training)
    record.extra.update(name=name, epochs=config.epochs, images=len(train_set), arch=model.describe(), source=source)
    st.session_state.pop(RESULT_KEY, None)
    st.session_state[CLEAR_NAME_KEY] = True  # the next run starts with an empty model name


def _training_task(
    config: TrainConfig, train_set: ImageSet, test: ImageSet, model, name: str, meta: dict, ws: Workspace | None
):
    """The job's function: train on the executor's worker, keep a checkpoint per epoch, honour Stop, save."""

    def run(ctx: TaskContext, record: jobs.JobRecord) -> dict:
        last = {"checkpoint": None, "epochs_done": 0}

        def progress(p: Progress) -> bool:
            if p.epoch_done and p.history.diverging:
                return False  # no point in more epochs; reported below
            if p.epoch_done:  # before Stop is honoured: a stop at an epoch's end keeps that epoch
                record.extra["history"] = p.history.as_dict()
                info = {**meta, "test_accuracy": p.history.test_accuracy[-1], "history": p.history.as_dict()}
                last.update(checkpoint=checkpoint_bytes(model, info), epochs_done=p.epoch)
            if ctx.cancelled:
                return False  # ends after this step; the last complete epoch is kept below
            text = f"epoch {p.epoch}/{p.epochs} · step {p.step}/{p.steps} · loss {p.loss:.4g}"
            ctx.tick((p.fraction, text))
            return True

        recorder = SnapshotRecorder(model, then=progress)  # first-layer weights per epoch, for the replay
        try:
            history = fit(config, train_set, test, model=model, progress=recorder, report_every=10).history
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
        snapshots = recorder.snapshots
        if history is None or ctx.cancelled:
            if last["checkpoint"] is None:
                note = f"Training of “{safe.md(name)}” was stopped before its first epoch finished; no model was kept."
                return {"entry": None, "result": {"level": "warning", "note": note}}
            entry = SessionModel.from_checkpoint(name, load_checkpoint(last["checkpoint"]))
            entry.meta["epochs_done"] = last["epochs_done"]
            snapshots = {e: w for e, w in snapshots.items() if e <= last["epochs_done"]}
            note = (
                f"Training was stopped after epoch {last['epochs_done']} of {config.epochs}; "
                f"the model from that epoch was kept as **{safe.md(name)}**."
            )
            level = "warning"
        else:
            model.cpu()
            meta.update(test_accuracy=history.test_accuracy[-1], history=history.as_dict())
            entry = SessionModel(name, model, model.initial_model(), meta)
            note, level = f"Trained **{safe.md(name)}** for {history.epochs} epochs.", "success"
        result = _result(entry, test, note, level)
        problem = workspace_glue.save_model_to(ws, entry, snapshots)  # here: a closed tab loses nothing
        return {"entry": entry, "result": result, "snapshots": snapshots, "save_problem": problem}

    return run


def _collect_training(record: jobs.JobRecord) -> None:
    """In the owner's next run: add the trained model (made active) and keep the outcome for the Train page."""
    outcome, error = record.outcome()
    if error is not None:
        note = "Training was stopped." if isinstance(error, JobCancelled) else jobs.describe(error)
        level = "warning" if isinstance(error, JobCancelled) else "error"
        st.session_state[RESULT_KEY] = {"level": level, "note": safe.md(note, 300)}
        flash(f"{record.label}: {safe.md(note, 300)}")
        return
    st.session_state[RESULT_KEY] = outcome["result"]
    entry = outcome["entry"]
    if entry is None:
        flash(outcome["result"]["note"])
        return
    models = session_models()
    opened = next((m for m in models.values() if entry.saved_id and m.saved_id == entry.saved_id), None)
    if opened is not None:  # a reload of the workspace has loaded it from disk already
        st.session_state[PENDING_KEY] = opened.name
        return
    # the name was free when the job started; a model added since may have taken it
    if entry.name in models:
        entry.name = unique_name(entry.name)
        outcome["result"]["name"] = entry.name
    safe.remember_source(entry.uid, record.extra.get("source"))  # its test images: the folder or upload it used
    if outcome["snapshots"]:
        workspace_glue.keep_snapshots(entry, outcome["snapshots"])
    workspace_glue.note_save(entry, outcome["save_problem"])
    add_model(entry)
    acc = entry.test_accuracy
    ended = "ended" if outcome["result"]["level"] == "success" else "was stopped; its last complete epoch was kept"
    flash(f"Training of “{safe.md(entry.name)}” {ended}" + (f": test accuracy {acc:.1%}." if acc is not None else "."))


def training_progress() -> None:
    """The running trainings of this session: progress, loss curves, Stop (redrawn every second or slower)."""
    if jobs.registry().records(jobs.owner(), "training"):
        _training_panel()


@jobs.timed_fragment
def _training_panel() -> None:
    """:func:`training_progress`, redrawn on its own every :func:`~xwp.app.jobs.refresh_seconds`."""
    if jobs.collect():  # an ended training: its model is added and its result stored now
        jobs.rerun_app()  # the sidebar lists it (the outcome is drawn below if the rerun is dropped)
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
                f"Training **{safe.md(x.get('name'))}** ({x.get('arch')}, {x.get('images', 0):,} images). It keeps "
                "running if you open another page. **Stop** keeps the model of the last complete epoch; before the "
                "first epoch ends nothing is kept."
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

    The bytes are checked (:func:`xwp.serve.uploads.check_upload`) before they are parsed and are not
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
