"""Training reaches the accuracies the issue asks for and survives divergence."""

from __future__ import annotations

import pytest
import torch

import xwp
from tests.support import shared_data_dir
from xwp.train import Progress, accuracy, train


def test_typeface_reaches_95_percent_on_unseen_fonts(typeface):
    model = xwp.MLP((784, 400, 100, 10), seed=0)
    history = train(model, typeface[0], typeface[1], epochs=10, seed=0)
    assert len(history.loss) == 10
    assert history.loss[-1] < history.loss[0]
    assert history.test_accuracy[-1] >= 0.95
    assert accuracy(model, typeface[1]) == pytest.approx(history.test_accuracy[-1])
    assert not model.training


@pytest.mark.slow
@pytest.mark.skipif(
    shared_data_dir() is None, reason="real Fashion-MNIST not found beside the checkout (../shared/data)"
)
def test_fashion_mnist_paper_setting_reaches_88_percent():
    train_set = xwp.load_dataset("fashion-mnist", "train", shared_data_dir())
    test_set = xwp.load_dataset("fashion-mnist", "test", shared_data_dir())
    model = xwp.MLP((784, 400, 100, 10), seed=0)
    history = train(model, train_set, test_set, epochs=10, seed=0)
    assert history.test_accuracy[-1] >= 0.88


def test_same_seed_same_result(typeface):
    small = typeface[0].sample(512, seed=0)
    a, b = xwp.MLP((784, 32, 10), seed=1), xwp.MLP((784, 32, 10), seed=1)
    train(a, small, epochs=2, seed=3)
    train(b, small, epochs=2, seed=3)
    torch.testing.assert_close(a.net[0].weight, b.net[0].weight)


def test_divergence_stops_with_last_good_weights(typeface):
    """An image with overflowing values makes the loss NaN mid-epoch: stop, keep the weights before it."""
    poisoned = typeface[0].sample(1024, seed=0)
    poisoned.images = poisoned.images.clone()
    poisoned.images[700] = 3e38
    model = xwp.MLP((784, 64, 10), seed=0)
    start = model.net[0].weight.clone()
    snapshots = []

    def progress(p: Progress):
        snapshots.append(model.net[0].weight.detach().clone())

    with pytest.raises(xwp.TrainingDiverged, match="learning rate") as info:
        train(model, poisoned, epochs=2, batch_size=32, progress=progress, report_every=1, device="cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(model.net[0].weight, start)  # some good steps were kept
    # snapshots[-1] holds the weights that met the poisoned batch; the ones before gave the last finite loss
    assert len(snapshots) >= 2 and torch.equal(model.net[0].weight, snapshots[-2])
    assert info.value.history is not None and "diverged" in info.value.history.stopped
    assert not model.training


def test_exploding_loss_is_flagged(typeface):
    """A huge learning rate with ReLUs rarely gives NaN, but the loss explodes: History says so."""
    model = xwp.MLP((784, 64, 10), seed=0)
    history = train(
        model, typeface[0].sample(1024, seed=0), epochs=2, lr=10.0, optimizer="adam", batch_size=32, schedule="constant"
    )
    assert history.diverging
    ok = train(xwp.MLP((784, 64, 10), seed=0), typeface[0].sample(1024, seed=0), epochs=2)
    assert not ok.diverging


def test_progress_can_stop_training(typeface):
    small = typeface[0].sample(1024, seed=0)
    model = xwp.MLP((784, 16, 10), seed=0)
    calls = []

    def progress(p: Progress):
        calls.append((p.epoch, p.epoch_done, p.fraction))
        return not p.epoch_done  # stop after the first epoch

    history = train(model, small, epochs=5, batch_size=64, progress=progress, report_every=4)
    assert history.epochs == 1 and "stopped" in history.stopped
    assert any(not done for _, done, _ in calls)
    assert all(0 <= f <= 1 for *_, f in calls)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": 0},
        {"epochs": 10_000},
        {"lr": float("nan")},
        {"lr": -1.0},
        {"lr": 1e9},
        {"batch_size": 0},
        {"epochs": 2.5},
        {"optimizer": "lbfgs"},
        {"schedule": "step"},
    ],
)
def test_bad_settings_are_clear_errors(kwargs, typeface):
    model = xwp.MLP((784, 8, 10))
    before = model.net[0].weight.clone()
    with pytest.raises(xwp.XWPError):
        train(model, typeface[0].sample(64), device="cpu", **kwargs)
    assert torch.equal(model.net[0].weight, before)


