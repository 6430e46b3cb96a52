"""The bad-input corpus through the app: clear errors, nothing lost, no secret shown."""

from __future__ import annotations

import re

import pytest
import torch

from tests.support.app import (
    APP,
    APP_CASES,
    APP_KINDS,
    TIMEOUT,
    assert_clean,
    button,
    models,
    page_text,
    server_secrets,
    shown,
    train_small,
    wait_for_jobs,
)

pytestmark = pytest.mark.slow  # an AppTest run of the whole app per test: the full suite runs them, not the fast lane


def test_app_cases_cover_every_app_kind():
    assert {c.kind for c in APP_CASES} == set(APP_KINDS)
    assert sum(c.kind == "datapath" for c in APP_CASES) >= 8


@pytest.mark.parametrize("case", APP_CASES, ids=[c.id for c in APP_CASES])
def test_corpus_uploads_give_clear_errors_and_lose_nothing(case, at, tmp_path, monkeypatch):
    """Each bad file or path through the widget a user would use: its exact expected outcome, no
    traceback, models kept, and no planted secret or server environment value on the page."""
    from tests.support.corpus import MARKER, SECRET

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

