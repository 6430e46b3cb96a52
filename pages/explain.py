"""Explain: attribution heatmaps for a drawn, test or uploaded image, updated after every stroke."""

import random

import streamlit as st

from xwp.app import explain_page as glue
from xwp.app import frame
from xwp.app.safe import md
from xwp.app.session import SessionModel
from xwp.attribution import METHODS
from xwp.config import LIMITS
from xwp.data.images import canvas_to_input, input_preview
from xwp.evaluation.scales import LABELS, SPACES, caption, invisibility_warning
from xwp.serve.explanation import EXPLAIN_DEFAULT, Explanation, colorbar_png

try:
    from streamlit_drawable_canvas import st_canvas
except ImportError:  # the app still works with test and uploaded images
    st_canvas = None

SOURCES = {"draw": "Draw", "test": "Test set", "upload": "Upload"}  # short: the row must fit 1024 px
CANVAS = 280  # the drawing canvas's side in pixels (fits a 1024-pixel-wide screen beside the maps)
#: a compact page: smaller title, less space between the tiles, so canvas, prediction and maps fit one screen
STYLE = """<style>
[data-testid='stMainBlockContainer'] h1 {font-size: 1.9rem; padding: 0 0 0.3rem 0;}
[data-testid='stImageCaption'] {margin-top: 0; line-height: 1.2;}
</style>"""


def pick_random(n_classes: int) -> None:
    """Choose a random class and a random image of it (widget callback)."""
    st.session_state["explain_class"] = random.randrange(n_classes)
    st.session_state["explain_k"] = random.randrange(0, 50)


def article(kind: str) -> str:
    """``kind`` with its indefinite article ("a digit", "an item")."""
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def input_widgets(entry: SessionModel, source: str):
    """The input widgets of ``source``; returns the model input (or None), a note about it and a warning."""
    if source == "draw":
        if st_canvas is None:
            st.warning("streamlit-drawable-canvas is not installed: use a test image or upload one.")
            return None, "", None
        # one line above the canvas: its toolbar pops up over the canvas's top edge, and would otherwise
        # cover the Upload choice just above it
        st.caption(f"Draw {article(entry.kind)}, large and centred:")
        result = st_canvas(
            stroke_width=18,
            stroke_color="#FFFFFF",
            background_color="#000000",
            height=CANVAS,
            width=CANVAS,
            drawing_mode="freedraw",
            update_streamlit=True,
            return_image_data=True,
            key="explain_canvas",
        )
        x = canvas_to_input(result.image_data)
        if x is None:
            return None, "", None
        return x, "your drawing", glue.drawing_warning(entry, x)
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
        return x, f"test image {index} (true class {entry.classes[cls]})", None
    upload = st.file_uploader(
        f"A photo or image of one {entry.kind}",
        type=["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"],
        key="explain_upload",
        max_upload_size=LIMITS.max_upload_bytes // (1024 * 1024),
        help="Photos are cleaned first: the background (uneven light, paper texture) is estimated and "
        "removed, the ink is separated with Otsu's threshold (dark on light or light on dark), specks and "
        "table edges are dropped, and the ink is cropped, fitted into 20×20 and centred in 28×28 like MNIST.",
    )
    if upload is None:
        return None, "", None
    x, warning = glue.upload_input(entry, upload.getvalue())
    preview, _ = st.columns([1, 1.5])
    preview.image(input_preview(x, 4), caption="after cleaning: what the network sees (28×28)")
    return x, upload.name, warning


