"""The Streamlit app through ``streamlit.testing.v1.AppTest``: every page, the default flow, user errors.

The default model is trained for 1 epoch (``XWP_DEFAULT_EPOCHS``) into a temporary cache
shared by this module; ``st.cache_resource`` keeps it for every AppTest here.
"""

from __future__ import annotations

import io
import re
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
    assert not app.exception, [shown(e) for e in app.exception]
    if not errors_expected:
        assert not app.error, [shown(e) for e in app.error]


def shown(element) -> str:
    """The text a Markdown element shows: its body without the backslash escapes of ``plain_text``."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", str(element.value))


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
    """The jobs' owner id of ``app``'s session: its workspace's (see xwp.app.jobs.owner)."""
    from xwp.app.workspace_glue import WS_KEY

    return f"workspace:{app.session_state[WS_KEY].id}"


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
    assert [d.proto.label for d in downloads] == ["Download “Default\\: typeface digits”"]  # the active model, escaped
    assert [u.proto.label for u in at.get("file_uploader")] == ["Upload a checkpoint"]


def test_train_then_explain_then_compare(at):
    train_small(at, "digits", epochs=2, name="small digits")
    assert_clean(at)
    assert any("Trained" in shown(s) for s in at.success)
    assert models(at)[-1] == "small digits"
    assert at.selectbox(key="xwp_active_model").value == "small digits"
    assert any(m.label == "Test accuracy" for m in at.metric)

    at.switch_page("pages/explain.py").run()
    assert_clean(at)
    assert any("Draw a digit" in shown(i) for i in at.info)  # the canvas is blank in AppTest
    at.segmented_control(key="explain_source").set_value("test").run()
    assert_clean(at)
    assert len(at.get("download_button")) == 3  # PNG, NPY, CSV
    assert any("Time per method" in shown(c) for c in at.caption)
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
    assert len(at.get("download_button")) == 3  # more of the page: tests/test_compare_page.py
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
    from xwp import uploads
    from xwp.config import Limits

    monkeypatch.setattr(uploads, "LIMITS", Limits(max_upload_bytes=1000))
    at.switch_page("pages/train.py").run()
    at.file_uploader(key="checkpoint_upload").set_value(("big.safetensors", b"0" * 2000, "application/octet-stream"))
    at.run()
    assert_clean(at, errors_expected=True)
    assert any("limited to" in shown(e) for e in at.error)


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


def wait_until_ended(app, kind: str, timeout: float = TIMEOUT) -> None:
    """Wait until ``app``'s jobs of ``kind`` have ended, without a run (so nothing collects them)."""
    import time

    from xwp.app import jobs

    deadline = time.monotonic() + timeout
    while jobs.running(owner(app), kind):
        assert time.monotonic() < deadline, "a job did not end in time"
        time.sleep(0.05)


def test_training_outlives_a_page_switch_and_is_saved_to_the_workspace(at, monkeypatch):
    """Issue 15, point 2: switching to Explain during a run neither stops it nor keeps a weaker model.

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
    assert any("Training was stopped" in shown(w) for w in at.warning)


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

APP_KINDS = ("checkpoint", "image", "tmnist", "datadir", "datapath", "train", "evaluate")
APP_CASES = [c for c in __import__("corpus").CASES if c.app]


def walk(node):
    """Every element of an AppTest tree (depth first)."""
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


def page_text(app) -> str:
    """Everything the page holds as text: each element's protobuf (bodies, labels, options, captions)."""
    return "\n".join(str(getattr(n, "proto", "")) for n in walk(app._tree))


def server_secrets() -> list[str]:
    """Long values of this process's real environment (what /proc/self/environ would show)."""
    raw = Path("/proc/self/environ").read_bytes().split(b"\0")
    values = [item.partition(b"=")[2].decode(errors="replace") for item in raw]
    return [v for v in values if len(v) >= 24]


