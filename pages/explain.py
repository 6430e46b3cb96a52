"""Explain: attribution heatmaps for a drawn, test or uploaded image, updated after every stroke."""

import random

import streamlit as st

from xwp.app import explain_page as glue
from xwp.app import frame
from xwp.app.safe import md
from xwp.app.session import SessionModel
from xwp.attribution import METHODS
from xwp.config import LIMITS
from xwp.explanation import EXPLAIN_DEFAULT, Explanation, colorbar_png
from xwp.images import canvas_to_input, input_preview, upload_to_input
from xwp.safety import check_upload

try:
    from streamlit_drawable_canvas import st_canvas
except ImportError:  # the app still works with test and uploaded images
    st_canvas = None

SOURCES = {"draw": "Draw", "test": "Test image", "upload": "Upload"}


def pick_random(n_classes: int) -> None:
    """Choose a random class and a random image of it (widget callback)."""
    st.session_state["explain_class"] = random.randrange(n_classes)
    st.session_state["explain_k"] = random.randrange(0, 50)


def input_widgets(entry: SessionModel, source: str):
    """The input widgets of ``source``; returns the model input (or None) and a note about it."""
    if source == "draw":
        if st_canvas is None:
            st.warning("streamlit-drawable-canvas is not installed: use a test image or upload one.")
            return None, ""
        canvas, preview = st.columns([2, 1], vertical_alignment="top")
        with canvas:
            result = st_canvas(
                stroke_width=18,
                stroke_color="#FFFFFF",
                background_color="#000000",
                height=280,
                width=280,
                drawing_mode="freedraw",
                update_streamlit=True,
                return_image_data=True,
                key="explain_canvas",
            )
        x = canvas_to_input(result.image_data)
        if x is not None:
            preview.image(input_preview(x), caption="what the network sees (28×28)")
        else:
            preview.caption("Draw one digit, large and centred. Point at the canvas for its toolbar (undo, clear).")
        return x, "your drawing"
    if source == "test":
        n_classes = len(entry.classes)
        c1, c2, c3 = st.columns([1.3, 1, 0.8], vertical_alignment="bottom")
        cls = c1.selectbox(
            "Class",
            range(n_classes),
            format_func=lambda c: entry.classes[c],
            key="explain_class",
            help="The true class of the test image.",
        )
        count = glue.class_count(entry, cls)
        k = c2.number_input(
            "Image of that class",
            0,
            max(count - 1, 0),
            0,
            key="explain_k",
            help=f"Which of the {count} test images of this class.",
        )
        c3.button(
            "Random",
            icon=":material/casino:",
            on_click=pick_random,
            args=(n_classes,),
            help="A random class and image.",
        )
        x, index = glue.test_image(entry, cls, int(k))
        preview, _ = st.columns([1, 2.1])
        true = md(entry.classes[cls])
        preview.image(input_preview(x), caption=f"test image {index}, true class {true}")
        return x, f"test image {index} (true class {true})"
    upload = st.file_uploader(
        "An image of one digit or object",
        type=["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"],
        key="explain_upload",
        max_upload_size=LIMITS.max_upload_bytes // (1024 * 1024),
        help="Light on dark or dark on light (inverted automatically); it is cropped, fitted "
        "into 20×20 and centred in 28×28 like MNIST.",
    )
    if upload is None:
        return None, ""
    data = upload.getvalue()
    check_upload(data, "image", upload.name)  # size and format by content, before decoding
    x = upload_to_input(data)
    preview, _ = st.columns([1, 2.1])
    preview.image(input_preview(x), caption="what the network sees (28×28)")
    return x, md(upload.name, 80)


