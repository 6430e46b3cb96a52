"""The frame around every page: the page table, routing, the sidebar and how errors are shown."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import streamlit as st

from xwp.app import jobs
from xwp.app.session import (
    ACTIVE_KEY,
    FLASH_KEY,
    MAX_SESSION_MODELS,
    PENDING_KEY,
    WANTED_PAGE_KEY,
    SessionModel,
    active_model,
    add_model,
    session_models,
)
from xwp.app.shared import default_model
from xwp.errors import XWPError

#: less empty space above the page title, so a projected page shows more of its figures
STYLE = "<style>[data-testid='stMainBlockContainer'] {padding-top: 2.5rem;}</style>"


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
    """Show an :class:`~xwp.errors.XWPError` raised in the block as ``st.error`` and carry on."""
    try:
        yield
    except XWPError as e:
        st.error(str(e), icon=":material/error:")


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
