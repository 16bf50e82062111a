"""Time per iteration and peak memory of every method at the CPU default size, as ratios to
``supervised`` measured in the same run; on a CUDA machine also images/s at 256² with AMP and the GPU
utilisation.

Run: ``.venv/bin/python benchmarks/training_speed.py`` (``--gpu`` on a CUDA machine). Writes
``benchmarks/results/training_speed[_gpu].json`` and ``.md`` (``--name`` for another file name).
A method can be measured with its own settings beside its defaults, e.g.
``--methods infodiv infodiv:transformer_options.patch_size=4 --input-size 128 --batch 8 --name training_speed_infodiv``.

Each method runs in a fresh subprocess (so its peak memory is its own) on a synthetic sample store:
``--warmup`` steps, then ``--steps`` timed steps; the time is the median step. Peak memory is the
process's peak RSS growth over the state before the networks are built (weights, optimiser state and
activations) on the CPU, and ``torch.cuda.max_memory_allocated`` after the warm-up on the GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts beside this one
METHODS = ["supervised", "fully_supervised", "mean_teacher", "fixmatch", "cps", "hdc", "infodiv", "simcvd", "cotrain"]
logger = logging.getLogger("benchmarks.training_speed")


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _GpuSampler(threading.Thread):
    """Polls the GPU's utilisation while the timed steps run."""

    def __init__(self, index: int) -> None:
        super().__init__(daemon=True)
        self.index, self.samples, self.running = index, [], True

    def run(self) -> None:
        import torch

        while self.running:
            self.samples.append(torch.cuda.utilization(self.index))
            time.sleep(0.1)


