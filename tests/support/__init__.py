"""Helpers shared by the tests and the bench scripts: real data beside the checkout, small trained models.

``tests.support.server`` starts the app for a real browser, ``tests.support.corpus`` holds the
hostile files, ``tests.support.app`` the AppTest helpers, ``tests.support.ws_trace`` reads
Streamlit's websocket messages. The bench may import this package; tests never import the bench.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_data_dir() -> Path | None:
    """The real MNIST / Fashion-MNIST folder beside the checkout, or $XWP_TEST_DATA_DIR."""
    env = os.environ.get("XWP_TEST_DATA_DIR")
    path = Path(env) if env else SHARED_DATA
    return path if (path / "FashionMNIST" / "raw").is_dir() else None


def random_trained_mlp(sizes, seed: int = 0, dtype=torch.float64):
    """An MLP whose parameters moved away from their initial state by random steps."""
    from xwp import MLP

    model = MLP(sizes, seed=seed).to(dtype)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return model.eval()
