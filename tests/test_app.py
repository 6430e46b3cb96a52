"""The Streamlit app through ``streamlit.testing.v1.AppTest``: every page, the default flow, user errors.

The default model is trained for 1 epoch (``XWP_DEFAULT_EPOCHS``) into a temporary cache
shared by this module; ``st.cache_resource`` keeps it for every AppTest here.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 300


@pytest.fixture(scope="module", autouse=True)
def app_env(tmp_path_factory):
    """A private cache folder and a 1-epoch default model for the tests of this module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XWP_CACHE_DIR", str(tmp_path_factory.mktemp("xwp-cache")))
    mp.setenv("XWP_DEFAULT_EPOCHS", "1")
    yield
    mp.undo()


@pytest.fixture
def at(monkeypatch):
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    # AppTest resets PagesManager.uses_pages_directory before every run, and with a pages/
    # folder beside the main script it would then run a switched-to page on its own, as a
    # multipage-v1 script, skipping streamlit_app.py. The real server clears the flag for
    # good the first time st.navigation runs; do the same here.
    init = PagesManager.__init__

    def init_v2(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_v2)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert_clean(app)
    return app


def assert_clean(app, errors_expected: bool = False) -> None:
    assert not app.exception, [e.value for e in app.exception]
    if not errors_expected:
        assert not app.error, [e.value for e in app.error]


def button(app, label: str):
    matches = [b for b in app.button if b.label == label]
    assert matches, f"no button {label!r}; have {[b.label for b in app.button]}"
    return matches[0]


def models(app) -> list[str]:
    return list(app.selectbox(key="xwp_active_model").options)


def train_small(app, dataset="digits", epochs=1, **fields):
    app.switch_page("pages/train.py").run()
    app.selectbox(key="train_dataset").set_value(dataset).run()
    app.number_input(key="train_epochs").set_value(epochs)
    for key, value in fields.items():
        widget = {"hidden": app.text_input, "name": app.text_input, "lr": app.number_input, "optimizer": app.selectbox}[
            key
        ](key=f"train_{key}")
        widget.set_value(value)
    button(app, "Train").click().run()
    return wait_for_jobs(app)


def owner(app) -> str:
    from xwp.app.jobs import OWNER_KEY

    return app.session_state[OWNER_KEY]


def wait_for_jobs(app, timeout: float = TIMEOUT):
    """Wait until the session's jobs (trainings, comparisons) have ended, then run once to collect them."""
    import time

    from xwp.app import jobs

    if not jobs.registry().records(owner(app)):
        return app  # nothing was started (e.g. an error message): keep this run's elements
    deadline = time.monotonic() + timeout
    while jobs.running(owner(app)):
        assert time.monotonic() < deadline, "a job did not end in time"
        time.sleep(0.05)
    return app.run()


# --------------------------------------------------------------------------- pages


def test_home_page(at):
    assert at.title[0].value.startswith("XWP")
    assert len(at.latex) >= 2
    assert any("Lympelopoulos" in m.value for m in at.markdown)
    assert models(at) == ["Default: typeface digits"]
    assert len(at.get("image")) >= 1  # the XWP example of the active model


