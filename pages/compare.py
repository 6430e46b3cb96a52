"""Compare: faithfulness of the attribution methods over many test images (the paper's Table 1, Figure 4)."""

import streamlit as st

from xwp.app import compare_page as glue
from xwp.app import frame
from xwp.attribution import METHODS
from xwp.comparison import comparison_table
from xwp.config import LIMITS
from xwp.evaluation import DEFAULT_METHODS
from xwp.metrics import METRICS


def main() -> None:
    frame.routed("pages/compare.py")
    entry = frame.require_model()
    st.title("Compare methods")
    st.caption(
        "Each method explains the true class of every sampled test image; pixels are then removed (set to "
        "black) or inserted in the order of the map. "
        + " ".join(f"**{m.label}** {m.arrow}: {m.description}." for m in METRICS.values())
    )
    with st.form("compare_form"):
        c1, c2, c3 = st.columns([3, 1, 1])
        methods = c1.multiselect(
            "Methods",
            list(METHODS),
            default=list(DEFAULT_METHODS),
            format_func=lambda m: METHODS[m].label,
            key="compare_methods",
            persist_state="session",
            help="The random-order baseline is always added as the reference row.",
        )
        n = c2.number_input(
            "Test images",
            1,
            LIMITS.max_eval_images,
            min(50, LIMITS.max_eval_images),
            key="compare_n",
            persist_state="session",
            help=f"Sampled from the test split (at most {LIMITS.max_eval_images}). 50 images with the eight "
            "default methods take a few seconds on a laptop CPU; Shapley is the slowest.",
        )
        seed = c3.number_input(
            "Seed",
            0,
            2**31 - 1,
            0,
            key="compare_seed",
            persist_state="session",
            help="Seed of the image sample and of the tie-breaking order.",
        )
        run = st.form_submit_button("Run comparison", type="primary", icon=":material/play_arrow:")
    if run:
        with frame.user_errors():
            glue.run_comparison(entry, methods, int(n), int(seed))
    glue.watch_comparison()  # one started earlier and still running (the user came back)

    result = glue.comparison()
    if result is None:
        st.info("Choose methods and the number of test images, then press **Run comparison**.")
        return
    if result["uid"] != entry.uid:
        st.warning(f"These results are for the model “{result['model']}”, not the active one. Run again to update.")
    ev = result["evaluation"]
    st.subheader(f"{ev.settings['n']} test images · {result['dataset']} · seed {ev.settings['seed']}")
    st.caption(f"Model “{result['model']}”.")
    correct = st.toggle(
        "Only images the model classifies correctly",
        key="compare_correct",
        help="A misclassified image has a tiny target probability, and the ratios that normalise "
        "the curves can then dominate the means.",
    )
    st.dataframe(
        comparison_table(ev, correct),
        hide_index=True,
        width="stretch",
        column_config={"method": st.column_config.TextColumn("method", width="medium")},
    )
    st.caption(
        f"Mean over images, ± the standard deviation; best value per metric in bold (random excluded). "
        f"↑: higher is better, ↓: lower is better. Evaluation took {result['seconds']:.1f} s."
    )
    figures = glue.comparison_figures(result)
    deletion, insertion = st.tabs(["Deletion curves (Figure 4)", "Insertion curves"])
    deletion.image(figures["deletion"])
    insertion.image(figures["insertion"])
    grid, _ = st.columns([3, 1])
    grid.image(figures["grid"])
    d1, d2, d3, _ = st.columns([1, 1.4, 1.4, 1])
    d1.download_button(
        "Table (CSV)",
        ev.table.to_csv().encode(),
        "xwp-comparison.csv",
        "text/csv",
        on_click="ignore",
        icon=":material/table:",
        help="Means and standard deviations per method.",
    )
    d2.download_button(
        "Deletion curves (PNG)",
        figures["deletion"],
        "xwp-deletion-curves.png",
        "image/png",
        on_click="ignore",
        icon=":material/show_chart:",
        help="Mean deletion curve per method, the area under it in the legend (the paper's Figure 4).",
    )
    d3.download_button(
        "Heatmap grid (PNG)",
        figures["grid"],
        "xwp-heatmap-grid.png",
        "image/png",
        on_click="ignore",
        icon=":material/grid_on:",
        help="Methods (rows) × the first sampled test images (columns).",
    )


main()
