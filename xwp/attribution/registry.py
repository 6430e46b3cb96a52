"""The method registry: every method is one class, registered by a decorator on that class.

A method declares its options once, as the class attribute ``defaults``; the options a
caller gives (to the constructor or :func:`make_method`) are bound over them, and
``attribute(inputs, target=None, **overrides)`` may override them per call. Sets of
methods (the app's default, the study's, the figures') are *tags* on the registry entry,
read with :func:`methods_tagged`. A method that needs a certain kind of network says why
it does not apply to a model in its classmethod ``problem(model, inputs=None)``. Zennit's
``@register_composite`` is the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from xwp.attribution.common import Target
from xwp.errors import XWPError

#: the tags in use: ``app-default`` (Explain page), ``evaluate`` (default of :func:`xwp.evaluate`
#: and the Compare page), ``study`` (:func:`xwp.study.run_study`, every network), ``study-conv``
#: (the study's CNNs only: a method that equals another one on an MLP, so it would only repeat
#: that method's row there), ``figure`` (study figures)
TAGS = ("app-default", "evaluate", "study", "study-conv", "figure")


class Method:
    """Base of the registered methods: ``defaults`` declared on the class, bound in ``__init__``."""

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, **options: Any):
        self.model = model
        self.options = self.bind(options)

    @classmethod
    def bind(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``defaults`` updated by ``options``; an unknown name is a clear error."""
        unknown = set(options) - set(cls.defaults)
        if unknown:
            raise XWPError(
                f"{cls.__name__} has no option {', '.join(sorted(unknown))}; "
                f"its options: {', '.join(cls.defaults) or 'none'}"
            )
        return {**cls.defaults, **options}

    @classmethod
    def problem(cls, model: nn.Module, inputs: torch.Tensor | None = None) -> str | None:
        """Why this method cannot explain ``model`` (on inputs like ``inputs``, when given): one line, or None.

        The app's method pickers show the line instead of running a method that would fail
        (e.g. Pathwise on a network without ReLU). Methods that apply to any model keep None.
        """
        return None

    def call_options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The bound options updated by one call's ``overrides`` (checked like constructor options)."""
        self.bind(overrides)
        return {**self.options, **overrides}

    def attribute(self, inputs: torch.Tensor, target: Target = None, **overrides: Any) -> torch.Tensor:
        """Attributions shaped like ``inputs``."""
        raise NotImplementedError


@dataclass(frozen=True)
class MethodSpec:
    """One entry of :data:`METHODS`: the method's class and what to tell users about it."""

    name: str
    label: str
    kind: str
    summary: str
    reference: str
    cls: type[Method]
    needs_initial: bool = False
    tags: frozenset[str] = field(default_factory=frozenset)
    rank: int = 0

    @property
    def defaults(self) -> dict[str, Any]:
        """The method's options and their default values (a copy)."""
        return dict(self.cls.defaults)

    def build(self, model: nn.Module, initial_model: nn.Module | None = None, **options: Any) -> Method:
        """An instance of the method for ``model`` with ``options`` bound over its defaults."""
        if self.needs_initial:
            return self.cls(model, initial_model, **options)
        return self.cls(model, **options)


#: name -> spec, in menu order (``rank``): the paper's methods first, extra baselines after
METHODS: dict[str, MethodSpec] = {}


def register(
    name: str,
    label: str,
    kind: str,
    summary: str,
    reference: str,
    rank: int,
    needs_initial: bool = False,
    tags: Iterable[str] = (),
) -> Callable[[type[Method]], type[Method]]:
    """Class decorator that adds a :class:`Method` subclass to :data:`METHODS` under ``name``."""
    unknown = set(tags) - set(TAGS)
    if unknown:
        raise ValueError(f"unknown tag(s) {sorted(unknown)}; known: {TAGS}")

    def wrap(cls: type[Method]) -> type[Method]:
        METHODS[name] = MethodSpec(name, label, kind, summary, reference, cls, needs_initial, frozenset(tags), rank)
        ordered = sorted(METHODS.values(), key=lambda s: s.rank)
        METHODS.clear()
        METHODS.update((s.name, s) for s in ordered)
        return cls

    return wrap


def methods_tagged(tag: str) -> tuple[str, ...]:
    """Names of the registered methods carrying ``tag``, in menu order."""
    if tag not in TAGS:
        raise XWPError(f"unknown tag {tag!r}; choose from {', '.join(TAGS)}")
    return tuple(name for name, spec in METHODS.items() if tag in spec.tags)


def make_method(name: str, model: nn.Module, initial_model: nn.Module | None = None, **options: Any) -> Method:
    """Build the registered method ``name`` for ``model`` with its defaults updated by ``options``.

    Returns an object with ``attribute(inputs, target=None, **overrides)``.
    """
    if name not in METHODS:
        raise XWPError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    spec = METHODS[name]
    unknown = set(options) - set(spec.cls.defaults)
    if unknown:
        raise XWPError(
            f"{name} has no option {', '.join(sorted(unknown))}; its options: {', '.join(spec.cls.defaults) or 'none'}"
        )
    return spec.build(model, initial_model, **options)


def attribute(
    name: str,
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    initial_model: nn.Module | None = None,
    **options: Any,
) -> torch.Tensor:
    """One-call attribution: ``make_method(name, model, initial_model, **options).attribute(inputs, target)``."""
    return make_method(name, model, initial_model, **options).attribute(inputs, target=target)
