"""Device-side XWP / XWPc for fixed shapes: no host syncs, optional CUDA graphs and ``torch.compile``.

:class:`xwp.attribution.XWP` finds the non-zero input features with ``torch.nonzero``: the
fewest rows on a CPU, but on a GPU every call waits for the device (the number of rows is
data-dependent) and launches a dozen small kernels, so one image costs milliseconds of
overhead (bench_cuda.md). :class:`DenseXWP` computes the same attributions (Lympelopoulos &
Kanellopoulou 2026, eqs. 3-5) for *every* feature of a fixed-size chunk of images and masks
the zero features afterwards: shapes never depend on the data, nothing waits for the device,
and the whole call can be captured once as a CUDA graph (:class:`CapturedXWP`) and replayed
with one launch. It does ``1 / density`` times the row work of the sparse path, which is the
price of being sync-free; for large batches on a GPU the sparse path with one sync per batch
(``mode="sparse"`` of bench/bench_cuda.py) is the throughput choice.

On a CPU in float64 the dense formulation gives the sparse path's numbers to rounding
(tests/test_fast_paths.py): the perturbed rows are built by the same ``addcmul`` and go
through the same layers. Bit for bit on the Intel Xeon this was written on; on an AMD EPYC
(AVX-512) 1-3 of 5,488 values differed in the last bits (at most 9e-16 of the largest),
because BLAS picks other kernels for another number of rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from xwp.attribution.common import OutputFn, Target, broadcast_target
from xwp.attribution.weight_perturbation import XWP, XWPc
from xwp.devices import model_device, model_dtype, run_chunked
from xwp.errors import XWPError

#: perturbed rows per dense chunk: 4 MB of float32 rows of width 400 on a CPU; far more on a GPU
DENSE_ROWS_CPU = 2_048
DENSE_ROWS_CUDA = 1 << 17


class DenseXWP:
    """XWP (or XWPᶜ with ``complementary=True``) of every feature of fixed-size image chunks, sync-free.

    Args:
        model: a fully connected network (``xwp.MLP`` or ``nn.Sequential`` starting with ``nn.Linear``).
        initial_model: its initial state (optional for ``xwp.MLP``).
        complementary: XWPᶜ (the "isolated" rule) instead of XWP.
        output: ``"softmax"`` (the paper) or ``"logits"``.
        rows: perturbed rows sent through layers 2..L at once (rounded down to whole images).
        compile: wrap the row work (build, ReLU, layers 2..L, scores) in ``torch.compile``
            (``True`` or a ``mode`` string such as ``"reduce-overhead"``).
        image_chunk: images prepared together, as :class:`xwp.attribution.XWP` (same rounding).

    The first-layer change ``delta`` is taken once, at construction: build a new object after
    the model's weights change. The model itself is never modified.
    """

    per_image_deterministic = True  # may be batched by xwp.serve.compute

    def __init__(
        self,
        model: nn.Module,
        initial_model: nn.Module | None = None,
        complementary: bool = False,
        output: str | OutputFn = "softmax",
        rows: int | None = None,
        compile: bool | str = False,
        image_chunk: int = 1024,
    ):
        if output not in ("softmax", "logits"):
            raise XWPError(f"the dense path explains 'softmax' or 'logits', got {output!r}")
        self.ref = (XWPc if complementary else XWP)(model, initial_model, output=output)
        if self.ref.split.is_conv:
            raise XWPError("the dense fast path is for a dense first layer (nn.Linear); use xwp.XWP for a CNN")
        self.complementary = complementary
        self.model = model
        w = self.ref.first.weight.detach()
        bias = self.ref.first.bias
        self.bias = bias.detach() if bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        self.w, self.w0 = w, self.ref.w0
        sign = (w - self.w0) if complementary else (self.w0 - w)
        self.delta_t = sign.t().contiguous()  # (D, H): change of the reference pre-activation per unit of x_i
        on_gpu = w.device.type == "cuda"
        self.rows = int(rows or (DENSE_ROWS_CUDA if on_gpu else DENSE_ROWS_CPU))
        self.image_rows = max(1, self.rows // self.delta_t.shape[0])  # images whose rows go through at once
        self.image_chunk = image_chunk
        with torch.no_grad():
            self.n_classes = self.ref.rest(torch.zeros(1, w.shape[0], dtype=w.dtype, device=w.device)).shape[1]
        self._rows: Callable[..., torch.Tensor] = self._rows_eager
        if compile:
            self._rows = torch.compile(self._rows_eager, mode=compile if isinstance(compile, str) else None)

    @property
    def device(self) -> torch.device:
        """Where the model lives."""
        return model_device(self.model)

    def _chunk(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Attributions ``(b, D)`` of flat inputs ``x`` ``(b, D)``; ``target`` None: predicted class.

        Every step has a static shape: no ``nonzero``, no ``.item()``, no data-dependent branch.
        The references (first layer, logits, unperturbed scores) are computed for the whole
        chunk at once, as the sparse path does, so that both see the same rounding.
        """
        ref = self.ref
        h1 = torch.addmm(self.bias, x, self.w.t())  # (b, H): trained first layer
        logits = ref.rest(h1.clone())  # (b, C)
        t = logits.argmax(1) if target is None else target
        if self.complementary:
            h1 = torch.addmm(self.bias, x, self.w0.t())  # (b, H): first layer all initial
            base = ref._score_h1(h1, t)  # (b, k)
        else:
            base = ref._score(logits, t)  # (b, k)
        out = torch.empty_like(x)
        for start in range(0, x.shape[0], self.image_rows):
            stop = min(x.shape[0], start + self.image_rows)
            out[start:stop] = self._rows(x[start:stop], h1[start:stop], t[start:stop], base[start:stop])
        return out

    def _rows_eager(self, x: torch.Tensor, h1: torch.Tensor, t: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Attributions ``(b, D)`` from the perturbed rows of ``b`` images: every feature, zeros masked."""
        ref = self.ref
        b, d = x.shape
        h = h1[:, None, :].expand(b, d, h1.shape[1]).clone()  # (b, D, H)
        h.addcmul_(self.delta_t[None], x[:, :, None])  # + x_i delta_i: the same op as the sparse path
        rows_t = t[:, None].expand(b, d).reshape(-1)  # (b*D,)
        pert = ref._score(ref.rest(h.reshape(b * d, -1)), rows_t)  # (b*D, k)
        base = base[:, None, :].expand(b, d, base.shape[1]).reshape(b * d, -1)
        diff = ref._difference(pert, base) if self.complementary else ref._difference(base, pert)
        return torch.where(x != 0, diff.reshape(b, d), torch.zeros((), dtype=x.dtype, device=x.device))

    def _targets(self, target: Target, b: int) -> torch.Tensor | None:
        """Targets on the model's device, checked on the host when they come from it (no device sync)."""
        if target is None:
            return None
        if isinstance(target, torch.Tensor) and target.device.type != "cpu":
            return broadcast_target(target, b, target.device)  # trusted: checking would wait for the device
        t = broadcast_target(target, b, torch.device("cpu"))
        c = self.n_classes
        if ((t < 0) | (t >= c)).any():
            raise XWPError(f"target class {t[(t < 0) | (t >= c)][0].item()} is out of range 0..{c - 1}")
        return t.to(self.device, non_blocking=True)

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Attributions shaped like ``inputs`` (zero features get exactly 0)."""
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
            raise XWPError("inputs must be a tensor with a batch dimension")
        x = inputs.to(device=self.device, dtype=model_dtype(self.model)).reshape(inputs.shape[0], -1)
        if x.shape[1] != self.delta_t.shape[0]:
            raise XWPError(f"inputs have {x.shape[1]} features, the model expects {self.delta_t.shape[0]}")
        b = x.shape[0]
        t = self._targets(target, b)
        out = torch.empty_like(x)
        for start in range(0, b, self.image_chunk):
            stop = min(b, start + self.image_chunk)
            out[start:stop] = self._chunk(x[start:stop], None if t is None else t[start:stop])
        return out.reshape(inputs.shape).to(inputs.device)


class CapturedXWP:
    """:class:`DenseXWP` for batches of at most ``batch`` images, captured once as a CUDA graph.

    Each call copies the inputs into static buffers (zero-padded to ``batch``), replays the
    graph (one launch for the whole XWP) and returns a copy of the first rows of the output.
    One graph per target mode (given classes or the predicted class), captured on first use.
    Only on CUDA; :class:`DenseXWP` is the same computation without the graph.
    """

    per_image_deterministic = True

    def __init__(self, dense: DenseXWP, batch: int = 1):
        if dense.device.type != "cuda":
            raise XWPError("CUDA graphs need the model on a CUDA device; use DenseXWP on a CPU")
        if batch > dense.image_chunk:
            raise XWPError(f"batch {batch} is larger than one dense chunk ({dense.image_chunk} images)")
        self.dense, self.batch = dense, int(batch)
        d, dev, dt = dense.delta_t.shape[0], dense.device, model_dtype(dense.model)
        self.x = torch.zeros(self.batch, d, device=dev, dtype=dt)
        self.t = torch.zeros(self.batch, dtype=torch.long, device=dev)
        self.graphs: dict[bool, tuple[Any, torch.Tensor]] = {}

    def _graph(self, predicted: bool) -> tuple[Any, torch.Tensor]:
        """The graph for one target mode and its static output, captured after a warm-up."""
        if predicted not in self.graphs:
            fn = self.dense._chunk
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.no_grad(), torch.cuda.stream(stream):
                for _ in range(3):  # warm-up outside the graph (allocator, cuBLAS workspaces)
                    fn(self.x, None if predicted else self.t)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph):
                out = fn(self.x, None if predicted else self.t)
            self.graphs[predicted] = (graph, out)
        return self.graphs[predicted]

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Attributions shaped like ``inputs`` (at most ``batch`` images)."""
        n = inputs.shape[0]
        if n > self.batch:
            raise XWPError(f"this captured XWP takes at most {self.batch} images, got {n}")
        x = inputs.reshape(n, -1)
        self.x[:n].copy_(x, non_blocking=True)
        self.x[n:].zero_()
        if target is not None:
            self.t[:n].copy_(self.dense._targets(target, n), non_blocking=True)
        graph, out = self._graph(target is None)
        graph.replay()
        return out[:n].clone().reshape(inputs.shape).to(inputs.device)


# --------------------------------------------------------------------------- compiled sparse path


def _rows_scores(
    h1: torch.Tensor,
    bi: torch.Tensor,
    ii: torch.Tensor,
    values: torch.Tensor,
    delta_t: torch.Tensor,
    target: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    softmax: bool,
) -> torch.Tensor:
    """Scores of perturbed rows ``h1[bi] + values * delta_t[ii]`` through ReLU and layers 2..L.

    The same quantity as ``_WeightPerturbation._score(rest(h), target[bi])``, written
    as one function of tensors so that ``torch.compile`` fuses the gather, the rank-1 update
    and the ReLU into one pass and one compiled graph serves every model of an architecture.
    """
    h = h1.index_select(0, bi) + delta_t.index_select(0, ii) * values[:, None]  # (n, H)
    for w, b in zip(weights, biases, strict=True):
        h = torch.addmm(b, h.relu(), w.t())
    t = target.index_select(0, bi)[:, None]  # (n, 1)
    logit_t = h.gather(1, t)
    if not softmax:
        return 2.0 * logit_t - h.sum(1, keepdim=True)
    lse = torch.logsumexp(h, 1, keepdim=True)
    others = torch.logsumexp(h.scatter(1, t, -torch.inf), 1, keepdim=True)
    return torch.cat([torch.exp(logit_t - lse), torch.exp(others - lse)], 1)


_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def compiled_rows_scores() -> Callable[..., torch.Tensor]:
    """:func:`_rows_scores` compiled once per process (dynamic in the number of rows)."""
    if "rows" not in _COMPILED:
        _COMPILED["rows"] = torch.compile(_rows_scores, dynamic=True)
    return _COMPILED["rows"]


class _CompiledSparse:
    """Mixin: the sparse path's per-chunk work through :func:`compiled_rows_scores`."""

    per_image_deterministic = True

    def _perturbed_scores(
        self, h1: torch.Tensor, delta_t: torch.Tensor, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As ``_WeightPerturbation._perturbed_scores``, with the chunk work compiled."""
        linears = getattr(self.model, "linears", None)
        if linears is None or self.output not in ("softmax", "logits"):
            return super()._perturbed_scores(h1, delta_t, x, target)  # eager for other networks / outputs
        weights = [layer.weight.detach() for layer in linears[1:]]
        biases = [layer.bias.detach() for layer in linears[1:]]
        fn = compiled_rows_scores()
        b_idx, i_idx = torch.nonzero(x, as_tuple=True)
        values = x[b_idx, i_idx]
        scores = torch.empty(b_idx.numel(), 2 if self.output == "softmax" else 1, dtype=x.dtype, device=x.device)
        chunk = max(1, self.chunk_elements // delta_t.shape[1])

        def work(start: int, stop: int) -> None:
            bi, ii, v = b_idx[start:stop], i_idx[start:stop], values[start:stop]
            scores[start:stop] = fn(h1, bi, ii, v, delta_t, target, weights, biases, self.output == "softmax")

        run_chunked(b_idx.numel(), chunk, work)
        return b_idx, i_idx, scores


class CompiledXWP(_CompiledSparse, XWP):
    """:class:`xwp.attribution.XWP` with the gather + rank-1 update + ReLU + layers 2..L compiled.

    Equal to XWP within float rounding (the update is fused, not an ``addcmul``). The first call
    compiles (tens of seconds on a CPU, once per process, shared by all models of an MLP
    depth); use it for long runs (``evaluate``), not for a server's first stroke.
    """


class CompiledXWPc(_CompiledSparse, XWPc):
    """:class:`xwp.attribution.XWPc` with the row work compiled (see :class:`CompiledXWP`)."""
