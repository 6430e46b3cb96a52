"""Matplotlib figures from arrays: heatmaps, method grids, deletion curves, weights, training.

One look everywhere: attributions and weights use a diverging red-blue colormap centred
on 0 (red positive, blue negative), inputs are grey, text is large enough for a projector.
No Streamlit here; :func:`png_bytes` turns any figure into PNG bytes for downloads.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DIVERGING = "RdBu_r"
INPUT = "gray"
# text.parse_math off: titles and labels quote class and model names from visitors' files, and a
# name such as "$\\frac{$" would otherwise make mathtext raise while the figure is drawn
plt.rcParams.update(
    {"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "figure.dpi": 100, "text.parse_math": False}
)


def _np(a) -> np.ndarray:
    """Any tensor or array as a float numpy array."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def as_image(a, side: int | None = None) -> np.ndarray:
    """A flat or ``(1, H, W)`` array as a 2-D ``(H, W)`` image."""
    a = _np(a).squeeze()
    if a.ndim == 1:
        side = side or int(round(np.sqrt(a.size)))
        a = a.reshape(side, -1)
    return a


def symmetric_limit(*maps, percentile: float = 99.5) -> float:
    """A colour limit ``s`` for ``[-s, s]``: the given percentile of |values| (never 0)."""
    vals = np.concatenate([np.abs(_np(m)).ravel() for m in maps]) if maps else np.zeros(1)
    s = float(np.percentile(vals, percentile)) if vals.size else 0.0
    if s <= 0:
        s = float(vals.max()) if vals.size else 0.0
    return s if s > 0 else 1.0


def display_map(attribution, limit: float | None = None) -> tuple[np.ndarray, float]:
    """A map as it is drawn, and the limit ``s`` of its colour scale ``[-s, s]``.

    A map without a single value <= 0 (RISE's saliency is a weighted average of masks)
    would be uniformly red, so, unless a shared ``limit`` is given, it is drawn minus its
    mean: red then means "above this map's average".
    """
    a = as_image(attribution)
    if limit is None and a.size and a.min() > 0:
        a = a - a.mean()
    return a, (limit if limit is not None else symmetric_limit(a))


def draw_heatmap(
    ax,
    attribution,
    limit: float | None = None,
    image=None,
    overlay: bool = False,
    title: str | None = None,
    alpha: float = 0.75,
):
    """Draw one attribution map on ``ax`` (red positive, blue negative, centred on 0; see :func:`display_map`)."""
    a, s = display_map(attribution, limit)
    if overlay and image is not None:
        ax.imshow(as_image(image), cmap=INPUT, vmin=0, vmax=1)
        shown = ax.imshow(a, cmap=DIVERGING, vmin=-s, vmax=s, alpha=alpha)
    else:
        shown = ax.imshow(a, cmap=DIVERGING, vmin=-s, vmax=s)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return shown


