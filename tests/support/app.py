"""AppTest helpers: a fresh session, the widgets by label or key, waiting for jobs, the corpus cases in the app."""

from __future__ import annotations

import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


APP = str(ROOT / "streamlit_app.py")


TIMEOUT = 300


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
    from xwp.app.keys import WS_KEY

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


APP_KINDS = ("checkpoint", "image", "tmnist", "datadir", "datapath", "train", "evaluate")


APP_CASES = [c for c in __import__("tests.support.corpus", fromlist=["CASES"]).CASES if c.app]


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


def fresh_app(monkeypatch, workspace: str | None = None):
    """A new browser session (optionally opening ``?workspace=<id>``), like a reload or a new tab."""
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
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if workspace is not None:
        app.query_params["workspace"] = workspace
    return app.run()


def workspace_of(app):
    from xwp.app.keys import WS_KEY

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

