"""Device helpers (xwp/devices.py): chunked loops that shrink on CUDA out-of-memory."""

from __future__ import annotations

import torch


def test_chunks_shrink_on_cuda_out_of_memory():
    from xwp.devices import run_chunked

    seen = []

    def work(start, stop):
        if stop - start > 4:
            raise torch.cuda.OutOfMemoryError("simulated")
        seen.append((start, stop))

    run_chunked(23, 16, work)
    covered = [i for a, b in seen for i in range(a, b)]
    assert covered == list(range(23)) and max(b - a for a, b in seen) <= 4
