"""The app with CNN models (issue 12), through ``streamlit.testing.v1.AppTest``.

Train offers the architecture; an uploaded CNN checkpoint works on Explain and Compare;
Weights draws a CNN's first-layer kernels; the sidebar names the active family. Helpers
come from tests/test_app.py (same private cache and 1-epoch default model).
"""

from __future__ import annotations

from tests import test_app as base
from tests.test_app import assert_clean, button, models, shown

app_env = base.app_env  # the module's private cache and 1-epoch default model
at = base.at  # a fresh session on the home page


def small_cnn_checkpoint(seed: int = 1) -> bytes:
    """A tiny CNN checkpoint (4 and 8 channels, 3x3) for the digits, with its initial state."""
    from xwp.checkpoint import checkpoint_bytes
    from xwp.models import CNN

    model = CNN(channels=(4, 8), kernel=3, hidden=(16,), seed=seed)
    return checkpoint_bytes(model, {"dataset": "digits", "classes": list("0123456789")})


def train_cnn(app, dataset: str = "digits", name: str = "tiny cnn"):
    """Train a 1-epoch CNN (4, 8 channels, 3x3) on the Train page."""
    app.switch_page("pages/train.py").run()
    app.selectbox(key="train_dataset").set_value(dataset).run()
    app.segmented_control(key="train_arch").set_value("cnn").run()
    app.number_input(key="train_epochs").set_value(1)
    app.text_input(key="train_channels").set_value("4,8")
    app.text_input(key="train_head").set_value("16")
    app.text_input(key="train_name").set_value(name)
    button(app, "Train").click().run()
    return app


def test_train_page_offers_the_architecture(at):
    at.switch_page("pages/train.py").run()
    arch = at.segmented_control(key="train_arch")
    assert arch.value == "mlp" and list(arch.options) == ["MLP", "CNN"]
    assert at.text_input(key="train_hidden").value == "400,100"
    assert not [t for t in at.text_input if t.key in ("train_channels", "train_head")]
    arch.set_value("cnn").run()
    assert_clean(at)
    assert at.text_input(key="train_channels").value == "32,64"
    assert at.text_input(key="train_head").value == "128"
    assert at.number_input(key="train_kernel").value == 3
    assert not [t for t in at.text_input if t.key == "train_hidden"]


def test_train_a_cnn_on_the_train_page(at):
    train_cnn(at)
    assert_clean(at)
    assert any("Trained" in shown(s) for s in at.success)
    assert models(at)[-1] == "tiny cnn" and at.selectbox(key="xwp_active_model").value == "tiny cnn"
    entry = at.session_state["xwp_models"]["tiny cnn"]
    assert entry.model.family == "cnn" and entry.model.channels == (4, 8) and entry.model.hidden == (16,)
    assert entry.has_initial and entry.meta["dataset"] == "digits"


def test_bad_cnn_sizes_are_one_clear_error(at):
    at.switch_page("pages/train.py").run()
    at.segmented_control(key="train_arch").set_value("cnn").run()
    at.text_input(key="train_channels").set_value("4,x")
    button(at, "Train").click().run()
    assert_clean(at, errors_expected=True)
    assert any("CNN channels must be whole numbers" in shown(e) for e in at.error)
    at.text_input(key="train_channels").set_value("4,8,8,8,8")
    button(at, "Train").click().run()
    assert_clean(at, errors_expected=True)
    assert any("channels must be a list of 1 to 4" in shown(e) for e in at.error), [shown(e) for e in at.error]
    assert models(at) == ["Default: typeface digits"]
