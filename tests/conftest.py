"""Shared fixtures: an isolated cache folder and small trained models."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    """Keep every test run's datasets and models out of the user's cache."""
    if "XWP_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["XWP_CACHE_DIR"] = tempfile.mkdtemp(prefix="xwp-test-cache-")


@pytest.fixture(scope="session")
def typeface():
    """The built-in typeface digits (train, test)."""
    from xwp.data.datasets import load_dataset

    return load_dataset("typeface", "train"), load_dataset("typeface", "test")


@pytest.fixture(scope="session")
def trained(typeface):
    """The paper's MLP trained for 3 epochs on typeface digits (read-only: do not modify)."""
    from xwp import MLP, train

    model = MLP((784, 400, 100, 10), seed=0)
    train(model, typeface[0], typeface[1], epochs=3, seed=0, device="cpu")
    return model.eval()


