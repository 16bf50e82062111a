"""Training data: samples of the sample store, resized to the network input size, served in
labelled + unlabelled batches by index lists from ``LabelledUnlabelledSampler``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from sonoseg.io.store import SampleStore

IGNORE_LABEL = 255  # the mask value of pixels that carry no label (unlabelled samples)


def normalise_image(image: np.ndarray) -> np.ndarray:
    """Float32 in [0, 1]: uint8/uint16 by their full range, other dtypes by the image's own range."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    values = np.nan_to_num(image.astype(np.float32))
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def resize_pair(image: np.ndarray, mask: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Image by area interpolation, mask by nearest neighbour, to size × size."""
    import cv2

    if image.shape != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if mask is not None and mask.shape != (size, size):
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return image, mask


class StoreDataset(Dataset):
    """Samples of the store at the network input size. ``hide_masks`` marks samples trained as
    unlabelled: their masks are replaced by ``IGNORE_LABEL`` so no loss can use them by accident."""

    def __init__(self, store: SampleStore, rows: pd.DataFrame, size: int, hide_masks: Sequence[bool] | None = None):
        self.store = store
        self.image_paths = rows["image_path"].tolist()
        self.mask_paths = [p if isinstance(p, str) else None for p in rows["mask_path"]]
        self.sample_ids = rows["sample_id"].tolist()
        self.hide = list(hide_masks) if hide_masks is not None else [False] * len(rows)
        self.size = size

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = normalise_image(np.asarray(self.store.load(self.image_paths[index])))
        path = None if self.hide[index] else self.mask_paths[index]
        mask = np.asarray(self.store.load(path)) if path is not None else None
        image, mask = resize_pair(image, mask, self.size)
        if mask is None:
            mask = np.full((self.size, self.size), IGNORE_LABEL, np.uint8)
        return torch.from_numpy(np.ascontiguousarray(image))[None], torch.from_numpy(mask.astype(np.int64))


@dataclass
class TrainingSets:
    """Datasets by role. ``train`` holds the labelled samples first, then the unlabelled ones."""

    train: StoreDataset
    n_labelled: int
    val: StoreDataset

    @property
    def n_unlabelled(self) -> int:
        return len(self.train) - self.n_labelled


def training_sets(
    manifest: pd.DataFrame, splits: pd.DataFrame, store: SampleStore, size: int, use_all_labels: bool = False
) -> TrainingSets:
    """Build the training and validation sets from the splits.

    Args:
        use_all_labels: the fully supervised upper bound: every training-side sample with a mask is
            labelled (unlabelled masks revealed).
    """
    table = manifest.merge(splits[["sample_id", "split"]], on="sample_id", how="inner", validate="one_to_one")
    has_mask = table["mask_path"].map(lambda p: isinstance(p, str))
    labelled = table["split"].eq("labelled") | (use_all_labels & table["split"].eq("unlabelled") & has_mask)
    unlabelled = table["split"].eq("unlabelled") & ~labelled
    val = table[table["split"].eq("val") & has_mask]
    if not labelled.any():
        raise ValueError("The splits hold no labelled sample: raise splitting.label_ratio or check the splits.")
    if val.empty:
        raise ValueError("The splits hold no validation sample with a mask: raise splitting.val_fraction.")
    train_rows = pd.concat([table[labelled], table[unlabelled]], ignore_index=True)
    hide = [False] * int(labelled.sum()) + [True] * int(unlabelled.sum())
    return TrainingSets(StoreDataset(store, train_rows, size, hide), int(labelled.sum()), StoreDataset(store, val, size))


def batch_loader(
    dataset: Dataset, index_batches: Iterator[list[int]], workers: int, pin_memory: bool, seed: int
) -> DataLoader:
    """A loader that fetches the given index lists (one list per step) with worker processes. It has
    its own generator: drawing its base seed from the global RNG would shift every random draw of the
    step in which it starts, so a resumed run would diverge from an uninterrupted one."""
    return DataLoader(
        dataset, batch_sampler=index_batches, num_workers=workers, pin_memory=pin_memory,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
