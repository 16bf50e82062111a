"""The interface every semi-supervised method implements, and the registry the trainer reads.

A method owns its networks and computes named loss terms for one step; the trainer owns everything
else (data, optimiser, schedule, AMP, checkpoints, validation). Adding a method means adding one
module that subclasses ``Method`` and registers itself: the trainer does not change (nnU-Net style).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    if cls.name in METHODS:
        raise ValueError(f"method '{cls.name}' is registered twice")
    METHODS[cls.name] = cls
    return cls


def registered_methods() -> dict[str, type[Method]]:
    """Every method, by name (importing the method modules registers them)."""
    import sonoseg.ssl.methods  # noqa: F401

    return METHODS


def method_class(name: str) -> type[Method]:
    """The registered method class called ``name``."""
    methods = registered_methods()
    if name not in methods:
        raise ValueError(f"training.method is '{name}': expected one of {', '.join(sorted(methods))}")
    return methods[name]


def build_method(name: str, settings: Mapping[str, Any], model: Mapping[str, Any], num_classes: int) -> Method:
    """The registered method ``name`` with its settings (``training.<name>`` parameters)."""
    method = method_class(name)(dict(settings or {}), dict(model), num_classes)
    unknown = set(settings or {}) - set(method.defaults())
    if unknown:
        raise ValueError(f"training.{name} has unknown settings {sorted(unknown)}; known: {sorted(method.defaults())}")
    return method


@dataclass
class Batch:
    """One training step's data, already on the device. ``masks`` are (N, H, W) integer labels."""

    images: Tensor
    masks: Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class StepContext:
    """What a method may need to know about the step besides the data."""

    iteration: int
    total_iterations: int
    generator: torch.Generator  # seeded per iteration, so a resumed run draws the same augmentations
    lr_scale: float = 1.0  # the current learning rate over the base one (1 → 0 as it decays)

    @property
    def progress(self) -> float:
        return self.iteration / max(1, self.total_iterations)


class Routed(nn.Module):
    """Calls any method of the wrapped network through ``forward``. DDP synchronises gradients only
    for work done inside ``forward``, so methods reach ``forward_dual`` and friends this way."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *args: Any, route: str = "forward", **kwargs: Any) -> Any:
        return getattr(self.net, route)(*args, **kwargs)


class Method(ABC):
    """One semi-supervised method.

    Subclasses set ``name``, list their settings with defaults in ``DEFAULTS`` (every loss weight,
    threshold, decay, ramp-up and noise level: Optuna tunes them), build networks in
    ``build_networks`` and compute loss terms in ``losses``.
    """

    name: ClassVar[str]
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    uses_unlabelled: ClassVar[bool] = True
    uses_all_labels: ClassVar[bool] = False  # the fully supervised upper bound sees every mask

    def __init__(self, settings: dict[str, Any], model: dict[str, Any], num_classes: int) -> None:
        self.settings = self.resolved_settings(settings)
        self.model_options = model
        self.num_classes = num_classes
        self.networks = nn.ModuleDict({role: Routed(net) for role, net in self.build_networks().items()})

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """All settings with their defaults, inherited ones included."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(getattr(klass, "DEFAULTS", {}))
        return merged

    @classmethod
    def resolved_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings an instance trains with: the defaults under the configured ``settings``."""
        return {**cls.defaults(), **settings}

    def network(self, name: str | None = None, **overrides: Any) -> nn.Module:
        """A network from the model factory: the configured one (``training.model``), or another
        architecture by ``name`` with its own defaults."""
        from sonoseg.models import build_network

        configured = dict(self.model_options)
        if name is not None and name != configured["name"]:
            configured = {"name": name}
        options = {**configured, **overrides}
        return build_network(options.pop("name"), num_classes=self.num_classes, **options)

    def run(self, role: str, *args: Any, route: str = "forward", **kwargs: Any) -> Any:
        """Call ``route`` (default ``forward``) on the network of this role."""
        return self.networks[role](*args, route=route, **kwargs)

    def inner(self, role: str) -> nn.Module:
        """The unwrapped network of this role (for EMA updates and export)."""
        module = self.networks[role]
        module = getattr(module, "module", module)  # DDP
        return module.net

    @abstractmethod
    def build_networks(self) -> dict[str, nn.Module]:
        """The method's networks by role (e.g. ``student``, ``teacher``); teachers are not trained."""

    @abstractmethod
    def losses(self, labelled: Batch, unlabelled: Batch | None, context: StepContext) -> dict[str, Tensor]:
        """Named loss terms for one step; ``total`` is the one the trainer backpropagates."""

    def weak_view(self, batch: Batch, context: StepContext) -> Batch:
        """The same random flip/affine applied to images and masks (every method's labelled input)."""
        from sonoseg.ssl.augment import weak_augment

        images, masks = weak_augment(batch.images, batch.masks, generator=context.generator)
        return Batch(images, masks)

    def supervised(self, labelled: Batch, context: StepContext, *roles: str) -> tuple[Batch, Tensor]:
        """The weak view of the labelled batch, and the supervised loss of each role on it, summed."""
        from sonoseg.ssl.losses import supervised_loss

        labelled = self.weak_view(labelled, context)
        loss = sum(supervised_loss(self.run(role, labelled.images), labelled.masks) for role in roles or ("student",))
        return labelled, loss

    def after_step(self, context: StepContext) -> None:
        """Updates after the optimiser step (EMA teachers); nothing by default."""

    def inference_network(self) -> nn.Module:
        """The network deployed for prediction (and validated)."""
        return self.inner("student")

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.networks.parameters() if p.requires_grad)

    def to(self, device: torch.device) -> Method:
        self.networks.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        self.networks.train(mode)
        for name, net in self.networks.items():
            if name.endswith("teacher"):
                net.train(False)  # teachers always run in eval mode (no dropout, frozen BN statistics)

    def wrap_networks(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap every trained network (DDP); teachers stay as they are."""
        for name in list(self.networks):
            if any(p.requires_grad for p in self.networks[name].parameters()):
                self.networks[name] = wrap(self.networks[name])
