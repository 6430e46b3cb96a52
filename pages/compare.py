"""Compare: faithfulness of the attribution methods over many test images, with intervals and paired tests."""

import streamlit as st

from xwp.app import compare_page as glue
from xwp.app import frame
from xwp.app.safe import md
from xwp.attribution import METHODS
from xwp.config import LIMITS
from xwp.evaluation.faithfulness import DEFAULT_OUTPUTS, OUTPUTS, SPACE
from xwp.evaluation.metrics import METRICS, PINNED
from xwp.evaluation.protocol import DEFAULT_METHODS
from xwp.evaluation.removal import REMOVALS
from xwp.evaluation.scales import LABELS, MEANING
from xwp.serve import comparison as cmp

OUTPUT_LABELS = {o: LABELS[SPACE[o]] for o in OUTPUTS}  # the Explain page's names: Probability (paper), ...


def settings_form(entry):
    """The comparison's settings; returns them when Run was pressed, else None."""
    unavailable = glue.unavailable(entry)
    with st.form("compare_form"):
        c1, c2, c3 = st.columns([3, 1, 1])
        methods = c1.multiselect(
            "Methods",
            list(METHODS),
            default=list(DEFAULT_METHODS),
            format_func=lambda m: METHODS[m].label + (" (not for this model)" if m in unavailable else ""),
            key="compare_methods",
            persist_state="session",
            help="The random-order baseline is always added as the reference row."
            + "".join(f"\n\n{reason}" for reason in unavailable.values()),
        )
        n = c2.number_input(
            "Test images",
            1,
            LIMITS.max_eval_images,
            min(50, LIMITS.max_eval_images),
            key="compare_n",
            persist_state="session",
            help=f"Sampled from the test split (at most {LIMITS.max_eval_images}). Each method explains both "
            "output spaces and is re-run a few times per image for max-sensitivity; Shapley is the slowest.",
        )
        seed = c3.number_input(
            "Seed",
            0,
            2**31 - 1,
            0,
            key="compare_seed",
            persist_state="session",
            help="Seed of the image sample, the tie-breaking order and the bootstrap.",
        )
        c4, c5 = st.columns([2, 3])
        outputs = c4.multiselect(
            "Output spaces",
            list(OUTPUTS),
            default=list(DEFAULT_OUTPUTS),
            format_func=OUTPUT_LABELS.get,
            key="compare_outputs",
            persist_state="session",
            help="What each method explains and what the curves score: the true class's probability (the paper's), "
            "its log-odds log(p / (1 − p)), which do not saturate when p is near 1, or its logit. The winner can "
            "change with the space, so probability and logits are evaluated by default.",
        )
        removal = c5.selectbox(
            "Removal: what a removed pixel becomes",
            list(REMOVALS),
            format_func=lambda r: f"{r}: {REMOVALS[r][1]}",
            key="compare_removal",
            persist_state="session",
        )
        run = st.form_submit_button("Run comparison", type="primary", icon=":material/play_arrow:")
    return (methods, int(n), int(seed), outputs, removal) if run else None


def run_controls(entry) -> None:
    """Start, continue, stop or resume the comparison (Stop sits above the progress bar)."""
    request = settings_form(entry)
    if request is not None:
        with frame.user_errors():
            glue.start_comparison(entry, *request)
    result = glue.comparison()
    running = result is not None and result.running
    if st.button(
        "Stop",
        key="compare_stop",
        icon=":material/stop:",
        disabled=not running,
        help="Interrupts the comparison between two batches; the finished methods are kept and can be resumed. "
        "A running comparison goes on when you open another page (the sidebar shows it, with its own Stop).",
    ):
        glue.stop_comparison()
    resumable = result is not None and result.resumable and result.uid == entry.uid
    if resumable and st.button("Resume", key="compare_resume", icon=":material/play_arrow:"):
        glue.resume_comparison()
    with frame.user_errors():
        glue.continue_comparison(entry)


