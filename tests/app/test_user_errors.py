"""User errors in the app: limits, diverging trainings, missing data, bad uploads, stopped jobs, Explain's checks."""

from __future__ import annotations

import io
import re

import torch

from tests.support.app import (
    ROOT,
    TIMEOUT,
    assert_clean,
    button,
    fresh_app,
    models,
    owner,
    shown,
    start_training,
    train_small,
    wait_for_jobs,
    wait_until_ended,
    workspace_of,
)


def test_limits_and_bad_settings_give_clear_errors(at):
    from xwp.config import LIMITS

    train_small(at, "digits", hidden=str(LIMITS.max_hidden_width + 1))
    assert_clean(at, errors_expected=True)
    assert any("limited to" in shown(e) for e in at.error)
    train_small(at, "digits", hidden="400,abc")
    assert any("whole numbers" in shown(e) for e in at.error)
    assert models(at) == ["Default: typeface digits"]


def test_diverging_training_is_an_error_not_a_traceback(at):
    train_small(at, "digits", epochs=3, lr=10.0, optimizer="sgd")
    assert_clean(at, errors_expected=True)
    assert any("diverged" in shown(e) for e in at.error)
    assert models(at) == ["Default: typeface digits"]


def test_mnist_without_files_explains_what_to_do(at, tmp_path, monkeypatch):
    monkeypatch.setenv("XWP_DATA_DIRS", str(tmp_path))  # an allowed folder without the files
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train_dataset").set_value("mnist").run()
    at.text_input(key="train_dir_mnist").set_value(str(tmp_path)).run()
    button(at, "Train").click().run()
    assert_clean(at, errors_expected=True)
    assert any("MNIST" in shown(e) and ".gz" in shown(e) for e in at.error)
    assert models(at) == ["Default: typeface digits"]


def test_bad_checkpoint_upload_keeps_the_session(at):
    at.switch_page("pages/train.py").run()
    at.file_uploader(key="checkpoint_upload").set_value(("model.pt", b"\x80\x02garbage", "application/octet-stream"))
    at.run()
    assert_clean(at, errors_expected=True)
    assert any("pickle" in shown(e) for e in at.error)
    at.file_uploader(key="checkpoint_upload").set_value(("x.safetensors", b"12345678", "application/octet-stream"))
    at.run()
    assert any("not an xwp checkpoint" in shown(e) for e in at.error)
    assert models(at) == ["Default: typeface digits"]


def test_checkpoint_upload_and_model_without_initial_state(at):
    from safetensors.torch import save

    from xwp.checkpoint import checkpoint_bytes
    from xwp.models import MLP

    good = checkpoint_bytes(MLP((784, 32, 10), seed=1), {"dataset": "digits", "classes": list("0123456789")})
    at.switch_page("pages/train.py").run()
    at.file_uploader(key="checkpoint_upload").set_value(("tiny.safetensors", good, "application/octet-stream"))
    at.run()
    assert_clean(at)
    assert at.selectbox(key="xwp_active_model").value == "tiny"

    # A checkpoint without the initial state: XWP does not apply, the others still do.
    from safetensors.torch import load

    tensors = {k: v for k, v in load(good).items() if k.startswith("trained.")}
    import json
    import struct

    n = struct.unpack("<Q", good[:8])[0]
    metadata = json.loads(good[8 : 8 + n])["__metadata__"]
    bare = save(tensors, metadata=metadata)
    at.file_uploader(key="checkpoint_upload").set_value(("bare.safetensors", bare, "application/octet-stream"))
    at.run()
    assert_clean(at)
    assert at.selectbox(key="xwp_active_model").value == "bare"
    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("test").run()
    assert_clean(at)
    assert any("initial weights" in shown(i) for i in at.info)
    assert any("Time per method" in shown(c) for c in at.caption)  # IG and Occlusion still run
    at.switch_page("pages/weights.py").run()
    at.segmented_control(key="weights_view").set_value("initial").run()
    assert_clean(at)
    assert any("no initial state" in shown(i) for i in at.info)


def test_upload_size_limit(at, monkeypatch):
    from xwp.config import Limits
    from xwp.serve import uploads

    monkeypatch.setattr(uploads, "LIMITS", Limits(max_upload_bytes=1000))
    at.switch_page("pages/train.py").run()
    at.file_uploader(key="checkpoint_upload").set_value(("big.safetensors", b"0" * 2000, "application/octet-stream"))
    at.run()
    assert_clean(at, errors_expected=True)
    assert any("limited to" in shown(e) for e in at.error)


