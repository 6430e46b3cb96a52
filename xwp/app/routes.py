"""The app's pages: one table for the router, the Home page's cards and the links between pages.

Imports nothing but the standard library, so that streamlit_app.py can hand the table to
``st.navigation`` before torch and the rest of xwp are loaded: until that call, a fresh
server shows Streamlit's own list of the files in pages/ (lowercase file names).
"""

from __future__ import annotations

from dataclasses import dataclass


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
