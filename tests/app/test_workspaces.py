"""Workspaces in the app, score spaces, photos and drawings unlike the training data."""

from __future__ import annotations

import io
import re

import pytest
import torch

from tests.support.app import (
    TIMEOUT,
    assert_clean,
    button,
    fresh_app,
    models,
    noisy_photo,
    owner,
    shown,
    small_checkpoint,
    train_small,
    upload_checkpoint,
    wait_for_jobs,
    wait_until_ended,
    workspace_of,
)

pytestmark = pytest.mark.slow  # an AppTest run of the whole app per test: the full suite runs them, not the fast lane


def test_workspace_models_survive_a_new_session_and_stay_private(at, monkeypatch):
    ws = workspace_of(at)
    assert ws is not None and len(ws.id) == 22
    train_small(at, "digits", epochs=2, hidden="32", name="kept model")
    assert_clean(at)
    assert at.text_input(key="train_name").value == "", "the name field does not keep the last run's name"
    saved = ws.models()
    assert [m.name for m in saved] == ["kept model"] and saved[0].epochs == 2 and saved[0].has_snapshots
    assert sorted(ws.snapshots(saved[0].id)) == [0, 1, 2]  # first layer before training and after each epoch

    again = fresh_app(monkeypatch, ws.id)  # a reload, or a new tab with the same URL
    assert_clean(again)
    assert workspace_of(again).id == ws.id
    assert "kept model" in models(again)
    assert again.selectbox(key="xwp_active_model").value == "kept model"
    assert any("kept model" in t.value for t in again.sidebar.text)
    assert any("Workspace: 1 model, 0 comparisons" in e.label for e in again.sidebar.expander)
    assert any("MB of 200 MB" in t.value for t in again.sidebar.text)

    other = fresh_app(monkeypatch)  # no id in the URL: a new workspace that sees none of it
    assert workspace_of(other).id != ws.id
    assert models(other) == ["Default: typeface digits"]
    bad = fresh_app(monkeypatch, "../../etc")  # a malformed id never reaches the file system
    assert workspace_of(bad).id != "../../etc" and models(bad) == ["Default: typeface digits"]

    # delete it in the second tab: gone from the workspace and from that session
    button(again, "Delete").click().run()  # the confirmation button inside the popover
    assert_clean(again)
    assert ws.models() == [] and "kept model" not in models(again)


def test_uploaded_model_is_saved_and_names_stay_plain_text(at, monkeypatch):
    ws = workspace_of(at)
    upload_checkpoint(at, "**bold** [link](x).safetensors", small_checkpoint())
    assert_clean(at)
    name = "**bold** [link](x)"
    assert [m.name for m in ws.models()] == [name]
    assert any(name in t.value for t in at.sidebar.text)
    assert not any("bold" in m.value for m in at.sidebar.markdown), "metadata is never rendered as Markdown"
    again = fresh_app(monkeypatch, ws.id)
    assert name in models(again)


def test_model_without_initial_state_stays_without_it_in_the_workspace(at, monkeypatch):
    """A bare upload must not come back from the workspace with seed-made (wrong) initial weights."""
    import json
    import struct

    from safetensors.torch import load, save

    from xwp.app.keys import MODELS_KEY

    good = small_checkpoint(seed=3)
    n = struct.unpack("<Q", good[:8])[0]
    bare = save(
        {k: v for k, v in load(good).items() if k.startswith("trained.")},
        metadata=json.loads(good[8 : 8 + n])["__metadata__"],
    )
    ws = workspace_of(at)
    upload_checkpoint(at, "bare.safetensors", bare)
    assert_clean(at)
    again = fresh_app(monkeypatch, ws.id)
    assert not again.session_state[MODELS_KEY]["bare"].has_initial
    assert ws.load_model(ws.models()[0].id).initial_model is None


def test_full_workspace_is_a_warning_and_keeps_the_model_in_the_tab(monkeypatch):
    monkeypatch.setenv("XWP_WORKSPACE_MODELS", "0")
    app = fresh_app(monkeypatch)
    upload_checkpoint(app, "tiny.safetensors", small_checkpoint())
    assert_clean(app)
    assert "tiny" in models(app)  # still usable in this tab
    assert any("not saved to the workspace" in w.value and "XWP_WORKSPACE_MODELS" in w.value for w in app.warning)
    assert workspace_of(app).models() == []