def test_app_cases_cover_every_app_kind():
    assert {c.kind for c in APP_CASES} == set(APP_KINDS)
    assert sum(c.kind == "datapath" for c in APP_CASES) >= 8


@pytest.mark.parametrize("case", APP_CASES, ids=[c.id for c in APP_CASES])
def test_corpus_uploads_give_clear_errors_and_lose_nothing(case, at, tmp_path, monkeypatch):
    """Each bad file or path through the widget a user would use: its exact expected outcome, no
    traceback, models kept, and no planted secret or server environment value on the page."""
    from corpus import MARKER, SECRET

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
        wait_for_jobs(at)  # a training that started is a job: its outcome shows once it ends
    elif case.kind == "datadir":  # the operator allowed the folder; its files are broken
        monkeypatch.setenv("XWP_DATA_DIRS", str(tmp_path))
        at.switch_page("pages/train.py").run()
        at.selectbox(key="train_dataset").set_value("fashion-mnist").run()
        at.text_input(key="train_dir_fashion-mnist").set_value(str(made)).run()
        button(at, "Train").click().run()
        wait_for_jobs(at)  # a training that started is a job: its outcome shows once it ends
    elif case.kind == "train":  # the hidden sizes box (the number inputs cannot hold the other cases)
        train_small(at, "digits", hidden=made["hidden"])
    elif case.kind == "evaluate":  # more images than the active model's test split
        at.switch_page("pages/compare.py").run()
        at.multiselect(key="compare_methods").set_value(["xwp"])
        at.number_input(key="compare_n").set_value(made["n"])
        button(at, "Run comparison").click().run()
    else:  # datapath: a visitor types a path; only tmp/allowed is allowed
        monkeypatch.setenv("XWP_DATA_DIRS", str(tmp_path / "allowed"))
        at.switch_page("pages/train.py").run()
        at.selectbox(key="train_dataset").set_value(made["dataset"]).run()
        box = "train_tmnist_path" if made["dataset"] == "tmnist" else f"train_dir_{made['dataset']}"
        at.text_input(key=box).set_value(made["path"]).run()
        at.number_input(key="train_epochs").set_value(1)
        at.text_input(key="train_hidden").set_value("16")
        button(at, "Train").click().run()
        wait_for_jobs(at)  # a training that started is a job: its outcome shows once it ends
    assert not at.exception, [shown(e) for e in at.exception]
    text = page_text(at)
    assert SECRET not in text
    assert not [v for v in server_secrets() if v in text]
    if case.id == "no-initial-state":  # the app keeps it: the other methods work; XWP/XWPᶜ say why not
        assert any("no initial state" in shown(t) for t in at.toast), [shown(t) for t in at.toast]
        assert models(at)[-1] == "noinit"
        at.switch_page("pages/explain.py").run()
        at.segmented_control(key="explain_source").set_value("test").run()
        assert any("initial weights" in shown(i) for i in at.info)
        return
    if case.expect is None and case.kind == "datapath":
        assert not at.error, [shown(e) for e in at.error]
        assert any("Trained" in shown(s) for s in at.success)
    elif case.expect is None:
        assert not at.error, [shown(e) for e in at.error]
        assert len(at.get("download_button")) == 3  # the maps of the uploaded image
    else:
        assert any(re.search(case.expect, shown(e)) for e in at.error), [shown(e) for e in at.error]
        assert all(len(shown(e)) <= 400 and "\n" not in shown(e) for e in at.error)
    assert models(at)[: len(before)] == before  # nothing lost
    assert not (tmp_path / MARKER).exists()
    if case.kind == "checkpoint" and case.expect is not None:  # the error shows once, then the page works
        at.run()
        assert not at.exception and not at.error, [shown(e) for e in at.error]


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
    assert any("at least 1" in shown(e) for e in at.error)
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


# --------------------------------------------------------------------------- issue 15: workspaces, scales, photos


