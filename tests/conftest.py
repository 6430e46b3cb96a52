"""Shared fixtures: an isolated cache folder and small trained models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    """Keep every test run's datasets and models out of the user's cache."""
    if "XWP_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["XWP_CACHE_DIR"] = tempfile.mkdtemp(prefix="xwp-test-cache-")


def shared_data_dir() -> Path | None:
    """The real MNIST / Fashion-MNIST folder beside the checkout, or $XWP_TEST_DATA_DIR."""
    env = os.environ.get("XWP_TEST_DATA_DIR")
    path = Path(env) if env else SHARED_DATA
    return path if (path / "FashionMNIST" / "raw").is_dir() else None


@pytest.fixture(scope="session")
def typeface():
    """The built-in typeface digits (train, test)."""
    from xwp.data import load_dataset

    return load_dataset("typeface", "train"), load_dataset("typeface", "test")


@pytest.fixture(scope="session")
def trained(typeface):
    """The paper's MLP trained for 3 epochs on typeface digits (read-only: do not modify)."""
    from xwp import MLP, train

    model = MLP((784, 400, 100, 10), seed=0)
    train(model, typeface[0], typeface[1], epochs=3, seed=0, device="cpu")
    return model.eval()


def random_trained_mlp(sizes, seed: int = 0, dtype=torch.float64):
    """An MLP whose parameters moved away from their initial state by random steps."""
    from xwp import MLP

    model = MLP(sizes, seed=seed).to(dtype)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return model.eval()