def test_train_on_an_uploaded_tmnist_csv(at):
    from xwp.data.datasets import load_dataset

    data = load_dataset("digits", "test")
    header = "names,labels," + ",".join(str(i) for i in range(1, 785))
    rows = [
        f"Family{k % 5}-Regular,{int(y)}," + ",".join(str(int(v)) for v in (x.flatten() * 255).round().tolist())
        for k, (x, y) in enumerate(zip(data.images[:150], data.labels[:150], strict=True))
    ]
    csv = ("\n".join([header, *rows]) + "\n").encode()
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train_dataset").set_value("tmnist").run()
    at.file_uploader(key="train_tmnist_upload").set_value(("TMNIST_Data.csv", csv, "text/csv")).run()
    assert_clean(at)
    at.number_input(key="train_epochs").set_value(1)
    button(at, "Train").click().run()
    wait_for_jobs(at)
    assert_clean(at)
    assert any("Trained" in shown(s) for s in at.success)
    sidebar = [shown(e) for e in [*at.sidebar.text, *at.sidebar.markdown]]
    assert any("TMNIST_Data.csv" in s for s in sidebar)  # the sidebar names the uploaded file
    from xwp.config import cache_dir

    uploads = cache_dir() / "uploads"
    assert not uploads.exists() or not list(uploads.iterdir())  # parsed in memory, nothing stored
    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("test").run()
    assert_clean(at)  # its test images: the held-out fonts of the uploaded file
    assert any("test image" in shown(c) for c in [*at.caption, *at.text])  # the input line names it
    at.switch_page("pages/train.py").run()

    at.file_uploader(key="train_tmnist_upload").set_value(("bad.csv", b"a,b\n1,2\n", "text/csv")).run()
    button(at, "Train").click().run()
    assert any("labels" in shown(e) for e in at.error)


def test_training_outlives_a_page_switch_and_is_saved_to_the_workspace(at, monkeypatch):
    """Switching to Explain during a run neither stops it nor keeps a weaker model.

    The job itself saves the model to the workspace (before any page collects it), so a new
    session of the same workspace address gets it.
    """
    from xwp.app import jobs

    ws = workspace_of(at)
    start_training(at, epochs=6, name="long run")
    running = jobs.running(owner(at), "training")
    assert [r.extra["name"] for r in running] == ["long run"]
    at.switch_page("pages/explain.py").run()
    assert_clean(at)
    assert jobs.running(owner(at), "training"), "the training stopped when the page changed"
    texts = [p.proto.text for p in at.sidebar.get("progress")]
    assert any(re.match(r"Running: training “long run” · \d{1,3}%", t) for t in texts), texts
    assert "long run" not in models(at)
    wait_until_ended(at, "training")
    [saved] = ws.models()  # saved by the job: no script run has collected it yet
    assert saved.name == "long run" and saved.epochs == 6 and saved.has_snapshots
    assert sorted(ws.snapshots(saved.id)) == list(range(7))  # before training and after each epoch
    wait_for_jobs(at)
    assert_clean(at)
    assert models(at)[-1] == "long run"
    assert at.selectbox(key="xwp_active_model").value == "long run"
    entry = at.session_state["xwp_models"]["long run"]
    assert len(entry.meta["history"]["loss"]) == 6  # every epoch, not the one before the switch
    assert entry.saved_id == saved.id
    at.switch_page("pages/train.py").run()
    assert any("Trained **long run** for 6 epochs" in shown(s) for s in at.success)

    again = fresh_app(monkeypatch, ws.id)  # a reload, or a new tab with the same URL
    assert_clean(again)
    assert models(again).count("long run") == 1
    again_entry = again.session_state["xwp_models"]["long run"]
    torch.testing.assert_close(again_entry.model.linears[0].weight, entry.model.linears[0].weight)


def test_stop_keeps_the_last_complete_epoch(at):
    import time

    from xwp.app import jobs

    start_training(at, epochs=40, name="stopped run")
    (record,) = jobs.running(owner(at), "training")
    deadline = time.monotonic() + TIMEOUT
    while "history" not in record.extra:  # the first epoch has ended
        assert time.monotonic() < deadline
        time.sleep(0.05)
    at.run()
    button(at, "Stop training").click().run()
    assert_clean(at)
    wait_for_jobs(at)
    assert_clean(at)
    assert at.selectbox(key="xwp_active_model").value == "stopped run"
    done = len(at.session_state["xwp_models"]["stopped run"].meta["history"]["loss"])
    assert 1 <= done < 40
    assert any(f"stopped after epoch {done} of 40" in shown(w) for w in at.warning)


def test_stop_before_the_first_epoch_keeps_nothing(at):
    import threading

    from xwp.app import jobs
    from xwp.serve.compute import get_executor

    gate = threading.Event()
    blocker = get_executor().submit_task(lambda ctx: gate.wait(60))  # holds the worker: the training waits
    try:
        start_training(at, epochs=3, name="too early")
        at.switch_page("pages/explain.py").run()  # a blank canvas: no computation waits behind the blocker
        button(at, "Stop").click().run()  # the sidebar's Stop, on another page
        assert jobs.running(owner(at), "training")[0].stopping
    finally:
        gate.set()
    blocker.result(60)
    wait_for_jobs(at)
    assert_clean(at)
    assert "too early" not in models(at)
    at.switch_page("pages/train.py").run()
    assert any("Training was stopped" in shown(w) for w in at.warning)


