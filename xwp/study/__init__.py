"""The study: the paper's Table 1 and Figures 3-6 over datasets, networks and seeds.

The study itself is in :mod:`~xwp.study.run`, with its cells run here or as Ray tasks (:mod:`~xwp.study.executors`).
"""

from xwp.study.run import STUDY_METHODS, StudyResult, run_study, study_markdown

__all__ = ["STUDY_METHODS", "StudyResult", "run_study", "study_markdown"]
