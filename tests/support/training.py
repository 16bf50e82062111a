"""A tiny synthetic sample store with splits, and a trainer configured for it, for training tests.
Also runnable as a script (``python -m support.training CONFIG.json``) so a test can kill it."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pandas as pd

from sonoseg.io.readers import SyntheticReader
from sonoseg.io.store import SampleStore, ingest
from sonoseg.training.config import TrainerConfig
from sonoseg.training.data import training_sets
from sonoseg.training.trainer import Trainer


def tiny_store(root: Path, n_images: int = 24, size: int = 32) -> tuple[pd.DataFrame, pd.DataFrame, SampleStore]:
    """Synthetic samples and fixed splits: 6 labelled, 10 unlabelled, 4 val, 4 test."""
    store = SampleStore(root)
    manifest, _ = ingest(SyntheticReader(n_images, {"size": size, "seed": 3}), store, progress=False)
    names = ["labelled"] * 6 + ["unlabelled"] * 10 + ["val"] * 4 + ["test"] * 4
    splits = pd.DataFrame({"sample_id": manifest["sample_id"], "split": (names * n_images)[:n_images]})
    return manifest, splits, store


def make_trainer(method: str, out_dir: Path, **overrides) -> Trainer:
    settings = overrides.pop("settings", {})
    options = {
        "method": method, "iterations": 4, "checkpoint_every": 2, "val_every": 2, "input_size": 32,
        "labelled_batch": 2, "unlabelled_batch": 2, "output_dir": str(out_dir), "progress": False, "device": "cpu",
        **overrides,
    }  # fmt: skip
    return Trainer(TrainerConfig(**options), settings, num_classes=3)


def train(method: str, data_dir: Path, out_dir: Path, **overrides):
    manifest, splits, store = tiny_store(data_dir)
    trainer = make_trainer(method, out_dir, **overrides)
    sets = training_sets(manifest, splits, store, trainer.config.input_size, trainer.method.uses_all_labels)
    return trainer, trainer.fit(sets)


def main(config_path: str) -> None:
    """Train as the JSON config says; with ``kill_at`` set, SIGKILL this process after that iteration."""
    config = json.loads(Path(config_path).read_text())
    kill_at = config.pop("kill_at", None)
    manifest, splits, store = tiny_store(Path(config.pop("data_dir")))
    trainer = make_trainer(config.pop("method"), Path(config.pop("out_dir")), **config)
    if kill_at is not None:
        trainer.on_iteration = lambda done: os.kill(os.getpid(), signal.SIGKILL) if done == kill_at else None
    sets = training_sets(manifest, splits, store, trainer.config.input_size)
    trainer.fit(sets)


if __name__ == "__main__":
    main(sys.argv[1])