def main() -> None:
    frame.routed("pages/explain.py")
    entry = frame.require_model()
    st.title("Explain a prediction")
    c1, c2, c3 = st.columns([2.2, 1, 1], vertical_alignment="bottom")
    methods = c1.multiselect(
        "Methods",
        list(METHODS),
        default=list(EXPLAIN_DEFAULT),
        format_func=lambda m: METHODS[m].label,
        key="explain_methods",
        persist_state="session",
        help="XWP and XWPᶜ need only one pass per drawn pixel and update live; Shapley and KernelSHAP are "
        "slower. " + " · ".join(f"{s.label}: {s.summary}" for s in METHODS.values()),
    )
    target = c2.selectbox(
        "Class to explain",
        [None, *range(len(entry.classes))],
        key="explain_target",
        format_func=lambda c: "the predicted class" if c is None else entry.classes[c],
        help="Red pixels are evidence for this class, blue pixels evidence against it.",
    )
    shared = c3.toggle(
        "One colour scale",
        key="explain_shared",
        persist_state="session",
        help="Off: each map uses its own symmetric scale (methods differ in units). On: one scale for "
        "all maps, so their magnitudes can be compared.",
    )
    overlay = c3.toggle(
        "Overlay on the input",
        key="explain_overlay",
        persist_state="session",
        help="Draw each heatmap semi-transparently over the input image.",
    )
    left, right = st.columns([1.3, 1], gap="large")
    with left:
        source = st.segmented_control(
            "Input",
            list(SOURCES),
            format_func=SOURCES.get,
            default="draw",
            required=True,
            key="explain_source",
            persist_state="session",
            help="Draw with the mouse, take an image from the test split, or upload one.",
        )
        x, what = None, ""
        with frame.user_errors():
            x, what = input_widgets(entry, source)
    if x is None:
        with right:
            if source == "draw":
                st.info(
                    "Draw a digit on the black canvas: the prediction and the heatmaps appear after each stroke.",
                    icon=":material/draw:",
                )
            elif source == "upload":
                st.info(
                    "Upload an image (PNG, JPEG, BMP, GIF, WebP or TIFF) of a single digit.", icon=":material/upload:"
                )
        return
    if not methods:
        st.info("Choose at least one method above.")
    with frame.user_errors():
        ex = glue.explain(entry, x, target, methods, shared, overlay)
        right.vega_lite_chart(*ex.probability_chart(), width="stretch")
        for reason in ex.skipped.values():
            st.info(reason, icon=":material/info:")
        if ex.maps:
            heatmaps(ex, what)


def heatmaps(ex: Explanation, what: str) -> None:
    """The input and one heatmap per method in rows of six, a colour legend and the downloads."""
    st.markdown(f"#### {md(ex.title, 300)}")
    tiles = [("Input", ex.input_png, "28 × 28")] + [
        (METHODS[m].label, tile, f"±{ex.limits[m]:.2g}") for m, tile in ex.tiles.items()
    ]
    per_row = 6
    for start in range(0, len(tiles), per_row):
        row = st.columns(per_row, vertical_alignment="bottom")
        for col, (label, tile, caption) in zip(row, tiles[start : start + per_row], strict=False):
            col.markdown(f"**{label}**")
            col.image(tile, caption=caption, width="stretch")
    legend, note = st.columns([1, 2], vertical_alignment="center")
    legend.image(
        colorbar_png(),
        width="stretch",
        caption=f"blue: against {md(ex.classes[ex.target])} · white: 0 · red: for {md(ex.classes[ex.target])}",
    )
    timing = " · ".join(f"{METHODS[m].label} {1000 * s:.0f} ms" for m, s in ex.seconds.items())
    note.caption(
        f"Input: {what}. "
        + ("One colour scale for all maps" if ex.shared_scale else "Each map on its own symmetric scale")
        + " (±s under a map: the value drawn darkest). "
        + f"Time per method: {timing}."
    )
    d1, d2, d3, _ = st.columns([1, 1, 1, 1.5])
    d1.download_button(
        "Heatmaps (PNG)",
        ex.download_png,
        "xwp-heatmaps.png",
        "image/png",
        on_click="ignore",
        icon=":material/image:",
        help="The input and the maps as one figure with colour bars.",
    )
    d2.download_button(
        "Attributions (NPY)",
        ex.npy_bytes,
        "xwp-attributions.npy",
        on_click="ignore",
        mime="application/octet-stream",
        icon=":material/data_array:",
        help=f"A (methods, 28, 28) array; methods in this order: {', '.join(ex.maps)}.",
    )
    d3.download_button(
        "Attributions (CSV)",
        ex.csv_bytes,
        "xwp-attributions.csv",
        "text/csv",
        on_click="ignore",
        icon=":material/table:",
        help="One row per pixel (row, col, input value), one column per method.",
    )


main()
