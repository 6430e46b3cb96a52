"""Paths, Markdown and memory: what a visitor types or uploads never reaches the server or the page as code."""

from __future__ import annotations

import re

import pytest
import torch

from tests.support.app import (
    HOSTILE_CLASSES,
    assert_clean,
    button,
    markdown_bodies,
    models,
    page_text,
    rendered_unsafe,
    server_secrets,
    shown,
    wait_for_jobs,
)

pytestmark = pytest.mark.slow  # an AppTest run of the whole app per test: the full suite runs them, not the fast lane


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

    from tests.support.corpus import _forged, tmnist_csv

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
    from tests.support.corpus import tmnist_csv

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

