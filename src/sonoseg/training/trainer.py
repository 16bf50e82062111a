"""One training loop for every method: device and AMP, schedules, clipping, validation on the val
split, best/last checkpoints, automatic resume, progress and tracking, and DDP.

Resume reproduces an uninterrupted run: every step seeds the global and augmentation RNGs from
(seed, iteration), the sampler is replayed to the resumed iteration, and the checkpoint holds the
networks (EMA teachers included), the optimiser, the best score and the history.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sonoseg.ssl.base import Batch, Method, StepContext, build_method
from sonoseg.ssl.ramps import cosine_lr, poly_lr
from sonoseg.ssl.sampler import LabelledUnlabelledSampler
from sonoseg.training.config import TrainerConfig
from sonoseg.training.data import TrainingSets, batch_loader
from sonoseg.training.tracking import NullTracker, Tracker

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # 2: records input_size, so a checkpoint alone can predict


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainingResult:
    best_checkpoint: Path
    last_checkpoint: Path
    best_val_dice: float
    best_iteration: int
    iterations_done: int
    history: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)


def choose_device(requested: str) -> torch.device:
    """CUDA if present, then MPS, then CPU for ``auto``; an explicit request must be available."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("training.device is 'cuda' but no CUDA device is available: use 'auto' or 'cpu'")
    return device


def init_distributed_from_env(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1); True when distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[setting]


def seed_for(seed: int, iteration: int) -> int:
    return (seed * 1_000_003 + iteration) % (2**63 - 1)


