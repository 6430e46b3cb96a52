"""What the app runs on, without Streamlit.

The compute queue (:mod:`~xwp.serve.compute`) and its
merged stroke batches (:mod:`~xwp.serve.batching`), one explanation of one input
(:mod:`~xwp.serve.explanation`), Compare's plan and figures (:mod:`~xwp.serve.comparison`),
workspaces on disk (:mod:`~xwp.serve.workspace`, :mod:`~xwp.serve.storage`) and the upload gate
(:mod:`~xwp.serve.uploads`). Everything here is testable without a browser or a Streamlit run.
"""
