"""The first layer and the rest of a network, for weight perturbation of ``nn.Linear`` and ``nn.Conv2d``.

XWP and XWPc (Lympelopoulos & Kanellopoulou 2026, eqs. 3-5) change the first-layer weights
attached to one input element ``i`` and rerun the rest of the network. This module states
what that means for both kinds of first layer and computes it batched over every non-zero
input element of every image.

Dense first layer (``h = W x + b``): giving feature ``i`` other weights ``W'_i`` changes
``h`` by ``x_i (W'_i - W_i)``, a rank-1 update.

Convolutional first layer (``h = conv_W(x) + b``): a conv weight is shared by all
positions, so "the weights attached to pixel ``i``" are read as two convolutions with
complementary masks (``e_i``: one-hot at input element ``i``, over channels and positions):

- XWP: the first layer's output with pixel ``i``'s weights back at their initial values is
  ``conv_W(x ⊙ (1 − e_i)) + conv_W0(x ⊙ e_i) + b = conv_W(x) + b + conv_{W0 − W}(x ⊙ e_i)``,
  and ``R_i = Σ_n I_n (f_n(x) − f_n(that))``.
- XWPc: the first layer at its initial values with only pixel ``i`` given its trained weights,
  ``conv_W0(x) + b + conv_{W − W0}(x ⊙ e_i)``, measured against ``conv_W0(x) + b``:
  ``R^c_i = Σ_n I_n (f_n(that) − f_n(conv_W0(x) + b))``.

``conv_D(x ⊙ e_i)`` is ``x_i`` times the kernel difference ``D[:, c_i]`` placed at the output
positions that see pixel ``i`` (a ``k x k`` patch, fewer with a stride: one position for a
ViT-style patch embedding, stride = kernel), so only that patch of the first feature map
changes. A conv whose kernel covers the whole input is a dense layer and the two rules agree.
Features with ``x_i = 0`` score exactly 0 and are never computed; the model is never modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from xwp.errors import XWPError
from xwp.models import CNN, MLP

Rest = Callable[[torch.Tensor], torch.Tensor]
ScoreRows = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Difference = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    """``(v, v)`` for an int, the tuple itself otherwise."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _axis_table(size: int, out: int, k: int, stride: int, pad: int, dil: int) -> tuple[torch.Tensor, ...]:
    """For each input coordinate ``r``: output coordinates and kernel taps that see it, with a validity mask.

    Output ``o`` reads input ``o * stride - pad + tap * dil``; returns ``(pos, tap, valid)``,
    each ``(size, m)`` with ``m`` the largest number of outputs one coordinate reaches.
    """
    rows = [
        [(o, t) for t in range(k) if (r + pad - t * dil) % stride == 0 for o in [(r + pad - t * dil) // stride]]
        for r in range(size)
    ]
    rows = [[(o, t) for o, t in row if 0 <= o < out] for row in rows]
    m = max(1, max(len(row) for row in rows))
    pos = torch.zeros(size, m, dtype=torch.long)
    tap = torch.zeros(size, m, dtype=torch.long)
    valid = torch.zeros(size, m, dtype=torch.bool)
    for r, row in enumerate(rows):
        for j, (o, t) in enumerate(row):
            pos[r, j], tap[r, j], valid[r, j] = o, t, True
    return pos, tap, valid


@dataclass
class FirstLayer:
    """A network split into its first layer (``nn.Linear`` or ``nn.Conv2d``) and the rest.

    ``rest(h)`` maps the first layer's pre-activation ``h`` (``(N, H)`` or ``(N, C, Ho, Wo)``)
    to logits and may work in place on ``h``; ``in_shape`` is one input's shape
    (``(D,)`` or ``(C, H, W)``).
    """

    layer: nn.Linear | nn.Conv2d
    rest: Rest
    in_shape: tuple[int, ...]
    _tables: dict = field(default_factory=dict, repr=False)

    @property
    def is_conv(self) -> bool:
        """Whether the first layer is a convolution."""
        return isinstance(self.layer, nn.Conv2d)

    @property
    def n_features(self) -> int:
        """Input elements per image."""
        return math.prod(self.in_shape)

    def bias(self) -> torch.Tensor | None:
        """The first layer's (trained) bias, detached."""
        b = self.layer.bias
        return None if b is None else b.detach()

    def pre(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """First-layer pre-activation of ``x`` (``(B, *in_shape)``) with weights ``weight`` and the trained bias."""
        if not self.is_conv:
            return F.linear(x.reshape(x.shape[0], -1), weight, self.bias())  # (B, H)
        c = self.layer
        return F.conv2d(x, weight, self.bias(), c.stride, c.padding, c.dilation, c.groups)  # (B, C1, Ho, Wo)

    def _conv_tables(self, out_hw: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, ...]:
        """Cached index tables of :meth:`add_change` for a conv first layer with output size ``out_hw``."""
        key = (out_hw, str(device))
        if key not in self._tables:
            c = self.layer
            _, h, w = self.in_shape
            (kh, kw), (sh, sw), (dh, dw) = _pair(c.kernel_size), _pair(c.stride), _pair(c.dilation)
            if isinstance(c.padding, str):  # 'valid' or 'same' (torch pads 'same' by total // 2 on the left)
                ph, pw = (0, 0) if c.padding == "valid" else (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
            else:
                ph, pw = _pair(c.padding)
            ys = _axis_table(h, out_hw[0], kh, sh, ph, dh)
            xs = _axis_table(w, out_hw[1], kw, sw, pw, dw)
            self._tables[key] = tuple(t.to(device) for t in (*ys, *xs))
        return self._tables[key]

    def add_change(self, h: torch.Tensor, delta: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> None:
        """In place: ``h[j] += values[j] * (change of the pre-activation per unit of input ``idx[j]``)``.

        ``delta`` is a weight difference shaped like the layer's weight (``W0 - W`` for XWP,
        ``W - W0`` for XWPc); ``idx`` are flat input indices (``(n,)``) and ``h`` holds ``n``
        pre-activations. Dense: ``h[j] += values[j] * delta[:, idx[j]]``. Conv:
        ``h[j] += conv_delta(values[j] * e_idx[j])``, written only at the positions it reaches.
        """
        if not self.is_conv:
            h.addcmul_(delta.index_select(1, idx).t(), values[:, None])  # (n, H)
            return
        n, c_out, ho, wo = h.shape
        _, height, width = self.in_shape
        oy, ky, vy, ox, kx, vx = self._conv_tables((ho, wo), h.device)
        ch, rem = idx // (height * width), idx % (height * width)
        r, q = rem // width, rem % width
        m = oy.shape[1] * ox.shape[1]
        pos = (oy[r][:, :, None] * wo + ox[q][:, None, :]).reshape(n, m)  # (n, M) flat output positions
        valid = (vy[r][:, :, None] & vx[q][:, None, :]).reshape(n, m)  # (n, M)
        taps = delta.permute(1, 2, 3, 0)  # (C_in, kh, kw, C_out)
        upd = taps[ch[:, None, None], ky[r][:, :, None], kx[q][:, None, :]].reshape(n, m, c_out)  # (n, M, C_out)
        upd = upd * (values[:, None] * valid)[:, :, None]  # invalid taps add exactly 0
        pos = torch.where(valid, pos, 0)
        h.view(n, c_out, ho * wo).scatter_add_(2, pos[:, None, :].expand(n, c_out, m), upd.transpose(1, 2))


def _inplace_rest(layers: list[nn.Module]) -> Rest:
    """Layers 2..L of a ReLU MLP, with in-place ReLUs on the (owned) pre-activation buffer."""

    def rest(h: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            h = torch.addmm(layer.bias, h.relu_(), layer.weight.t())  # (N, next width)
        return h

    return rest


def split_first_layer(model: nn.Module) -> FirstLayer:
    """Split an ``xwp.MLP``, an ``xwp.CNN`` or an ``nn.Sequential`` starting with Linear/Conv2d (after Flatten)."""
    if isinstance(model, MLP):
        return FirstLayer(model.linears[0], _inplace_rest(model.linears[1:]), (model.sizes[0],))
    if isinstance(model, CNN):
        return FirstLayer(model.net[0], model.after_first, model.input_shape)
    if isinstance(model, nn.Sequential) and len(model):
        k = 1 if isinstance(model[0], nn.Flatten) and len(model) > 1 else 0
        first = model[k]
        if isinstance(first, nn.Linear):
            return FirstLayer(first, model[k + 1 :], (first.in_features,))
        if isinstance(first, nn.Conv2d) and k == 0:
            if first.groups != 1 or first.padding_mode != "zeros":
                raise XWPError("XWP supports first convolutions with groups=1 and zero padding")
            return FirstLayer(first, model[1:], ())  # in_shape is taken from the inputs
    raise XWPError(
        "XWP needs a network whose first layer is nn.Linear or nn.Conv2d: an xwp.MLP, an xwp.CNN, "
        "or an nn.Sequential that starts with (Flatten,) Linear or with Conv2d"
    )


def conv_split(model: nn.Module) -> FirstLayer | None:
    """:func:`split_first_layer` when the first layer is ``nn.Conv2d``, else None (never raises)."""
    try:
        first = split_first_layer(model)
    except XWPError:
        return None
    return first if first.is_conv else None


def initial_first_weight(model: nn.Module, first: FirstLayer, initial_model: nn.Module | None) -> torch.Tensor:
    """First-layer weights at initialisation, from ``initial_model`` or the model's own buffers."""
    if initial_model is not None:
        w0 = split_first_layer(initial_model).layer.weight
    elif isinstance(model, MLP | CNN):
        w0 = model.initial_state()["0.weight"]
    else:
        raise XWPError(
            "XWP needs the network's initial state: pass initial_model= "
            "(the same architecture at its initial weights) or use xwp.MLP / xwp.CNN, which keep it"
        )
    w = first.layer.weight
    if w0.shape != w.shape:
        raise XWPError(f"initial first layer has shape {tuple(w0.shape)}, the model has {tuple(w.shape)}")
    return w0.detach().to(device=w.device, dtype=w.dtype)


def shape_inputs(first: FirstLayer, x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``(B, *in_shape)`` for the first layer (flat inputs of a known conv shape are reshaped)."""
    if first.is_conv and not first.in_shape:
        if x.dim() != 4 or x.shape[1] != first.layer.in_channels:
            raise XWPError(f"inputs must be (B, {first.layer.in_channels}, H, W), got {tuple(x.shape)}")
        return x
    if x[0].numel() != first.n_features:
        raise XWPError(f"inputs have {x[0].numel()} features per image, the model expects {first.n_features}")
    return x.reshape((x.shape[0], *first.in_shape))


def perturbed_scores(
    first: FirstLayer,
    h_ref: torch.Tensor,
    x: torch.Tensor,
    delta: torch.Tensor,
    target: torch.Tensor,
    score_rows: ScoreRows,
    chunk_elements: int,
    run_chunked: Callable[[int, int, Callable[[int, int], None]], None],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``score_rows(rest(h_ref[b] + change of element i), target[b])`` for every non-zero ``x[b, i]``.

    ``x`` is flat ``(B, D)``; rows go through ``rest`` ``chunk_elements // h_ref[0].numel()``
    at a time. Returns the batch and feature indices of the non-zero inputs and their scores.
    """
    b_idx, i_idx = torch.nonzero(x, as_tuple=True)  # (N,), (N,)
    values = x[b_idx, i_idx]  # (N,)
    scores: list[torch.Tensor] = []
    chunk = max(1, chunk_elements // max(1, h_ref[0].numel()))

    def work(start: int, stop: int) -> None:
        bi = b_idx[start:stop]
        h = h_ref.index_select(0, bi)  # (n, ...): the reference pre-activation of each row's image
        first.add_change(h, delta, i_idx[start:stop], values[start:stop])
        scores.append(score_rows(first.rest(h), target.index_select(0, bi)))

    run_chunked(b_idx.numel(), chunk, work)
    if not scores:
        return b_idx, i_idx, torch.empty(0, 1, dtype=x.dtype, device=x.device)
    return b_idx, i_idx, torch.cat(scores)


def weight_perturbation(
    first: FirstLayer,
    x: torch.Tensor,
    w0: torch.Tensor,
    target: torch.Tensor | None,
    score_rows: ScoreRows,
    difference: Difference,
    run_chunked: Callable[[int, int, Callable[[int, int], None]], None],
    complement: bool = False,
    chunk_elements: int = 1 << 20,
    literal: bool = False,
) -> torch.Tensor:
    """XWP (``complement=False``) or XWPc attributions, flat ``(B, D)``, for inputs ``x`` of one chunk.

    ``target`` is ``(B,)`` or None (the trained model's predicted class); ``score_rows`` and
    ``difference`` define ``Σ_n I_n f_n`` and the difference of two such scores (see
    :class:`xwp.XWP`, whose softmax scores keep confident predictions exact);
    ``literal`` gives XWPc's literal eq. 5 reading ``C(x) - R^c_i``.
    """
    xs = shape_inputs(first, x)
    if not first.in_shape:  # a plain nn.Sequential: the conv's input shape comes from the inputs
        first = replace(first, in_shape=tuple(xs.shape[1:]), _tables={})
    flat = xs.reshape(xs.shape[0], -1)  # (B, D)
    w = first.layer.weight.detach()
    h1 = first.pre(xs, w)
    logits = first.rest(h1.clone())  # rest() may work in place
    if target is None:
        target = logits.argmax(1)
    elif ((target < 0) | (target >= logits.shape[1])).any():
        bad = target[(target < 0) | (target >= logits.shape[1])][0].item()
        raise XWPError(f"target class {bad} is out of range 0..{logits.shape[1] - 1}")
    ref = score_rows(logits, target)  # (B, k)
    if complement:
        h_ref, delta = first.pre(xs, w0), w - w0
        base = score_rows(first.rest(h_ref.clone()), target)
    else:
        h_ref, delta = h1, w0 - w
    b_idx, i_idx, pert = perturbed_scores(first, h_ref, flat, delta, target, score_rows, chunk_elements, run_chunked)
    attr = torch.zeros_like(flat)
    if complement:
        attr[b_idx, i_idx] = difference(pert, base[b_idx])
        if literal:
            attr = difference(ref, base)[:, None] - attr
    else:
        attr[b_idx, i_idx] = difference(ref[b_idx], pert)
    return attr