def draw_input(ax, image, title: str | None = "input"):
    """Draw an input image in grey on ``ax``."""
    ax.imshow(as_image(image), cmap=INPUT, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def attribution_figure(
    image,
    maps: dict[str, object],
    shared_scale: bool = False,
    overlay: bool = False,
    title: str | None = None,
    size: float = 2.8,
) -> Figure:
    """The input next to one heatmap per method, with colour bars (one per map unless shared)."""
    n = len(maps) + 1
    width = size * n + (0.6 if shared_scale else 0.75 * len(maps))
    fig, axes = plt.subplots(1, n, figsize=(width, size + 0.9), squeeze=False, layout="constrained")
    axes = axes[0]
    draw_input(axes[0], image)
    limit = symmetric_limit(*maps.values()) if shared_scale and maps else None
    shown = None
    for ax, (label, a) in zip(axes[1:], maps.items(), strict=True):
        shown = draw_heatmap(ax, a, limit, image=image, overlay=overlay, title=label)
        if not shared_scale:
            fig.colorbar(shown, ax=ax, shrink=0.8, format="%.2g")
    if shared_scale and shown is not None:
        fig.colorbar(shown, ax=list(axes[1:]), shrink=0.8, label="attribution (red +, blue −)")
    if title:
        fig.suptitle(title)
    return fig


def method_grid(
    images,
    labels: Sequence[int],
    classes: Sequence[str],
    maps: dict[str, object],
    predictions: Sequence[int] | None = None,
    overlay: bool = False,
    size: float = 1.9,
    title: str | None = None,
) -> Figure:
    """Methods (rows) x sample images (columns), each map on its own symmetric scale (Figs. 3, 5, 6)."""
    imgs = [as_image(im) for im in _np(images)]
    n, rows = len(imgs), len(maps) + 1
    fig, axes = plt.subplots(rows, n, figsize=(size * n + 1.6, size * rows + 0.5), squeeze=False)
    for j, im in enumerate(imgs):
        head = f"{classes[int(labels[j])]}"
        if predictions is not None and int(predictions[j]) != int(labels[j]):
            head += f"\n(pred. {classes[int(predictions[j])]})"
        draw_input(axes[0, j], im, head)
    axes[0, 0].set_ylabel("input", rotation=0, ha="right", va="center")
    for i, (label, a) in enumerate(maps.items(), start=1):
        a = _np(a)
        for j in range(n):
            draw_heatmap(axes[i, j], a[j], image=imgs[j], overlay=overlay)
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.16, wspace=0.05, hspace=0.12)
    return fig


def curves_figure(
    curves: dict[str, np.ndarray],
    kind: str = "deletion",
    title: str | None = None,
    fraction_max: float = 1.0,
    stat: str = "median",
    ylabel: str = "p(true class)",
    log_x: bool = False,
) -> Figure:
    """Median (or mean) deletion/insertion curve per method; the legend gives the mean AUC (Fig. 4).

    The legend's AUC is over the whole curve of exactly the images passed in (so a filtered
    set of curves gets a matching legend). ``fraction_max`` zooms into the first fraction of
    features; ``log_x`` draws the fraction on a log axis (from the first step) to show where
    the good curves collapse.
    """
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    styles = ["-", "--", "-.", ":"]
    first = 1.0 / 200
    for k, (label, c) in enumerate(curves.items()):
        c = _np(c)
        first = 1.0 / max(1, c.shape[-1] - 1)
        if len(c) == 0:
            continue
        line = np.median(c, 0) if stat == "median" else c.mean(0)
        x = np.linspace(0, 1, len(line))
        area = np.trapezoid(c, x, axis=1).mean()
        lw = 2.8 if label.lower().startswith("xwp") else 1.6
        shown = slice(1, None) if log_x else slice(None)
        ax.plot(x[shown], line[shown], styles[k // 10 % 4], lw=lw, label=f"{label} ({area:.3f})")
    if log_x:
        ax.set_xscale("log")
        ax.set_xlim(first, fraction_max)
    else:
        ax.set_xlim(0, fraction_max)
    ax.set_xlabel("fraction of features removed" if kind == "deletion" else "fraction of features inserted")
    ax.set_ylabel(f"{ylabel}, {stat} over images")
    ax.set_title(title or f"{kind.capitalize()} curves ({stat} over images)")
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=f"method (mean {kind} AUC)", title_fontsize=9
    )
    fig.tight_layout()
    return fig


def weights_grid(
    weights,
    indices: Sequence[int] | None = None,
    ncols: int = 10,
    titles: Sequence[str] | None = None,
    limit: float | None = None,
    size: float = 1.25,
    title: str | None = None,
) -> Figure:
    """First-layer weight patterns ``(H, 784)`` as 28x28 images, diverging colours centred on 0 (Fig. 2)."""
    w = _np(weights)
    idx = list(range(len(w))) if indices is None else list(indices)
    rows = max(1, int(np.ceil(len(idx) / ncols)))
    fig, axes = plt.subplots(rows, ncols, figsize=(size * ncols + 1.0, size * rows + 0.6), squeeze=False)
    s = limit if limit is not None else symmetric_limit(w[idx] if idx else w)
    shown = None
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= len(idx):
            ax.axis("off")
            continue
        shown = ax.imshow(as_image(w[idx[k]]), cmap=DIVERGING, vmin=-s, vmax=s)
        ax.set_title(titles[k] if titles else f"#{idx[k]}", fontsize=9)
    if shown is not None:
        fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01, label="weight")
    if title:
        fig.suptitle(title)
    return fig