def fresh_app(monkeypatch, workspace: str | None = None):
    """A new browser session (optionally opening ``?workspace=<id>``), like a reload or a new tab."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    init = PagesManager.__init__

    def init_v2(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_v2)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if workspace is not None:
        app.query_params["workspace"] = workspace
    return app.run()


def workspace_of(app):
    from xwp.app.workspace_glue import WS_KEY

    return app.session_state[WS_KEY]


def upload_checkpoint(app, file_name: str, data: bytes) -> None:
    app.switch_page("pages/train.py").run()
    app.file_uploader(key="checkpoint_upload").set_value((file_name, data, "application/octet-stream"))
    app.run()


def small_checkpoint(seed: int = 1, **meta) -> bytes:
    from xwp.checkpoint import checkpoint_bytes
    from xwp.models import MLP

    meta = {"dataset": "digits", "classes": list("0123456789"), **meta}
    return checkpoint_bytes(MLP((784, 16, 10), seed=seed), meta)


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

    from xwp.app.session import MODELS_KEY

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
    from xwp.app.session import COMPARE_KEY

    at.switch_page("pages/compare.py").run()
    at.multiselect(key="compare_methods").set_value(["xwp", "occlusion"])
    at.number_input(key="compare_n").set_value(3)
    button(at, "Run comparison").click().run()
    assert_clean(at)
    ws = workspace_of(at)
    result = at.session_state[COMPARE_KEY]
    monkeypatch.setattr(workspace_glue, "workspace", lambda: ws)  # outside a script run: the same workspace
    [saved] = ws.comparisons()  # the page saved it when the run finished
    assert result["saved_id"] == saved.id
    assert "3 images" in saved.name

    again = fresh_app(monkeypatch, ws.id)
    monkeypatch.undo()
    assert any("1 comparison" in e.label for e in again.sidebar.expander)
    [open_button] = [b for b in again.sidebar.button if b.key == f"ws_copen_{saved.id}"]
    open_button.click().run()
    assert_clean(again)
    assert again.session_state[COMPARE_KEY]["saved_id"] == saved.id
    again.switch_page("pages/compare.py").run()  # the real app switches there itself; AppTest does not follow
    assert_clean(again)
    assert list(again.dataframe[0].value["method"]) == list(at.dataframe[0].value["method"])


def test_comparison_outlives_a_page_switch_and_is_saved_to_the_workspace(at, monkeypatch):
    """Issue 15, point 2 for Compare: the comparison is a job; leaving the page, or a reload, does not stop it."""
    import threading

    from xwp.app import jobs
    from xwp.app.session import COMPARE_KEY
    from xwp.compute import get_executor

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
    assert result["status"] == "done" and result["pending"] == [] and result["saved_id"] == saved.id
    at.switch_page("pages/compare.py").run()
    assert_clean(at)
    assert list(at.dataframe[0].value["method"]) == ["XWP", "Occlusion", "Random"]

    again = fresh_app(monkeypatch, ws.id)
    assert any("1 comparison" in e.label for e in again.sidebar.expander)


def test_stop_on_the_sidebar_keeps_the_finished_methods_and_resume_completes(at, monkeypatch):
    """The sidebar's Stop ends a comparison at its next batch; Resume on the page runs the rest as a new job."""
    import threading

    from xwp.app import compare_page
    from xwp.app.session import COMPARE_KEY

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
    assert result["status"] == "stopped" and [ev.methods for ev in result["parts"]] == [["xwp"]]
    assert result["pending"] == ["occlusion", "random"]
    at.switch_page("pages/compare.py").run()
    assert_clean(at)
    assert any("Stopped after 1 of 3 methods" in shown(w) for w in at.warning)
    assert list(at.dataframe[0].value["method"]) == ["XWP"]
    button(at, "Resume").click().run()
    assert_clean(at)
    result = at.session_state[COMPARE_KEY]
    assert result["status"] == "done" and result["pending"] == []
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
    from xwp.scales import MEANING

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


