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
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from xwp.errors import XWPError
from xwp.models import CNN, MLP

Rest = Callable[[torch.Tensor], torch.Tensor]


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

    ``rest(h)`` maps the first layer's pre-activation ``h`` (``(N, H)`` or ``(N, C1, Ho, Wo)``)
    to logits and may work in place on ``h``; ``in_shape`` is one input's shape (``(D,)`` or
    ``(C, H, W)``; empty for a plain ``nn.Sequential`` starting with a conv, whose input
    shape comes from the inputs).
    """

    layer: nn.Linear | nn.Conv2d
    rest: Rest
    in_shape: tuple[int, ...]
    _tables: dict = field(default_factory=dict, repr=False)

    @property
    def is_conv(self) -> bool:
        """Whether the first layer is a convolution."""
        return isinstance(self.layer, nn.Conv2d)

    def bias(self) -> torch.Tensor | None:
        """The first layer's (trained) bias, detached."""
        b = self.layer.bias
        return None if b is None else b.detach()

    def shape_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(B, *in_shape)`` (flat inputs of a known shape are reshaped), checked."""
        if self.is_conv and not self.in_shape:
            if x.dim() != 4 or x.shape[1] != self.layer.in_channels:
                raise XWPError(f"inputs must be (B, {self.layer.in_channels}, H, W), got {tuple(x.shape)}")
            return x
        n = math.prod(self.in_shape)
        if x[0].numel() != n:
            raise XWPError(f"inputs have {x[0].numel()} features per image, the model expects {n}")
        return x.reshape((x.shape[0], *self.in_shape))

    def pre(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """First-layer pre-activation of ``x`` ``(B, *in_shape)`` with weights ``weight`` and the trained bias."""
        b = self.bias()
        if not self.is_conv:
            b = b if b is not None else torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
            return torch.addmm(b, x, weight.t())  # (B, H)
        c = self.layer
        return F.conv2d(x, weight, b, c.stride, c.padding, c.dilation, c.groups)  # (B, C1, Ho, Wo)

    def per_unit(self, weight_change: torch.Tensor) -> torch.Tensor:
        """A first-layer weight difference in the layout :meth:`add_change` reads.

        Dense: ``(D, H)``, row ``i`` is the change of ``h`` per unit of ``x_i`` (contiguous rows
        gather fast). Conv: the kernel difference itself ``(C1, C, kh, kw)``.
        """
        return weight_change if self.is_conv else weight_change.t().contiguous()

    def _conv_tables(self, in_hw: tuple[int, int], out_hw: tuple[int, int], device: torch.device) -> tuple:
        """Cached index tables of :meth:`add_change` for a conv first layer (input and output sizes)."""
        key = (in_hw, out_hw, str(device))
        if key not in self._tables:
            c = self.layer
            (kh, kw), (sh, sw), (dh, dw) = _pair(c.kernel_size), _pair(c.stride), _pair(c.dilation)
            if isinstance(c.padding, str):  # 'valid' or 'same' (torch pads 'same' by total // 2 on the left)
                ph, pw = (0, 0) if c.padding == "valid" else (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
            else:
                ph, pw = _pair(c.padding)
            ys = _axis_table(in_hw[0], out_hw[0], kh, sh, ph, dh)
            xs = _axis_table(in_hw[1], out_hw[1], kw, sw, pw, dw)
            self._tables[key] = tuple(t.to(device) for t in (*ys, *xs))
        return self._tables[key]

    def add_change(
        self, h: torch.Tensor, delta: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, in_shape: tuple
    ) -> None:
        """In place: ``h[j] += values[j] * (change of the pre-activation per unit of input ``idx[j]``)``.

        ``delta`` is :meth:`per_unit` of a weight difference (``W0 - W`` for XWP, ``W - W0``
        for XWPc); ``idx`` are flat input indices ``(n,)`` into inputs of shape ``in_shape``
        and ``h`` holds ``n`` pre-activations. Dense: the rank-1 rule
        ``h[j] += values[j] * delta[idx[j]]``. Conv: ``h[j] += conv_delta(values[j] * e_idx[j])``,
        written only at the output positions that see input ``idx[j]``.
        """
        if not self.is_conv:
            h.addcmul_(delta.index_select(0, idx), values[:, None])  # (n, H)
            return
        n, c_out, ho, wo = h.shape
        _, height, width = in_shape
        oy, ky, vy, ox, kx, vx = self._conv_tables((height, width), (ho, wo), h.device)
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
    """Split an ``xwp.MLP``, an ``xwp.CNN`` or an ``nn.Sequential`` starting with (Flatten,) Linear or Conv2d."""
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


def split_first_linear(model: nn.Module) -> tuple[nn.Linear, Rest]:
    """The first ``nn.Linear`` of a fully connected network and the function applied after it."""
    first = split_first_layer(model)
    if first.is_conv:
        raise XWPError("this network's first layer is a convolution, not nn.Linear (see split_first_layer)")
    return first.layer, first.rest


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
