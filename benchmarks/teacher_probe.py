"""Teacher probe: does an EMA teacher track its student while a method trains?

Run: ``.venv/bin/python benchmarks/teacher_probe.py --dataset hc18 --ratio 0.05 --method hdc --set pix_dice=1.0
--teacher-stats copy --iterations 1000`` → ``benchmarks/results/teacher_probe/<name>.{json,md}``.

It trains one method on the split that ``ssl_benchmark.py`` left in ``benchmarks/work/<dataset>/`` (run it for
that dataset and ratio first), at the CPU budget's settings (128², unet_small, batch 8 + 8, schedule and
ramp-up for 4,000 iterations), and stops after ``--iterations``. Every ``--every`` iterations it measures the
student and the teacher as the trainer validates them (eval mode, at the input size): val Dice, val cases
under Dice 0.3 and predicted ÷ true foreground area; and on every 8th unlabelled image, the mean predicted
foreground fraction, the images with under 1 % foreground, and the share of pixels whose top probability is
at least 0.8. With several foreground classes (PSFHS), each class also gets its val Dice, poor val cases, area
ratio and unlabelled share, in a table of its own. The mean of each training loss over the last ``--every``
iterations goes with it.

``--teacher-stats copy`` replays the EMA update as it was before commit a4f7e8c, where the teacher took the
student's BatchNorm running statistics as they were instead of averaging them, to show what that did.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from sonoseg.io.store import SampleStore
from sonoseg.ssl import ema
from sonoseg.training.config import TrainerConfig
from sonoseg.training.data import TrainingSets, training_sets
from sonoseg.training.trainer import Trainer, dice_per_class

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.teacher_probe")
CPU_SETTINGS = {"device": "cpu", "input_size": 128, "iterations": 4000, "labelled_batch": 8, "unlabelled_batch": 8}
CONFIDENT, EMPTY_FRACTION, POOR_DICE, UNLABELLED_STRIDE = 0.8, 0.01, 0.3, 8


class ProbeDone(Exception):
    """Raised from the iteration hook to end training at ``--iterations``."""


@torch.no_grad()
def copy_statistics_update(teacher: torch.nn.Module, student: torch.nn.Module, step: int, decay: float) -> float:
    """The EMA update before a4f7e8c: parameters averaged, every buffer copied from the student."""
    alpha = ema.ema_update(teacher, student, step, decay)
    buffers = dict(student.named_buffers())
    for name, t in teacher.named_buffers():
        t.copy_(buffers[name])
    return alpha


@torch.no_grad()
def measure(net: torch.nn.Module, val_images: torch.Tensor, val_masks: torch.Tensor, unlabelled: torch.Tensor,
            class_names: Sequence[str]) -> dict[str, float]:  # fmt: skip
    """Val Dice, poor val cases and area ratio; foreground, empty and confident shares on unlabelled images.

    ``class_names`` are the foreground classes, label 1 on. With more than one, each also gets its own val Dice,
    poor val cases, val area ratio and unlabelled share, suffixed with its name: a union can hide one small
    class vanishing behind a large one.
    """
    was_training = net.training
    net.eval()
    logits = net(val_images)
    per_class_dice = dice_per_class(logits, val_masks, len(class_names) + 1)
    dice = per_class_dice.mean(1)
    predicted = logits.argmax(1)
    probs = torch.softmax(net(unlabelled), 1)
    unlabelled_predicted = probs.argmax(1)
    foreground = (unlabelled_predicted > 0).float().mean((1, 2))
    net.train(was_training)
    measures = {
        "val_dice": float(dice.mean()),
        "val_poor_cases": int((dice < POOR_DICE).sum()),
        "val_area_ratio": float((predicted > 0).float().sum() / (val_masks > 0).float().sum()),
        "unlabelled_foreground": float(foreground.mean()),
        "unlabelled_empty": int((foreground < EMPTY_FRACTION).sum()),
        "unlabelled_confident": float((probs.max(1).values >= CONFIDENT).float().mean()),
    }
    if len(class_names) > 1:
        for label, name in enumerate(class_names, start=1):
            measures |= {
                f"val_dice_{name}": float(per_class_dice[:, label - 1].mean()),
                f"val_poor_cases_{name}": int((per_class_dice[:, label - 1] < POOR_DICE).sum()),
                f"val_area_ratio_{name}": float((predicted == label).float().sum() / (val_masks == label).float().sum()),
                f"unlabelled_foreground_{name}": float((unlabelled_predicted == label).float().mean()),
            }
    return measures


def load_work(work: Path, size: int, ratio: float | None = None) -> tuple[TrainingSets, list[str]]:
    """The training and val sets of the work directory's split (which must be at ``ratio`` when one is given)
    and its foreground class names."""
    if ratio is not None:
        report = json.loads((work / "data/08_reporting/split_report.json").read_text())
        if report["config"]["label_ratio"] != ratio:
            raise ValueError(f"{work}: its split is at label ratio {report['config']['label_ratio']}, not {ratio}: "
                             f"run ssl_benchmark.py for this dataset at {ratio} first")  # fmt: skip
    manifest = pd.read_parquet(work / "data/03_primary/manifest_validated.parquet")
    splits = pd.read_csv(work / "data/03_primary/splits.csv")
    classes = json.loads((work / "data/02_intermediate/dataset.json").read_text())["classes"]
    names = [classes[str(label)] for label in range(1, len(classes))]
    return training_sets(manifest, splits, SampleStore(work / "data/02_intermediate"), size), names


def val_tensors(sets: TrainingSets) -> tuple[torch.Tensor, torch.Tensor]:
    """The val images and masks, stacked."""
    val = [sets.val[i] for i in range(len(sets.val))]
    return torch.stack([image for image, _ in val]), torch.stack([mask for _, mask in val])


def probe(dataset: str, ratio: float, method: str, settings: dict[str, Any], teacher_stats: str, iterations: int,
          every: int, seed: int, output_dir: Path,
          save: Callable[[list[dict[str, Any]]], None]) -> None:  # fmt: skip
    """Train and measure; one record per ``every`` iterations, each passed to ``save`` with those before it,
    so that a run stopped late keeps what it measured."""
    work = ROOT / "benchmarks/work" / dataset
    params = yaml.safe_load((work / "conf/base/parameters_training.yml").read_text())["training"]
    params.update(CPU_SETTINGS, method=method, seed=seed, val_every=10**9, checkpoint_every=10**9, progress=True,
                  output_dir=str(output_dir))  # fmt: skip
    method_settings = {**(params.get(method) or {}), **settings}
    params[method] = method_settings
    sets, foreground_names = load_work(work, params["input_size"], ratio)
    trainer = Trainer(TrainerConfig.from_params(params), method_settings, len(foreground_names) + 1)
    if "teacher" not in trainer.method.networks:
        raise ValueError(f"{method} has no network called 'teacher' to probe")
    if teacher_stats == "copy":  # the methods import ema_update by name, so patch it where it is used
        sys.modules[type(trainer.method).__module__].ema_update = copy_statistics_update
    val_images, val_masks = val_tensors(sets)
    unlabelled = torch.stack([sets.train[i][0] for i in range(sets.n_labelled, len(sets.train), UNLABELLED_STRIDE)])
    losses: list[dict[str, float]] = []
    records: list[dict[str, Any]] = []

    class LossWindow:
        def log_metrics(self, metrics: dict[str, float], step: int) -> None:
            losses.append(metrics)

        def flush(self) -> None:
            pass

    def on_iteration(done: int) -> None:
        if done % every:
            return
        record: dict[str, Any] = {"iteration": done}
        for role in ("student", "teacher"):
            net = trainer.method.inner(role)
            record.update({f"{role}_{k}": v for k, v in measure(net, val_images, val_masks, unlabelled, foreground_names).items()})
        record.update(loss_means(losses[-every:]))
        records.append(record)
        save(records)
        logger.info("iteration %d: student val Dice %.3f, teacher %.3f, teacher empty on %d unlabelled", done,
                    record["student_val_dice"], record["teacher_val_dice"], record["teacher_unlabelled_empty"])  # fmt: skip
        if done >= iterations:
            raise ProbeDone

    trainer.tracker, trainer.on_iteration = LossWindow(), on_iteration
    try:
        trainer.fit(sets)
    except ProbeDone:
        pass


def loss_means(window: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each ``train/`` loss averaged over the window's iterations, named without the prefix (the rate left out).
    Entries without one are skipped: the trainer logs the last iteration's val Dice on its own."""
    steps = [entry for entry in window if any(key.startswith("train/") for key in entry)]
    keys = [key for key in steps[-1] if key.startswith("train/") and key != "train/lr"]
    return {key.removeprefix("train/"): sum(entry[key] for entry in steps) / len(steps) for key in keys}


