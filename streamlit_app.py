"""XWP explainer: routes to the pages in pages/ (run with `streamlit run streamlit_app.py`)."""

import streamlit as st

from xwp import ui

st.set_page_config(page_title="XWP: weight-perturbation attribution", page_icon=":material/blur_on:", layout="wide")
page = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/weights.py", title="Weights", icon=":material/grid_view:"),
        st.Page("pages/explain.py", title="Explain", icon=":material/draw:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/leaderboard:"),
    ]
)
ui.sidebar()
page.run()
