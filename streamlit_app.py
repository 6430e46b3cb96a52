"""XWP explainer: routes to the pages in pages/ (run with `streamlit run streamlit_app.py`)."""

import streamlit as st

from xwp.app import frame

st.set_page_config(page_title="XWP: weight-perturbation attribution", page_icon=":material/blur_on:", layout="wide")
page = st.navigation([st.Page(p.path, title=p.title, icon=p.icon, default=i == 0) for i, p in enumerate(frame.PAGES)])
frame.sidebar()
page.run()