def markdown(name: str, command: str, records: Sequence[dict[str, Any]]) -> str:
    columns = [("iteration", "iteration", "{}"), ("student val Dice", "student_val_dice", "{:.3f}"),
               ("teacher val Dice", "teacher_val_dice", "{:.3f}"), ("teacher val area ÷ truth", "teacher_val_area_ratio", "{:.2f}"),
               ("teacher: unlabelled foreground", "teacher_unlabelled_foreground", "{:.3f}"),
               ("teacher: empty unlabelled", "teacher_unlabelled_empty", "{}"),
               ("teacher: confident pixels", "teacher_unlabelled_confident", "{:.3f}"),
               ("student val poor cases", "student_val_poor_cases", "{}")]  # fmt: skip
    lines = [f"### {name}", "", f"`{command}`", "", *table(columns, records)]
    prefix = "teacher_val_area_ratio_"
    class_names = [key.removeprefix(prefix) for key in records[0] if key.startswith(prefix)] if records else []
    for class_name in class_names:
        per_class = [("iteration", "iteration", "{}")] + [
            (f"{role} {title}", f"{role}_{key}_{class_name}", fmt)
            for role in ("student", "teacher")
            for title, key, fmt in (("val Dice", "val_dice", "{:.3f}"), ("val area ÷ truth", "val_area_ratio", "{:.2f}"),
                                    ("val poor cases", "val_poor_cases", "{}"),
                                    ("unlabelled share", "unlabelled_foreground", "{:.4f}"))
        ]  # fmt: skip
        lines += ["", f"{class_name} alone:", "", *table(per_class, records)]
    return "\n".join(lines) + "\n"


