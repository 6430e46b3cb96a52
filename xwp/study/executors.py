"""Where the study's cells run: in this process (the default) or as Ray tasks, locally or on a cluster.

A study is a grid of cells (dataset, arch, seed, method). Each (dataset, arch, seed) first
trains one model, an MLP or a CNN (:func:`train_cell`); each cell then evaluates one method
on that model's seeded test sample (:func:`evaluate_cell`). Both executors call the same two functions with the same
arguments, so a Ray run gives the same numbers as the serial one (the same torch build and
thread count assumed: Ray gives a task ``num_cpus`` threads, 1 by default).

Ray (https://docs.ray.io) is optional: ``pip install 'xwp[ray]'``; only
:func:`run_ray` imports it. On a cluster every worker needs this package and the datasets
at the same ``data_dir``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from xwp.data.datasets import DATASETS, load_dataset
from xwp.devices import default_device
from xwp.errors import XWPError
from xwp.evaluation.protocol import Evaluation, evaluate
from xwp.train import ARCHS, TrainConfig, fit

EXECUTORS = ("serial", "ray")


@dataclass(frozen=True)
class StudyPlan:
    """What every cell needs: the grid, the networks and the evaluation settings.

    ``archs``: the network families trained per (dataset, seed), ``"mlp"`` and/or ``"cnn"``.
    ``hidden`` are the MLP's hidden sizes; ``channels``, ``kernel`` and ``head`` (its dense
    hidden sizes) the CNN's. ``methods`` run on every model; ``conv_methods`` are added for a
    CNN only (methods that equal another one on an MLP, e.g. ``ad-occlusion``).
    """

    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    n: int
    epochs: int
    data_dir: str | None = None
    outputs: tuple[str, ...] = ("softmax", "logits")
    removals: tuple[str, ...] = ("zero",)
    sensitivity_samples: int = 0
    hidden: tuple[int, ...] = (400, 100)
    archs: tuple[str, ...] = ("mlp",)
    channels: tuple[int, ...] = (32, 64)
    kernel: int = 3
    head: tuple[int, ...] = (128,)
    conv_methods: tuple[str, ...] = ()

    def methods_for(self, arch: str) -> tuple[str, ...]:
        """The methods evaluated on an ``arch`` model: ``methods``, plus ``conv_methods`` for a CNN."""
        if arch != "cnn" or not self.conv_methods:
            return self.methods
        return tuple(dict.fromkeys((*self.methods, *self.conv_methods)))

    def config(self, dataset: str, arch: str, seed: int) -> TrainConfig:
        """The :class:`~xwp.train.TrainConfig` of the (dataset, arch, seed) model (checked)."""
        if arch not in ARCHS:
            raise XWPError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
        sizes = {"hidden": self.hidden} if arch == "mlp" else {"hidden": self.head}
        if arch == "cnn":
            sizes.update(channels=self.channels, kernel=self.kernel)
        ddir = _data_dir(self, dataset)
        return TrainConfig(dataset=dataset, data_dir=ddir, epochs=self.epochs, seed=seed, arch=arch, **sizes).check()


@dataclass
class Trained:
    """One (dataset, seed) model with its test accuracy and training time."""

    model: torch.nn.Module
    test_accuracy: float
    seconds: float


@dataclass
class CellResults:
    """Per (dataset, arch, seed): the model's facts and one :class:`Evaluation` per method (plan order)."""

    trained: dict[tuple[str, str, int], Trained] = field(default_factory=dict)
    evaluations: dict[tuple[str, str, int], list[Evaluation]] = field(default_factory=dict)
    seconds: dict[tuple[str, str, int], float] = field(default_factory=dict)


def _data_dir(plan: StudyPlan, dataset: str) -> str | None:
    """The data folder for datasets that need one."""
    return plan.data_dir if dataset in DATASETS and DATASETS[dataset].needs_path else None


def train_cell(plan: StudyPlan, dataset: str, seed: int, arch: str = "mlp") -> Trained:
    """Train the study's ``arch`` network for one (dataset, seed) on the default device, moved to the CPU."""
    config = plan.config(dataset, arch, seed)
    ddir = config.data_dir
    train_set, test_set = load_dataset(dataset, "train", ddir), load_dataset(dataset, "test", ddir)
    t0 = time.perf_counter()
    fitted = fit(config, train_set, test_set, device=default_device())
    return Trained(fitted.model.cpu().eval(), fitted.history.test_accuracy[-1], time.perf_counter() - t0)