def parse_method_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``method[:key=value,...]`` -> (method, its ``training.<method>`` settings). Dotted keys nest and values
    are read as ``kedro run --params`` reads them (``device_runs.set_dotted``):
    ``infodiv:transformer_options.patch_size=4`` -> ``("infodiv", {"transformer_options": {"patch_size": 4}})``."""
    from device_runs import set_dotted  # a script beside this one; it imports the SSL benchmark's stack

    method, _, options = spec.partition(":")
    settings: dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"method spec {spec!r}: {item!r} is not key=value")
        set_dotted(settings, key, value)
    return method, settings


def measure(method: str, store_dir: str, size: int, model: dict, batch: int, warmup: int, steps: int, device: str,
            settings: dict | None = None) -> dict:
    """Time ``steps`` training steps of ``method`` (with ``settings`` over its defaults) after ``warmup``
    (runs inside a fresh process)."""
    import pandas as pd
    import torch

    from sonoseg.io.store import SampleStore
    from sonoseg.training.config import TrainerConfig
    from sonoseg.training.data import training_sets
    from sonoseg.training.trainer import Trainer

    manifest = pd.read_parquet(Path(store_dir) / "manifest.parquet")
    splits = pd.read_csv(Path(store_dir) / "splits.csv")
    with tempfile.TemporaryDirectory() as out:
        config = TrainerConfig(
            method=method, iterations=warmup + steps, checkpoint_every=10**6, val_every=10**6, input_size=size,
            labelled_batch=batch, unlabelled_batch=batch, output_dir=out, progress=False, device=device, model=model,
            workers=4 if device == "cuda" else 0,
        )  # fmt: skip
        step_times: list[float] = []
        clock = {"last": None}
        cuda = device == "cuda"

        def on_iteration(done: int) -> None:
            if cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            if done == warmup:
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                    sampler.start()
            elif done > warmup:
                step_times.append(now - clock["last"])
            clock["last"] = now

        sampler = _GpuSampler(torch.cuda.current_device()) if cuda else None
        clock["rss"] = _rss_mb()  # before the networks exist: the growth covers weights, optimiser and activations
        trainer = Trainer(config, settings or {}, num_classes=3, on_iteration=on_iteration)
        sets = training_sets(manifest, splits, SampleStore(store_dir), size, trainer.method.uses_all_labels)
        # validation at the end is not part of the step time: patch it out of the measurement
        trainer.validate = lambda _sets: 0.0
        trainer.fit(sets)
        if sampler is not None:
            sampler.running = False
    images_per_step = batch * (2 if trainer.method.uses_unlabelled else 1)
    median = statistics.median(step_times)
    result = {"method": method, "seconds_per_step": median, "images_per_second": images_per_step / median}
    if cuda:
        result["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu_utilisation_percent"] = statistics.mean(sampler.samples) if sampler.samples else None
    else:
        result["peak_rss_growth_mb"] = _rss_mb() - clock["rss"]
    return result


def prepare_store(root: Path, size: int, n_images: int) -> None:
    """A synthetic store with 25% labelled, 55% unlabelled, 20% val samples."""
    import pandas as pd

    from sonoseg.io.readers import SyntheticReader
    from sonoseg.io.store import SampleStore, ingest

    manifest, _ = ingest(SyntheticReader(n_images, {"size": size, "seed": 0}), SampleStore(root), progress=False)
    n = len(manifest)
    split = ["labelled"] * (n // 4) + ["unlabelled"] * (n - n // 4 - n // 5) + ["val"] * (n // 5)
    manifest.to_parquet(root / "manifest.parquet")
    pd.DataFrame({"sample_id": manifest["sample_id"], "split": split}).to_csv(root / "splits.csv", index=False)


def run_isolated(**kwargs) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, %r); import training_speed as b; "
        "print('RESULT' + json.dumps(b.measure(**%r)))" % (str(Path(__file__).parent), kwargs)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    if done.returncode != 0:
        raise RuntimeError(f"{kwargs['method']} failed:\n{done.stderr[-3000:]}")
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))[6:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="CUDA, 256², DeepLabV3+/ResNet-50, AMP")
    parser.add_argument("--methods", nargs="*", default=METHODS,
                        help="method or method:key=value,... (settings over its defaults; a row of its own)")
    parser.add_argument("--input-size", type=int, help="default: 64 on the CPU, 256 with --gpu")
    parser.add_argument("--batch", type=int, help="labelled and unlabelled batch; default: 4 on the CPU, 8 with --gpu")
    parser.add_argument("--name", default="training_speed", help="results file name, without _gpu or the suffix")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.gpu:
        size, model, batch, device, store_size = 256, {"name": "deeplabv3plus", "encoder": "resnet50"}, 8, "cuda", 256
    else:
        size, model, batch, device, store_size = 64, {"name": "unet_small"}, 4, "cpu", 128
    size, batch = args.input_size or size, args.batch or batch
    specs = ["supervised", *[m for m in args.methods if m != "supervised"]]
    parsed = [parse_method_spec(spec) for spec in specs]  # a bad spec fails before any measurement
    setting = {"device": device, "input_size": size, "model": model, "batch_labelled": batch, "batch_unlabelled": batch,
               "torch_threads": __import__("torch").get_num_threads(), "steps": args.steps}  # fmt: skip
    with tempfile.TemporaryDirectory() as store:
        prepare_store(Path(store), max(store_size, size), 96)
        rows = []
        for spec, (method, settings) in zip(specs, parsed):
            row = run_isolated(method=method, store_dir=store, size=size, model=model, batch=batch,
                               warmup=args.warmup, steps=args.steps, device=device, settings=settings)  # fmt: skip
            rows.append({**row, "method": spec, "settings": settings})
            logger.info("%s", rows[-1])
            write_results(rows, setting, args.out, args.gpu, args.name)  # after each method, so a run cut short keeps what it measured


def write_results(rows: list[dict], setting: dict, out: Path, gpu: bool, name: str = "training_speed") -> None:
    """The JSON and markdown table, with time and memory as ratios to the first row (supervised)."""
    base = rows[0]
    memory_key = "peak_gpu_memory_mb" if gpu else "peak_rss_growth_mb"
    for row in rows:
        row["time_ratio_to_supervised"] = row["seconds_per_step"] / base["seconds_per_step"]
        row["memory_ratio_to_supervised"] = row[memory_key] / max(base[memory_key], 1.0)
    suffix = "_gpu" if gpu else ""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}{suffix}.json").write_text(json.dumps({"setting": setting, "methods": rows}, indent=2))
    lines = [f"Setting: {json.dumps(setting)}", "",
             f"| method | s/step | images/s | {memory_key} | time ÷ supervised | memory ÷ supervised |"
             + (" GPU util % |" if gpu else ""),
             "|---|---|---|---|---|---|" + ("---|" if gpu else "")]  # fmt: skip
    for r in rows:
        util = f" {r['gpu_utilisation_percent']:.0f} |" if gpu and r.get("gpu_utilisation_percent") is not None else (" - |" if gpu else "")
        lines.append(f"| {r['method']} | {r['seconds_per_step']:.3f} | {r['images_per_second']:.1f} | {r[memory_key]:.0f} | "
                     f"{r['time_ratio_to_supervised']:.2f} | {r['memory_ratio_to_supervised']:.2f} |{util}")  # fmt: skip
    (out / f"{name}{suffix}.md").write_text("\n".join(lines) + "\n")
    logger.info("wrote %s", out / f"{name}{suffix}.md")


if __name__ == "__main__":
    main()
