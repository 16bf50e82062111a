"""``sonoseg``: metrics, biometry and prediction for users who already have images or predictions.

    sonoseg metrics PRED_DIR TRUTH_DIR [--spacing ROW_MM COL_MM] [--labels 1 2] --out metrics.csv
    sonoseg biometry MASK... [--spacing ROW_MM COL_MM] [--ps-label 1] [--fh-label 2]
    sonoseg predict --model models:/NAME@champion IMAGE... [--out DIR]
    sonoseg sweep --set splitting.label_ratio=0.05,0.1 --set training.method=supervised,hdc --repeats 3

Results go to stdout (tables, CSV); progress and problems go to the log (stderr). Bad input stops with
one line naming the file and the problem, and exit status 2. Heavy libraries are imported only by the
subcommand that needs them, so ``sonoseg --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("sonoseg.console")

METRICS_COLUMNS = ["case_id", "class", "dice", "iou", "hd95", "assd", "unit"]
BIOMETRY_COLUMNS = ["file", "aop_deg", "hsd", "hc", "unit", "note"]


class InputError(Exception):
    """Bad input: the message names the file and the problem."""


def _read_mask(path: Path):
    from sonoseg.io.decode import read_array, to_label_2d
    from sonoseg.io.samples import SampleError

    try:
        array, spacing = read_array(path)
        return to_label_2d(array, str(path)), spacing
    except SampleError as err:
        raise InputError(str(err)) from err


def _mask_files(folder: Path) -> dict[str, Path]:
    from sonoseg.io.decode import IMAGE_EXTENSIONS, file_extension, stem

    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and file_extension(path) in IMAGE_EXTENSIONS:
            if stem(path) in files:
                raise InputError(f"{path}: two files share the stem '{stem(path)}' ({files[stem(path)].name}); cannot pair")
            files[stem(path)] = path
    return files


def _spacing(option: Sequence[float] | None, from_file):
    return tuple(option) if option else from_file


def run_metrics(args: argparse.Namespace) -> int:
    import numpy as np

    from sonoseg.evaluation.metrics import format_summary, metrics_table, summarise_metrics

    predictions, truths = _mask_files(Path(args.pred_dir)), _mask_files(Path(args.truth_dir))
    if not truths:
        raise InputError(f"{args.truth_dir}: no mask files (PNG, .mha, .nii.gz, …)")
    missing = sorted(set(truths) - set(predictions))
    if missing:
        shown = ", ".join(str(truths[s]) for s in missing[:5]) + (" …" if len(missing) > 5 else "")
        raise InputError(f"{args.pred_dir}: no prediction for {len(missing)} truth file(s): {shown}")
    extra = sorted(set(predictions) - set(truths))
    if extra:
        logger.warning("Ignoring %d prediction(s) with no truth file: %s", len(extra), ", ".join(extra[:5]))
    cases, seen_labels = [], set()
    for case_id in sorted(truths):
        truth, truth_spacing = _read_mask(truths[case_id])
        prediction, _ = _read_mask(predictions[case_id])
        if prediction.shape != truth.shape:
            raise InputError(f"{predictions[case_id]}: size {prediction.shape} differs from the truth "
                             f"{truths[case_id]} {truth.shape}; evaluate at the original resolution")  # fmt: skip
        seen_labels |= {int(v) for v in np.unique(truth) if v}
        cases.append((case_id, prediction, truth, _spacing(args.spacing, truth_spacing), predictions[case_id]))
    labels = sorted(args.labels or seen_labels)
    if not labels:
        raise InputError(f"{args.truth_dir}: the truth masks hold no foreground label; name them with --labels")
    for case_id, prediction, _, _, path in cases:
        unknown = sorted({int(v) for v in np.unique(prediction) if v} - set(labels))
        if unknown:
            raise InputError(f"{path}: unknown label(s) {unknown}; the labels are {labels}")
    table = metrics_table(((c, p, t, s) for c, p, t, s, _ in cases), labels)
    if table["unit"].nunique() > 1:
        logger.warning("Some cases have a pixel spacing and some do not: distances mix mm and px (see the unit column)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table[METRICS_COLUMNS].to_csv(out, index=False)
    summary = summarise_metrics(table)
    sys.stdout.write(format_summary(table) + "\n")
    sys.stdout.write(f"{summary['cases']} cases; {summary['empty_predictions']} empty predictions; per case: {out}\n")
    return 0


def run_biometry(args: argparse.Namespace) -> int:
    import pandas as pd

    from sonoseg.evaluation.biometry import measure

    rows = []
    for name in args.masks:
        mask, spacing = _read_mask(Path(name))
        rows.append({"file": name, **measure(mask, _spacing(args.spacing, spacing), args.ps_label, args.fh_label).as_dict()})
    pd.DataFrame(rows, columns=BIOMETRY_COLUMNS).to_csv(sys.stdout, index=False, float_format="%.4f")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from sonoseg.registry.pyfunc import predict_files

    for name in args.images:
        if not Path(name).is_file():
            raise InputError(f"{name}: no such image file")
    out = Path(args.out)
    try:
        table = predict_files(args.model, [Path(p) for p in args.images], out, tracking_uri=args.tracking_uri)
    except (ValueError, FileNotFoundError) as err:  # a row's image cannot be decoded, or the model is missing
        raise InputError(str(err)) from err
    table.to_csv(out / "biometry.csv", index=False)
    pd.DataFrame(table, columns=["file", "mask_path", *BIOMETRY_COLUMNS[1:]]).to_csv(sys.stdout, index=False, float_format="%.4f")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from sonoseg import sweeps

    try:
        grid = sweeps.parse_grid(args.set)
        runs = sweeps.run_sweep(grid, args.repeats, args.project, seed_key=args.seed_key, prefix=args.name,
                         progress=not args.no_progress)  # fmt: skip
    except sweeps.SweepError as err:
        raise InputError(str(err)) from err
    rows = sweeps.summarise(runs)
    table = sweeps.markdown_table(rows, list(grid), args.metrics)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"grid": grid, "repeats": args.repeats, "seed_key": args.seed_key,
                                                    "results": rows}, indent=2, allow_nan=False))  # fmt: skip
    out.with_suffix(".md").write_text(table)
    logger.info("Wrote %s and %s; `dvc exp show` lists the experiments", out.with_suffix(".json"), out.with_suffix(".md"))
    sys.stdout.write(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sonoseg", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)
    spacing = {"nargs": 2, "type": float, "metavar": ("ROW_MM", "COL_MM"),
               "help": "pixel spacing in mm for every file (default: each file's own, else distances in px)"}  # fmt: skip

    metrics = commands.add_parser("metrics", help="Dice, IoU, HD95 and ASSD per case and class (DESIGN.md §5)")
    metrics.add_argument("pred_dir", help="predicted label masks (PNG, .mha, .nii.gz, …), paired with the truths by file stem")
    metrics.add_argument("truth_dir", help="ground-truth label masks")
    metrics.add_argument("--spacing", **spacing)
    metrics.add_argument("--labels", nargs="+", type=int, help="foreground labels to score (default: those in the truths)")
    metrics.add_argument("--out", required=True, help="the per-case, per-class CSV to write")
    metrics.set_defaults(run=run_metrics)

    biometry = commands.add_parser("biometry", help="AoP, HSD and HC from label masks, as CSV (DESIGN.md §6)")
    biometry.add_argument("masks", nargs="+", metavar="MASK")
    biometry.add_argument("--spacing", **spacing)
    biometry.add_argument("--ps-label", type=int, default=1, help="pubic symphysis label (default 1)")
    biometry.add_argument("--fh-label", type=int, default=2, help="fetal head label (default 2; HC18 masks use 1)")
    biometry.set_defaults(run=run_biometry)

    predict = commands.add_parser("predict", help="masks and biometry from a registered model or a checkpoint")
    predict.add_argument("--model", required=True,
                         help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/…, a model folder, or a trainer checkpoint (.pt)")  # fmt: skip
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--out", default="predictions", help="folder for the mask PNGs and biometry.csv (default: predictions)")
    predict.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    predict.set_defaults(run=run_predict)

    sweep = commands.add_parser("sweep", help="DVC experiments over parameter values and seeds, with mean ± std over seeds")
    sweep.add_argument("--set", action="append", required=True, metavar="KEY=V1,V2",
                       help="a Kedro parameter and the values to try; repeat for a grid")  # fmt: skip
    sweep.add_argument("--repeats", type=int, default=1, help="seeds per combination: 0 .. N-1 (default 1)")
    sweep.add_argument("--seed-key", default="training.seed", help="the parameter the seed goes to (default training.seed)")
    sweep.add_argument("--metrics", nargs="+", default=["dice_mean", "iou_mean", "hd95_mean", "assd_mean"],
                       help="metrics.json keys in the markdown table (the JSON holds every *_mean)")  # fmt: skip
    sweep.add_argument("--out", default="data/08_reporting/sweep", help="writes OUT.json and OUT.md (default data/08_reporting/sweep)")
    sweep.add_argument("--name", help="the experiments' name prefix (default sweep-<UTC time>)")
    sweep.add_argument("--project", default=".", help="the project root (default: here)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.set_defaults(run=run_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except InputError as err:
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
