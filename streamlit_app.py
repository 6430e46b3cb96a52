"""XWP explainer: routes to the pages in pages/.

Run with ``streamlit run streamlit_app.py``; ``streamlit run streamlit_app.py -- --data-dir DIR``
(repeatable) lets visitors train on and test with the datasets in DIR (see docs/app.md, Limits).

The navigation is drawn before torch and the rest of xwp are imported: on a fresh server the
first visitor would otherwise see Streamlit's own list of pages/ until those imports finish.
"""

import streamlit as st

from xwp.app.routes import PAGES

st.set_page_config(page_title="XWP: weight-perturbation attribution", page_icon=":material/blur_on:", layout="wide")
page = st.navigation([st.Page(p.path, title=p.title, icon=p.icon, default=i == 0) for i, p in enumerate(PAGES)])

from xwp.app import frame, safe, work  # noqa: E402  (torch and the core: after the navigation is drawn)

safe.startup()
work.warm_up()  # heavy lazy imports in their own thread, not inside the first training
frame.sidebar()
page.run()
