"""The workspace in the URL: models and comparisons saved on disk, listed in the sidebar, back after a reload.

The workspace id lives in the URL (``?workspace=<id>``): the first visit gets a new one
(:func:`xwp.serve.workspace.open_workspace`), a reload or a new tab with the same URL opens the
same folder. Every model trained or uploaded here is saved there with its history and
first-layer snapshots; a new session of the workspace starts with its newest models. A save
the workspace has no room for (:class:`~xwp.serve.workspace.WorkspaceFull`) leaves the model in the
tab only, and the sidebar says so as a warning. Names and other metadata are shown as plain
text (``st.text``), or escaped (:func:`xwp.safety.plain_text`) inside a message.
"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from xwp.app.keys import (
    COMPARE_KEY,
    PENDING_KEY,
    RESTORED_KEY,
    SNAPSHOTS_KEY,
    WANTED_PAGE_KEY,
    WS_ERROR_KEY,
    WS_KEY,
    WS_WARNING_KEY,
)
from xwp.app.session import (
    MAX_SESSION_MODELS,
    SessionModel,
    add_model,
    session_models,
    unique_name,
)
from xwp.app.shared import default_snapshots
from xwp.errors import XWPError
from xwp.safety import plain_text
from xwp.serve.comparison import Comparison
from xwp.serve.storage import evaluation_from, evaluation_parts
from xwp.serve.workspace import Workspace, WorkspaceFull, open_workspace

PARAM = "workspace"  # the query parameter that carries the id
MAX_KEPT_SNAPSHOTS = 2  # a session keeps the snapshots of at most this many models (float16: 0.6 MB per epoch)


def workspace() -> Workspace | None:
    """The session's workspace, opened once from the URL (a new id is written into the URL)."""
    if WS_KEY not in st.session_state:
        wid = st.query_params.get(PARAM)
        try:
            ws, _ = open_workspace(wid)
        except XWPError as e:
            st.session_state[WS_ERROR_KEY] = str(e)
            ws = None
        st.session_state[WS_KEY] = ws
    ws = st.session_state[WS_KEY]
    if ws is not None and st.query_params.get(PARAM) != ws.id:
        st.query_params[PARAM] = ws.id  # a page switch may drop it; the URL must keep naming the workspace
    return ws


def restore() -> None:
    """Once per session: load the workspace's newest models (at most the session's limit) into the session."""
    if st.session_state.get(RESTORED_KEY):
        return
    st.session_state[RESTORED_KEY] = True
    ws = workspace()
    if ws is None:
        return
    saved = ws.models()[-(MAX_SESSION_MODELS - 1) :]
    failed = []
    for e in saved:
        try:
            _open_saved(ws, e.id, e.name)
        except XWPError:
            failed.append(e.name)
    if failed:
        names = plain_text(", ".join(failed))
        st.session_state[WS_WARNING_KEY] = f"Could not load {len(failed)} saved model(s): {names}."


def _open_saved(ws: Workspace, mid: str, name: str) -> SessionModel:
    """Load saved model ``mid`` into the session (or find it there) and make it the active one."""
    for entry in session_models().values():
        if entry.saved_id == mid:
            st.session_state[PENDING_KEY] = entry.name
            return entry
    ckpt = ws.load_model(mid)
    entry = SessionModel.from_checkpoint(unique_name(name), ckpt)
    entry.saved_id = mid
    history = ws.history(mid)
    if history and not entry.meta.get("history"):
        entry.meta["history"] = history
    add_model(entry)
    return entry


def save_model(entry: SessionModel, snapshots: dict[int, np.ndarray] | None = None) -> None:
    """Save a trained or uploaded model to the workspace; a refused save becomes the sidebar's warning."""
    if snapshots:
        keep_snapshots(entry, snapshots)
    note_save(entry, save_model_to(workspace(), entry, snapshots))


