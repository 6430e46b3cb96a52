"""The Streamlit app's glue: the only code in ``xwp`` that imports streamlit.

``session`` (per-user state), ``shared`` (what ``st.cache_resource`` shares between users:
datasets, the default model, uploads), ``frame`` (page table, sidebar, routing) and one
module per page (``train_page``, ``explain_page``, ``weights_page``, ``compare_page``,
``home_page``). The computations they show live in the core (:mod:`xwp.serve.explanation`,
:mod:`xwp.viz.patterns`, :mod:`xwp.serve.comparison`, :mod:`xwp.data.images`, :mod:`xwp.train`).
"""
