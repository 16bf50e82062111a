"""Confidence probe: how sure is a trained network of each class, and can a pseudo-label threshold reach it?

Run: ``.venv/bin/python benchmarks/confidence_probe.py --dataset psfhs --split labelled --images 16
--checkpoint benchmarks/work/psfhs/data/06_models/runs/cpu-4000it/0.05/fixmatch/seed4/fixmatch/best.pt`` (any
number of ``--checkpoint``) → ``benchmarks/results/confidence_probe/<name>.{json,md}``.

It reads the first ``--images`` images of ``--split`` from the split and the store that ``ssl_benchmark.py``
left in ``benchmarks/work/<dataset>/``, and runs each checkpoint's deployed network on them as evaluation does
(eval mode, at its input size). For each predicted class: its share of the pixels, the median and the largest
top probability on them, the share of them at or above ``--threshold`` (what FixMatch and HDC may pseudo-label),
the mean absolute input of the 1×1 output head on them, and the head's bias for the class with its softmax. A class whose head
input is near 0 gets the bias as its logits, so its top probability cannot pass softmax(bias)'s. Where every probed image has
a mask (PSFHS's unlabelled split does), each class's Dice against the masks tells a class the network labels right but
unsurely from one it does not label.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sonoseg.evaluation.predict import Predictor, resize_labels
from sonoseg.io.store import SampleStore

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("confidence_probe")


def split_images(work: Path, split: str, count: int, predictor: Predictor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(N, 1, S, S)``: the first ``count`` images of ``split`` in ``work``'s splits, preprocessed as for prediction,
    and their ``(N, S, S)`` masks at that size, or None when any of them has none."""
    splits = pd.read_csv(work / "data/03_primary/splits.csv")
    manifest = pd.read_parquet(work / "data/02_intermediate/manifest.parquet").set_index("sample_id")
    ids = splits.loc[splits["split"] == split, "sample_id"].head(count).tolist()
    if not ids:
        raise ValueError(f"{work / 'data/03_primary/splits.csv'}: no sample in split {split!r}")
    store = SampleStore(work / "data/02_intermediate")
    images = torch.stack([predictor.preprocess(store.load(manifest.loc[i, "image_path"])) for i in ids])
    if not manifest.loc[ids, "has_mask"].all():
        return images, None
    size = tuple(images.shape[-2:])
    masks = [resize_labels(store.load(manifest.loc[i, "mask_path"]), size) for i in ids]
    return images, torch.from_numpy(np.stack(masks)).long()


@torch.no_grad()
def class_confidence(network: torch.nn.Module, images: torch.Tensor, threshold: float,
                     masks: torch.Tensor | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Per predicted class: pixel share, median and largest top probability, share at ``threshold`` or above,
    mean absolute head input, head bias and its softmax (those three None when the network has no ``head`` convolution),
    and the Dice of the class's pixels against ``masks`` over all the images (None without masks, or when neither has the class)."""
    network.eval()
    head = getattr(network, "head", None)
    captured: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0])) if head is not None else None
    try:
        probs = torch.softmax(network(images).float(), 1)
    finally:
        if hook is not None:
            hook.remove()
    top, label = probs.max(1)
    head_input = captured["x"].float().abs().mean(1) if "x" in captured else None
    bias = getattr(head, "bias", None)
    bias_softmax = torch.softmax(bias.float(), 0) if bias is not None else None
    rows = []
    for c in range(probs.shape[1]):
        chosen = label == c
        found = bool(chosen.any())
        true = masks == c if masks is not None else None
        both = int(chosen.sum()) + int(true.sum()) if true is not None else 0
        rows.append({
            "class": c,
            "pixel_share": float(chosen.float().mean()),
            "median_top_probability": float(top[chosen].median()) if found else None,
            "max_top_probability": float(top[chosen].max()) if found else None,
            "share_at_threshold": float((top[chosen] >= threshold).float().mean()) if found else None,
            "mean_abs_head_input": float(head_input[chosen].mean()) if found and head_input is not None else None,
            "head_bias": float(bias[c]) if bias is not None else None,
            "softmax_of_bias": float(bias_softmax[c]) if bias is not None else None,
            "dice_against_mask": 2 * float((chosen & true).sum()) / both if both else None,
        })  # fmt: skip
    return rows


def markdown(command: str, threshold: float, results: Sequence[dict[str, Any]], classes: dict[str, str]) -> str:
    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    lines = [
        "# Confidence probe", "", f"`{command}`", "",
        "Per class predicted on the images; top p is the largest class probability of a pixel.", "",
        f"| checkpoint | class | pixel share | median top p | max top p | share ≥ {threshold} | mean abs head input | head bias | softmax(bias) | Dice against mask |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for result in results:
        for row in result["classes"]:
            name = classes.get(str(row["class"]), str(row["class"]))
            values = [row[k] for k in ("pixel_share", "median_top_probability", "max_top_probability", "share_at_threshold", "mean_abs_head_input", "head_bias", "softmax_of_bias", "dice_against_mask")]
            lines.append(f"| {result['checkpoint']} | {name} | " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="psfhs")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks/work", help="holds <dataset>/, as ssl_benchmark.py leaves it")
    parser.add_argument("--split", default="labelled")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--name", default="probe")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/confidence_probe")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    work = args.workdir / args.dataset
    classes = json.loads((work / "data/02_intermediate/dataset.json").read_text())["classes"]
    results = []
    for path in args.checkpoint:
        predictor = Predictor.from_checkpoint(path)
        images, masks = split_images(work, args.split, args.images, predictor)
        shown = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
        results.append({"checkpoint": shown, "classes": class_confidence(predictor.network, images, args.threshold, masks)})
        logger.info("%s: %s", shown, [(r["class"], r["max_top_probability"]) for r in results[-1]["classes"]])
    command = "benchmarks/confidence_probe.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command, "dataset": args.dataset, "split": args.split, "images": args.images,
              "threshold": args.threshold, "classes": classes, "results": results}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(command, args.threshold, results, classes))
    logger.info("Wrote %s", args.out / f"{args.name}.md")


if __name__ == "__main__":
    main()