def save_model_to(
    ws: Workspace | None, entry: SessionModel, snapshots: dict[int, np.ndarray] | None = None
) -> str | None:
    """Save ``entry`` to ``ws`` (sets ``entry.saved_id``); None when saved or nothing to do, else why not.

    No Streamlit calls: a training job runs it on the compute executor, so the model is
    saved even when its tab was closed meanwhile (:func:`note_save` shows the outcome later).
    """
    if ws is None or entry.saved_id is not None:
        return None
    try:
        saved = ws.save_model(entry.model, entry.meta, entry.name, snapshots=snapshots, has_initial=entry.has_initial)
    except WorkspaceFull as e:
        return f"“{plain_text(entry.name)}” was not saved to the workspace: {e}."
    except XWPError as e:
        return f"“{plain_text(entry.name)}” could not be saved to the workspace: {e}."
    entry.saved_id = saved.id
    return None


def note_save(entry: SessionModel, problem: str | None) -> None:
    """Show a refused save as the sidebar's warning; a successful one clears the last warning."""
    if problem:
        st.session_state[WS_WARNING_KEY] = problem
    elif entry.saved_id is not None:
        st.session_state.pop(WS_WARNING_KEY, None)


def keep_snapshots(entry: SessionModel, snapshots: dict[int, np.ndarray]) -> None:
    """Keep ``entry``'s first-layer snapshots in the session (bounded) for the training replay."""
    store = st.session_state.setdefault(SNAPSHOTS_KEY, {})
    store[entry.uid] = {e: np.asarray(w, dtype=np.float16) for e, w in snapshots.items()}
    while len(store) > MAX_KEPT_SNAPSHOTS:
        store.pop(next(iter(store)))


def snapshots(entry: SessionModel) -> dict[int, np.ndarray]:
    """First-layer snapshots per epoch of ``entry`` (from the session, else the workspace; {} if none)."""
    store = st.session_state.setdefault(SNAPSHOTS_KEY, {})
    if entry.uid in store:
        return store[entry.uid]
    ws = workspace()
    found: dict[int, np.ndarray] = {}
    try:
        if ws is not None and entry.saved_id is not None:
            found = ws.snapshots(entry.saved_id)
        elif entry.saved_id is None:
            found = default_snapshots()  # checked against the model below, so only the default model gets them
    except XWPError:
        found = {}
    if found and not _matches(found, entry):
        found = {}
    keep_snapshots(entry, found)
    return found


def _matches(snaps: dict[int, np.ndarray], entry: SessionModel) -> bool:
    """Whether the last snapshot is ``entry``'s first layer (float16 rounding allowed)."""
    w = entry.model.linears[0].weight.detach().float().cpu().numpy()
    last = snaps[max(snaps)]
    if last.shape != w.shape:
        return False
    return bool(np.allclose(last, w, rtol=2e-3, atol=1e-4))


def save_comparison(result: Comparison, name: str | None = None) -> str | None:
    """Save a Compare result (evaluation, predictions, model, dataset, seconds) to the workspace.

    Returns None when it was saved, else the one-line reason (e.g. the workspace is full),
    which the Compare page should show as a warning.
    """
    ws = workspace()
    if ws is None:
        return st.session_state.get(WS_ERROR_KEY, "no workspace is open; the result stays in this tab only")
    return save_comparison_to(ws, result, name)


def save_comparison_to(ws: Workspace | None, result: Comparison, name: str | None = None) -> str | None:
    """:func:`save_comparison` into ``ws`` without Streamlit calls (a comparison job runs it when it ends)."""
    if ws is None:
        return "no workspace is open; the result stays in this tab only"
    ev, predictions, info = result.to_save()
    if ev is None:
        return "nothing to save yet: no method has finished"
    label = name or f"{info['model']}: {ev.settings.get('n', '?')} images, seed {ev.settings.get('seed')}"
    try:
        saved = ws.save_comparison(label, *evaluation_parts(ev, predictions, **info))
    except XWPError as e:
        return f"the comparison was not saved to the workspace: {e}"
    result.mark_saved(saved.id)
    return None


def open_comparison(cid: str) -> None:
    """Make saved comparison ``cid`` the session's current Compare result (a widget callback)."""
    ws = workspace()
    if ws is None:
        return
    try:
        comp = ws.load_comparison(cid)
        ev, predictions = evaluation_from(comp)
    except XWPError as e:
        st.session_state[WS_WARNING_KEY] = f"That comparison could not be opened: {e}."
        return
    st.session_state[COMPARE_KEY] = Comparison.saved(ev, predictions, comp.info, cid)


