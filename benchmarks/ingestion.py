"""Ingestion and validation speed and memory on the real data, and the synthetic generator's rate.

Run: ``make benchmark`` (or ``.venv/bin/python benchmarks/ingestion.py``). Writes
``benchmarks/results/ingestion.json`` and the markdown table ``benchmarks/results/ingestion.md``.

Each phase runs in a fresh subprocess, so its peak RSS is its own. Times are also given as a ratio to
a baseline measured in the same run (decoding the same files and nothing else), because these
machines are noisy. Memory is given as the peak RSS growth over the process after its imports; that
ingesting 1,050 samples grows it no more than ingesting 100 shows that ingestion streams.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
logger = logging.getLogger("benchmarks.ingestion")


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_decode(source: str, path: str, limit: int | None) -> dict:
    """Baseline: decode every sample of the source, keep nothing."""
    from sonoseg.io.sources import open_source

    reader, _ = open_source({"source": source, "path": path}, lambda: None)
    refs = reader.scan().refs[:limit]
    base = _rss_mb()
    start = time.perf_counter()
    for ref in refs:
        reader.load(ref)
    return {"samples": len(refs), "seconds": time.perf_counter() - start, "rss_growth_mb": _rss_mb() - base}


def phase_ingest(source: str, path: str, limit: int | None, store_dir: str) -> dict:
    """Ingestion into a sample store (decode, standardize, hash, describe, write)."""
    from sonoseg.io.readers import ScanResult
    from sonoseg.io.sources import open_source
    from sonoseg.io.store import SampleStore, ingest

    reader, _ = open_source({"source": source, "path": path}, lambda: None)
    if limit is not None:
        scan = reader.scan()
        reader.scan = lambda: ScanResult(scan.refs[:limit], scan.rejected)
    base = _rss_mb()
    start = time.perf_counter()
    manifest, rejected = ingest(reader, SampleStore(store_dir), progress=False)
    seconds = time.perf_counter() - start
    manifest.to_parquet(Path(store_dir) / "manifest.parquet")
    rejected.to_csv(Path(store_dir) / "rejected.csv", index=False)
    info = {"classes": {str(k): v for k, v in reader.classes.items()}, "require_masks": reader.require_masks}
    (Path(store_dir) / "info.json").write_text(json.dumps(info))
    return {"samples": len(manifest), "seconds": seconds, "rss_growth_mb": _rss_mb() - base}


def phase_validate(store_dir: str) -> dict:
    """Validation: pixel checks plus the GX suite with Data Docs (GX import included once)."""
    import pandas as pd

    from sonoseg.io.store import SampleStore
    from sonoseg.validation.expectations import ManifestSpec
    from sonoseg.validation.report import validate_dataset

    store = Path(store_dir)
    manifest = pd.read_parquet(store / "manifest.parquet")
    rejected = pd.read_csv(store / "rejected.csv")
    info = json.loads((store / "info.json").read_text())
    spec = ManifestSpec.from_params({"require_masks": info["require_masks"]}, {int(k): v for k, v in info["classes"].items()})
    base = _rss_mb()
    start = time.perf_counter()
    result = validate_dataset(manifest, rejected, spec, SampleStore(store), store / "docs", progress=False)
    return {
        "samples": len(manifest),
        "accepted": len(result.accepted),
        "seconds": time.perf_counter() - start,
        "rss_growth_mb": _rss_mb() - base,
    }


def phase_generator(size: int, n_images: int) -> dict:
    """Synthetic images per second on one core."""
    import cv2

    from sonoseg.synthetic.generator import SyntheticConfig, measure_throughput

    cv2.setNumThreads(1)
    config = SyntheticConfig(size=size)
    measure_throughput(config, 5)  # warm the remap caches
    return {"size": size, "images": n_images, "images_per_second": measure_throughput(config, n_images)}


PHASES = {"decode": phase_decode, "ingest": phase_ingest, "validate": phase_validate, "generator": phase_generator}


def run_phase(name: str, **kwargs) -> dict:
    """One phase in a fresh single-threaded interpreter; returns its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = (
        "import json, sys; sys.path.insert(0, %r); import ingestion as b; "
        "print('RESULT' + json.dumps(b.PHASES[%r](**%r)))" % (str(Path(__file__).parent), name, kwargs)
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[6:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--generator-images", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results: dict = {"python": platform.python_version(), "cpu_count": os.cpu_count(), "datasets": {}}

    for source in ("psfhs", "hc18"):
        path = SHARED / source
        if not path.is_dir():
            logger.info("%s: %s is absent, skipped", source, path)
            continue
        with tempfile.TemporaryDirectory() as full, tempfile.TemporaryDirectory() as small:
            decode = run_phase("decode", source=source, path=str(path), limit=None)
            ingest_full = run_phase("ingest", source=source, path=str(path), limit=None, store_dir=full)
            ingest_100 = run_phase("ingest", source=source, path=str(path), limit=100, store_dir=small)
            validate = run_phase("validate", store_dir=full)
        results["datasets"][source] = {
            "decode_only": decode,
            "ingest": ingest_full,
            "ingest_first_100": ingest_100,
            "validate": validate,
            "ingest_vs_decode_time_ratio": ingest_full["seconds"] / decode["seconds"],
            "rss_growth_full_vs_100_ratio": ingest_full["rss_growth_mb"] / max(ingest_100["rss_growth_mb"], 1.0),
        }
        logger.info("%s: %s", source, json.dumps(results["datasets"][source]))

    results["generator"] = [run_phase("generator", size=s, n_images=args.generator_images) for s in (256, 128)]
    logger.info("generator: %s", results["generator"])

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingestion.json").write_text(json.dumps(results, indent=2))
    (args.out / "ingestion.md").write_text(markdown(results))
    logger.info("wrote %s and %s", args.out / "ingestion.json", args.out / "ingestion.md")


def markdown(results: dict) -> str:
    lines = [
        "| dataset | samples | decode only (s) | ingest (s) | ingest / decode | ingest peak RSS growth (MB), all / first 100 | validate incl. GX + Data Docs (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["datasets"].items():
        lines.append(
            f"| {name} | {r['ingest']['samples']} | {r['decode_only']['seconds']:.1f} | {r['ingest']['seconds']:.1f} | "
            f"{r['ingest_vs_decode_time_ratio']:.2f} | {r['ingest']['rss_growth_mb']:.0f} / {r['ingest_first_100']['rss_growth_mb']:.0f} | "
            f"{r['validate']['seconds']:.1f} |"
        )
    lines += ["", "| generator size | images/s (one core) |", "|---|---|"]
    lines += [f"| {g['size']}² | {g['images_per_second']:.0f} |" for g in results["generator"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
