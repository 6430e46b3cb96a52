"""Weights: the first-layer weight patterns as 28x28 images (the paper's Figure 2), or a CNN's first kernels."""

import streamlit as st

from xwp.app import frame, shared
from xwp.app import weights_page as glue
from xwp.app.safe import md
from xwp.data.images import input_preview
from xwp.viz.patterns import neuron_png

VIEWS = {"trained": "Trained", "initial": "Initial", "change": "Change"}
ORDERS = {"index": "Neuron index", "norm": "Largest norm first", "drive": "Strongest drive of a class first"}


def main() -> None:
    frame.routed("pages/weights.py")
    entry = frame.require_model()
    st.title("First-layer weights")
    if entry.model.family == "cnn":
        with frame.user_errors():
            kernel_view(entry)
        return
    width = entry.model.sizes[1]
    st.caption(
        "Each image shows the 784 weights that connect the input pixels to one unit of the first layer: "
        "red pixels excite the unit, blue pixels inhibit it (colours centred on 0, one scale per grid)."
    )
    c1, c2, c3, c4 = st.columns([1.5, 1.4, 0.8, 1.1])
    view = c1.segmented_control(
        "Weights",
        list(VIEWS),
        format_func=VIEWS.get,
        default="trained",
        required=True,
        key="weights_view",
        persist_state="session",
        help="Trained weights, the weights at initialisation, or how far training moved them.",
    )
    if view != "trained" and not entry.has_initial:
        st.info("This model has no initial state, so only its trained weights can be shown.")
        view = "trained"
    sort = c2.selectbox(
        "Order",
        list(ORDERS),
        format_func=ORDERS.get,
        key="weights_sort",
        persist_state="session",
        help="Norm: L2 norm of the pattern as shown. Drive of class c: the derivative of the class-c "
        "logit with respect to the unit's output (after its ReLU), taken at the mean test image, "
        "so it includes the later layers' weights and their ReLU gates for an average input. "
        "Positive: the unit votes for c when it fires.",
    )
    cls = c3.selectbox(
        "Class",
        range(len(entry.classes)),
        format_func=lambda c: entry.classes[c],
        disabled=sort != "drive",
        key="weights_class",
        persist_state="session",
        help="The class whose strongest drivers come first (with the drive order).",
    )
    count = width
    if width > 10:
        count = c4.slider(
            "Units shown",
            10,
            min(100, width),
            min(30, width),
            step=10,
            key=f"weights_count_{width}",  # a narrower model must not inherit a larger count
            persist_state="session",
            help="How many units the grid shows, in order.",
        )
    weigh = st.toggle(
        "Weight each pattern by its activation on a test image",
        key="weights_weigh",
        help="Multiplies each unit's pattern by what the unit outputs for the chosen test image, so "
        "silent units fade out and the active ones stand out.",
    )
    image_index = None
    if weigh:
        with frame.user_errors():
            data = shared.test_set(entry)
            pick, preview = st.columns([1, 4], vertical_alignment="center")
            idx = pick.number_input(
                "Test image index",
                0,
                len(data) - 1,
                0,
                key="weights_image",
                help=f"Index in the test split (0 to {len(data) - 1}).",
            )
            image_index = int(idx)
            preview.image(
                input_preview(data.images[idx], 3), caption=f"class {md(entry.classes[int(data.labels[idx])])}"
            )

    wp, j = None, None
    with frame.user_errors():
        wp = glue.weight_patterns(entry, view, sort, cls, image_index)
        st.image(glue.grid_png(entry, wp, count, sort, cls))
        j = unit_view(entry, wp)
    if wp is not None and j is not None:
        with frame.user_errors():
            replay_view(entry, wp.order[:count], j)


CNN_CANNOT = (
    "**What this page cannot show for a CNN.** A first-layer channel of a CNN is one small kernel applied at "
    "every position, not one weight per pixel, so there are no 28x28 per-unit patterns, no order by class "
    "drive, no weighting by a test image's activations and no training replay here (those views are for "
    "MLPs). Which pixels mattered for one prediction: the Explain page, where XWP puts each pixel's share of "
    "the kernel weights back at its initial value (docs/cnn.md)."
)


