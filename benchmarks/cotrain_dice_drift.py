"""Co-training's mutual Dice with a soft target: does it widen a small structure with no data at all?

Run: ``.venv/bin/python benchmarks/cotrain_dice_drift.py`` → ``benchmarks/results/cotrain_dice_drift.{json,md}``.

Two free logit maps (no network, no images) start identical: a background, a small disk (radius 6 px, a
symphysis-sized class) and a large one (radius 30 px, a head-sized class) on a 128² grid, each class's logit its
signed distance to the disk's edge divided by a ramp width, so the argmax is exactly the disks and the
probabilities fall off across the edge over about that many pixels. Adam then trains both maps on cotrain's
mutual terms only (``CoTraining.mutual_terms``: each map against the other's detached prediction), as the
configured ``dice_weight``/``kl_weight`` combine them, for each ``dice_target`` and for the KL term alone. Two
identical maps already agree, so any change of the argmax areas is the loss's own pull, not disagreement.
It reports each class's argmax area ÷ its starting area after each of ``--checkpoints`` steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sonoseg.ssl.base import build_method

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.cotrain_dice_drift")
SIZE = 128
DISKS = {"small (r 6)": (90.0, 40.0, 6.0), "large (r 30)": (50.0, 75.0, 30.0)}
VARIANTS = {  # label: (dice_target, dice_weight, kl_weight)
    "soft Dice + KL (default)": ("soft", 1.0, 1.0),
    "hard Dice + KL": ("hard", 1.0, 1.0),
    "KL only": ("soft", 0.0, 1.0),
}


def disk_logits(ramp: float) -> torch.Tensor:
    """``(1, 1 + disks, SIZE, SIZE)``: background 0, each disk's signed distance to its edge ÷ ``ramp``."""
    yy, xx = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    maps = [torch.zeros(SIZE, SIZE)] + [radius - torch.hypot(yy - cy, xx - cx) for cy, cx, radius in DISKS.values()]
    return torch.stack(maps)[None] / ramp


def class_areas(logits: torch.Tensor) -> list[int]:
    labels = logits.argmax(1)
    return [int((labels == c).sum()) for c in range(1, logits.shape[1])]


def drift(dice_target: str, dice_weight: float, kl_weight: float, ramp: float, checkpoints: Sequence[int], lr: float) -> list[dict[str, Any]]:
    """Train two identical maps on each other; each class's area ÷ its start after each checkpoint step."""
    method = build_method("cotrain", {"dice_target": dice_target}, {"name": "unet_small"}, num_classes=1 + len(DISKS))
    a, b = disk_logits(ramp).requires_grad_(), disk_logits(ramp).requires_grad_()
    optimizer = torch.optim.Adam([a, b], lr=lr)
    start = class_areas(a)
    rows = []
    for step in range(1, max(checkpoints) + 1):
        dice, kl = method.mutual_terms(a, b)
        optimizer.zero_grad()
        (dice_weight * dice + kl_weight * kl).backward()
        optimizer.step()
        if step in checkpoints:
            ratios = [now / then for now, then in zip(class_areas(a), start, strict=True)]
            rows.append({"step": step, **{f"area_ratio {name}": round(r, 3) for name, r in zip(DISKS, ratios, strict=True)}})
    return rows


def markdown(command: str, records: list[dict[str, Any]]) -> str:
    lines = [
        "# Co-training's mutual terms on two identical maps: argmax area ÷ start", "",
        f"Command: `{command}`. Free logit maps, no network (see the script's docstring).", "",
        "| terms | ramp (px) | step | " + " | ".join(DISKS) + " |",
        "|---|---|---|" + "---|" * len(DISKS),
    ]
    for r in records:
        lines.append(f"| {r['variant']} | {r['ramp']:g} | {r['step']} | " + " | ".join(f"{r[f'area_ratio {name}']:.3f}" for name in DISKS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ramps", type=float, nargs="+", default=[1.0, 3.0], help="edge widths in pixels")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[3, 10, 300], help="steps to report after")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    command = (".venv/bin/python benchmarks/cotrain_dice_drift.py " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    torch.set_num_threads(1)  # maps this small gain nothing from threads, which stall beside a busy CPU
    torch.manual_seed(0)  # build_method draws the (unused) networks' weights
    records = []
    for variant, (target, dice_weight, kl_weight) in VARIANTS.items():
        for ramp in args.ramps:
            for row in drift(target, dice_weight, kl_weight, ramp, args.checkpoints, args.lr):
                records.append({"variant": variant, "dice_target": target, "dice_weight": dice_weight, "kl_weight": kl_weight, "ramp": ramp, **row})
            logger.info("%s, ramp %g px: %s", variant, ramp, records[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cotrain_dice_drift.json").write_text(json.dumps({"command": command, "records": records}, indent=2) + "\n")
    (args.out / "cotrain_dice_drift.md").write_text(markdown(command, records))
    logger.info("Wrote %s.{json,md}", args.out / "cotrain_dice_drift")


if __name__ == "__main__":
    main()
