"""Leak-aware labelled/unlabelled/val/test splitting.

Samples are first grouped so that nothing correlated crosses a split boundary: samples of one
subject share a group, and so do near-duplicate images (consecutive PSFHS frames of one exam
correlate above 0.9, DESIGN.md §3). Groups are linked transitively (union-find).

Each group then gets a split from a hash of (seed, group id), and each training sample a
labelled/unlabelled draw from a hash of (seed, sample id). Hashing, rather than shuffling, makes the
split deterministic *and* stable: appending samples never moves the samples already assigned
(unless a new sample bridges two old groups, which the report's group count shows).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SPLITS = ("labelled", "unlabelled", "val", "test")
TRAIN_SIDE = ("labelled", "unlabelled")


@dataclass(frozen=True)
class SplitConfig:
    """Split settings (``conf/base/parameters_splitting.yml``).

    Args:
        label_ratio: share of training-side samples with masks that keep their mask (labelled).
        val_fraction: expected share of samples (by group) in val.
        test_fraction: expected share of samples (by group) in test.
        seed: hash seed; another seed gives another, equally deterministic split.
        similarity_threshold: link any two images whose thumbnail Pearson correlation reaches this
            value; None groups by subject only.
        neighbour_threshold: link consecutive frames (same source, ids one apart, as PSFHS numbers
            the frames of an exam) whose correlation reaches this lower value; None disables it.
        signature_size: side of the thumbnail used for similarity, in pixels.
        strategy: ``stable`` puts a group in test/val when its hash draw falls below the fractions, so
            appended samples never move existing ones, but the shares vary with few groups;
            ``balanced`` fills test then val in hash order up to the fractions (exact to within one
            group), at the price of append stability.
    """

    label_ratio: float = 0.05
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    similarity_threshold: float | None = 0.9
    neighbour_threshold: float | None = 0.75
    signature_size: int = 64
    strategy: str = "stable"

    def __post_init__(self) -> None:
        for name in ("label_ratio", "val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"splitting.{name} must be within [0, 1], got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"splitting.val_fraction + test_fraction must be < 1 to leave training data, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        for name in ("similarity_threshold", "neighbour_threshold"):
            value = getattr(self, name)
            if value is not None and not -1.0 < value <= 1.0:
                raise ValueError(f"splitting.{name} must be in (-1, 1] or null, got {value}")
        if self.strategy not in ("stable", "balanced"):
            raise ValueError(f"splitting.strategy must be 'stable' or 'balanced', got '{self.strategy}'")
        if self.signature_size < 4:
            raise ValueError(f"splitting.signature_size must be >= 4, got {self.signature_size}")


def image_signatures(images: Iterable[np.ndarray], size: int) -> np.ndarray:
    """Zero-mean, unit-norm thumbnails, one row per image: their dot product is the Pearson
    correlation of the thumbnails. Constant images get a zero row (similar to nothing)."""
    import cv2

    rows = []
    for image in images:
        thumb = cv2.resize(np.nan_to_num(np.asarray(image, np.float32)), (size, size), interpolation=cv2.INTER_AREA)
        thumb = thumb.ravel() - thumb.mean()
        norm = np.linalg.norm(thumb)
        rows.append(thumb / norm if norm > 0 else thumb)
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, size * size), np.float32)


def _similar_pairs(signatures: np.ndarray, threshold: float, block: int = 2048) -> Iterable[tuple[int, int]]:
    """All pairs i < j with correlation >= threshold, computed in blocks to bound memory."""
    n = len(signatures)
    for start in range(0, n, block):
        sims = signatures[start : start + block] @ signatures.T
        rows, cols = np.nonzero(sims >= threshold)
        keep = cols > rows + start
        yield from zip((rows[keep] + start).tolist(), cols[keep].tolist())


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


def consecutive_pairs(sample_ids: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs of samples whose ids share a prefix and end in numbers one apart (frame runs)."""
    position = {}
    for i, sample_id in enumerate(sample_ids):
        match = _TRAILING_NUMBER.match(sample_id)
        if match:
            position[(match[1], int(match[2]))] = i
    return [(i, position[(prefix, number + 1)]) for (prefix, number), i in position.items() if (prefix, number + 1) in position]


def group_samples(
    sample_ids: Sequence[str],
    subject_ids: Sequence[str | None],
    signatures: np.ndarray | None,
    threshold: float | None,
    neighbour_threshold: float | None = None,
) -> list[str]:
    """A group id per sample: samples that share a subject, whose images correlate at or above
    ``threshold``, or that are consecutive frames correlating at or above ``neighbour_threshold``,
    share a group. A group is named after its subject when it has exactly one, else after its
    smallest sample id, so names survive appends."""
    n = len(sample_ids)
    forest = _UnionFind(n)
    first_of_subject: dict[str, int] = {}
    for i, subject in enumerate(subject_ids):
        if subject is not None and not (isinstance(subject, float) and np.isnan(subject)):
            forest.union(i, first_of_subject.setdefault(subject, i))
    if signatures is not None and threshold is not None:
        for i, j in _similar_pairs(signatures, threshold):
            forest.union(i, j)
    if signatures is not None and neighbour_threshold is not None:
        for i, j in consecutive_pairs(sample_ids):
            if float(signatures[i] @ signatures[j]) >= neighbour_threshold:
                forest.union(i, j)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(forest.find(i), []).append(i)
    names = [""] * n
    for indices in members.values():
        subjects = {subject_ids[i] for i in indices if isinstance(subject_ids[i], str)}
        name = subjects.pop() if len(subjects) == 1 else min(sample_ids[i] for i in indices)
        for i in indices:
            names[i] = name
    return names


def unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from the given parts (platform- and run-independent)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def assign_splits(table: pd.DataFrame, config: SplitConfig, class_columns: Sequence[str]) -> pd.Series:
    """The split of each sample.

    Args:
        table: one row per sample with ``sample_id``, ``group_id``, ``has_mask`` and the class
            fraction columns.
        config: fractions, ratio and seed.
        class_columns: the ``fraction_<k>`` columns; each class present in training-side masks gets
            at least one labelled sample.
    """
    group_draw = table["group_id"].map(lambda g: unit_hash(config.seed, "group", g))
    if config.strategy == "balanced":  # replace each draw by the sample share of the groups before it
        sizes = table.groupby("group_id").size()
        order = group_draw.groupby(table["group_id"]).first().sort_values(kind="stable").index
        share_before = (sizes[order].cumsum() - sizes[order]) / len(table)
        group_draw = table["group_id"].map(share_before)
    split = pd.Series("unlabelled", index=table.index, dtype=object)
    split[group_draw < config.test_fraction + config.val_fraction] = "val"
    split[group_draw < config.test_fraction] = "test"
    _fill_empty_evaluation_splits(table, split, group_draw, config)

    label_draw = table["sample_id"].map(lambda s: unit_hash(config.seed, "label", s))
    trainable = (split == "unlabelled") & table["has_mask"].astype(bool)
    split[trainable & (label_draw < config.label_ratio)] = "labelled"
    if config.label_ratio > 0:
        for column in class_columns:
            if not (split.eq("labelled") & (table[column] > 0)).any():
                candidates = label_draw[trainable & (table[column] > 0)]
                if len(candidates):
                    split[candidates.idxmin()] = "labelled"
                else:
                    logger.warning("No training-side mask contains %s: it cannot be labelled", column)
    return split


def _fill_empty_evaluation_splits(
    table: pd.DataFrame, split: pd.Series, group_draw: pd.Series, config: SplitConfig
) -> None:
    """Small datasets can hash no group into val or test; move the training-side group with masks and
    the lowest draw there, while at least two training-side groups remain."""
    for name, fraction in (("test", config.test_fraction), ("val", config.val_fraction)):
        if fraction == 0 or (split == name).any():
            continue
        train_groups = table.loc[(split == "unlabelled") & table["has_mask"].astype(bool), "group_id"]
        if train_groups.nunique() < 3:
            logger.warning("Too few groups to fill the empty %s split", name)
            continue
        chosen = group_draw[train_groups.index].idxmin()
        split[table["group_id"] == table.at[chosen, "group_id"]] = name


def cross_split_similarity(signatures: np.ndarray, split: Sequence[str], sample_ids: Sequence[str]) -> dict:
    """The largest image similarity between samples on different sides of each boundary
    (training side vs val, training side vs test, val vs test), with the pair that reaches it."""
    side = np.array(["train" if s in TRAIN_SIDE else s for s in split])
    report = {}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        ia, ib = np.flatnonzero(side == a), np.flatnonzero(side == b)
        if len(ia) == 0 or len(ib) == 0:
            report[f"{a}/{b}"] = None
            continue
        best, pair = -1.0, None
        for start in range(0, len(ia), 2048):
            rows = ia[start : start + 2048]
            sims = signatures[rows] @ signatures[ib].T
            k = int(np.argmax(sims))
            if sims.flat[k] > best:
                best, pair = float(sims.flat[k]), (sample_ids[rows[k // len(ib)]], sample_ids[ib[k % len(ib)]])
        report[f"{a}/{b}"] = {"max_similarity": round(best, 4), "pair": list(pair)}
    return report


def split_report(table: pd.DataFrame, class_columns: Sequence[str], leak: dict, config: SplitConfig) -> dict:
    """Counts per split and per class, group statistics and the leak check, as a JSON-able dict."""
    group_sizes = table.groupby("group_id").size()
    per_class = {
        column.removeprefix("fraction_"): {s: int(((table["split"] == s) & (table[column] > 0)).sum()) for s in SPLITS}
        for column in class_columns
    }
    threshold = config.similarity_threshold
    worst = max((v["max_similarity"] for v in leak.values() if v), default=None)
    return {
        "config": vars(config),
        "counts": {s: int((table["split"] == s).sum()) for s in SPLITS},
        "groups": {
            "count": int(len(group_sizes)),
            "largest": int(group_sizes.max()) if len(group_sizes) else 0,
            "per_split": {s: int(table.loc[table["split"] == s, "group_id"].nunique()) for s in SPLITS},
        },
        "samples_with_class": per_class,
        "leak_check": {
            "cross_split_max_similarity": leak,
            "largest": worst,
            "below_threshold": None if threshold is None or worst is None else bool(worst < threshold),
        },
    }