def kernel_view(entry) -> None:
    """A CNN's first convolution: every output channel's kernel initial | trained | change, one channel large."""
    model = entry.model
    k, n, c_in = model.kernel, model.channels[0], model.in_channels
    st.caption(
        f"The first layer is {n} convolution kernels of {k}x{k} weights (padding {model.padding}): each tile is "
        "one output channel's kernel, the weights it applies to every patch of the image. Red excites, blue "
        "inhibits; initial and trained share one colour scale so growth is visible, the change has its own."
    )
    in_channel = 0
    if c_in > 1:
        in_channel = st.selectbox(
            "Input channel", range(c_in), key="weights_in_channel", help="Kernels are drawn for one input channel."
        )
    if not entry.has_initial:
        st.info("This model has no initial state, so only its trained kernels can be shown.")
    grid = glue.kernel_grid_png(entry, in_channel)
    st.image(grid)
    st.download_button(
        "Kernel grid (PNG)",
        grid,
        "xwp-kernels.png",
        "image/png",
        on_click="ignore",
        icon=":material/image:",
        help="The figure as shown: every output channel's kernel, initial, trained and change.",
    )
    st.subheader("One channel: initial, trained, change")
    pick, download, _ = st.columns([1, 1, 2], vertical_alignment="bottom")
    channel = pick.selectbox(
        "Channel",
        range(n),
        format_func=lambda c: f"#{c}",
        key=f"weights_channel_{entry.uid}",  # a new model starts at its first channel
        help="Any output channel of the first convolution.",
    )
    png = glue.kernel_channel_png(entry, int(channel), in_channel)
    figure, numbers = st.columns([2.2, 1], gap="medium")
    figure.image(png)
    download.download_button(
        "Channel figure (PNG)",
        png,
        f"xwp-kernel-{channel}.png",
        "image/png",
        on_click="ignore",
        icon=":material/image:",
        help=f"The figure as shown: initial, trained and change of channel #{channel}'s {k}x{k} kernel.",
    )
    stats = glue.kernel_stats(entry)
    numbers.table(stats.iloc[int(channel)].drop("channel").to_frame("value").style.format("{:.4g}"))
    with st.expander("Every channel's numbers"):
        st.dataframe(stats, hide_index=True)
    st.info(CNN_CANNOT, icon=":material/info:")


def unit_view(entry, wp) -> int:
    """One unit: initial | trained | change side by side (with the initial state), its numbers and a PNG download."""
    st.subheader("One unit: initial, trained, change")
    pick, download, _ = st.columns([1, 1, 2], vertical_alignment="bottom")
    j = pick.selectbox(
        "Unit",
        wp.order,
        key=f"weights_unit_{entry.uid}_{wp.order[0]}",  # a new model or order starts at its first unit
        help="Any unit of the first layer, in the order of the grid.",
    )
    if j not in wp.order:  # never a unit of another model
        j = wp.order[0]
    figure, numbers = st.columns([2.2, 1], gap="medium")
    if entry.has_initial:
        png = glue.unit_png(entry, j)
        figure.image(png)
    else:
        png = neuron_png(wp, j)
        figure.image(png)
        figure.caption("This model has no initial state: only its trained weights can be shown.")
    download.download_button(
        "Unit figure (PNG)",
        png,
        f"xwp-unit-{j}.png",
        "image/png",
        on_click="ignore",
        icon=":material/image:",
        help="The figure as shown: initial, trained and change of this unit's 784 weights.",
    )
    numbers.table(glue.neuron_stats(entry, wp, j).set_index("quantity").style.format("{:.4g}"))
    return j


def replay_view(entry, units: list[int], j: int) -> None:
    """A slider over the first-layer snapshots recorded per epoch: watch the patterns form."""
    st.subheader("Training replay")
    snaps = glue.snapshots(entry)
    if len(snaps) < 2:
        st.info(
            "No per-epoch snapshots for this model: they are recorded when a model is trained on the Train page "
            "(at most 20 per run, kept with the model in the workspace).",
            icon=":material/history:",
        )
        return
    epochs = list(snaps)
    epoch = st.select_slider(
        "Epoch",
        epochs,
        value=epochs[-1],
        key=f"weights_replay_{entry.uid}",
        help=f"The first layer after each recorded epoch ({len(epochs)} snapshots, epoch 0 = initialisation). "
        "Step through them to see the strokes appear.",
    )
    grid, unit = st.columns([1.6, 1], gap="medium")
    grid.image(glue.replay_grid_png(entry, snaps, epoch, units))
    unit.image(glue.replay_unit_png(snaps, epoch, j), caption=f"Unit #{j} (chosen above) at epoch {epoch}")


main()
