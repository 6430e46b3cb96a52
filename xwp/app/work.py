"""The pages' side of the compute executor: per-stroke requests, shared method objects, waiting that yields.

Every computation of a page runs on :func:`xwp.serve.compute.get_executor`, never in the
session's script thread: a stroke's prediction and maps at ``INTERACTIVE`` priority, a page's
one-off work (weight patterns, the Home page's examples) at ``NORMAL``, trainings and
comparisons as jobs (:mod:`xwp.app.jobs`). XWP and XWPᶜ objects are cached per model object
and method, so concurrent strokes of all sessions on one model (the shared default model)
carry the same batch key and run as one call.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import weakref
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any

import numpy as np
import streamlit as st
import torch

from xwp.app.internals import run_superseded
from xwp.app.keys import FUTURES_KEY
from xwp.attribution import METHODS
from xwp.evaluation.scales import check_space
from xwp.serve.compute import INTERACTIVE, NORMAL, get_executor, is_batchable
from xwp.serve.explanation import attribution_key, attribution_method, method_problem, model_input, remember

_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()

#: modules that methods and trainings import on first use. ``torch._dynamo`` is the big one:
#: ``torch.optim``'s first optimizer imports it, which took 1.9 s in a quiet process but over
#: 90 s inside the server while 4 browser sessions kept its threads busy (bench/load_test.py,
#: profiled with py-spy), and the single compute worker, which would do that import inside the
#: first training, blocks every queued job meanwhile.
WARM_MODULES = (
    "torch._dynamo",
    "captum.attr",
    "zennit.composites",
    "zennit.rules",
    "scipy.ndimage",
    "sklearn.datasets",
)
_WARM: threading.Thread | None = None
_WARM_LOCK = threading.Lock()


def warm_up() -> threading.Thread:
    """Import :data:`WARM_MODULES` once per process, in a thread of its own (streamlit_app.py calls it each run).

    Started when the server's first session opens, so the imports are done before anyone
    trains or compares, and never on the compute worker, which stays free for strokes.
    A module that fails to import is skipped (the page that needs it reports the error).
    """
    global _WARM
    with _WARM_LOCK:
        if _WARM is None:
            # IPython first and here, while the other sessions wait on the lock: captum imports it
            # (0.3 s), and matplotlib reads sys.modules["IPython"].version_info whenever a figure is
            # made, so a session drawing a figure while the warm-up thread was half-way through
            # importing IPython failed with "partially initialized module 'IPython'" (16 of 20
            # sessions of one load test on the Home page).
            with contextlib.suppress(Exception):  # IPython is optional; if missing, nothing can race
                importlib.import_module("IPython")
            _WARM = threading.Thread(target=_import_all, name="xwp-warm-up", daemon=True)
            _WARM.start()
        return _WARM


def _import_all() -> None:
    import gc

    for name in WARM_MODULES:
        with contextlib.suppress(Exception):  # best effort; the first real use reports the problem
            importlib.import_module(name)
    # Modules and their objects live as long as the process: moved out of the collector's
    # view, a full collection no longer walks ~500,000 of them (300 ms -> under 1 ms).
    gc.collect()
    gc.freeze()


def shared_method(
    name: str, model: torch.nn.Module, initial_model: torch.nn.Module | None, space: str = "probability"
) -> Any:
    """Method ``name`` for ``model`` explaining score ``space``: one object per model object for batchable methods.

    One object per (model, method) means one batch key, so the executor merges the strokes
    of every session that explains the same model (:func:`xwp.serve.compute.is_batchable`). Stochastic
    or hook-based methods get a fresh object per request, as before.
    """
    with _SHARED_LOCK:
        per_model = _SHARED.setdefault(model, {})
        key = (name, id(initial_model), space)
        method = per_model.get(key)
    if method is None:
        method = attribution_method(name, model, initial_model, space)
        if not is_batchable(method):
            return method
        with _SHARED_LOCK:
            method = per_model.setdefault(key, method)
    return method


def method_priority(name: str) -> int:
    """``INTERACTIVE`` for the live methods (the registry's ``app-default`` tag), ``NORMAL`` for slower ones.

    A Shapley map of one user then waits behind every other user's strokes instead of
    holding them up.
    """
    return INTERACTIVE if "app-default" in METHODS[name].tags else NORMAL


def cancel_previous() -> None:
    """Cancel the queued requests of this session's previous stroke (a newer input replaces it)."""
    for f in st.session_state.pop(FUTURES_KEY, []):
        f.cancel()


def wait(futures: Mapping[str, Future]) -> dict[str, Any]:
    """The results of ``futures``; if a rerun is requested meanwhile, cancel them and let the rerun happen."""
    st.session_state[FUTURES_KEY] = list(futures.values())
    pending = set(futures.values())
    while pending:
        _, pending = wait_futures(pending, timeout=0.05)
        if pending and run_superseded():
            try:
                st.empty()  # a Streamlit call: the point where the rerun request takes over
            except BaseException:
                for f in pending:
                    f.cancel()  # a newer run replaces this one: drop what has not started
                raise
    st.session_state.pop(FUTURES_KEY, None)
    return {k: f.result() for k, f in futures.items()}


def run(fn: Callable[..., Any], *args: Any, priority: int = NORMAL, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on the executor (a page's one-off work), waiting like :func:`wait`."""
    return wait({"r": get_executor().submit(fn, *args, priority=priority, **kwargs)})["r"]


def stroke(
    model: torch.nn.Module,
    initial_model: torch.nn.Module | None,
    memo_key: Any,
    x: torch.Tensor,
    target: int | None,
    methods: Sequence[str],
    memo: MutableMapping,
    space: str = "probability",
) -> np.ndarray:
    """Predict ``x`` and compute its maps on the executor into ``memo``; return the probabilities ``(C,)``.

    The maps land in ``memo`` under :func:`xwp.serve.explanation.attribution_key`, where
    :func:`xwp.serve.explanation.explain` finds them, so the page shows what a direct call shows.
    ``seconds`` of a map is the time of the executor call that made it (shared by the
    strokes merged into it). ``space``: the score the maps explain (:data:`xwp.evaluation.scales.SPACES`).
    """
    check_space(space)
    cancel_previous()
    executor = get_executor()
    x = model_input(x, model)
    probs = wait({"p": executor.predict(model, x)})["p"][0].double().numpy()
    t = int(probs.argmax()) if target is None else int(target)
    if not 0 <= t < len(probs):
        return probs  # explain() says why
    futures, keys = {}, {}
    x64 = x.double()
    for name in methods:
        key = attribution_key(memo_key, name, t, x, space)
        if key in memo or method_problem(name, initial_model is not None, model, x):
            continue
        method = shared_method(name, model, initial_model, space)
        futures[name] = executor.attribute(method, x64, t, priority=method_priority(name))
        keys[name] = key
    for name, a in wait(futures).items():
        f = futures[name]
        remember(memo, keys[name], (a.detach().reshape(x.shape[-2:]).double().numpy(), getattr(f, "seconds", 0.0)))
    return probs