def noisy_photo(digit: str = "7", noise: float = 0.12, seed: int = 0) -> bytes:
    """A dark digit on light paper with a lighting gradient and Gaussian noise, as PNG bytes."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("L", (160, 160), 0)
    font = ImageFont.truetype("DejaVuSans-Bold.ttf", 110)
    ImageDraw.Draw(im).text((40, 10), digit, fill=255, font=font)
    ink = np.asarray(im, dtype=np.float64) / 255
    rng = np.random.default_rng(seed)
    light = 0.75 + 0.2 * np.linspace(0, 1, 160)[None, :]
    gray = np.clip(light - 0.6 * ink + rng.normal(0, noise, ink.shape), 0, 1)
    buf = io.BytesIO()
    Image.fromarray((gray * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


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
    from xwp.app.session import MODELS_KEY

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
    from xwp.data import FASHION_CLASSES

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


# --------------------------------------------------------------------------- issue 9: paths, Markdown, memory

UNSAFE_MARKDOWN = re.compile(r"\]\(|!\[|<img|<a |:red\[|\$\\frac")


def markdown_bodies(app) -> list[str]:
    """Every Markdown text of the page: bodies of Markdown-rendering elements, widget labels, image captions."""
    kinds = {"markdown", "caption", "error", "warning", "info", "success", "toast", "title", "header", "subheader"}
    bodies = []
    for node in walk(app._tree):
        if getattr(node, "type", None) in kinds and isinstance(getattr(node, "value", None), str):
            bodies.append(node.value)
        proto = getattr(node, "proto", None)
        if proto is not None and hasattr(proto, "label") and isinstance(proto.label, str):
            bodies.append(proto.label)
        if proto is not None and hasattr(proto, "imgs"):
            bodies += [img.caption for img in proto.imgs]
    return bodies


def rendered_unsafe(body: str) -> bool:
    """Whether Markdown ``body`` would render a link, an image, HTML, a colour directive or LaTeX from a name."""
    return bool(UNSAFE_MARKDOWN.search(re.sub(r"\\[!-/:-@\[-`{-~]", "", body)))  # drop CommonMark escapes


HOSTILE_CLASSES = [
    "![x](http://evil/x.png)",
    "[link](http://evil)",
    ":red[big] :smile:",
    "$\\frac{$",
    "<img src=x onerror=alert(1)>",
    "**bold** _it_",
    "six",
    "seven",
    "eight",
    "nine",
]


def test_markdown_in_a_checkpoint_shows_as_typed_text(at):
    """Class names, dataset and file name from a checkpoint never render as links, images, HTML or LaTeX."""
    from xwp.checkpoint import checkpoint_bytes
    from xwp.models import MLP

    data = checkpoint_bytes(MLP((784, 16, 10), seed=3), {"dataset": "typeface", "classes": HOSTILE_CLASSES})
    at.switch_page("pages/train.py").run()
    name = "![pic](evil.png) [up](evil:x)"  # a file name has no "/"
    at.file_uploader(key="checkpoint_upload").set_value((f"{name}.safetensors", data, "x")).run()
    assert_clean(at)
    assert models(at)[-1] == name
    seen = markdown_bodies(at)
    at.switch_page("pages/home.py").run()
    assert_clean(at)
    seen += markdown_bodies(at)
    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("test").run()
    at.multiselect(key="explain_methods").set_value(["xwp", "saliency"]).run()
    for target in (0, 1, 3):
        at.selectbox(key="explain_class").set_value(target).run()
        at.selectbox(key="explain_target").set_value(target).run()
        assert_clean(at)
        seen += markdown_bodies(at)
    at.switch_page("pages/weights.py").run()
    at.selectbox(key="weights_sort").set_value("drive").run()
    at.selectbox(key="weights_class").set_value(3).run()
    at.toggle(key="weights_weigh").set_value(True).run()
    assert_clean(at)
    seen += markdown_bodies(at)
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="compare_methods").set_value(["xwp"])
    at.number_input(key="compare_n").set_value(2)
    button(at, "Run comparison").click().run()
    assert_clean(at)
    seen += markdown_bodies(at)
    at.switch_page("pages/train.py").run()
    seen += markdown_bodies(at)
    unescaped = [re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", body) for body in seen]
    for typed in ("![x](http://evil/x.png)", "[link](http://evil)", "$\\frac{$", name):  # the names are on the page ...
        assert any(typed in body for body in unescaped), typed
    assert not [body for body in seen if rendered_unsafe(body)]  # ... as text only


def test_rendered_unsafe_detects_raw_markdown():
    """The check above can fail: raw names are unsafe, plain_text makes them safe."""
    from xwp.safety import plain_text

    for name in HOSTILE_CLASSES[:5]:
        assert rendered_unsafe(f"class {name}") and not rendered_unsafe(f"class {plain_text(name)}")


@pytest.mark.parametrize("dataset", ["typeface", "tmnist"])
def test_checkpoint_naming_proc_environ_reads_nothing_from_it(at, tmp_path, monkeypatch, dataset):
    """data_dir=/proc/self/environ in a checkpoint: it loads, its test images come from the operator's
    folder (tmnist) or the built-in set (typeface), and nothing under /proc is opened or shown."""
    import builtins
    import os

    from corpus import _forged, tmnist_csv

    secrets = server_secrets()
    ops = tmp_path / "operator"
    ops.mkdir()
    (ops / "TMNIST_Data.csv").write_bytes(tmnist_csv(10))
    monkeypatch.setenv("XWP_DATA_DIRS", str(ops))
    opened = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_os_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    data = _forged(meta={"dataset": dataset, "data_dir": "/proc/self/environ"})
    at.switch_page("pages/train.py").run()
    at.file_uploader(key="checkpoint_upload").set_value(("environ.safetensors", data, "x")).run()
    assert_clean(at)
    assert models(at)[-1] == "environ"
    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("test").run()
    assert_clean(at)
    assert len(at.get("download_button")) == 3  # maps of a test image from the allowed folder / built-in set
    at.switch_page("pages/weights.py").run()
    at.toggle(key="weights_weigh").set_value(True).run()
    assert_clean(at)
    assert not [p for p in opened if p.startswith("/proc")]
    text = page_text(at)
    assert not [v for v in secrets if v in text]
    if dataset == "tmnist":
        assert any(str(ops) in p for p in opened)  # the operator's TMNIST file was read


def test_typed_paths_outside_the_allowed_folders_are_refused_with_one_message(at, tmp_path, monkeypatch):
    """/etc/shadow, /proc/self/environ and a missing file give the same message; nothing is read."""
    monkeypatch.setenv("XWP_DATA_DIRS", str(tmp_path))
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train_dataset").set_value("tmnist").run()
    messages = []
    for path in ("/etc/shadow", "/proc/self/environ", str(tmp_path / "missing.csv")):
        at.text_input(key="train_tmnist_path").set_value(path).run()
        button(at, "Train").click().run()
        assert_clean(at, errors_expected=True)
        messages.append([shown(e) for e in at.error])
    assert messages[0] == messages[1] == messages[2] and len(messages[0]) == 1
    assert "not in a data folder" in messages[0][0] and "shadow" not in messages[0][0]


def test_operator_folders_are_offered_for_picking(at, tmp_path, monkeypatch):
    """A folder the operator allowed that holds TMNIST_Data.csv is offered; training from it works."""
    from corpus import tmnist_csv

    (tmp_path / "tm").mkdir()
    (tmp_path / "tm" / "TMNIST_Data.csv").write_bytes(tmnist_csv(10))
    monkeypatch.setenv("XWP_DATA_DIRS", str(tmp_path))
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train_dataset").set_value("tmnist").run()
    pick = at.selectbox(key="train_pick_tmnist")
    assert list(pick.options) == [str((tmp_path / "tm").resolve())]
    at.number_input(key="train_epochs").set_value(1)
    at.text_input(key="train_hidden").set_value("16")
    button(at, "Train").click().run()
    wait_for_jobs(at)
    assert_clean(at)
    assert any("Trained" in shown(s) for s in at.success)
    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("test").run()
    assert_clean(at)


def test_start_up_data_dir_argument_is_registered(tmp_path, monkeypatch):
    from xwp import config
    from xwp.app import safe

    monkeypatch.setattr(config, "_startup_dirs", [])
    got = safe.register_startup_dirs(["--data-dir", str(tmp_path), f"--data-dir={tmp_path / 'no'}", "--other"])
    assert got == [tmp_path.resolve()]
    assert config.allowed_data_path(tmp_path) == tmp_path.resolve()
    with pytest.raises(config.XWPError, match="not in a data folder"):
        config.allowed_data_path("/etc")


def test_session_memory_stays_under_the_stated_bound(at):
    """16 uploaded checkpoints: the session keeps at most 8 models and no checkpoint bytes."""
    from xwp.app import safe
    from xwp.app.session import MAX_SESSION_MODELS
    from xwp.checkpoint import checkpoint_bytes
    from xwp.models import MLP

    at.switch_page("pages/train.py").run()
    sizes = (784, 400, 100, 10)
    for k in range(16):
        data = checkpoint_bytes(MLP(sizes, seed=k), {"dataset": "typeface"})
        at.file_uploader(key="checkpoint_upload").set_value((f"m{k}.safetensors", data, "x")).run()
        assert_clean(at)
    assert len(models(at)) == MAX_SESSION_MODELS
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    per_model = safe.model_bytes(params)
    state = at._session_state.filtered_state  # what st.session_state holds, widgets (the uploader) included
    used = safe.session_bytes(state)
    # 8 models, the latest upload the uploader holds, and the memo of a session that only uploaded
    bound = MAX_SESSION_MODELS * per_model + len(data) + 8 * 2**20
    print(f"session holds {used / 2**20:.1f} MiB; bound {bound / 2**20:.1f} MiB ({len(data) / 2**20:.1f} MiB files)")
    assert used <= bound
    assert not [v for v in state.values() if isinstance(v, bytes) and len(v) > 100_000]


def test_uploads_old_versions_stored_are_removed(tmp_path, monkeypatch):
    from xwp.app import safe

    monkeypatch.setenv("XWP_CACHE_DIR", str(tmp_path))
    (tmp_path / "uploads").mkdir()
    old = [tmp_path / "uploads" / f"{'ab' * 10}{suffix}" for suffix in (".csv", ".csv.gz")]
    keep = tmp_path / "uploads" / "notes.csv"
    for path in [*old, keep]:
        path.write_bytes(b"names,labels\n")
    assert sorted(safe.remove_old_uploads()) == sorted(old)
    assert keep.exists() and not any(p.exists() for p in old)


def test_checkpoint_download_is_built_on_click_and_loads():
    """The download keeps no bytes: a function builds them; they load back to the same weights, no data_dir."""
    from xwp.app.session import SessionModel
    from xwp.app.train_page import checkpoint_file
    from xwp.checkpoint import load_checkpoint
    from xwp.models import MLP

    model = MLP((784, 16, 10), seed=2)
    entry = SessionModel("a/b: c", model, model.initial_model(), {"dataset": "digits", "data_dir": "/etc"})
    build, name = checkpoint_file(entry)
    assert callable(build) and name == "a-b--c.safetensors"
    ckpt = load_checkpoint(build())
    assert "data_dir" not in ckpt.meta and ckpt.meta["dataset"] == "digits"
    pairs = zip(ckpt.model.state_dict().values(), model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
