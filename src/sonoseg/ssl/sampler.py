"""The per-step index stream of semi-supervised training: a labelled and an unlabelled batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["LabelledUnlabelledSampler"]

logger = logging.getLogger(__name__)


class _Pool:
    """One index pool drawn epoch by epoch: a fresh permutation each epoch, consumed in order."""

    def __init__(self, indices: Sequence[int], rng: np.random.Generator) -> None:
        self.indices = np.asarray(list(indices), dtype=np.int64)
        self.rng = rng
        self.order = np.empty(0, dtype=np.int64)  # a permutation of positions into ``indices``
        self.position = 0
        self.epoch = -1  # the epoch of ``order``; -1 before the first draw

    def take(self, count: int) -> list[int]:
        """The next ``count`` indices; an exhausted epoch is followed by a new permutation, so a batch can
        straddle epochs and a pool smaller than the batch repeats indices."""
        if count == 0 or self.indices.size == 0:
            return []
        chosen: list[np.ndarray] = []
        needed = count
        while needed:
            if self.position >= self.order.size:
                self.order = self.rng.permutation(self.indices.size)
                self.position = 0
                self.epoch += 1
            step = min(needed, self.order.size - self.position)
            chosen.append(self.order[self.position : self.position + step])
            self.position += step
            needed -= step
        return self.indices[np.concatenate(chosen)].tolist()

    def state_dict(self) -> dict[str, Any]:
        return {
            "size": int(self.indices.size),
            "rng": self.rng.bit_generator.state,
            "order": self.order.tolist(),
            "position": self.position,
            "epoch": self.epoch,
        }

    def check_size(self, state: dict[str, Any], name: str) -> None:
        if int(state["size"]) != self.indices.size:
            raise ValueError(
                f"the {name} pool has {self.indices.size} indices but the saved sampler state had {state['size']}; "
                "a resumed run needs the same pools"
            )

    def load_state_dict(self, state: dict[str, Any], name: str) -> None:
        self.check_size(state, name)
        self.rng.bit_generator.state = state["rng"]
        self.order = np.asarray(state["order"], dtype=np.int64)
        self.position = int(state["position"])
        self.epoch = int(state["epoch"])


class LabelledUnlabelledSampler(Iterator[tuple[list[int], list[int]]]):
    """An infinite stream of ``(labelled_indices, unlabelled_indices)``, one pair per training step.

    Each pool is reshuffled every epoch with its own ``numpy`` generator (both derived from ``seed``),
    independently of the other, and cycles for ever: the smaller pool simply wraps around more often.
    Within an epoch every index of a pool is drawn exactly once; a batch that reaches the end of an
    epoch continues with the next epoch's permutation, and a pool smaller than its batch repeats
    indices. An empty unlabelled pool, or ``unlabelled_batch == 0``, gives an empty unlabelled list at
    every step. ``state_dict`` / ``load_state_dict`` capture the generators and positions, so a resumed
    run continues the exact same stream.

    Args:
        labelled_indices: dataset indices of the labelled samples; must not be empty.
        unlabelled_indices: dataset indices of the unlabelled samples; may be empty.
        labelled_batch: labelled indices per step, >= 1.
        unlabelled_batch: unlabelled indices per step, >= 0.
        seed: the seed of both pools' generators.

    Raises:
        ValueError: for an empty labelled pool or invalid batch sizes.

    Example::

        sampler = LabelledUnlabelledSampler(range(10), range(10, 100), 4, 8, seed=0)
        labelled, unlabelled = next(sampler)  # 4 and 8 dataset indices
    """

    def __init__(
        self,
        labelled_indices: Sequence[int],
        unlabelled_indices: Sequence[int],
        labelled_batch: int,
        unlabelled_batch: int,
        seed: int,
    ) -> None:
        if len(labelled_indices) == 0:
            raise ValueError(
                "LabelledUnlabelledSampler needs at least one labelled index: the labelled pool is empty "
                "(check the split's labelled fraction and that the labelled samples have masks)"
            )
        if labelled_batch < 1:
            raise ValueError(f"labelled_batch must be >= 1, got {labelled_batch}")
        if unlabelled_batch < 0:
            raise ValueError(f"unlabelled_batch must be >= 0, got {unlabelled_batch}")
        self.labelled_batch = int(labelled_batch)
        self.unlabelled_batch = int(unlabelled_batch)
        self.seed = int(seed)
        labelled_seed, unlabelled_seed = np.random.SeedSequence(self.seed).spawn(2)
        self._labelled = _Pool(labelled_indices, np.random.default_rng(labelled_seed))
        self._unlabelled = _Pool(unlabelled_indices, np.random.default_rng(unlabelled_seed))
        self.step = 0
        if unlabelled_batch and len(unlabelled_indices) == 0:
            logger.warning("The unlabelled pool is empty: every step gets an empty unlabelled batch")
        elif 0 < len(unlabelled_indices) < unlabelled_batch:
            logger.info(
                "The unlabelled pool (%d) is smaller than the unlabelled batch (%d): indices repeat within a step",
                len(unlabelled_indices),
                unlabelled_batch,
            )

    @property
    def labelled_epoch(self) -> int:
        """The labelled pool's current epoch (0-based; -1 before the first step)."""
        return self._labelled.epoch

    @property
    def unlabelled_epoch(self) -> int:
        """The unlabelled pool's current epoch (0-based; -1 before its first draw)."""
        return self._unlabelled.epoch

    def __iter__(self) -> LabelledUnlabelledSampler:
        return self

    def __next__(self) -> tuple[list[int], list[int]]:
        labelled = self._labelled.take(self.labelled_batch)
        unlabelled = self._unlabelled.take(self.unlabelled_batch)
        self.step += 1
        return labelled, unlabelled

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream: generator states, permutations, positions and the
        step count (plain Python values, safe for ``torch.save`` and JSON)."""
        return {
            "seed": self.seed,
            "step": self.step,
            "labelled_batch": self.labelled_batch,
            "unlabelled_batch": self.unlabelled_batch,
            "labelled": self._labelled.state_dict(),
            "unlabelled": self._unlabelled.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by :meth:`state_dict`.

        Args:
            state: a :meth:`state_dict` of a sampler over pools of the same sizes and the same batch sizes.

        Raises:
            ValueError: when the pools' sizes or the batch sizes differ from the saved ones.
        """
        for key in ("labelled_batch", "unlabelled_batch"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"{key} is {getattr(self, key)} but the saved sampler state had {state[key]}")
        for name, pool in (("labelled", self._labelled), ("unlabelled", self._unlabelled)):
            pool.check_size(state[name], name)
        self._labelled.load_state_dict(state["labelled"], "labelled")
        self._unlabelled.load_state_dict(state["unlabelled"], "unlabelled")
        self.seed = int(state["seed"])
        self.step = int(state["step"])