def test_training_job_into_a_full_workspace_warns_and_keeps_the_model_in_the_tab(monkeypatch):
    """The job's refused save (no Streamlit calls there) becomes the sidebar's warning when it is collected."""
    monkeypatch.setenv("XWP_WORKSPACE_MODELS", "0")
    app = fresh_app(monkeypatch)
    train_small(app, "digits", epochs=1, hidden="16", name="no room")
    assert_clean(app)
    assert models(app)[-1] == "no room" and app.session_state["xwp_models"]["no room"].saved_id is None
    assert any("“no room” was not saved to the workspace" in shown(w) for w in app.warning)
    assert workspace_of(app).models() == []


def test_saved_comparison_is_listed_and_reopens(at, monkeypatch):
    from xwp.app import workspace_glue
    from xwp.app.keys import COMPARE_KEY

    at.switch_page("pages/compare.py").run()
    at.multiselect(key="compare_methods").set_value(["xwp", "occlusion"])
    at.number_input(key="compare_n").set_value(3)
    button(at, "Run comparison").click().run()
    assert_clean(at)
    ws = workspace_of(at)
    result = at.session_state[COMPARE_KEY]
    monkeypatch.setattr(workspace_glue, "workspace", lambda: ws)  # outside a script run: the same workspace
    [saved] = ws.comparisons()  # the page saved it when the run finished
    assert result.saved_id == saved.id
    assert "3 images" in saved.name

    again = fresh_app(monkeypatch, ws.id)
    monkeypatch.undo()
    assert any("1 comparison" in e.label for e in again.sidebar.expander)
    [open_button] = [b for b in again.sidebar.button if b.key == f"ws_copen_{saved.id}"]
    open_button.click().run()
    assert_clean(again)
    assert again.session_state[COMPARE_KEY].saved_id == saved.id
    again.switch_page("pages/compare.py").run()  # the real app switches there itself; AppTest does not follow
    assert_clean(again)
    assert list(again.dataframe[0].value["method"]) == list(at.dataframe[0].value["method"])


def test_comparison_outlives_a_page_switch_and_is_saved_to_the_workspace(at, monkeypatch):
    """Compare: the comparison is a job; leaving the page, or a reload, does not stop it."""
    import threading

    from xwp.app import jobs
    from xwp.app.keys import COMPARE_KEY
    from xwp.serve.comparison import Status
    from xwp.serve.compute import get_executor

    ws = workspace_of(at)
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="compare_methods").set_value(["xwp", "occlusion"])
    at.number_input(key="compare_n").set_value(3)
    gate = threading.Event()

    def hold(ctx):
        """Hold the worker (the comparison waits behind it); let pages' requests through meanwhile."""
        while not gate.wait(0.05):
            ctx.tick()

    blocker = get_executor().submit_task(hold)
    try:
        # the page watches the job until the run is stopped: what leaving the page does
        with pytest.raises(RuntimeError, match="timed out"):
            button(at, "Run comparison").click().run(timeout=5)
        [record] = jobs.running(owner(at), "comparison")
        at.switch_page("pages/explain.py").run()
        assert_clean(at)
        assert jobs.running(owner(at), "comparison") == [record], "the comparison stopped when the page changed"
        assert any("Running: comparison of 3 methods" in p.proto.text for p in at.sidebar.get("progress"))
        reload = fresh_app(monkeypatch, ws.id)  # another tab of the workspace sees it running, with Stop
        assert any("Running: comparison" in p.proto.text for p in reload.sidebar.get("progress"))
        assert any(b.label == "Stop" for b in reload.sidebar.button)
    finally:
        gate.set()
    blocker.result(60)
    wait_until_ended(at, "comparison")
    [saved] = ws.comparisons()  # saved by the job when its last method finished
    assert "3 images" in saved.name
    wait_for_jobs(at)
    assert_clean(at)
    result = at.session_state[COMPARE_KEY]
    assert result.status is Status.DONE and result.pending == [] and result.saved_id == saved.id
    at.switch_page("pages/compare.py").run()
    assert_clean(at)
    assert list(at.dataframe[0].value["method"]) == ["XWP", "Occlusion", "Random"]

    again = fresh_app(monkeypatch, ws.id)
    assert any("1 comparison" in e.label for e in again.sidebar.expander)