def neuron_figure(weight, title: str, limit: float | None = None) -> Figure:
    """One neuron's 28x28 weight pattern, large, with pixel values on hover-free grid lines."""
    a = as_image(weight)
    s = limit if limit is not None else symmetric_limit(a, percentile=100)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    shown = ax.imshow(a, cmap=DIVERGING, vmin=-s, vmax=s)
    ax.set_title(title)
    ax.set_xlabel("pixel column")
    ax.set_ylabel("pixel row")
    fig.colorbar(shown, ax=ax, label="weight")
    fig.tight_layout()
    return fig


def training_figure(history: dict, title: str = "Training") -> Figure:
    """Loss and accuracy per epoch."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = np.arange(1, len(history["loss"]) + 1)
    a1.plot(epochs, history["loss"], "o-", color="tab:red")
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss")
    a1.set_title("Loss")
    a2.plot(epochs, history["train_accuracy"], "o-", label="train")
    a2.plot(epochs, history["test_accuracy"], "s-", label="test")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    a2.set_title("Accuracy")
    a2.legend()
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_figure(matrix, classes: Sequence[str], title: str = "Confusion matrix (test set)") -> Figure:
    """Counts of true (rows) vs predicted (columns) classes."""
    m = _np(matrix)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    shown = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = m.max() if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(m[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if m[i, j] > top / 2 else "black",
                )
    fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


#: resolution of the figures the app shows (downloads of the Explain page use png_bytes' default)
FIG_DPI = 100


def png_bytes(fig: Figure, dpi: int = 120) -> bytes:
    """The figure as PNG bytes (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save(fig: Figure, path, dpi: int = 120) -> None:
    """Write the figure to ``path`` (format from the suffix) and close it."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def heatmap_rgb(
    attribution, limit: float | None = None, image=None, overlay: bool = False, alpha: float = 0.75, scale: int = 1
) -> np.ndarray:
    """An attribution map as an RGB ``uint8`` image, coloured like :func:`draw_heatmap` (no matplotlib figure).

    ``limit`` maps to the ends of the diverging colormap (default: the map's own scale, from
    :func:`display_map`); with ``overlay`` the map is blended over the grey ``image``;
    ``scale`` enlarges each pixel to a ``scale x scale`` block, so the image stays sharp.
    """
    a, s = display_map(attribution, limit)
    lut = plt.get_cmap(DIVERGING)(np.linspace(0.0, 1.0, 256))[:, :3]  # (256, 3)
    idx = np.clip(np.rint((np.nan_to_num(a) / s + 1.0) * 127.5), 0, 255).astype(np.intp)
    rgb = lut[idx]  # (H, W, 3)
    if overlay and image is not None:
        grey = np.clip(as_image(image), 0, 1)[..., None]
        rgb = alpha * rgb + (1 - alpha) * grey
    rgb = (rgb * 255).round().astype(np.uint8)
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else rgb


def colorbar_rgb(width: int = 256, height: int = 10) -> np.ndarray:
    """A horizontal strip of the diverging colormap (blue, white at 0, red) as RGB ``uint8``."""
    row = plt.get_cmap(DIVERGING)(np.linspace(0.0, 1.0, width))[:, :3]  # (W, 3)
    return np.repeat((row * 255).round().astype(np.uint8)[None], height, axis=0)
