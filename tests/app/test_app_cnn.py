"""The app with CNN models through ``streamlit.testing.v1.AppTest``.

Train offers the architecture; an uploaded CNN checkpoint works on Explain and Compare;
Weights draws a CNN's first-layer kernels; the sidebar names the active family. Helpers
come from tests/support/app.py; the cache and the default model from tests/app/conftest.py.
"""

from __future__ import annotations

import pytest

from tests.support import app as base
from tests.support.app import assert_clean, button, models, shown, upload_checkpoint

pytestmark = pytest.mark.slow  # an AppTest run of the whole app per test: the full suite runs them, not the fast lane


def small_cnn_checkpoint(seed: int = 1) -> bytes:
    """A tiny CNN checkpoint (4 and 8 channels, 3x3) for the digits, its weights moved away from its initial state."""
    import torch

    from xwp.checkpoint import checkpoint_bytes
    from xwp.models import CNN

    model = CNN(channels=(4, 8), kernel=3, hidden=(16,), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
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
    return base.wait_for_jobs(app)  # training is a job (xwp.app.jobs): wait for it, then a run collects it


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
    # saved to the workspace with its per-epoch kernels, like an MLP (it once failed: snapshots had to be 2-D)
    assert not [w for w in at.warning if "could not be saved" in shown(w)]
    [saved] = base.workspace_of(at).models()
    assert saved.name == "tiny cnn" and saved.id == entry.saved_id and saved.has_snapshots
    snaps = base.workspace_of(at).snapshots(saved.id)
    assert sorted(snaps) == [0, 1] and snaps[1].shape == (4, 1, 3, 3)
    at.switch_page("pages/weights.py").run()  # the trained CNN's kernels
    assert_clean(at)
    assert [d.proto.label for d in at.get("download_button")] == ["Kernel grid (PNG)", "Channel figure (PNG)"]


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


def sidebar_lines(app) -> list[str]:
    return [line for t in app.sidebar.text for line in str(t.value).splitlines()]


def test_uploaded_cnn_works_on_explain_and_compare(at):
    assert "Family: MLP (fully connected)" in sidebar_lines(at)  # the default model
    upload_checkpoint(at, "tinycnn.safetensors", small_cnn_checkpoint())
    assert_clean(at)
    assert at.selectbox(key="xwp_active_model").value == "tinycnn"
    lines = sidebar_lines(at)
    assert "Family: CNN (convolutional)" in lines and "Architecture: cnn 1x28x28 c4-c8 k3 p1 | 16-10" in lines

    at.switch_page("pages/explain.py").run()
    at.segmented_control(key="explain_source").set_value("test").run()
    at.multiselect(key="explain_methods").set_value(["xwp", "xwpc", "occlusion", "ig"]).run()
    assert_clean(at)
    assert any("Time per method" in shown(c) for c in at.caption)
    assert len(at.get("download_button")) == 3  # PNG, NPY, CSV of the maps
    assert not [i for i in at.info if "does not apply" in shown(i)]

    at.switch_page("pages/compare.py").run()
    at.multiselect(key="compare_methods").set_value(["xwp", "xwpc", "occlusion"])
    at.number_input(key="compare_n").set_value(4)
    button(at, "Run comparison").click().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["method"]) == ["XWP", "XWPᶜ", "Occlusion", "Random"]


def test_weights_page_draws_a_cnns_kernels(at):
    upload_checkpoint(at, "tinycnn.safetensors", small_cnn_checkpoint())
    at.switch_page("pages/weights.py").run()
    assert_clean(at)
    labels = [d.proto.label for d in at.get("download_button")]
    assert labels == ["Kernel grid (PNG)", "Channel figure (PNG)"]
    assert len(at.get("image")) == 2  # the grid and the one channel
    assert any("cannot show for a CNN" in shown(i) for i in at.info)
    assert not [s for s in at.selectbox if s.key == "weights_sort"]  # the MLP's controls are not offered
    [channel] = [s for s in at.selectbox if s.key and s.key.startswith("weights_channel_")]
    assert list(channel.options) == [f"#{c}" for c in range(4)]
    channel.set_value(3).run()
    assert_clean(at)
    stats = at.table[0].value
    assert "‖W − W₀‖ change" in list(stats.index)
    from xwp.models import CNN
    from xwp.viz.kernels import first_kernels

    entry = at.session_state["xwp_models"]["tinycnn"]
    assert isinstance(entry.model, CNN)
    w0, w1 = first_kernels(entry.model, entry.initial_model)
    expected = float(((w1[3] - w0[3]) ** 2).sum() ** 0.5)  # channel #3's kernel moved by this much
    assert stats.loc["‖W − W₀‖ change", "value"] == pytest.approx(expected, rel=1e-9) and expected > 0


def test_cnn_without_initial_state_shows_its_trained_kernels(at):
    import json
    import struct

    from safetensors.torch import load, save

    good = small_cnn_checkpoint()
    n = struct.unpack("<Q", good[:8])[0]
    metadata = json.loads(good[8 : 8 + n])["__metadata__"]
    bare = save({k: v for k, v in load(good).items() if k.startswith("trained.")}, metadata=metadata)
    upload_checkpoint(at, "barecnn.safetensors", bare)
    assert_clean(at)
    assert "Initial state: missing (no XWP/XWPᶜ)" in sidebar_lines(at)
    at.switch_page("pages/weights.py").run()
    assert_clean(at)
    assert any("only its trained kernels" in shown(i) for i in at.info)
    assert len(at.get("image")) == 2
    stats = at.table[0].value
    assert list(stats.index) == ["‖W‖ trained"]