def test_stop_on_the_sidebar_keeps_the_finished_methods_and_resume_completes(at, monkeypatch):
    """The sidebar's Stop ends a comparison at its next batch; Resume on the page runs the rest as a new job."""
    import threading

    from xwp.app import compare_page
    from xwp.app.keys import COMPARE_KEY
    from xwp.serve.comparison import Status

    first_done, release = threading.Event(), threading.Event()
    real = compare_page.evaluate

    def slow_second(model, data, methods, **kwargs):
        if methods != ["xwp"]:
            first_done.set()
            release.wait(60)  # the second method waits here until Stop was pressed
        return real(model, data, methods, **kwargs)

    monkeypatch.setattr(compare_page, "evaluate", slow_second)
    try:
        at.switch_page("pages/compare.py").run()
        at.multiselect(key="compare_methods").set_value(["xwp", "occlusion"])
        at.number_input(key="compare_n").set_value(3)
        with pytest.raises(RuntimeError, match="timed out"):
            button(at, "Run comparison").click().run(timeout=5)
        assert first_done.wait(TIMEOUT)
        at.switch_page("pages/explain.py").run()
        [stop] = [b for b in at.sidebar.button if b.label == "Stop"]
        stop.click().run()
        assert_clean(at)
        release.set()
        wait_until_ended(at, "comparison")
    finally:
        release.set()
    wait_for_jobs(at)
    result = at.session_state[COMPARE_KEY]
    assert result.status is Status.STOPPED and [ev.methods for ev in result.parts] == [["xwp"]]
    assert result.pending == ["occlusion", "random"]
    at.switch_page("pages/compare.py").run()
    assert_clean(at)
    assert any("Stopped after 1 of 3 methods" in shown(w) for w in at.warning)
    assert list(at.dataframe[0].value["method"]) == ["XWP"]
    button(at, "Resume").click().run()
    assert_clean(at)
    result = at.session_state[COMPARE_KEY]
    assert result.status is Status.DONE and result.pending == []
    assert list(at.dataframe[0].value["method"]) == ["XWP", "Occlusion", "Random"]


def test_score_spaces_caption_and_invisible_maps_warning(at):
    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("test").run()
    assert_clean(at)
    assert any("probability for the explained class" in c.value for c in at.caption)  # the paper's space
    at.multiselect(key="explain_methods").set_value(["xwp", "lrp"]).run()
    at.selectbox(key="explain_target").set_value(3).run()  # a class the test image (a 0) is surely not
    at.toggle(key="explain_shared").set_value(True).run()
    assert_clean(at)
    assert any("look blank" in w.value and "XWP" in w.value for w in at.warning), [w.value for w in at.warning]
    at.selectbox(key="explain_space").set_value("log-odds").run()
    assert_clean(at)
    assert any("log-odds log(p / (1 − p))" in c.value for c in at.caption)
    assert not any("look blank" in w.value for w in at.warning), "log-odds do not saturate"
    at.selectbox(key="explain_space").set_value("logits").run()
    assert_clean(at)
    assert any("raw score" in c.value for c in at.caption)
    assert any("Score: Logits" in c.value for c in at.caption)


def test_explain_initial_state_view_is_opt_in(at):
    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("test").run()
    assert_clean(at)
    images = len(at.get("image"))
    assert not at.toggle(key="explain_initial").value  # off by default: the layout is unchanged
    assert not any("Spearman" in c.value for c in at.caption)
    at.toggle(key="explain_initial").set_value(True).run()
    assert_clean(at)
    assert len(at.get("image")) == images + 3  # XWP, 2 × Occlusion, their difference
    [text] = [c.value for c in at.caption if "Spearman" in c.value]
    assert "exactly 2 × Occlusion with baseline 0" in text and "non-zero pixels: " in text
    rho = float(re.search(r"non-zero pixels: (-?[0-9]+\.[0-9]+)", text).group(1))
    assert -1 <= rho <= 1
    at.selectbox(key="explain_space").set_value("log-odds").run()
    assert_clean(at)
    assert any("exactly Occlusion with baseline 0" in c.value for c in at.caption)


def test_compare_offers_the_three_score_spaces(at):
    from xwp.evaluation.scales import MEANING

    at.switch_page("pages/compare.py").run()
    picker = at.multiselect(key="compare_outputs")
    assert picker.options == ["Probability (paper)", "Logits", "Log-odds"]
    assert picker.value == ["softmax", "logits"]  # the default stays the two spaces of the protocol
    at.multiselect(key="compare_methods").set_value(["xwp", "occlusion"])
    at.number_input(key="compare_n").set_value(3)
    picker.set_value(["log-odds"])
    button(at, "Run comparison").click().run()
    assert_clean(at)
    assert list(at.dataframe[0].value["method"]) == ["XWP", "Occlusion", "Random"]
    assert any(MEANING["log-odds"] in c.value and "raw log-odds" in c.value for c in at.caption)