def test_page_opened_before_the_router_goes_through_it():
    """Unpatched, AppTest runs a switched-to page on its own (like a page URL opened first after a
    restart); frame.routed() sends that run through streamlit_app.py and back to the page."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    app.switch_page("pages/explain.py").run()
    assert_clean(app)
    assert app.title[0].value == "Explain a prediction"
    assert models(app) == ["Default: typeface digits"]


def test_default_model_is_cached_on_disk(at):
    from xwp.app import shared

    path = shared.default_model_path()
    assert path.exists() and path.name.startswith("default-typeface-784-400-100-10-e1")
    from xwp.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    assert ckpt.initial_model is not None and ckpt.meta["dataset"] == "typeface"


def test_train_page_widgets(at):
    from xwp.data import DATASETS
    from xwp.models import INITS
    from xwp.train import OPTIMIZERS

    at.switch_page("pages/train.py").run()
    assert_clean(at)
    assert at.text_input(key="train_hidden").value == "400,100"  # the paper's network
    assert at.text_input(key="train_name").value == ""
    defaults = {"train_epochs": 10, "train_lr": 1e-3, "train_batch": 128, "train_seed": 0}
    assert {key: at.number_input(key=key).value for key in defaults} == defaults
    dataset = at.selectbox(key="train_dataset")
    assert dataset.value == "typeface" and list(dataset.options) == [d.label for d in DATASETS.values()]
    assert list(at.selectbox(key="train_optimizer").options) == list(OPTIMIZERS)
    assert list(at.selectbox(key="train_init").options) == list(INITS)
    downloads = at.get("download_button")
    assert [d.proto.label for d in downloads] == ["Download “Default: typeface digits”"]  # the active model
    assert [u.proto.label for u in at.get("file_uploader")] == ["Upload a checkpoint"]


def test_train_then_explain_then_compare(at):
    train_small(at, "digits", epochs=2, name="small digits")
    assert_clean(at)
    assert any("Trained" in s.value for s in at.success)
    assert models(at)[-1] == "small digits"
    assert at.selectbox(key="xwp_active_model").value == "small digits"
    assert any(m.label == "Test accuracy" for m in at.metric)

    at.switch_page("pages/explain.py").run()
    assert_clean(at)
    assert any("Draw a digit" in i.value for i in at.info)  # the canvas is blank in AppTest
    at.segmented_control(key="explain_source").set_value("test").run()
    assert_clean(at)
    assert len(at.get("download_button")) == 3  # PNG, NPY, CSV
    assert any("Time per method" in c.value for c in at.caption)
    at.selectbox(key="explain_target").set_value(3).run()
    at.multiselect(key="explain_methods").set_value(["xwp", "xwpc", "lrp", "rise"]).run()
    at.toggle(key="explain_shared").set_value(True).run()
    assert_clean(at)

    at.switch_page("pages/compare.py").run()
    assert_clean(at)
    at.multiselect(key="compare_methods").set_value(["xwp", "xwpc", "occlusion"])
    at.number_input(key="compare_n").set_value(4)
    button(at, "Run comparison").click().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["method"]) == ["XWP", "XWPᶜ", "Occlusion", "Random"]
    assert any("↓" in c for c in table.columns) and any("↑" in c for c in table.columns)
    assert len(at.get("download_button")) == 3
    at.toggle(key="compare_correct").set_value(True).run()
    assert_clean(at)

    at.switch_page("pages/home.py").run()
    at.switch_page("pages/compare.py").run()
    assert at.dataframe, "comparison results survive a page switch"


def test_weights_page(at):
    at.switch_page("pages/weights.py").run()
    assert_clean(at)
    assert len(at.get("image")) >= 2  # the grid and the large view
    at.selectbox(key="weights_sort").set_value("drive").run()
    at.selectbox(key="weights_class").set_value(7).run()
    at.segmented_control(key="weights_view").set_value("change").run()
    at.toggle(key="weights_weigh").set_value(True).run()
    assert_clean(at)
    stats = at.table[0].value
    assert "weight norm ‖Wⱼ‖" in list(stats.index)


# --------------------------------------------------------------------------- user errors


def test_limits_and_bad_settings_give_clear_errors(at):
    from xwp.config import LIMITS

    train_small(at, "digits", hidden=str(LIMITS.max_hidden_width + 1))
    assert_clean(at, errors_expected=True)
    assert any("limited to" in e.value for e in at.error)
    train_small(at, "digits", hidden="400,abc")
    assert any("whole numbers" in e.value for e in at.error)
    assert models(at) == ["Default: typeface digits"]


def test_diverging_training_is_an_error_not_a_traceback(at):
    train_small(at, "digits", epochs=3, lr=10.0, optimizer="sgd")
    assert_clean(at, errors_expected=True)
    assert any("diverged" in e.value for e in at.error)
    assert models(at) == ["Default: typeface digits"]


def test_mnist_without_files_explains_what_to_do(at, tmp_path):
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train_dataset").set_value("mnist").run()
    at.text_input(key="train_dir_mnist").set_value(str(tmp_path)).run()
    button(at, "Train").click().run()
    assert_clean(at, errors_expected=True)
    assert any("MNIST" in e.value and ".gz" in e.value for e in at.error)
    assert models(at) == ["Default: typeface digits"]


def test_bad_checkpoint_upload_keeps_the_session(at):
    at.switch_page("pages/train.py").run()
    at.file_uploader(key="checkpoint_upload").set_value(("model.pt", b"\x80\x02garbage", "application/octet-stream"))
    at.run()
    assert_clean(at, errors_expected=True)
    assert any("pickle" in e.value for e in at.error)
    at.file_uploader(key="checkpoint_upload").set_value(("x.safetensors", b"12345678", "application/octet-stream"))
    at.run()
    assert any("not an xwp checkpoint" in e.value for e in at.error)
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
    assert any("initial weights" in i.value for i in at.info)
    assert any("Time per method" in c.value for c in at.caption)  # IG and Occlusion still run
    at.switch_page("pages/weights.py").run()
    at.segmented_control(key="weights_view").set_value("initial").run()
    assert_clean(at)
    assert any("no initial state" in i.value for i in at.info)


def test_upload_size_limit(at, monkeypatch):
    from xwp import images
    from xwp.config import Limits

    monkeypatch.setattr(images, "LIMITS", Limits(max_upload_bytes=1000))
    at.switch_page("pages/train.py").run()
    at.file_uploader(key="checkpoint_upload").set_value(("big.safetensors", b"0" * 2000, "application/octet-stream"))
    at.run()
    assert_clean(at, errors_expected=True)
    assert any("limited to" in e.value for e in at.error)


def test_train_on_an_uploaded_tmnist_csv(at):
    from xwp.data import load_dataset

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
    assert any("Trained" in s.value for s in at.success)
    assert "TMNIST_Data.csv" in at.sidebar.markdown[0].value  # the sidebar names the uploaded file

    at.file_uploader(key="train_tmnist_upload").set_value(("bad.csv", b"a,b\n1,2\n", "text/csv")).run()
    button(at, "Train").click().run()
    assert any("labels" in e.value for e in at.error)


def start_training(app, epochs: int, name: str, hidden: str = "400,100"):
    """Click Train on the Train page (digits) and return without waiting for the job."""
    app.switch_page("pages/train.py").run()
    app.selectbox(key="train_dataset").set_value("digits").run()
    app.number_input(key="train_epochs").set_value(epochs)
    app.text_input(key="train_hidden").set_value(hidden)
    app.text_input(key="train_name").set_value(name)
    button(app, "Train").click().run()
    assert_clean(app)
    return app


def test_training_outlives_a_page_switch(at):
    """Issue 15, point 2: switching to Explain during a run neither stops it nor keeps a weaker model."""
    from xwp.app import jobs

    start_training(at, epochs=6, name="long run")
    running = jobs.running(owner(at), "training")
    assert [r.extra["name"] for r in running] == ["long run"]
    at.switch_page("pages/explain.py").run()
    assert_clean(at)
    assert jobs.running(owner(at), "training"), "the training stopped when the page changed"
    assert any("Running: training “long run”" in p.proto.text for p in at.sidebar.get("progress"))
    assert "long run" not in models(at)
    wait_for_jobs(at)
    assert_clean(at)
    assert models(at)[-1] == "long run"
    assert at.selectbox(key="xwp_active_model").value == "long run"
    entry = at.session_state["xwp_models"]["long run"]
    assert len(entry.meta["history"]["loss"]) == 6  # every epoch, not the one before the switch
    at.switch_page("pages/train.py").run()
    assert any("Trained **long run** for 6 epochs" in s.value for s in at.success)


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
    assert any(f"stopped after epoch {done} of 40" in w.value for w in at.warning)


def test_stop_before_the_first_epoch_keeps_nothing(at):
    import threading

    from xwp.app import jobs
    from xwp.compute import get_executor

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
    assert any("Training was stopped" in w.value for w in at.warning)


def test_explain_page_equals_a_direct_call(at):
    """The maps the page computes on the compute executor are those of xwp.explanation.explain."""
    import numpy as np

    from xwp.app import shared as app_shared
    from xwp.compute import get_executor
    from xwp.explanation import EXPLAIN_DEFAULT, attribution_key, explain

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
        shown, seconds = memo[attribution_key(entry.uid, name, direct.target, x)]
        np.testing.assert_allclose(shown, expected, rtol=1e-10, atol=1e-14, err_msg=name)
        assert seconds > 0
    assert get_executor().stats["calls"] >= before["calls"] + 1 + len(EXPLAIN_DEFAULT)  # prediction + maps
    top = [m for m in at.markdown if m.value.startswith("#### ")]
    assert top and f"{entry.classes[direct.target]}" in top[0].value


def test_explain_upload_good_and_bad_images(at):
    from PIL import Image, ImageDraw

    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("upload").run()
    assert any("Upload" in i.value for i in at.info)
    im = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(im).line([(60, 15), (60, 105)], fill=0, width=12)  # a dark "1" on white
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    at.file_uploader(key="explain_upload").set_value(("one.png", buf.getvalue(), "image/png")).run()
    assert_clean(at)
    assert len(at.get("download_button")) == 3
    at.file_uploader(key="explain_upload").set_value(("junk.png", b"not an image", "image/png")).run()
    assert_clean(at, errors_expected=True)
    assert any("not a readable image" in e.value for e in at.error)


def test_pages_never_import_torch():
    for page in (ROOT / "pages").glob("*.py"):
        for line in page.read_text().splitlines():
            assert not line.strip().startswith(("import torch", "from torch")), f"{page.name}: {line}"
    from xwp.app.frame import PAGES

    assert sorted(f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py")) == sorted(p.path for p in PAGES)


def test_only_the_app_package_imports_streamlit():
    core = [p for p in (ROOT / "xwp").rglob("*.py") if "app" not in p.relative_to(ROOT / "xwp").parts[:-1]]
    assert len(core) > 10
    for path in core:
        for line in path.read_text().splitlines():
            assert not line.strip().startswith(("import streamlit", "from streamlit")), f"{path.name}: {line}"
    assert any("import streamlit" in p.read_text() for p in (ROOT / "xwp" / "app").glob("*.py"))


# --------------------------------------------------------------------------- the bad-input corpus in the app

APP_CASES = [c for c in __import__("corpus").CASES if c.kind in ("checkpoint", "image", "tmnist", "datadir")]


@pytest.mark.parametrize("case", APP_CASES, ids=[c.id for c in APP_CASES])
def test_corpus_uploads_give_clear_errors_and_lose_nothing(case, at, tmp_path):
    """Each bad file through the widget a user would use: a clear st.error, no traceback, models kept."""
    import re

    from corpus import MARKER

    made = case.make(tmp_path)
    before = models(at)
    if case.kind == "checkpoint":
        at.switch_page("pages/train.py").run()
        at.file_uploader(key="checkpoint_upload").set_value((made.name, made.read_bytes(), "application/octet-stream"))
        at.run()
    elif case.kind == "image":
        at.switch_page("pages/explain.py").run()
        at.segmented_control(key="explain_source").set_value("upload").run()
        at.file_uploader(key="explain_upload").set_value((made.name, made.read_bytes(), "image/png")).run()
    elif case.kind == "tmnist":
        at.switch_page("pages/train.py").run()
        at.selectbox(key="train_dataset").set_value("tmnist").run()
        at.file_uploader(key="train_tmnist_upload").set_value((made.name, made.read_bytes(), "text/csv")).run()
        at.number_input(key="train_epochs").set_value(1)
        button(at, "Train").click().run()
    else:
        at.switch_page("pages/train.py").run()
        at.selectbox(key="train_dataset").set_value("fashion-mnist").run()
        at.text_input(key="train_dir_fashion-mnist").set_value(str(made)).run()
        button(at, "Train").click().run()
    assert not at.exception, [e.value for e in at.exception]
    if case.id == "no-initial-state":  # the app keeps it: the other methods work; XWP/XWPᶜ say why not
        assert any("no initial state" in t.value for t in at.toast), [t.value for t in at.toast]
        assert models(at)[-1] == "noinit"
        at.switch_page("pages/explain.py").run()
        at.segmented_control(key="explain_source").set_value("test").run()
        assert any("initial weights" in i.value for i in at.info)
        return
    if case.expect is None:
        assert not at.error, [e.value for e in at.error]
        assert len(at.get("download_button")) == 3  # the maps of the uploaded image
    else:
        assert any(re.search(case.expect, e.value) for e in at.error), [e.value for e in at.error]
    assert models(at)[: len(before)] == before  # nothing lost
    assert not (tmp_path / MARKER).exists()


def test_results_survive_errors(at):
    """A finished comparison and a trained model are still there after a run of bad inputs."""
    train_small(at, "digits", epochs=1, name="keep me")
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="compare_methods").set_value(["xwp"])
    at.number_input(key="compare_n").set_value(3)
    button(at, "Run comparison").click().run()
    table = at.dataframe[0].value
    at.switch_page("pages/train.py").run()
    at.file_uploader(key="checkpoint_upload").set_value(("evil.pt", b"\x80\x04junk", "application/octet-stream"))
    at.run()
    train_small(at, "digits", hidden="0")
    assert any("at least 1" in e.value for e in at.error)
    assert "keep me" in models(at)
    at.switch_page("pages/compare.py").run()
    assert_clean(at)
    assert at.dataframe[0].value.equals(table)


def test_shared_model_and_data_are_never_modified_by_sessions(at):
    """Several sessions attribute with every method on the cached default model: its tensors stay bit-identical."""
    from streamlit.testing.v1 import AppTest

    from xwp.app import shared as app_shared
    from xwp.attribution import METHODS

    shared = app_shared._load_default(app_shared.default_model_path())
    data = app_shared._shared_dataset("typeface", "test", None)

    def fingerprint():
        tensors = [*shared.model.state_dict().values(), *shared.initial_model.state_dict().values(), data.images]
        return [t.clone() for t in tensors]

    before = fingerprint()
    sessions = [at] + [AppTest.from_file(APP, default_timeout=TIMEOUT).run() for _ in range(2)]
    for app in sessions:
        app.switch_page("pages/explain.py").run()
        app.segmented_control(key="explain_source").set_value("test").run()
        app.multiselect(key="explain_methods").set_value([m for m in METHODS if m not in ("shapley", "kernelshap")])
        app.run()
        assert_clean(app)
        app.switch_page("pages/compare.py").run()
        app.multiselect(key="compare_methods").set_value(["xwp", "xwpc", "lrp", "deeplift"])
        app.number_input(key="compare_n").set_value(3)
        button(app, "Run comparison").click().run()
        assert_clean(app)
    for a, b in zip(before, fingerprint(), strict=True):
        assert torch.equal(a, b)
    assert not any(hasattr(m, "rule") or m._forward_hooks for m in shared.model.modules())