def view_controls(ev) -> tuple:
    """Which output space, removal, images and zoom the results show."""
    c1, c2, c3 = st.columns([2, 2, 3])
    output = c1.segmented_control(
        "Output space", ev.outputs, default=ev.outputs[0], format_func=OUTPUT_LABELS.get, key="compare_view_output"
    )
    output = output or ev.outputs[0]
    removal = ev.removals[0]
    c2.markdown(f"**Removal**  \n{removal}: {REMOVALS[removal][1]}")
    correct = c3.toggle(
        "Only images the model classifies correctly",
        key="compare_correct",
        help="Filters the table, the tests, the curves, their legend and the CSV alike.",
    )
    z1, z2 = st.columns([3, 1])
    x_max = z1.select_slider(
        "Curves: fraction of pixels shown",
        options=[0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
        value=1.0,
        key="compare_xmax",
        help="Zoom into the start of the curves, where the good methods part ways.",
    )
    log_x = z2.toggle("Log x-axis", key="compare_logx", help="The fraction of pixels on a logarithmic axis.")
    return output, removal, bool(correct), float(x_max), bool(log_x)


def table_controls() -> tuple[str, bool]:
    """Which metrics the table shows and whether it has their medians (one group, no medians: fits 1280 px)."""
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    group = c1.segmented_control(
        "Table",
        list(cmp.TABLE_GROUPS),
        default="Faithfulness",
        key="compare_table_group",
        help="Faithfulness: deletion, insertion, SRG, Average Drop and faithfulness correlation. "
        "Robustness and readability: max-sensitivity, sparseness, complexity. The CSV always has every metric.",
    )
    medians = c2.toggle(
        "Medians",
        key="compare_medians",
        help="A median column beside each mean (the CSV always has both).",
    )
    return group or "Faithfulness", bool(medians)


def show_results(result) -> None:
    """The table, the significance matrix and sentences, the curves, the grid and the downloads."""
    ev = glue.evaluation(result)
    st.subheader(f"{result.n} test images · {md(result.dataset)} · seed {result.seed}")
    st.caption(f"Model “{md(result.model)}”. Evaluation took {result.seconds:.1f} s.")
    output, removal, correct, x_max, log_x = view = view_controls(ev)
    group, medians = table_controls()
    table = cmp.comparison_table(ev, correct, output, removal, medians, group)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height="content",  # every row, no scrolling box
        # 150 px holds "Integrated Gradients"; "medium" (200) made the default table scroll sideways at 1280 px
        column_config={"method": st.column_config.TextColumn("method", width=150, pinned=True)},
    )
    counts = cmp.case_table(ev, output, removal, correct)["n"]
    over = "images" if "images" in table.data.columns else f"the {counts.iloc[0]} images"
    st.caption(
        f"Mean over {over} [bootstrap 95 % interval of the mean]"
        + ("; the median beside it" if medians else " (Medians: the median per metric too)")
        + "; best mean per metric in bold "
        "(random excluded). ↑: higher is better, ↓: lower is better. Scores are the true class's raw "
        f"{OUTPUT_LABELS[output].lower()}, never divided by its intact value, so no single image dominates. "
        + MEANING[SPACE[output]]
    )
    with st.expander("Which differences are real? (paired Wilcoxon tests, Holm-corrected)", expanded=False):
        shown = [m for m in PINNED if ev.per_image[m].notna().any()]
        metric = st.selectbox("Metric", shown, format_func=lambda m: METRICS[m].label, key="compare_sig_metric")
        st.dataframe(cmp.significance_matrix(ev, metric, output, removal, correct), width="stretch", height="content")
        st.caption(
            "“>”: the row method is significantly better than the column method; “<”: worse; “=”: no "
            "significant difference (alpha 0.05 after Holm's correction over all pairs)."
        )
        lines = cmp.statements(ev, output, removal, correct)
        st.markdown("\n".join(f"- {line}" for line in lines) or "No significant differences.")
    figures = glue.comparison_figures(result, view)
    deletion, insertion = st.tabs(["Deletion curves (Figure 4)", "Insertion curves"])
    deletion.image(figures["deletion"])
    insertion.image(figures["insertion"])
    grid, _ = st.columns([3, 1])
    grid.image(figures["grid"])
    d1, d2, d3, _ = st.columns([1, 1.4, 1.4, 1])
    d1.download_button(
        "Table (CSV)",
        cmp.csv_bytes(ev, correct),
        "xwp-comparison-correct.csv" if correct else "xwp-comparison.csv",
        "text/csv",
        on_click="ignore",
        icon=":material/table:",
        help="Every method, output space and removal: mean, median, 95 % interval per metric"
        + (" (correctly classified images only)." if correct else "."),
    )
    d2.download_button(
        "Deletion curves (PNG)",
        figures["deletion"],
        "xwp-deletion-curves.png",
        "image/png",
        on_click="ignore",
        icon=":material/show_chart:",
        help="Median deletion curve per method, the mean area under it in the legend (the paper's Figure 4).",
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


def main() -> None:
    frame.routed("pages/compare.py")
    entry = frame.require_model()
    st.title("Compare methods")
    st.caption(
        "Each method explains the true class of every sampled test image; pixels are then removed or inserted in "
        "the order of the map. "
        + " ".join(f"**{METRICS[m].label}** {METRICS[m].arrow}: {METRICS[m].description}." for m in PINNED)
    )
    run_controls(entry)
    result = glue.comparison()
    if result is None:
        st.info("Choose methods and the number of test images, then press **Run comparison**.")
        return
    if result.uid != entry.uid:
        st.warning(f"These results are for the model “{md(result.model)}”, not the active one. Run again to update.")
    note = glue.status_text(result)
    if note:
        st.warning(note, icon=":material/pause_circle:")
    if result.save_problem:
        st.warning(result.save_problem, icon=":material/warning:")
    if glue.evaluation(result) is None:
        return
    show_results(result)


main()