def test_explain_page_equals_a_direct_call(at):
    """The maps the page computes on the compute executor are those of xwp.serve.explanation.explain."""
    import numpy as np

    from xwp.app import shared as app_shared
    from xwp.serve.compute import get_executor
    from xwp.serve.explanation import EXPLAIN_DEFAULT, attribution_key, explain

    before = dict(get_executor().stats)
    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("test").run()
    at.selectbox(key="explain_class").set_value(3)
    at.number_input(key="explain_k").set_value(2).run()
    assert_clean(at)
    entry = at.session_state["xwp_models"][at.selectbox(key="xwp_active_model").value]
    data = app_shared._shared_dataset("typeface", "test", None)
    i = int(torch.nonzero(data.labels == 3).flatten()[2])
    x = data.images[i : i + 1]
    direct = explain(entry.model, x, None, EXPLAIN_DEFAULT, initial_model=entry.initial_model)
    memo = at.session_state["xwp_memo"]
    assert set(direct.maps) == set(EXPLAIN_DEFAULT)
    for name, expected in direct.maps.items():
        drawn, seconds = memo[attribution_key(entry.uid, name, direct.target, x)]
        np.testing.assert_allclose(drawn, expected, rtol=1e-10, atol=1e-14, err_msg=name)
        assert seconds > 0
    assert get_executor().stats["calls"] >= before["calls"] + 1 + len(EXPLAIN_DEFAULT)  # prediction + maps
    assert any(shown(m) == f"**{direct.title}**" for m in at.markdown)  # the page's prediction line


def test_explain_says_why_a_method_does_not_apply_to_the_model(at):
    """A checkpoint without hidden layers has no ReLU: the pickers mark Pathwise and the page says why."""
    from xwp.checkpoint import checkpoint_bytes
    from xwp.models import MLP

    linear = checkpoint_bytes(MLP((784, 10), seed=1), {"dataset": "digits", "classes": list("0123456789")})
    at.switch_page("pages/train.py").run()
    at.file_uploader(key="checkpoint_upload").set_value(("linear.safetensors", linear, "application/octet-stream"))
    at.run()
    assert_clean(at)
    at.switch_page("pages/explain.py").run()
    picker = at.multiselect(key="explain_methods")
    assert "Pathwise (not for this model)" in picker.options and "Saliency" in picker.options
    assert "Pathwise does not apply" in picker.help and "ReLU" in picker.help
    at.segmented_control(key="explain_source").set_value("test").run()
    at.multiselect(key="explain_methods").set_value(["pathwise", "saliency"]).run()
    assert_clean(at)
    reasons = [i.value for i in at.info if "Pathwise does not apply" in i.value]
    assert len(reasons) == 1 and "ReLU" in reasons[0]
    assert any("Time per method: Saliency" in c.value for c in at.caption)  # the other method still runs
    at.switch_page("pages/compare.py").run()
    assert "Pathwise (not for this model)" in at.multiselect(key="compare_methods").options


def test_explain_upload_good_and_bad_images(at):
    from PIL import Image, ImageDraw

    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("upload").run()
    assert any("Upload" in shown(i) for i in at.info)
    im = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(im).line([(60, 15), (60, 105)], fill=0, width=12)  # a dark "1" on white
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    at.file_uploader(key="explain_upload").set_value(("one.png", buf.getvalue(), "image/png")).run()
    assert_clean(at)
    assert len(at.get("download_button")) == 3
    at.file_uploader(key="explain_upload").set_value(("junk.png", b"not an image", "image/png")).run()
    assert_clean(at, errors_expected=True)
    assert any("not a readable image" in shown(e) for e in at.error)


def test_pages_never_import_torch():
    for page in (ROOT / "pages").glob("*.py"):
        for line in page.read_text().splitlines():
            assert not line.strip().startswith(("import torch", "from torch")), f"{page.name}: {line}"
    from xwp.app.routes import PAGES

    assert sorted(f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py")) == sorted(p.path for p in PAGES)


def test_only_the_app_package_imports_streamlit():
    core = [p for p in (ROOT / "xwp").rglob("*.py") if "app" not in p.relative_to(ROOT / "xwp").parts[:-1]]
    assert len(core) > 10
    for path in core:
        for line in path.read_text().splitlines():
            assert not line.strip().startswith(("import streamlit", "from streamlit")), f"{path.name}: {line}"
    assert any("import streamlit" in p.read_text() for p in (ROOT / "xwp" / "app").glob("*.py"))

