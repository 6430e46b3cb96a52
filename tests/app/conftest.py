"""The app tests share one private cache and one 1-epoch default model (trained once for the package)."""

from __future__ import annotations

import pytest

from tests.support.app import APP, TIMEOUT, assert_clean


@pytest.fixture(scope="package", autouse=True)
def app_env(tmp_path_factory):
    """A private cache folder and a 1-epoch default model for every app test (one training, not one per file)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XWP_CACHE_DIR", str(tmp_path_factory.mktemp("xwp-cache")))
    mp.setenv("XWP_DEFAULT_EPOCHS", "1")
    yield
    mp.undo()


@pytest.fixture
def at(monkeypatch):
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    # AppTest resets PagesManager.uses_pages_directory before every run, and with a pages/
    # folder beside the main script it would then run a switched-to page on its own, as a
    # multipage-v1 script, skipping streamlit_app.py. The real server clears the flag for
    # good the first time st.navigation runs; do the same here.
    init = PagesManager.__init__

    def init_v2(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_v2)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert_clean(app)
    return app

