"""The Compare page through AppTest: statistics, both output spaces, the correct-only filter, all rows, zoom, Stop."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from tests.support.app import assert_clean, button
from xwp.app.keys import COMPARE_KEY
from xwp.serve.comparison import Status

pytestmark = pytest.mark.slow  # an AppTest run of the whole app per test: the full suite runs them, not the fast lane


@pytest.fixture
def at(at):
    """A fresh session on the Compare page."""
    at.switch_page("pages/compare.py").run()
    assert_clean(at)
    return at


def run_comparison(at, methods, n=6):
    at.multiselect(key="compare_methods").set_value(methods)
    at.number_input(key="compare_n").set_value(n)
    button(at, "Run comparison").click().run()
    assert_clean(at)
    return at.session_state[COMPARE_KEY]


def test_statistics_both_output_spaces_and_every_row(at, monkeypatch):
    import streamlit as st

    heights = []
    real = st.dataframe

    def spy(data=None, *args, **kwargs):
        heights.append(kwargs.get("height", "auto"))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(st, "dataframe", spy)
    methods = ["xwp", "xwpc", "occlusion", "ig", "lrp", "saliency", "deeplift", "gradientshap", "rise", "shapley"]
    result = run_comparison(at, methods, n=4)
    assert result.status is Status.DONE
    table = at.dataframe[0].value
    assert len(table) == 11  # ten methods and the random reference
    assert heights[0] == "content"  # sized to its rows: "auto" would show ten and hide the eleventh
    cols = list(table.columns)
    assert any(c.startswith("Deletion AUC ↓") for c in cols) and not any(c.endswith(" median") for c in cols)
    # by default the faithfulness metrics' means: method, 5 metrics, s / image fit 1280 px; the image
    # count, the same for every method, is said in the caption instead of a column
    assert len(cols) == 7 and not any(c.startswith(("Max-sensitivity", "Sparseness", "images")) for c in cols)
    assert any(c.value.startswith("Mean over the 4 images [") for c in at.caption)
    assert "[" in table.iloc[0][next(c for c in cols if c.startswith("Deletion AUC"))]  # mean [low, high]
    at.segmented_control(key="compare_table_group").set_value("All").run()
    at.toggle(key="compare_medians").set_value(True).run()
    assert_clean(at)
    everything = at.dataframe[0].value
    assert "Del. AUC median" in everything.columns and "Max-sensitivity ↓" in everything.columns
    assert len(everything.columns) == 3 + 2 * 8  # every metric's mean and median
    assert everything[cols].equals(table)  # the same means, more columns beside them
    assert list(everything["images"]) == [4] * 11
    at.segmented_control(key="compare_table_group").set_value("Robustness and readability").run()
    robust = at.dataframe[0].value
    assert [c for c in robust.columns if c.endswith(" median")] == ["MaxSens median", "Gini median", "H median"]
    at.segmented_control(key="compare_table_group").set_value("All").run()
    at.toggle(key="compare_medians").set_value(False).run()
    table = at.dataframe[0].value
    ev = result.combined
    assert ev.outputs == ["softmax", "logits"]
    at.segmented_control(key="compare_view_output").set_value("logits").run()
    assert_clean(at)
    logit_table = at.dataframe[0].value
    assert not logit_table.equals(table)
    want = ev.summary().query("output == 'logits'")
    assert list(logit_table["images"]) == list(want["n"])


def test_correct_only_filters_table_curves_legend_and_csv(at, monkeypatch):
    from streamlit.delta_generator import DeltaGenerator

    from xwp.serve import comparison

    downloads = {}
    real_download = DeltaGenerator.download_button

    def download_spy(self, label, data, *args, **kwargs):
        downloads[label] = data
        return real_download(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", download_spy)
    seen = []
    real = comparison.plots.curves_figure

    def spy(curves, *args, **kwargs):
        seen.append({k: v.shape[0] for k, v in curves.items()})
        return real(curves, *args, **kwargs)

    monkeypatch.setattr(comparison.plots, "curves_figure", spy)
    result = run_comparison(at, ["xwp"], n=30)
    ev = result.combined
    n_correct = int(ev.per_image.drop_duplicates("image")["correct"].sum())
    assert 0 < n_correct < 30, "needs a mix of right and wrong predictions (1-epoch default model)"
    assert seen[-1] == {"XWP": 30, "Random": 30}
    assert (pd.read_csv(io.BytesIO(downloads["Table (CSV)"]))["n"] == 30).all()
    seen.clear()
    at.toggle(key="compare_correct").set_value(True).run()
    assert_clean(at)
    assert "images" not in at.dataframe[0].value.columns  # the same count for every method: in the caption
    assert any(c.value.startswith(f"Mean over the {n_correct} images [") for c in at.caption)
    at.segmented_control(key="compare_table_group").set_value("All").run()
    assert list(at.dataframe[0].value["images"]) == [n_correct, n_correct]
    assert seen and all(s == {"XWP": n_correct, "Random": n_correct} for s in seen)  # curves and their legend
    csv = pd.read_csv(io.BytesIO(downloads["Table (CSV)"]))  # what the page offers for download
    assert (csv["n"] == n_correct).all() and set(csv["output"]) == {"softmax", "logits"}
    assert downloads["Table (CSV)"] == comparison.csv_bytes(ev, correct_only=True)


def test_zoom_and_progress_names_the_method(at, monkeypatch):
    from xwp.app import compare_page

    messages = []
    real = compare_page.evaluate

    def spy(*args, progress=None, **kwargs):
        def record(f, m):
            messages.append(m)
            progress(f, m)

        return real(*args, progress=record, **kwargs)

    monkeypatch.setattr(compare_page, "evaluate", spy)
    run_comparison(at, ["xwp", "occlusion"], n=3)
    assert any(m.startswith("XWP (softmax)") for m in messages)
    assert any(m.startswith("Occlusion (logits)") for m in messages)
    assert any(m.startswith("Random (softmax)") for m in messages)
    at.select_slider(key="compare_xmax").set_value(0.05).run()
    at.toggle(key="compare_logx").set_value(True).run()
    assert_clean(at)
    assert at.session_state[COMPARE_KEY].figures_view[3:] == (0.05, True)


def test_stop_keeps_finished_methods_and_resume_completes(at):
    assert button(at, "Stop").disabled  # nothing is running
    result = run_comparison(at, ["xwp", "occlusion"], n=3)
    # as if the run had been interrupted after XWP: occlusion and random still pending
    result.parts = result.parts[:1]
    result.pending = ["occlusion", "random"]
    result.status = Status.RUNNING
    result.combined = None
    button(at, "Stop").click().run()  # the click's rerun finds the comparison running: Stop is honoured
    assert_clean(at)
    result = at.session_state[COMPARE_KEY]
    assert result.status is Status.STOPPED and len(result.parts) == 1
    assert any("Stopped after 1 of 3 methods" in w.value for w in at.warning)
    assert list(at.dataframe[0].value["method"]) == ["XWP"]  # the finished method is shown
    button(at, "Resume").click().run()
    assert_clean(at)
    result = at.session_state[COMPARE_KEY]
    assert result.status is Status.DONE and result.pending == []
    assert list(at.dataframe[0].value["method"]) == ["XWP", "Occlusion", "Random"]


def test_progress_is_redrawn_only_when_it_changes():
    """A comparison waiting in the queue does not move: its bar is not redrawn every poll (each costs a render)."""
    from types import SimpleNamespace

    from xwp.app.compare_page import follow

    # what the job reports at each poll: 3 polls waiting, then two chunks, the second seen twice, then done
    states = [(0.0, "waiting")] * 3 + [(0.25, "chunk 1"), (0.5, "chunk 2"), (0.5, "chunk 2"), None]
    record = SimpleNamespace(fraction=0.0, message="waiting", done=False)
    drawn, slept = [], []

    def sleep(seconds):
        slept.append(seconds)
        state = states[len(slept) - 1]
        if state is None:
            record.done = True
        else:
            record.fraction, record.message = state

    bar = SimpleNamespace(progress=lambda value, text: drawn.append((value, text)))
    assert follow(record, bar, poll=0.2, sleep=sleep, superseded=lambda: False) == 2
    assert drawn == [(0.25, "chunk 1"), (0.5, "chunk 2")] and slept == [0.2] * len(states)

    # a click or a page switch asks the run to stop: the bar is drawn anyway, the Streamlit call where the
    # request takes over (without it the run slept on, and the click waited for the comparison to move)
    record.done, drawn[:], slept[:] = False, [], []
    states[:] = [(0.5, "chunk 2")] * 3 + [None]
    asked = iter([False, True, False, False])
    assert follow(record, bar, poll=0.2, sleep=sleep, superseded=lambda: next(asked)) == 0
    assert drawn == [(0.5, "chunk 2")]
