"""Where and in what precision a model runs, and chunked loops that survive CUDA out-of-memory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: rows of the first hidden layer processed at once is ``CHUNK_ELEMENTS // width``: about 4 MB
#: of float32 on a CPU (cache-friendly), 256 MB on a GPU (fewer kernel launches)
CHUNK_ELEMENTS = 1 << 20
CHUNK_ELEMENTS_CUDA = 1 << 26


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first parameter."""
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.float32


def run_chunked(n: int, chunk: int, fn: Callable[[int, int], None]) -> None:
    """Call ``fn(start, stop)`` over ``range(n)`` in chunks, halving them on CUDA out-of-memory."""
    start = 0
    while start < n:
        stop = min(n, start + chunk)
        try:
            fn(start, stop)
        except torch.cuda.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            torch.cuda.empty_cache()
            continue
        start = stop
