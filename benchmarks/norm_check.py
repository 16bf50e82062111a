"""BatchNorm check: whether a trained network's val masks depend on how its BatchNorm layers normalise.

Run: ``.venv/bin/python benchmarks/norm_check.py --dataset psfhs --checkpoint LABEL=PATH ...``
→ ``benchmarks/results/norm_check.{json,md}``.

A mean teacher's student normalises each unlabelled batch with that batch's statistics (train mode); its EMA
teacher runs in eval mode, with running statistics. The consistency loss then also teaches the student the
difference between the two modes. For each network of each checkpoint (student and teacher) this reports:

- the val Dice and per-class Dice and predicted ÷ true area with the stored running statistics, and with
  running statistics re-estimated on the labelled images and on the unlabelled ones (is a decline in the
  weights, or only in stale statistics?);
- on unlabelled batches of ``--batch`` images, each class's share of the predicted pixels in eval and in train
  mode, and the mean squared difference of the two modes' softmax (how large is the difference the
  consistency loss sees?).

The data is the split that ``ssl_benchmark.py`` left in ``benchmarks/work/<dataset>/`` (val is the same at every
label ratio; its labelled and unlabelled sets are those of its ratio), at the checkpoint's input size.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sonoseg.ssl.ema import batch_norms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise_response import checkpoint_networks, measure  # noqa: E402  (scripts beside this one, not a package)
from teacher_probe import load_work, val_tensors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.norm_check")


@torch.no_grad()
def recalibrated(net: nn.Module, images: torch.Tensor, batch: int) -> nn.Module:
    """A copy of ``net`` whose running statistics are the mean of the batch statistics of ``images``, taken in
    batches of ``batch``; the weights are the same."""
    copied = copy.deepcopy(net)
    for norm in batch_norms(copied):
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    copied.train()
    for start in range(0, len(images), batch):
        copied(images[start : start + batch])
    return copied.eval()


@torch.no_grad()
def mode_gap(net: nn.Module, images: torch.Tensor, batch: int, num_classes: int) -> dict[str, Any]:
    """Each class's share of the predicted pixels in eval and in train mode (batches of ``batch``), and the
    mean squared difference of the two modes' softmax. The running statistics are left as they were."""
    probed = copy.deepcopy(net)
    for norm in batch_norms(probed):
        norm.momentum = 0.0  # train mode reads the batch statistics without moving the running ones
    softmax = {}
    for mode in ("eval", "train"):
        probed.train(mode == "train")
        softmax[mode] = torch.cat([probed(images[i : i + batch]).softmax(1) for i in range(0, len(images), batch)])
    result: dict[str, Any] = {"softmax_mse": float(((softmax["train"] - softmax["eval"]) ** 2).mean())}
    for mode, probabilities in softmax.items():
        predicted = probabilities.argmax(1)
        result[f"share_{mode}"] = [float((predicted == label).float().mean()) for label in range(num_classes)]
    return result


def check(net: nn.Module, sets: Any, class_names: Sequence[str], unlabelled_count: int, batch: int) -> dict[str, Any]:
    """The measures above for one network."""
    val_images, val_masks = val_tensors(sets)
    labelled = torch.stack([sets.train[i][0] for i in range(sets.n_labelled)])
    step = max(1, sets.n_unlabelled // unlabelled_count)
    unlabelled = torch.stack([sets.train[i][0] for i in range(sets.n_labelled, len(sets.train), step)][:unlabelled_count])
    val = {"stored": measure(net, val_images, val_masks, class_names)}
    for name, images in (("labelled", labelled), ("unlabelled", unlabelled)):
        val[f"recalibrated on {name}"] = measure(recalibrated(net, images, batch), val_images, val_masks, class_names)
    return {"val": val, "unlabelled_images": len(unlabelled), **mode_gap(net, unlabelled, batch, len(class_names) + 1)}


def markdown(command: str, records: Sequence[dict[str, Any]], class_names: Sequence[str], batch: int) -> str:
    lines = ["## BatchNorm check", "", f"`{command}`", "", "Val, by the running statistics used:", ""]
    titles = ["checkpoint", "iteration", "network", "running statistics", "val Dice"]
    for name in class_names:
        titles += [f"{name} Dice", f"{name} area ÷ truth"]
    lines += ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in records:
        for stats, v in r["val"].items():
            cells = [r["checkpoint"], str(r["iteration"]), r["network"], stats, f"{v['dice']:.3f}"]
            cells += [f"{v[f'{k}_{name}']:.3f}" if k == "dice" else f"{v[f'{k}_{name}']:.2f}"
                      for name in class_names for k in ("dice", "area_ratio")]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Unlabelled images in batches of {batch}: each class's share of the predicted pixels in eval mode "
              "(running statistics) and train mode (batch statistics), and the softmax MSE between the modes:", ""]  # fmt: skip
    titles = ["checkpoint", "iteration", "network", "images", "softmax MSE"]
    titles += [f"{name} share, {mode}" for name in class_names for mode in ("eval", "train")]
    lines += ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in records:
        cells = [r["checkpoint"], str(r["iteration"]), r["network"], str(r["unlabelled_images"]), f"{r['softmax_mse']:.5f}"]
        cells += [f"{r[f'share_{mode}'][label]:.4f}" for label in range(1, len(class_names) + 1) for mode in ("eval", "train")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="psfhs")
    parser.add_argument("--checkpoint", action="append", required=True, metavar="LABEL=PATH",
                        help="a trainer checkpoint (best.pt or last.pt); its student and teacher are checked")  # fmt: skip
    parser.add_argument("--unlabelled", type=int, default=160, help="unlabelled images, evenly spaced in the split")
    parser.add_argument("--batch", type=int, default=8, help="the training batch of unlabelled images")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    command = ".venv/bin/python benchmarks/norm_check.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    records: list[dict[str, Any]] = []
    loaded: dict[int, tuple[Any, list[str]]] = {}
    for label, path, checkpoint, role, net in checkpoint_networks(parser, args.checkpoint):
        size = checkpoint["input_size"]
        if size not in loaded:
            loaded[size] = load_work(ROOT / "benchmarks/work" / args.dataset, size)
        sets, class_names = loaded[size]
        result = check(net.eval(), sets, class_names, args.unlabelled, args.batch)
        records.append({"checkpoint": label, "path": path, "iteration": checkpoint["iteration"], "network": role, **result})
        logger.info("%s (%s, iteration %d): checked", label, role, checkpoint["iteration"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "norm_check.json").write_text(json.dumps({"command": command, "records": records}, indent=2) + "\n")
    (args.out / "norm_check.md").write_text(markdown(command, records, class_names, args.batch))
    logger.info("Wrote %s.{json,md}", args.out / "norm_check")


if __name__ == "__main__":
    main()