def evaluate_cell(plan: StudyPlan, model: torch.nn.Module, dataset: str, seed: int, method: str) -> Evaluation:
    """Evaluate one method on the (dataset, seed) model's seeded test sample (the same images for every method)."""
    ddir = _data_dir(plan, dataset)
    test_set = load_dataset(dataset, "test", ddir)
    train_mean = None
    if "mean" in plan.removals:
        train_mean = load_dataset(dataset, "train", ddir).images.double().mean(0).reshape(-1)
    model = model.to(default_device())
    return evaluate(
        model,
        test_set,
        [method],
        n=plan.n,
        seed=seed,
        outputs=plan.outputs,
        removals=plan.removals,
        train_mean=train_mean,
        sensitivity_samples=plan.sensitivity_samples,
    )


def run_serial(plan: StudyPlan, log: Callable[[str], None] = print) -> CellResults:
    """Every cell in this process, one after the other (no Ray import)."""
    out = CellResults()
    for key in _grid(plan):
        dataset, arch, seed = key
        trained = train_cell(plan, dataset, seed, arch)
        t0 = time.perf_counter()
        evs = [evaluate_cell(plan, trained.model, dataset, seed, m) for m in plan.methods_for(arch)]
        out.trained[key] = trained
        out.evaluations[key] = evs
        out.seconds[key] = time.perf_counter() - t0
        log(_line(plan, key, trained, out.seconds[key]))
    return out


def _grid(plan: StudyPlan) -> list[tuple[str, str, int]]:
    """Every (dataset, arch, seed) of the plan, in the order the tables list them."""
    return [(d, a, s) for d in plan.datasets for a in plan.archs for s in plan.seeds]


def _line(plan: StudyPlan, key: tuple[str, str, int], trained: Trained, seconds: float) -> str:
    """One log line per (dataset, arch, seed)."""
    dataset, arch, seed = key
    methods = plan.methods_for(arch)
    return (
        f"{dataset} {arch} seed {seed}: accuracy {trained.test_accuracy:.4f}, train {trained.seconds:.0f} s, "
        f"evaluate {plan.n} images x {len(methods)} methods x {len(plan.outputs)} outputs {seconds:.0f} s"
    )


def run_ray(
    plan: StudyPlan,
    address: str | None = None,
    log: Callable[[str], None] = print,
    init_options: dict[str, Any] | None = None,
) -> CellResults:
    """Each (dataset, arch, seed) training and each (dataset, arch, seed, method) cell as a Ray task.

    ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``); None starts a local
    Ray on this machine (``init_options`` go to ``ray.init``, e.g. ``num_cpus``).
    """
    try:
        import ray
    except ImportError:
        raise XWPError("--executor ray needs Ray: pip install 'xwp[ray]' (or pip install ray)") from None
    if not ray.is_initialized():
        options = {"include_dashboard": False, "log_to_driver": False, **(init_options or {})}
        ray.init(address=address, **options)
    train_task = ray.remote(train_cell)
    eval_task = ray.remote(_timed_evaluate_cell)
    plan_ref = ray.put(plan)
    models = {(d, a, s): train_task.remote(plan_ref, d, s, a) for d, a, s in _grid(plan)}
    out = CellResults()
    cells = {}
    for (d, a, s), ref in models.items():
        model_ref = _model_ref(ray, ref)
        cells[(d, a, s)] = [eval_task.remote(plan_ref, model_ref, d, s, m) for m in plan.methods_for(a)]
    for key, ref in models.items():
        out.trained[key] = ray.get(ref)
        timed = ray.get(cells[key])
        out.evaluations[key] = [ev for ev, _ in timed]
        out.seconds[key] = sum(seconds for _, seconds in timed)
        log(_line(plan, key, out.trained[key], out.seconds[key]) + " (Ray; summed over its tasks)")
    return out


def _timed_evaluate_cell(*args: Any) -> tuple[Evaluation, float]:
    """:func:`evaluate_cell` and the seconds it took on its worker.

    The driver's wait for a (dataset, seed) says nothing about its cost when cells run in
    parallel (the first one waits for everything scheduled before it), so a Ray study
    reports the sum of its cells' own times, comparable to the serial run's.
    """
    t0 = time.perf_counter()
    ev = evaluate_cell(*args)
    return ev, time.perf_counter() - t0


def _model_ref(ray, trained_ref):
    """A Ray reference to the trained model alone (a tiny task, so the evaluation tasks wait on it)."""
    return ray.remote(lambda t: t.model).remote(trained_ref)


def run_cells(
    plan: StudyPlan,
    executor: str = "serial",
    address: str | None = None,
    log: Callable[[str], None] = print,
    init_options: dict[str, Any] | None = None,
) -> CellResults:
    """Run the plan with ``executor`` (``"serial"`` or ``"ray"``)."""
    if executor not in EXECUTORS:
        raise XWPError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if executor == "serial":
        if address:
            raise XWPError("--address needs --executor ray")
        return run_serial(plan, log)
    return run_ray(plan, address, log, init_options)
