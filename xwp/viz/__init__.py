"""Pictures, with matplotlib only (no Streamlit).

Heatmaps and curves (:mod:`~xwp.viz.plots`), first-layer weight patterns (the paper's
Fig. 2, :mod:`~xwp.viz.patterns`), convolution kernels (:mod:`~xwp.viz.kernels`) and the
per-epoch replay of the first layer (:mod:`~xwp.viz.replay`). matplotlib only; no Streamlit.
"""
