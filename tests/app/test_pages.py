"""Every page through AppTest: the default flow, the router, the default model, Weights."""

from __future__ import annotations

from tests.support.app import (
    APP,
    TIMEOUT,
    assert_clean,
    button,
    models,
    shown,
    train_small,
)


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
    from xwp.data.datasets import DATASETS
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