def settings(entry: SessionModel):
    """The row of settings above the input and the maps; returns (source, methods, target, space, shared, overlay)."""
    unavailable = glue.unavailable(entry)
    c1, c2, c3, c4 = st.columns([1.55, 0.9, 1.1, 1.1], vertical_alignment="bottom")
    source = c1.segmented_control(
        "Input",
        list(SOURCES),
        format_func=SOURCES.get,
        default="draw",
        required=True,
        key="explain_source",
        persist_state="session",
        help="Draw with the mouse, take an image from the test split, or upload a photo.",
    )
    with c2.popover("Methods", icon=":material/tune:", width="stretch", help="Methods, colour scale, overlay"):
        methods = st.multiselect(
            "Methods",
            list(METHODS),
            default=list(EXPLAIN_DEFAULT),
            format_func=lambda m: METHODS[m].label + (" (not for this model)" if m in unavailable else ""),
            key="explain_methods",
            persist_state="session",
            help="XWP and XWPᶜ need only one pass per drawn pixel and update live; Shapley and KernelSHAP are "
            "slower. "
            + " · ".join(f"{s.label}: {s.summary}" for s in METHODS.values())
            + "".join(f"\n\n{reason}" for reason in unavailable.values()),
        )
        shared = st.toggle(
            "One colour scale",
            key="explain_shared",
            persist_state="session",
            help="Off: each map uses its own symmetric scale (methods differ in units). On: one scale for "
            "all maps, so their magnitudes can be compared.",
        )
        overlay = st.toggle(
            "Overlay on the input",
            key="explain_overlay",
            persist_state="session",
            help="Draw each heatmap semi-transparently over the input image.",
        )
    space = c3.selectbox(
        "Score explained",
        SPACES,
        format_func=LABELS.get,
        key="explain_space",
        persist_state="session",
        help="What the maps explain. Probability: the softmax output, as in the paper; on a confident "
        "prediction its changes are tiny. Log-odds log(p / (1 − p)): the same contrast without saturation. "
        "Logits: the raw scores before softmax.",
    )
    target = c4.selectbox(
        "Class to explain",
        [None, *range(len(entry.classes))],
        key="explain_target",
        format_func=lambda c: "predicted" if c is None else entry.classes[c],
        help="Red pixels are evidence for this class, blue pixels evidence against it.",
    )
    return source, methods, target, space, shared, overlay


def main() -> None:
    frame.routed("pages/explain.py")
    entry = frame.require_model()
    st.html(STYLE)
    st.title("Explain a prediction")
    source, methods, target, space, shared, overlay = settings(entry)
    left, right = st.columns([0.46, 0.54], gap="medium")
    x, what, warning = None, "", None
    with left:
        with frame.user_errors():
            x, what, warning = input_widgets(entry, source)
        chart = st.empty()
    if x is None:
        with right:
            if source == "draw":
                st.info(
                    f"Draw {article(entry.kind)} on the black canvas: the prediction and the heatmaps appear "
                    "after each stroke.",
                    icon=":material/draw:",
                )
            elif source == "upload":
                st.info(
                    f"Upload an image (PNG, JPEG, BMP, GIF, WebP or TIFF) of a single {entry.kind}.",
                    icon=":material/upload:",
                )
        return
    if not methods:
        right.info("Choose at least one method under **Methods**.")
    with frame.user_errors():
        ex = glue.explain(entry, x, target, methods, shared, overlay, space)
        chart.html(ex.probability_html())  # plain HTML: a chart cost the browser ~50 ms per stroke
        with right:
            if warning:
                st.warning(warning, icon=":material/warning:")
            for reason in ex.skipped.values():
                st.info(reason, icon=":material/info:")
            if ex.maps:
                heatmaps(ex)
    if ex.maps:
        downloads(ex, what)
    glue.initial_state_view(entry, x, ex)  # opt-in, below the downloads: the projector layout is unchanged


def heatmaps(ex: Explanation) -> None:
    """The prediction, the input and one heatmap per method in rows of three, and what the values mean."""
    st.markdown(f"**{md(ex.title, 300)}**")
    tiles = [("Input", ex.input_png, "28 × 28")] + [
        (METHODS[m].label, tile, f"±{ex.limits[m]:.2g}") for m, tile in ex.tiles.items()
    ]
    per_row = 3
    for start in range(0, len(tiles), per_row):
        row = st.columns(per_row, vertical_alignment="top", gap="small")  # images level; captions may wrap
        for col, (label, tile, note) in zip(row, tiles[start : start + per_row], strict=False):
            col.image(tile, caption=f"{label} · {note}", width="stretch")
    labels = {m: METHODS[m].label for m in ex.maps}
    if ex.shared_scale:
        hidden = invisibility_warning(ex.maps, max(ex.limits.values()), labels)
        if hidden:
            st.warning(hidden, icon=":material/visibility_off:")
    st.caption(
        f"{caption(ex.space, list(ex.maps))} ±s under a map: the value drawn darkest "
        + ("(one colour scale for all maps)." if ex.shared_scale else "(each map on its own scale).")
    )


def downloads(ex: Explanation, what: str) -> None:
    """The colour legend, the timings and the downloads, below the fold."""
    legend, note = st.columns([1, 2], vertical_alignment="center")
    legend.image(
        colorbar_png(),
        width="stretch",
        caption=f"blue: against {md(ex.classes[ex.target])} · white: 0 · red: for {md(ex.classes[ex.target])}",
    )
    timing = " · ".join(f"{METHODS[m].label} {1000 * s:.0f} ms" for m, s in ex.seconds.items())
    note.caption(f"Score: {LABELS[ex.space]}. Time per method: {timing}.")
    note.text(f"Input: {what}")  # plain text: an uploaded file's name is not Markdown
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