def dice_per_class(logits: torch.Tensor, masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Hard Dice per case and foreground class (N, C-1); both empty counts as 1 (DESIGN.md §5)."""
    pred = logits.argmax(1)
    scores = []
    for label in range(1, num_classes):
        p, t = pred == label, masks == label
        inter = (p & t).flatten(1).sum(1).float()
        total = p.flatten(1).sum(1).float() + t.flatten(1).sum(1).float()
        scores.append(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)))
    return torch.stack(scores, 1)


class Trainer:
    """Trains one method on ``TrainingSets``; see the module docstring for resume semantics."""

    def __init__(
        self,
        config: TrainerConfig,
        method_settings: dict[str, Any],
        num_classes: int,
        tracker: Tracker | None = None,
        on_iteration: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.num_classes = num_classes
        self.tracker = tracker or NullTracker()
        self.on_iteration = on_iteration
        self.device = choose_device(config.device)
        if self.device.type == "cuda" and "LOCAL_RANK" in os.environ:
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self.distributed = init_distributed_from_env(self.device)
        self.rank = torch.distributed.get_rank() if self.distributed else 0
        torch.manual_seed(config.seed)
        self.method: Method = build_method(config.method, method_settings, config.model, num_classes).to(self.device)
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.method.wrap_networks(lambda net: nn.parallel.DistributedDataParallel(net, device_ids=ids))
        self.optimizer = self._make_optimizer()
        self.amp = amp_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.out_dir = Path(config.output_dir) / config.method
        self.last_path = self.out_dir / "last.pt"
        self.best_path = self.out_dir / "best.pt"

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params, c = list(self.method.trainable_parameters()), self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=True)
        kind = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        return kind(params, lr=c.lr, weight_decay=c.weight_decay)

    def learning_rate(self, iteration: int) -> float:
        c = self.config
        if c.schedule == "poly":
            return poly_lr(c.lr, iteration, c.iterations)
        if c.schedule == "cosine":
            return cosine_lr(c.lr, iteration, c.iterations, c.warmup_iterations)
        return c.lr

    # ---------------------------------------------------------------- checkpoints

    def _state(self, iteration: int, best: tuple[float, int], stale: int, history: list, val_history: list) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "method": self.config.method,
            "iteration": iteration,
            "networks": {role: self.method.inner(role).state_dict() for role in self.method.networks},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_val_dice": best[0],
            "best_iteration": best[1],
            "validations_without_improvement": stale,
            "history": history,
            "val_history": val_history,
            "num_classes": self.num_classes,
            "model": dict(self.config.model),
            "input_size": self.config.input_size,
            "settings": dict(self.method.settings),
        }

    def _save(self, state: dict, path: Path) -> None:
        if self.rank != 0:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save(state, partial)
        os.replace(partial, path)  # a crash mid-save never leaves a truncated checkpoint

    def _resume(self) -> dict | None:
        if not self.last_path.is_file():
            return None
        state = torch.load(self.last_path, map_location=self.device, weights_only=False)
        if state.get("method") != self.config.method or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.last_path} is not a {self.config.method} checkpoint of this format: move it away to start afresh")
        for role, weights in state["networks"].items():
            self.method.inner(role).load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        logger.info("Resuming %s from %s at iteration %d", self.config.method, self.last_path, state["iteration"])
        return state

    # ---------------------------------------------------------------- data

    def _batches(self, sets: TrainingSets, start: int) -> Iterator[tuple[Batch, Batch | None]]:
        c = self.config
        unlabelled_batch = c.unlabelled_batch if self.method.uses_unlabelled else 0
        sampler = LabelledUnlabelledSampler(
            list(range(sets.n_labelled)),
            list(range(sets.n_labelled, len(sets.train))) if unlabelled_batch else [],
            c.labelled_batch,
            unlabelled_batch,
            seed=c.seed + 7919 * self.rank,
        )
        for _ in range(start):  # replay the index stream to where the checkpoint left it
            next(sampler)
        index_lists = (list(labelled) + list(unlabelled) for labelled, unlabelled in sampler)
        loader = batch_loader(sets.train, index_lists, c.workers, pin_memory=self.device.type == "cuda", seed=c.seed)
        for images, masks in loader:
            images = images.to(self.device, non_blocking=True)
            masks = masks.to(self.device, non_blocking=True)
            n = c.labelled_batch
            unlabelled = Batch(images[n:]) if images.shape[0] > n else None
            yield Batch(images[:n], masks[:n]), unlabelled

    @torch.no_grad()
    def validate(self, sets: TrainingSets) -> float:
        """Mean val Dice over cases, then over foreground classes, at the network input size."""
        net = self.method.inference_network()
        was_training = net.training
        net.eval()
        loader = torch.utils.data.DataLoader(sets.val, batch_size=max(8, self.config.labelled_batch), num_workers=0)
        scores = []
        for images, masks in loader:
            with self._autocast():
                logits = net(images.to(self.device))
            scores.append(dice_per_class(logits.float(), masks.to(self.device), self.num_classes).cpu())
        net.train(was_training)
        return float(torch.cat(scores).mean(0).mean())

    def _autocast(self):
        if self.amp is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    # ---------------------------------------------------------------- the loop

    def fit(self, sets: TrainingSets) -> TrainingResult:
        from tqdm.auto import tqdm

        c = self.config
        state = self._resume()
        start = state["iteration"] if state else 0
        best = (state["best_val_dice"], state["best_iteration"]) if state else (-math.inf, -1)
        stale = state["validations_without_improvement"] if state else 0
        history: list[dict[str, float]] = state["history"] if state else []
        val_history: list[dict[str, float]] = state["val_history"] if state else []
        if start >= c.iterations:
            logger.info("%s already finished %d iterations; nothing to do", c.method, start)
            return TrainingResult(self.best_path, self.last_path, best[0], best[1], start, history, val_history)

        generator = torch.Generator(device="cpu")
        batches = self._batches(sets, start)
        bar = tqdm(range(start, c.iterations), initial=start, total=c.iterations, desc=f"train {c.method}",
                   disable=not c.progress or self.rank != 0, unit="it")  # fmt: skip
        self.method.train()
        iteration = start
        started = time.perf_counter()
        for iteration in bar:
            torch.manual_seed(seed_for(c.seed, iteration))
            generator.manual_seed(seed_for(c.seed + 1, iteration))
            lr = self.learning_rate(iteration)
            context = StepContext(iteration, c.iterations, generator, lr_scale=lr / c.lr if c.lr else 0.0)
            labelled, unlabelled = next(batches)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with self._autocast():
                losses = self.method.losses(labelled, unlabelled, context)
            total = losses["total"]
            if not torch.isfinite(total):
                terms = ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
                raise TrainingDiverged(
                    f"{c.method}: the loss is not finite at iteration {iteration} ({terms}). "
                    f"The last good checkpoint is kept at {self.last_path}; lower training.lr or enable grad_clip."
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if c.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(list(self.method.trainable_parameters()), c.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.method.after_step(context)

            record = {"iteration": iteration + 1, "lr": lr, **{k: float(v.detach()) for k, v in losses.items()}}
            history.append(record)
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k not in ("iteration", "lr")}, refresh=False)
            if self.rank == 0:
                self.tracker.log_metrics({f"train/{k}": v for k, v in record.items() if k != "iteration"}, iteration + 1)

            done = iteration + 1
            stop = False
            if done % c.val_every == 0 or done == c.iterations:
                dice = self.validate(sets)
                val_history.append({"iteration": done, "val_dice": dice})
                if self.rank == 0:
                    self.tracker.log_metrics({"val/dice": dice}, done)
                if dice > best[0]:
                    best, stale = (dice, done), 0
                    self._save(self._state(done, best, stale, history, val_history), self.best_path)
                else:
                    stale += 1
                stop = c.early_stopping_patience is not None and stale >= c.early_stopping_patience
                if stop:
                    logger.info("Early stop at iteration %d: %d validations without improvement", done, stale)
            if done % c.checkpoint_every == 0 or done == c.iterations or stop:
                self._save(self._state(done, best, stale, history, val_history), self.last_path)
            if self.on_iteration is not None:
                self.on_iteration(done)
            if stop:
                break
        bar.close()
        self.tracker.flush()
        elapsed = time.perf_counter() - started
        done = history[-1]["iteration"] if history else start
        logger.info("%s: %d iterations in %.1f s (%.2f it/s); best val Dice %.4f at iteration %d",
                    c.method, done - start, elapsed, (done - start) / max(elapsed, 1e-9), best[0], best[1])  # fmt: skip
        return TrainingResult(self.best_path, self.last_path, best[0], best[1], done, history, val_history)


def summarise(history: list[dict[str, float]], window: int = 10) -> dict[str, float]:
    """Mean of each loss term over the first and last ``window`` iterations (for reports)."""
    if not history:
        return {}
    keys = [k for k in history[0] if k not in ("iteration", "lr")]
    first = {f"{k}_first": float(np.mean([h[k] for h in history[:window]])) for k in keys}
    last = {f"{k}_last": float(np.mean([h[k] for h in history[-window:]])) for k in keys}
    return {**first, **last}


def peak_gpu_mb(device: torch.device) -> float | None:
    """Peak CUDA memory allocated by this process, in MiB; None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def fit_summary(trainer: Trainer, result: TrainingResult, sets: TrainingSets, seconds: float) -> dict[str, Any]:
    """What one ``fit`` reports: the selection on val, speed, memory, the data's sizes and the losses."""
    return {
        "method": trainer.config.method,
        # the benchmark's cache compares them with today's, since its keys hold only the overrides
        "method_settings": dict(trainer.method.settings),
        "best_val_dice": result.best_val_dice,
        "best_iteration": result.best_iteration,
        "iterations": result.iterations_done,
        # wall time of fit(), validation included (a resumed run's covers only the iterations it ran itself)
        "train_seconds": seconds,
        "seconds_per_iteration": seconds / max(result.iterations_done, 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "peak_gpu_mb": peak_gpu_mb(trainer.device),
        "best_checkpoint": str(result.best_checkpoint),
        "last_checkpoint": str(result.last_checkpoint),
        "n_labelled": sets.n_labelled,
        "n_unlabelled": sets.n_unlabelled,
        "n_val": len(sets.val),
        "device": str(trainer.device),
        "input_size": trainer.config.input_size,
        "losses": summarise(result.history),
        "val_history": result.val_history,
    }
