"""Trainer settings (the ``training`` parameters, less the per-method blocks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sonoseg.ssl.base import registered_methods


@dataclass(frozen=True)
class TrainerConfig:
    """Args:
    method: the registered SSL method (``training.method``).
    iterations: optimiser steps.
    checkpoint_every: write ``last.pt`` every N steps (and at the end).
    val_every: validate on the val split every N steps (and at the end).
    seed: seeds weights, sampling and augmentation; a resumed run replays the same draws.
    device: auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:K | mps.
    input_size: square network input in pixels; samples are resized to it.
    labelled_batch / unlabelled_batch: samples per step from each pool.
    optimizer: adam | adamw | sgd; lr, weight_decay, momentum (sgd).
    schedule: poly | cosine | constant; warmup_iterations for cosine.
    grad_clip: max gradient norm (null: no clipping).
    amp: auto (bf16 on CUDA when supported, else fp16; off on CPU) | bf16 | fp16 | off.
    workers: data-loading processes (0 loads in the training process).
    early_stopping_patience: stop after this many validations without a better val Dice (null: never).
    output_dir: where ``<method>/best.pt`` and ``<method>/last.pt`` go.
    model: the network (``name`` plus model-factory options).
    progress: show a progress bar.
    """

    method: str = "hdc"
    iterations: int = 300
    checkpoint_every: int = 50
    val_every: int = 50
    seed: int = 0
    device: str = "auto"
    input_size: int = 64
    labelled_batch: int = 4
    unlabelled_batch: int = 4
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "poly"
    warmup_iterations: int = 0
    grad_clip: float | None = 5.0
    amp: str = "auto"
    workers: int = 0
    early_stopping_patience: int | None = None
    output_dir: str = "data/06_models/checkpoints"
    model: dict[str, Any] = field(default_factory=lambda: {"name": "unet_small"})
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("iterations", "checkpoint_every", "val_every", "input_size", "labelled_batch")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"training.{name} must be >= 1, got {getattr(self, name)}")
        if self.unlabelled_batch < 0 or self.workers < 0:
            raise ValueError("training.unlabelled_batch and training.workers must be >= 0")
        choices = {"optimizer": ("adam", "adamw", "sgd"), "schedule": ("poly", "cosine", "constant"),
                   "amp": ("auto", "bf16", "fp16", "off")}  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"training.{name} is '{getattr(self, name)}': expected one of {', '.join(allowed)}")
        if "name" not in self.model:
            raise ValueError("training.model needs a 'name' (e.g. unet_small)")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainerConfig:
        """From the ``training`` parameters; per-method blocks (``training.<method>``) and
        ``use_tuned`` (applied by the training pipeline before this) are skipped."""
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known - set(registered_methods()) - {"use_tuned"}
        if unknown:
            raise ValueError(f"training has unknown settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: v for k, v in params.items() if k in known})
