"""Noise response: how trained networks' val masks change under the teacher's Gaussian input noise.

Run: ``.venv/bin/python benchmarks/noise_response.py --dataset psfhs --checkpoint LABEL=PATH ...``
→ ``benchmarks/results/noise_response.{json,md}``.

A mean teacher trains its student on clean images towards the teacher's softmax on noisy ones. If noise
changes what a network predicts (a smaller head, a larger symphysis), every step teaches that change, and
the teacher, an average of the student, passes it on. This measures the change: each network of each
checkpoint (``--roles``: student and teacher by default; ``--sigmas 0`` scores any of them, e.g. infodiv's
transformer, on clean val images) predicts the val split of ``benchmarks/work/<dataset>/`` (the split
``ssl_benchmark.py`` left there; val is the same at every label ratio) in eval mode at the checkpoint's input
size, under noise of each ``--sigmas`` level clipped to twice that level (DESIGN.md §4's σ 0.1, ±0.2), in two
units: intensity (images lie in [0, 1]; the teacher's noise before commit f4400f4) and each image's own intensity
standard deviation (``sonoseg.ssl.noise.gaussian_input_noise``). It reports the val Dice and, per class,
the Dice and predicted ÷ true area. One noise draw, seeded, per level and unit.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sonoseg.models import build_network
from sonoseg.ssl.base import build_method
from sonoseg.ssl.noise import gaussian_input_noise
from sonoseg.training.trainer import dice_per_class

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_probe import load_work, val_tensors  # noqa: E402  (a script beside this one, not a package)

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.noise_response")
BATCH = 64


def intensity_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Noise of ``sigma`` in intensity units, clipped to ±2σ: the teacher's input noise before it was scaled."""
    noise = torch.randn(images.shape, generator=generator) * sigma
    return images + noise.clamp(-2 * sigma, 2 * sigma)


def image_std_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Noise of ``sigma`` image standard deviations, clipped to ±2σ (the teacher's input noise now)."""
    return gaussian_input_noise(images, sigma, 2 * sigma, generator=generator)


NOISES: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "intensity": intensity_noise,
    "image std": image_std_noise,
}


@torch.no_grad()
def measure(net: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """Val Dice, and per foreground class its Dice and predicted ÷ true area over the whole split."""
    net.eval()
    logits = torch.cat([net(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])
    per_class = dice_per_class(logits, masks, len(class_names) + 1)
    predicted = logits.argmax(1)
    result = {"dice": float(per_class.mean())}
    for label, name in enumerate(class_names, start=1):
        result[f"dice_{name}"] = float(per_class[:, label - 1].mean())
        result[f"area_ratio_{name}"] = float((predicted == label).sum() / (masks == label).sum())
    return result


def respond(net: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, class_names: Sequence[str],
            sigmas: Sequence[float], seed: int) -> list[dict[str, Any]]:  # fmt: skip
    """One record per (unit, sigma): the measures under that noise (σ 0 is the clean images, once per unit)."""
    records = []
    for unit, noise in NOISES.items():
        for sigma in sigmas:
            noisy = noise(images, sigma, torch.Generator().manual_seed(seed))
            records.append({"unit": unit, "sigma": sigma, **measure(net, noisy, masks, class_names)})
    return records


def intensity_spread(images: torch.Tensor) -> dict[str, float]:
    """The images' mean intensity and the mean, least and largest per-image standard deviation."""
    stds = images.flatten(1).std(1, correction=0)
    return {"mean_intensity": float(images.mean()), "image_std_mean": float(stds.mean()),
            "image_std_min": float(stds.min()), "image_std_max": float(stds.max())}  # fmt: skip


def markdown(command: str, records: Sequence[dict[str, Any]], class_names: Sequence[str],
             spread: dict[str, float]) -> str:  # fmt: skip
    lines = ["## Noise response", "", f"`{command}`", "",
             f"Val images: mean intensity {spread['mean_intensity']:.3f}; per-image standard deviation "
             f"{spread['image_std_mean']:.3f} on average ({spread['image_std_min']:.3f}–{spread['image_std_max']:.3f}).", ""]  # fmt: skip
    titles = ["checkpoint", "iteration", "network", "σ", "val Dice"]
    for name in class_names:
        titles += [f"{name} Dice", f"{name} area ÷ truth"]
    for unit in NOISES:
        lines += [f"Noise in {unit} units, clipped to ±2σ:", "", "| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
        for r in (r for r in records if r["unit"] == unit):
            cells = [r["checkpoint"], str(r["iteration"]), r["network"], f"{r['sigma']:g}", f"{r['dice']:.3f}"]
            for name in class_names:
                cells += [f"{r[f'dice_{name}']:.3f}", f"{r[f'area_ratio_{name}']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def checkpoint_networks(parser: argparse.ArgumentParser, items: Sequence[str], roles: Sequence[str] = ("student", "teacher"),
                        ) -> Iterator[tuple[str, str, dict[str, Any], str, nn.Module]]:  # fmt: skip
    """``(label, path, checkpoint, role, network)`` for each ``LABEL=PATH`` of ``items`` and each of its
    networks named in ``roles``, loaded on the CPU; malformed items are the parser's errors. A checkpoint that
    names its method and settings rebuilds the networks through the method, so roles with their own
    architecture (infodiv's UNeXt student and Swin transformer) load too."""
    for item in items:
        label, _, path = item.partition("=")
        if not path:
            parser.error(f"--checkpoint {item!r}: expected LABEL=PATH")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        present = [role for role in roles if role in checkpoint["networks"]]
        if not present:
            parser.error(f"{path}: none of the networks {list(roles)} is in it ({sorted(checkpoint['networks'])})")
        method = None
        if "method" in checkpoint and "settings" in checkpoint:
            method = build_method(checkpoint["method"], checkpoint["settings"], checkpoint["model"], checkpoint["num_classes"])
        for role in present:
            net = method.inner(role) if method is not None else build_network(checkpoint["model"]["name"],
                                                                                num_classes=checkpoint["num_classes"])
            net.load_state_dict(checkpoint["networks"][role])
            yield label, path, checkpoint, role, net


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="psfhs")
    parser.add_argument("--checkpoint", action="append", required=True, metavar="LABEL=PATH",
                        help="a trainer checkpoint (best.pt or last.pt); its networks named by --roles are measured")  # fmt: skip
    parser.add_argument("--roles", nargs="+", default=["student", "teacher"],
                        help="the checkpoint's networks to measure, e.g. student transformer (infodiv)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.05, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    command = ".venv/bin/python benchmarks/noise_response.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    records: list[dict[str, Any]] = []
    val_by_size: dict[int, tuple[torch.Tensor, torch.Tensor, list[str]]] = {}
    for label, path, checkpoint, role, net in checkpoint_networks(parser, args.checkpoint, args.roles):
        size = checkpoint["input_size"]
        if size not in val_by_size:
            sets, names = load_work(ROOT / "benchmarks/work" / args.dataset, size)
            val_by_size[size] = (*val_tensors(sets), names)
        images, masks, class_names = val_by_size[size]
        for record in respond(net, images, masks, class_names, args.sigmas, args.seed):
            records.append({"checkpoint": label, "path": path, "iteration": checkpoint["iteration"], "network": role, **record})
        logger.info("%s (%s, iteration %d): measured", label, role, checkpoint["iteration"])
    spread = intensity_spread(images)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"command": command, "val_intensity": spread, "records": records}
    (args.out / "noise_response.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "noise_response.md").write_text(markdown(command, records, class_names, spread))
    logger.info("Wrote %s.{json,md}", args.out / "noise_response")


if __name__ == "__main__":
    main()
