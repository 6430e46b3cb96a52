"""Weights: the first-layer weight patterns as 28x28 images (the paper's Figure 2)."""

import streamlit as st

from xwp.app import frame, shared
from xwp.app import weights_page as glue
from xwp.app.safe import md
from xwp.images import input_preview
from xwp.patterns import neuron_png

VIEWS = {"trained": "Trained", "initial": "Initial", "change": "Change"}
ORDERS = {"index": "Neuron index", "norm": "Largest norm first", "drive": "Strongest drive of a class first"}


def main() -> None:
    frame.routed("pages/weights.py")
    entry = frame.require_model()
    width = entry.model.sizes[1]
    st.title("First-layer weights")
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
            key="weights_count",
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

    with frame.user_errors():
        wp = glue.weight_patterns(entry, view, sort, cls, image_index)
        st.image(glue.grid_png(entry, wp, count, sort, cls))
        pick, big, numbers = st.columns([1, 1.6, 1.4], gap="medium")
        j = pick.selectbox(
            "Unit for the large view",
            wp.order,
            key=f"weights_unit_{sort}_{cls}",  # a new order starts at its first unit
            help="Any unit of the first layer, in the order of the grid.",
        )
        big.image(neuron_png(wp, j))
        numbers.table(glue.neuron_stats(entry, wp, j).set_index("quantity").style.format("{:.4g}"))


main()