# --------------------------------------------------------------------------- TrainConfig + fit


def test_fit_is_build_then_train(typeface):
    """fit() gives bit-identical weights, history and metadata to building the MLP and calling train() by hand."""
    from xwp.train import TrainConfig, fit, training_meta

    small_train, small_test = typeface[0].sample(512, seed=0), typeface[1].sample(128, seed=0)
    config = TrainConfig(hidden="32, 16", epochs=2, seed=5, lr=2e-3, batch_size=64, optimizer="adamw", init="kaiming")
    assert config.hidden == (32, 16)
    fitted = fit(config, small_train, small_test, device="cpu")

    model = xwp.MLP((784, 32, 16, 10), seed=5, init="kaiming")
    kwargs = {"epochs": 2, "lr": 2e-3, "batch_size": 64, "optimizer": "adamw", "seed": 5}
    history = train(model, small_train, small_test, device="cpu", **kwargs)
    assert fitted.model.describe() == "784-32-16-10" and fitted.model.init == "kaiming"
    for a, b in zip(fitted.model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fitted.history.loss == history.loss and fitted.history.test_accuracy == history.test_accuracy
    expected = training_meta("typeface", None, small_train.classes, history, **kwargs)
    expected["history"]["seconds"] = fitted.meta["history"]["seconds"]  # wall time differs run to run
    assert fitted.meta == expected


def test_fit_builds_a_cnn_through_the_one_build_path(typeface):
    """TrainConfig(arch="cnn") gives the same CNN as xwp.CNN + train() by hand; its defaults pick the CNN's head."""
    from xwp.train import TrainConfig, build_model, fit

    assert TrainConfig(arch="cnn").hidden == (128,) and TrainConfig().hidden == (400, 100)
    small_train, small_test = typeface[0].sample(256, seed=0), typeface[1].sample(64, seed=0)
    config = TrainConfig(arch="cnn", channels="3,4", kernel=5, hidden=(8,), epochs=1, seed=2, batch_size=64)
    built = build_model(config, (1, 28, 28), 10)
    assert isinstance(built, xwp.CNN) and built.describe() == "cnn 1x28x28 c3-c4 k5 p2 | 8-10"
    fitted = fit(config, small_train, small_test, device="cpu")
    model = xwp.CNN(channels=(3, 4), kernel=5, hidden=(8,), n_classes=10, seed=2)
    train(model, small_train, small_test, device="cpu", epochs=1, batch_size=64, seed=2)
    for a, b in zip(fitted.model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(xwp.XWPError, match="square"):
        build_model(config, 784, 10)  # a CNN needs the image's shape


def test_fit_loads_the_data_it_names(tmp_path):
    from xwp.train import TrainConfig, fit

    fitted = fit(TrainConfig(dataset="digits", hidden=(16,), epochs=1), device="cpu")
    assert fitted.meta["dataset"] == "digits" and fitted.model.sizes == (784, 16, 10)
    assert 0.0 <= fitted.meta["test_accuracy"] <= 1.0 and fitted.history.epochs == 1


def test_fit_stop_callback_ends_training(typeface):
    from xwp.train import TrainConfig, fit

    polls = []

    def stop() -> bool:
        polls.append(1)
        return len(polls) >= 2

    small = typeface[0].sample(1024, seed=0)
    fitted = fit(TrainConfig(hidden=(8,), epochs=5, batch_size=64), small, small, stop=stop, report_every=4)
    assert len(polls) == 2 and "stopped" in fitted.history.stopped and fitted.history.epochs == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hidden": "400,abc"}, "whole numbers"),
        ({"hidden": (0,)}, "at least 1"),
        ({"hidden": (100_000,)}, "limited to"),
        ({"epochs": 0}, "epochs"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"schedule": "step"}, "schedule"),
        ({"arch": "transformer"}, "arch"),
        ({"arch": "cnn", "channels": (0,)}, "channels"),
        ({"arch": "cnn", "kernel": 99}, "kernel"),
        ({"arch": "cnn", "channels": (4, 4, 4, 4, 4)}, "channels"),
    ],
)
def test_bad_config_is_refused_before_any_data_is_loaded(fields, message, monkeypatch):
    import importlib

    from xwp.train import TrainConfig, fit

    train_module = importlib.import_module("xwp.train")  # xwp.train is also the function

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the settings were checked")

    monkeypatch.setattr(train_module, "load_dataset", no_data)
    with pytest.raises(xwp.XWPError, match=message):
        fit(TrainConfig(**fields))
