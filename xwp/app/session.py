"""Per-session state: the session's models and one-off messages (the keys: :mod:`xwp.app.keys`).

Every user's models live in ``st.session_state`` (one dict per browser session, switched
in the sidebar); nothing here is shared between sessions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from xwp.app.keys import ACTIVE_KEY, FLASH_KEY, MEMO_KEY, MODELS_KEY, PENDING_KEY
from xwp.checkpoint import Checkpoint
from xwp.data.datasets import DATASETS
from xwp.models import MLP
from xwp.safety import plain_text

MAX_SESSION_MODELS = 8


@dataclass(eq=False)
class SessionModel:
    """A model of this session: the network, its initial state (None if unknown) and metadata."""

    name: str
    model: MLP
    initial_model: MLP | None
    meta: dict[str, Any]
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    saved_id: str | None = None  # its id in the workspace once saved there (see xwp.app.workspace_glue)

    @classmethod
    def from_checkpoint(cls, name: str, ckpt: Checkpoint) -> SessionModel:
        """Wrap a loaded :class:`~xwp.checkpoint.Checkpoint`."""
        return cls(name, ckpt.model, ckpt.initial_model, dict(ckpt.meta))

    @property
    def classes(self) -> list[str]:
        """Class names (from the metadata, else 0..C-1)."""
        names = self.meta.get("classes")
        if isinstance(names, list) and len(names) == self.model.n_classes:
            return [str(c) for c in names]
        return [str(i) for i in range(self.model.n_classes)]

    @property
    def has_initial(self) -> bool:
        """Whether the initial weights are known (XWP and XWPc need them)."""
        return self.initial_model is not None

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy recorded when the model was trained, if any."""
        acc = self.meta.get("test_accuracy")
        return float(acc) if isinstance(acc, int | float) else None

    @property
    def kind(self) -> str:
        """What one input shows, for prompts: "digit" for digit datasets, else "item" (e.g. Fashion-MNIST)."""
        if self.classes == [str(i) for i in range(10)]:
            return "digit"
        return "item of clothing" if self.meta.get("dataset") == "fashion-mnist" else "item"

    def dataset_label(self) -> str:
        """Human name of the training dataset."""
        name = self.meta.get("dataset")
        if name in DATASETS:
            label = DATASETS[name].label
            if self.meta.get("upload_name"):
                label += f" ({self.meta['upload_name']})"
            return label
        return str(name) if name else "unknown"


def session_models() -> dict[str, SessionModel]:
    """The models of this session, by name."""
    return st.session_state.setdefault(MODELS_KEY, {})


def active_model() -> SessionModel | None:
    """The model chosen in the sidebar (None before the first one exists)."""
    models = session_models()
    name = st.session_state.get(ACTIVE_KEY)
    if name in models:
        return models[name]
    return next(reversed(models.values()), None)


def unique_name(base: str) -> str:
    """``base``, or ``base (2)``, ``base (3)``... if a model of this session already has that name."""
    models = session_models()
    name, k = base.strip() or "model", 2
    while name in models:
        name = f"{base} ({k})"
        k += 1
    return name


def add_model(entry: SessionModel, rerun: bool = False) -> None:
    """Keep ``entry`` in this session, make it the active model and optionally rerun to show it."""
    models = session_models()
    models[entry.name] = entry
    while len(models) > MAX_SESSION_MODELS:
        oldest = next(iter(models))
        gone = models.pop(oldest)
        where = " It stays in the workspace list below." if gone.saved_id else ""
        flash(f"Removed the oldest model “{plain_text(oldest)}” from the list (at most {MAX_SESSION_MODELS}).{where}")
    st.session_state[PENDING_KEY] = entry.name
    if rerun:
        st.rerun()


def flash(message: str) -> None:
    """Show ``message`` as a toast on the next run (survives ``st.rerun``)."""
    st.session_state.setdefault(FLASH_KEY, []).append(message)


def memo() -> dict:
    """Per-session store for results already computed (a throwaway dict outside Streamlit)."""
    from xwp.app.internals import in_script_run

    if not in_script_run():
        return {}
    return st.session_state.setdefault(MEMO_KEY, {})
