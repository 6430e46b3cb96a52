"""explain() (the Explain page's per-stroke path) against direct registry calls, and its exports."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from xwp.attribution import make_method
from xwp.data.images import canvas_to_input
from xwp.errors import XWPError
from xwp.models import MLP
from xwp.serve.explanation import (
    Explanation,
    attribution_method,
    example_grid,
    explain,
    method_problem,
    method_problems,
)


def _stroke_canvas(points, width=18) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(im).line(points, fill=(255, 255, 255, 255), width=width, joint="curve")
    return np.asarray(im)


@pytest.fixture
def moved():
    """A small MLP whose weights moved away from their initial state."""
    model = MLP((784, 32, 10), seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_explain_function_matches_direct_calls(moved):
    """explain (the per-stroke path) gives the registry's maps and the model's probabilities."""
    model = moved
    x = canvas_to_input(_stroke_canvas([(140, 40), (140, 240)]))
    ex = explain(
        model,
        x,
        target=None,
        methods=("xwp", "xwpc", "random"),
        initial_model=model.initial_model(),
        classes="0123456789",
    )
    with torch.no_grad():
        probs = torch.softmax(model(x), 1)[0].double().numpy()
    np.testing.assert_allclose(ex.probs, probs, rtol=1e-6)
    assert ex.target == ex.predicted == int(probs.argmax())
    model64 = copy.deepcopy(model).double()  # attribution runs in float64
    ref = make_method("xwp", model64, model64.initial_model()).attribute(x.double(), target=ex.target)
    np.testing.assert_allclose(ex.maps["xwp"], ref.reshape(28, 28).numpy(), rtol=1e-9, atol=1e-15)
    assert next(model.parameters()).dtype == torch.float32  # the model is left as it was
    assert set(ex.tiles) == {"xwp", "xwpc", "random"} and all(t[:4] == b"\x89PNG" for t in ex.tiles.values())
    assert ex.download_png()[:8] == b"\x89PNG\r\n\x1a\n"
    bars = ex.probability_html()
    assert bars.count('class="xwp-p"') == len(ex.classes) and bars.count("#c62828") == 1
    assert np.load(io.BytesIO(ex.npy_bytes())).shape == (3, 28, 28)
    csv = ex.csv_bytes().decode().splitlines()
    assert csv[0] == "row,col,input,xwp,xwpc,random" and len(csv) == 785


def test_exports_hold_the_maps(moved):
    """The NPY and CSV downloads contain exactly the maps and the input, in the order of the methods."""
    x = torch.zeros(1, 1, 28, 28)
    x[..., 6:22, 12:16] = 1.0
    ex = explain(moved, x, target=4, methods=("xwpc", "xwp"), initial_model=moved.initial_model())
    assert list(ex.maps) == ["xwpc", "xwp"] and ex.target == 4
    np.testing.assert_array_equal(np.load(io.BytesIO(ex.npy_bytes())), np.stack([ex.maps["xwpc"], ex.maps["xwp"]]))
    import pandas as pd

    table = pd.read_csv(io.BytesIO(ex.csv_bytes()))
    assert list(table.columns) == ["row", "col", "input", "xwpc", "xwp"]
    np.testing.assert_array_equal(table["input"].to_numpy().reshape(28, 28), x[0, 0].numpy())
    np.testing.assert_allclose(table["xwp"].to_numpy().reshape(28, 28), ex.maps["xwp"], rtol=1e-5, atol=1e-12)
    assert (table["row"] * 28 + table["col"]).tolist() == list(range(784))


def test_shared_scale_uses_one_limit(moved):
    x = canvas_to_input(_stroke_canvas([(80, 60), (200, 220)]))
    own = explain(moved, x, methods=("xwp", "random"), initial_model=moved.initial_model())
    one = explain(moved, x, methods=("xwp", "random"), initial_model=moved.initial_model(), shared_scale=True)
    assert own.limits["xwp"] != own.limits["random"]
    from xwp.viz import plots

    assert one.limits["xwp"] == one.limits["random"] == plots.symmetric_limit(own.maps["xwp"], own.maps["random"])


def test_without_initial_state_xwp_is_skipped_with_the_reason(moved):
    x = canvas_to_input(_stroke_canvas([(140, 40), (140, 240)]))
    ex = explain(moved, x, methods=("xwp", "xwpc", "saliency"))
    assert list(ex.maps) == ["saliency"] and set(ex.skipped) == {"xwp", "xwpc"}
    assert "initial weights" in ex.skipped["xwp"]
    assert method_problem("xwp", has_initial=False) == ex.skipped["xwp"]
    assert method_problem("xwp", has_initial=True) is None and method_problem("ig", has_initial=False) is None
    assert ex.classes == [str(i) for i in range(10)]


def test_methods_that_do_not_apply_to_the_model_are_skipped_with_the_reason():
    """A network without hidden layers has no ReLU: Pathwise says so instead of failing; the others run."""
    linear = MLP((784, 10), seed=0)
    x = canvas_to_input(_stroke_canvas([(140, 40), (140, 240)]))
    ex = explain(linear, x, methods=("pathwise", "lrp-gamma-box", "ad-occlusion", "saliency"))
    assert set(ex.maps) == {"lrp-gamma-box", "ad-occlusion", "saliency"} and list(ex.skipped) == ["pathwise"]
    assert ex.skipped["pathwise"].startswith("Pathwise does not apply") and "ReLU" in ex.skipped["pathwise"]
    assert method_problem("pathwise", True, linear, x) == ex.skipped["pathwise"]
    assert method_problem("pathwise", True) is None  # without a model only the initial state is checked
    # the pickers' view (no input yet): every registered method asked about this model
    assert method_problems(linear, has_initial=True) == {"pathwise": ex.skipped["pathwise"]}
    assert set(method_problems(linear, has_initial=False)) == {"pathwise", "xwp", "xwpc"}
    assert method_problems(MLP((784, 16, 10), seed=0), has_initial=True) == {}


def test_bad_target_is_a_clear_error(moved):
    with pytest.raises(XWPError, match=r"0\.\.9"):
        explain(moved, torch.rand(1, 1, 28, 28), target=10, methods=("random",))


def test_memo_keeps_maps_and_is_bounded(moved, monkeypatch):
    """A second call with the same input reuses the memo (same array object); the memo never grows past its size."""
    import xwp.serve.explanation as explanation

    monkeypatch.setattr(explanation, "MEMO_SIZE", 3)
    memo: dict = {}
    x = canvas_to_input(_stroke_canvas([(140, 40), (140, 240)]))
    first = explain(moved, x, methods=("xwp", "xwpc"), initial_model=moved.initial_model(), memo=memo, memo_key="m")
    again = explain(moved, x, methods=("xwp", "xwpc"), initial_model=moved.initial_model(), memo=memo, memo_key="m")
    assert again.maps["xwp"] is first.maps["xwp"] and len(memo) == 2
    other = explain(moved, x, methods=("xwp", "xwpc"), initial_model=moved.initial_model(), memo=memo, memo_key="n")
    assert other.maps["xwp"] is not first.maps["xwp"]
    np.testing.assert_array_equal(other.maps["xwp"], first.maps["xwp"])
    assert len(memo) == 3


def test_float64_copy_is_made_once_and_leaves_the_model(moved):
    from xwp.serve.explanation import _float64

    x = torch.rand(1, 1, 28, 28, dtype=torch.float64)
    a = attribution_method("xwp", moved, moved.initial_model()).attribute(x, target=2)
    assert a.dtype == torch.float64 and next(moved.parameters()).dtype == torch.float32
    assert _float64(moved) is _float64(moved) and next(_float64(moved).parameters()).dtype == torch.float64
    assert _float64(None) is None


def test_example_grid(typeface, trained):
    png = example_grid(trained, typeface[1], trained.initial_model(), typeface[1].classes)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    untrained = MLP((784, 8, 10), seed=0)
    nothing_right = typeface[1].subset(
        torch.nonzero(untrained(typeface[1].images).argmax(1) != typeface[1].labels)[:50, 0]
    )
    assert example_grid(untrained, nothing_right, untrained.initial_model()) is None


def test_explanation_title():
    ex = Explanation(np.zeros((28, 28)), np.array([0.1, 0.9]), 1, 0, {}, {}, {}, {}, ["cat", "dog"])
    assert ex.title == "Predicted dog (90%) · explaining cat"


def test_probability_bars_are_escaped_html_in_class_order():
    """One row per class in order, bar widths = probabilities, the explained class red; names are escaped."""
    import re

    hostile = '<img src=x onerror="alert(1)">'
    long = "a" * 60
    ex = Explanation(np.zeros((28, 28)), np.array([0.25, 0.7, 0.05]), 1, 2, {}, {}, {}, {}, ["cat", hostile, long])
    bars = ex.probability_html()
    assert "<img" not in bars and 'onerror="' not in bars and "&lt;img" in bars
    assert [float(w) for w in re.findall(r"width:([0-9.]+)%", bars)] == [25.0, 70.0, 5.0]
    rows = bars.split('class="xwp-p"')[1:]
    assert len(rows) == 3 and "#c62828" in rows[2] and "#c62828" not in rows[0] + rows[1]
    assert "a" * 23 + "…" in rows[2] and "a" * 25 not in rows[2].split("title=")[1].split(">", 1)[1]
    assert f'title="{long}: 0.050 (explained)"' in rows[2]  # the full name and value in the tooltip
    assert [r.split('class="xwp-v">')[1][:3] for r in rows] == ["25%", "70%", "5%<"]


@pytest.mark.parametrize("make", ["mlp", "cnn"])
def test_explanations_take_the_picture_shape_from_the_model(make):
    """No 28x28 is assumed: a 6x6 MLP and a 12x12 CNN give maps, downloads and CSV rows of their own size."""
    import numpy as np

    from xwp.models import CNN, MLP
    from xwp.serve.explanation import explain, picture_shape

    model = MLP((36, 8, 3), seed=0) if make == "mlp" else CNN(channels=(2,), kernel=3, hidden=(4,), n_classes=3,
                                                              image_size=12, seed=0)  # fmt: skip
    side = 6 if make == "mlp" else 12
    assert picture_shape(model) == (side, side)
    x = torch.rand(1, side * side)
    ex = explain(model, x, methods=("xwp", "occlusion"), initial_model=model.initial_model())
    assert ex.image.shape == (side, side) and all(a.shape == (side, side) for a in ex.maps.values())
    arr = np.load(io.BytesIO(ex.npy_bytes()))
    assert arr.shape == (2, side, side)
    assert ex.csv_bytes().decode().count("\n") == side * side + 1


def test_a_model_the_app_cannot_draw_is_a_clear_error():
    from xwp.models import CNN
    from xwp.serve.explanation import picture_shape

    rgb = CNN(channels=(2,), kernel=3, hidden=(4,), n_classes=3, in_channels=3, image_size=8, seed=0)
    with pytest.raises(XWPError, match="one-channel square"):
        picture_shape(rgb)
