"""Every ``st.session_state`` key of the app, in one place (tests/app/test_keys.py keeps it so).

A key names what one browser session holds across its script runs; nothing here is shared
between sessions. Two of them are also the ``key=`` of a widget (the widget's value is the
state): :data:`ACTIVE_KEY` and :data:`PRESENTATION_KEY`. Widget keys used by one page only
(``"train_epochs"``, ``"compare_methods"``, ...) stay beside their widgets.
"""

from __future__ import annotations

# the session's models and the sidebar (xwp.app.session, xwp.app.frame)
MODELS_KEY = "xwp_models"  # dict name -> SessionModel, in the order they were added
ACTIVE_KEY = "xwp_active_model"  # the sidebar's selectbox (a widget key): name of the active model
PENDING_KEY = "xwp_pending_active"  # a model to activate on the next run (set after the sidebar is drawn)
FLASH_KEY = "xwp_flash"  # messages shown once as toasts on the next run
WANTED_PAGE_KEY = "xwp_wanted_page"  # a page opened before the router ran (see frame.routed())
PRESENTATION_KEY = "xwp_presentation"  # the sidebar's presentation-mode toggle (a widget key): larger type
MEMO_KEY = "xwp_memo"  # attributions and figures already computed in this session

# the Train page (xwp.app.train_page)
RESULT_KEY = "xwp_training_result"  # the last training's outcome, shown on the Train page
CLEAR_NAME_KEY = "xwp_clear_model_name"  # empty the Train page's model-name field on the next run
UPLOADS_KEY = "xwp_uploads"  # file_id -> error message (None: loaded) for uploaded checkpoints

# the Compare page (xwp.app.compare_page)
COMPARE_KEY = "xwp_comparison"  # the last comparison (xwp.serve.comparison.Comparison), kept across page switches

# the Explain page's strokes (xwp.app.work)
FUTURES_KEY = "xwp_stroke_futures"  # the futures of this session's latest stroke (cancelled by the next)

# test data (xwp.app.safe)
SOURCES_KEY = "xwp_test_sources"  # model uid -> ("folder", path) or ("upload", digest), this session's only

# jobs (xwp.app.jobs)
OWNER_KEY = "xwp_job_owner"  # this session's owner id of its jobs, when no workspace is open

# the workspace (xwp.app.workspace_glue)
WS_KEY = "xwp_workspace"  # the session's Workspace (None: none could be opened; work stays in the tab)
WS_ERROR_KEY = "xwp_workspace_error"  # why no workspace could be opened
WS_WARNING_KEY = "xwp_workspace_warning"  # the last refused save (WorkspaceFull), shown until the next save
RESTORED_KEY = "xwp_workspace_restored"  # the session has loaded the workspace's models once
SNAPSHOTS_KEY = "xwp_snapshots"  # model uid -> first-layer snapshots (epoch -> array), for the Weights page