def test_uploaded_photo_is_cleaned_and_noise_is_warned_about(at):
    import numpy as np
    from PIL import Image

    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("upload").run()
    at.file_uploader(key="explain_upload").set_value(("seven.png", noisy_photo("7"), "image/png")).run()
    assert_clean(at)
    assert any("after cleaning" in c.value for c in at.caption) or len(at.get("image")) >= 2
    assert not any("unlike the training data" in w.value for w in at.warning), [w.value for w in at.warning]
    assert "Predicted 7" in " ".join(m.value for m in at.markdown), [m.value for m in at.markdown]

    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (120, 120), dtype=np.uint8)).save(buf, format="PNG")
    at.file_uploader(key="explain_upload").set_value(("noise.png", buf.getvalue(), "image/png")).run()
    assert not at.exception
    refused = any("no ink found" in e.value for e in at.error)
    warned = any("unlike the training data" in w.value for w in at.warning)
    assert refused or warned, ([e.value for e in at.error], [w.value for w in at.warning])


def test_drawing_unlike_training_data_is_warned_about(at):
    from xwp.app import explain_page
    from xwp.app.keys import MODELS_KEY

    entry = next(iter(at.session_state[MODELS_KEY].values()))  # the default model (typeface digits)
    block = torch.zeros(1, 1, 28, 28)
    block[..., 2:26, 2:26] = 1.0  # a filled square: what a scribble over the whole canvas becomes
    assert "unlike the training data" in explain_page.drawing_warning(entry, block)
    from xwp.app.shared import _shared_dataset

    test = _shared_dataset("typeface", "test", None)
    warned = sum(explain_page.drawing_warning(entry, test.images[i : i + 1]) is not None for i in range(40))
    assert warned <= 1, f"{warned} of 40 test digits warned"


def test_upload_errors_name_no_python_class(at):
    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("upload").run()
    at.file_uploader(key="explain_upload").set_value(("junk.png", b"not an image at all", "image/png")).run()
    assert_clean(at, errors_expected=True)
    assert at.error and all("Error" not in e.value for e in at.error), [e.value for e in at.error]


def test_missing_dataset_message_is_for_app_users():
    from xwp.app.shared import for_app_users

    core = (
        "MNIST is not on this machine and could not be downloaded (URLError). Put the four .gz files in "
        "DIR/MNIST/raw/ and pass --data-dir DIR (or data_dir=DIR)"
    )
    text = for_app_users(core, "mnist")
    assert "--data-dir" not in text and "URLError" not in text
    assert "operator must configure a data folder" in text


def test_draw_prompt_names_the_datasets_kind(at):
    from xwp.data.datasets import FASHION_CLASSES

    assert any("Draw a digit" in i.value for i in at.switch_page("pages/explain.py").run().info)
    fashion = small_checkpoint(dataset="fashion-mnist", classes=list(FASHION_CLASSES))
    upload_checkpoint(at, "fashion.safetensors", fashion)
    at.switch_page("pages/explain.py").run()
    assert_clean(at)
    prompts = [i.value for i in at.info]
    assert any("Draw an item of clothing" in p for p in prompts) and not any("digit" in p for p in prompts), prompts


def test_weights_side_by_side_download_and_replay(at):
    at.switch_page("pages/weights.py").run()
    assert_clean(at)
    [unit] = [s for s in at.selectbox if s.key and s.key.startswith("weights_unit_")]
    unit.set_value(399).run()  # the last unit of the default model
    assert_clean(at)
    labels = [d.proto.label for d in at.get("download_button")]
    assert "Unit figure (PNG)" in labels
    replay = [s for s in at.select_slider if s.key and s.key.startswith("weights_replay_")]
    assert replay, "the default model keeps its first layer per epoch"

    train_small(at, "digits", epochs=3, hidden="16", name="narrow")
    at.switch_page("pages/weights.py").run()
    assert_clean(at)
    [unit] = [s for s in at.selectbox if s.key and s.key.startswith("weights_unit_")]
    assert unit.value in range(16), "no stale unit of the previous model"
    [replay] = [s for s in at.select_slider if s.key and s.key.startswith("weights_replay_")]
    assert list(replay.options) == ["0", "1", "2", "3"] and replay.value == 3
    images_before = len(at.get("image"))
    replay.set_value(1).run()
    assert_clean(at)
    assert len(at.get("image")) == images_before
    [replay] = [s for s in at.select_slider if s.key and s.key.startswith("weights_replay_")]
    assert replay.value == 1