def table(columns: Sequence[tuple[str, str, str]], records: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown rows of (title, record key, format) columns, one row per record."""
    lines = ["| " + " | ".join(title for title, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(fmt.format(r[key]) for _, key, fmt in columns) + " |" for r in records]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="hc18")
    parser.add_argument("--ratio", type=float, default=0.05)
    parser.add_argument("--method", default="hdc")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a method setting (YAML value)")
    parser.add_argument("--teacher-stats", choices=("average", "copy"), default="average")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/teacher_probe")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    suffix = "".join(f"_{k}-{v}" for k, v in sorted(settings.items()))
    name = f"{args.dataset}_{args.ratio}_{args.method}{suffix}_seed{args.seed}_stats-{args.teacher_stats}"
    command = "python benchmarks/teacher_probe.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    # float sums differ with the thread count, and a run that is close to breaking down amplifies that
    command += f"  # torch threads: {torch.get_num_threads()}"

    def save(records: list[dict[str, Any]]) -> None:
        (args.out / f"{name}.json").write_text(json.dumps({"command": command, "records": records}, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(markdown(name, command, records))

    probe(args.dataset, args.ratio, args.method, settings, args.teacher_stats, args.iterations, args.every, args.seed,
          ROOT / "benchmarks/work" / args.dataset / "data/06_models/teacher_probe" / name, save)  # fmt: skip
    logger.info("Wrote %s.{json,md}", args.out / name)


if __name__ == "__main__":
    main()