def _show_comparison(cid: str) -> None:
    """Widget callback: open saved comparison ``cid`` on the Compare page."""
    open_comparison(cid)
    if COMPARE_KEY in st.session_state:
        st.session_state[WANTED_PAGE_KEY] = "pages/compare.py"  # frame.sidebar() switches there


def _open_model(mid: str, name: str) -> None:
    """Widget callback: load a saved model into the session and make it active."""
    ws = workspace()
    if ws is None:
        return
    try:
        _open_saved(ws, mid, name)
    except XWPError as e:
        st.session_state[WS_WARNING_KEY] = f"“{plain_text(name)}” could not be opened: {e}."


def _delete_model(mid: str) -> None:
    """Widget callback: delete a saved model (from the workspace and from this session)."""
    ws = workspace()
    if ws is None:
        return
    try:
        ws.delete_model(mid)
    except XWPError as e:
        st.session_state[WS_WARNING_KEY] = str(e)
        return
    models = session_models()
    for name, entry in list(models.items()):
        if entry.saved_id == mid:
            del models[name]


def _delete_comparison(cid: str) -> None:
    """Widget callback: delete a saved comparison."""
    ws = workspace()
    if ws is not None:
        try:
            ws.delete_comparison(cid)
        except XWPError as e:
            st.session_state[WS_WARNING_KEY] = str(e)


def _count(n: int, noun: str) -> str:
    """``1 model``, ``2 models``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ago(t: float) -> str:
    """``t`` (seconds since the epoch) as "5 min ago", "3 h ago" or "2 d ago"."""
    s = max(0.0, time.time() - t)
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    if s < 86400:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} d ago"


def sidebar_section() -> None:
    """The sidebar's workspace block: which workspace, usage vs limit, saved models and comparisons."""
    ws = workspace()
    warning = st.session_state.get(WS_WARNING_KEY)
    if warning:
        st.warning(warning, icon=":material/warning:")
    if ws is None:
        st.warning(
            "Work is not saved: " + st.session_state.get(WS_ERROR_KEY, "no workspace could be opened") + ".",
            icon=":material/cloud_off:",
        )
        return
    models, comparisons = ws.models(), ws.comparisons()
    used, lim = ws.usage(), ws.limits
    label = f"Workspace: {_count(len(models), 'model')}, {_count(len(comparisons), 'comparison')}"
    with st.expander(label, icon=":material/folder:", key="ws_expander"):
        st.text(
            f"Workspace {ws.id[:6]}… uses {used / 2**20:.1f} MB of {lim.max_bytes / 2**20:.0f} MB "
            f"({len(models)} of {lim.max_items} models). Kept {lim.days:g} days after the last use."
        )
        st.caption(
            "Trained and uploaded models are saved here. Bookmark this page's address to come back: "
            "anyone with the address sees this workspace."
        )
        active = {e.saved_id for e in session_models().values() if e.saved_id}
        for e in reversed(models):
            acc = f"{e.accuracy:.1%}" if e.accuracy is not None else "accuracy not recorded"
            st.text(f"{e.name}\n{e.dataset} · {e.arch} · {acc} · {_ago(e.created)}")
            c1, c2 = st.columns(2)
            c1.button(
                "Opened" if e.id in active else "Open",
                key=f"ws_open_{e.id}",
                on_click=_open_model,
                args=(e.id, e.name),
                disabled=e.id in active,
                icon=":material/open_in_browser:",
                width="stretch",
            )
            with c2.popover("Delete", icon=":material/delete:", width="stretch"):
                st.text(f"Delete “{e.name}” from the workspace for good?")
                st.button("Delete", key=f"ws_del_{e.id}", on_click=_delete_model, args=(e.id,), type="primary")
        if comparisons:
            st.markdown("**Comparisons**")
        for c in reversed(comparisons):
            st.text(f"{c.name}\n{_ago(c.created)}")
            c1, c2 = st.columns(2)
            c1.button("Open", key=f"ws_copen_{c.id}", on_click=_show_comparison, args=(c.id,), width="stretch")
            with c2.popover("Delete", icon=":material/delete:", width="stretch"):
                st.button("Delete", key=f"ws_cdel_{c.id}", on_click=_delete_comparison, args=(c.id,), type="primary")
