"""The app tests share one private cache and one 1-epoch default model (trained once for the package)."""

from __future__ import annotations

import pytest

from tests.support.app import assert_clean, fresh_app


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
    """A fresh session on the home page, its first run clean."""
    app = fresh_app(monkeypatch)
    assert_clean(app)
    return app
