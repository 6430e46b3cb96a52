"""The frame around every page: the page table, routing, the sidebar and how errors are shown."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import streamlit as st

from xwp.app import jobs, safe, workspace_glue
from xwp.app.keys import ACTIVE_KEY, FLASH_KEY, PENDING_KEY, PRESENTATION_KEY, WANTED_PAGE_KEY
from xwp.app.routes import PAGES
from xwp.app.session import (
    MAX_SESSION_MODELS,
    SessionModel,
    active_model,
    add_model,
    session_models,
)
from xwp.app.shared import default_model
from xwp.errors import MAX_MESSAGE_CHARS, XWPError

#: less empty space around the page, so a projected page (1280x720, 1024x768) shows more of its figures
STYLE = (
    "<style>[data-testid='stMainBlockContainer'] {padding-top: 2.5rem; padding-left: 2rem; padding-right: 2rem;}"
    "</style>"
)
#: presentation mode: larger type for a projector (text, labels, captions, the probability bars' labels in the
#: same height per row; figures keep their size)
PRESENTATION_STYLE = """<style>
[data-testid='stMainBlockContainer'] [data-testid='stMarkdownContainer'] p,
[data-testid='stMainBlockContainer'] [data-testid='stWidgetLabel'] p,
[data-testid='stMainBlockContainer'] [data-testid='stCaptionContainer'],
[data-testid='stMainBlockContainer'] [data-testid='stImageCaption'] {font-size: 1.25rem !important;}
[data-testid='stMainBlockContainer'] h1 {font-size: 2.2rem !important;}
[data-testid='stMainBlockContainer'] .xwp-p {font-size: 1.05rem;}
[data-testid='stMainBlockContainer'] .xwp-t {height: 0.95rem;}
</style>"""




def require_model() -> SessionModel:
    """The active model, or a message saying how to get one and the end of this page's run."""
    entry = active_model()
    if entry is None:
        st.info("There is no model in this session yet: train one on the **Train** page or upload a checkpoint there.")
        train_page = PAGES[1]
        st.page_link(train_page.path, label=f"Go to {train_page.title}", icon=train_page.icon)
        st.stop()
    return entry


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show an :class:`~xwp.errors.XWPError` raised in the block as ``st.error`` and carry on.

    The message (one line, at most 300 characters) is shown as plain text: it may quote a
    name from a visitor's file, which must not render as a link or an image.
    """
    try:
        yield
    except XWPError as e:
        st.error(safe.md(e, MAX_MESSAGE_CHARS), icon=":material/error:")


def routed(page: str) -> None:
    """Make sure streamlit_app.py routes this run; call first thing on every page (``page``: its path).

    Until the router has called ``st.navigation`` once in this server process, Streamlit
    treats the pages/ folder as an old-style multipage app: a page URL opened first after a
    restart would run the page alone, without the page config, sidebar and default model.
    Such a run goes through the router and comes back to ``page``.
    """
    from xwp.app.internals import uses_pages_directory

    if uses_pages_directory():
        st.session_state[WANTED_PAGE_KEY] = page
        st.switch_page("streamlit_app.py")


def sidebar() -> None:
    """Prepare the session (default model, ended jobs), draw running jobs and the model switcher."""
    wanted = st.session_state.pop(WANTED_PAGE_KEY, None)
    if wanted:
        st.switch_page(wanted)
    st.html(STYLE)
    for message in st.session_state.pop(FLASH_KEY, []):
        st.toast(message)
    jobs.collect()  # trainings and comparisons that ended since the last run
    jobs.sidebar_panel()
    models = session_models()
    if not models:
        try:
            add_model(default_model())
        except XWPError as e:
            st.error(
                f"The default model could not be prepared ({safe.md(e, MAX_MESSAGE_CHARS)}). "
                "Train one on the Train page."
            )
    workspace_glue.restore()  # a reload or a new tab of the same workspace gets its saved models back
    models = session_models()
    safe.forget_sources([m.uid for m in models.values()])
    pending = st.session_state.pop(PENDING_KEY, None)
    if pending in models:
        st.session_state[ACTIVE_KEY] = pending
    elif models and st.session_state.get(ACTIVE_KEY) not in models:
        st.session_state[ACTIVE_KEY] = next(reversed(models))
    with st.sidebar:
        if st.toggle(
            "Presentation mode",
            key=PRESENTATION_KEY,
            help="Larger type for a projector; the Explain page keeps the canvas, the prediction and the "
            "heatmaps on one screen at 1280×720.",
        ):
            st.html(PRESENTATION_STYLE)
        if not models:
            st.caption("No model yet.")
            workspace_glue.sidebar_section()
            return
        st.selectbox(
            "Active model",
            list(models),
            key=ACTIVE_KEY,
            help="Every page uses this model. Models you train or upload are added here and saved to the "
            f"workspace named in the page's address (this list holds at most {MAX_SESSION_MODELS}; "
            "older ones stay in the workspace list below).",
        )
        entry = active_model()
        acc = entry.test_accuracy
        rows = [
            ("Dataset", entry.dataset_label()),  # shown with st.text below: no escaping
            ("Family", {"mlp": "MLP (fully connected)", "cnn": "CNN (convolutional)"}.get(entry.model.family, "other")),
            ("Architecture", entry.model.describe()),
            ("Test accuracy", f"{acc:.1%}" if acc is not None else "not recorded"),
            ("Initial state", "kept (XWP works)" if entry.has_initial else "missing (no XWP/XWPᶜ)"),
        ]
        st.text("\n".join(f"{k}: {v}" for k, v in rows))  # plain text: names come from files
        workspace_glue.sidebar_section()
