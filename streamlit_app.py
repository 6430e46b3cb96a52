"""XWP explainer: routes to the pages in pages/.

Run with ``streamlit run streamlit_app.py``; ``streamlit run streamlit_app.py -- --data-dir DIR``
(repeatable) lets visitors train on and test with the datasets in DIR (see docs/app.md, Limits).
"""

import streamlit as st

from xwp.app import frame, safe, work

safe.startup()
work.warm_up()  # heavy lazy imports in their own thread, not inside the first training

st.set_page_config(page_title="XWP: weight-perturbation attribution", page_icon=":material/blur_on:", layout="wide")
page = st.navigation([st.Page(p.path, title=p.title, icon=p.icon, default=i == 0) for i, p in enumerate(frame.PAGES)])
frame.sidebar()
page.run()
