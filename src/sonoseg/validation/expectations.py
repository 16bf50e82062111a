"""The Great Expectations suite that validates the sample manifest.

The manifest is a pandas DataFrame with one row per ingested sample (see ``REQUIRED_BASE_COLUMNS``
plus one ``fraction_<k>`` column per declared foreground class).  :func:`run_manifest_suite` builds
an in-memory (ephemeral) GX 1.x context, validates the manifest with one expectation per concern,
and turns GX's per-expectation results into human reasons keyed by ``sample_id``.  When a
``docs_dir`` is given it also builds the static GX Data Docs site there; nothing else is written.

Great Expectations is imported lazily inside the functions: importing it costs several seconds.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.expectations import Expectation

logger = logging.getLogger(__name__)

SUITE_NAME = "sonoseg_manifest"
"""Name of the expectation suite; it titles the Data Docs pages."""

SITE_NAME = "sonoseg_manifest_docs"

REQUIRED_BASE_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "source",
    "subject_id",
    "has_mask",
    "image_path",
    "mask_path",
    "source_image",
    "source_mask",
    "height",
    "width",
    "mask_height",
    "mask_width",
    "dtype",
    "spacing_row_mm",
    "spacing_col_mm",
    "sha256",
    "intensity_min",
    "intensity_max",
    "intensity_mean",
    "intensity_std",
    "nonfinite_count",
    "labels",
    "fg_fraction",
)
"""Columns every manifest has, whatever the declared classes."""

CONCERNS: tuple[str, ...] = (
    "columns_present",
    "sample_id",
    "shape",
    "dtype",
    "intensity_range",
    "nonfinite",
    "constant_image",
    "label_set",
    "fraction_bounds",
    "duplicates",
    "pairing",
    "spacing",
)
"""The concerns the suite covers; each expectation summary names one of them."""

_NULL_ID = "<null sample_id>"


def _import_gx() -> Any:
    """Import great_expectations (slow: seconds) with its import-time DeprecationWarnings muted.

    GX 1.24 has no analytics client left; the context is still built with analytics_enabled=False.
    """
    with warnings.catch_warnings():
        # GX 1.24 imports the deprecated sre_constants/sre_parse modules.
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations as gx
        import great_expectations.expectations.row_conditions  # noqa: F401
    return gx


def _pair(value: Any, name: str) -> tuple[float, float]:
    """A (lo, hi) pair of floats with lo <= hi, from a tuple or list."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a pair [lo, hi], got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"{name} must satisfy lo <= hi, got {value!r}")
    return (lo, hi)


def _int_key(key: Any, name: str) -> int:
    """A class label from an int or an int-like string (JSON/YAML mapping keys)."""
    if isinstance(key, bool):
        raise ValueError(f"{name}: class label {key!r} is not an integer")
    try:
        return int(key)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: class label {key!r} is not an integer") from None


@dataclass(frozen=True)
class ManifestSpec:
    """What a valid manifest looks like.

    ``classes`` are the declared mask labels including 0 (background).  ``fraction_bounds`` gives
    per-foreground-class (lo, hi) bounds on ``fraction_<k>``; a class missing there uses
    ``default_fraction_bounds``.  ``require_masks`` means pairing must be complete (every sample
    has a mask).
    """

    classes: Mapping[int, str]
    allowed_dtypes: Sequence[str] = ("uint8", "uint16", "float32")
    min_side: int = 16
    max_side: int = 4096
    intensity_range: tuple[float, float] = (0.0, 255.0)
    fraction_bounds: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    default_fraction_bounds: tuple[float, float] = (0.0, 0.95)
    fg_fraction_bounds: tuple[float, float] = (0.0, 0.95)
    require_masks: bool = True

    def __post_init__(self) -> None:
        classes = {_int_key(k, "classes"): str(v) for k, v in dict(self.classes).items()}
        if 0 not in classes:
            raise ValueError(f"classes must declare the background label 0, got {sorted(classes)}")
        if any(k < 0 for k in classes):
            raise ValueError(f"class labels must be non-negative, got {sorted(classes)}")
        if isinstance(self.allowed_dtypes, str):
            raise ValueError("allowed_dtypes must be a list of dtype names, not one string")
        dtypes = tuple(str(d) for d in self.allowed_dtypes)
        if not dtypes:
            raise ValueError("allowed_dtypes must not be empty")
        min_side, max_side = int(self.min_side), int(self.max_side)
        if not 0 < min_side <= max_side:
            raise ValueError(f"need 0 < min_side <= max_side, got {min_side}, {max_side}")
        bounds: dict[int, tuple[float, float]] = {}
        for key, value in dict(self.fraction_bounds).items():
            k = _int_key(key, "fraction_bounds")
            if k == 0 or k not in classes:
                raise ValueError(
                    f"fraction_bounds names class {k}, which is not a declared foreground class "
                    f"{sorted(c for c in classes if c != 0)}"
                )
            bounds[k] = _pair(value, f"fraction_bounds[{k}]")
        set_ = object.__setattr__
        set_(self, "classes", dict(sorted(classes.items())))
        set_(self, "allowed_dtypes", dtypes)
        set_(self, "min_side", min_side)
        set_(self, "max_side", max_side)
        set_(self, "intensity_range", _pair(self.intensity_range, "intensity_range"))
        set_(self, "fraction_bounds", dict(sorted(bounds.items())))
        set_(
            self,
            "default_fraction_bounds",
            _pair(self.default_fraction_bounds, "default_fraction_bounds"),
        )
        set_(self, "fg_fraction_bounds", _pair(self.fg_fraction_bounds, "fg_fraction_bounds"))
        if self.require_masks not in (True, False):  # e.g. the string "false" from a CLI
            raise ValueError(f"require_masks must be true or false, got {self.require_masks!r}")
        set_(self, "require_masks", bool(self.require_masks))

    @property
    def foreground_classes(self) -> list[int]:
        """Declared labels other than background, ascending."""
        return [k for k in self.classes if k != 0]

    def bounds_for(self, k: int) -> tuple[float, float]:
        """The (lo, hi) bounds on ``fraction_<k>``."""
        return self.fraction_bounds.get(k, self.default_fraction_bounds)

    @property
    def required_columns(self) -> list[str]:
        """Every column the manifest must have: the base columns plus ``fraction_<k>``."""
        return [*REQUIRED_BASE_COLUMNS, *(f"fraction_{k}" for k in self.foreground_classes)]

    @classmethod
    def from_params(cls, params: Mapping, classes: Mapping[int, str]) -> ManifestSpec:
        """Build from Kedro parameters (plain dicts and lists); unknown keys raise ValueError."""
        allowed = {f.name for f in fields(cls)} - {"classes"}
        unknown = sorted(str(k) for k in params if k not in allowed)
        if unknown:
            raise ValueError(
                f"unknown manifest validation parameter(s) {unknown}; allowed: {sorted(allowed)}"
            )
        return cls(classes=classes, **dict(params))

    def to_params(self) -> dict[str, Any]:
        """The parameters (plain dicts/lists) that :meth:`from_params` turns back into this spec."""
        return {
            "allowed_dtypes": list(self.allowed_dtypes),
            "min_side": self.min_side,
            "max_side": self.max_side,
            "intensity_range": list(self.intensity_range),
            "fraction_bounds": {k: list(v) for k, v in self.fraction_bounds.items()},
            "default_fraction_bounds": list(self.default_fraction_bounds),
            "fg_fraction_bounds": list(self.fg_fraction_bounds),
            "require_masks": self.require_masks,
        }


@dataclass
class SuiteOutcome:
    """The result of validating one manifest."""

    success: bool
    row_failures: list[tuple[str, str]]
    """(sample_id, human reason naming the column, the value and the expectation); every id is a
    non-null ``sample_id`` of the manifest (a failing row without one becomes a table failure)."""
    table_failures: list[str]
    """Failures not about one row: missing columns, null ids, expectations that errored."""
    expectations: list[dict]
    """One summary per expectation: concern, type, column(s), success, unexpected_count."""
    data_docs_index: Path | None

    def failed_ids(self) -> set[str]:
        """The sample ids that have at least one row failure."""
        return {sid for sid, _ in self.row_failures}


# --- reasons ---------------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _num(value: Any) -> str:
    """A number for a human, from what GX returns (numbers, sometimes their str())."""
    if _is_missing(value):
        return "missing"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return repr(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _bound(value: float) -> str:
    return _num(float(value))


def _set_text(values: Sequence[int]) -> str:
    return "{" + ",".join(str(v) for v in values) + "}"


@dataclass
class _Check:
    """One expectation, the concern it serves and how to word one failing row."""

    concern: str
    expectation: Expectation
    reason: Callable[[dict], str] | None = None
    """Words one ``unexpected_index_list`` entry; None for the kinds below that are not "rows"."""
    columns: tuple[str, ...] = ()
    kind: str = "rows"
    """How a failure is reported: "rows" (one reason per entry), "unique" (later copies only),
    "null_ids" (a table failure: a null id cannot name its row), "columns" (missing columns)."""


def _between_reason(column: str, lo: float | None, hi: float | None, what: str) -> Callable:
    def reason(entry: dict) -> str:
        value = entry.get(column)
        if lo is not None and hi is not None:
            rng = f"outside [{_bound(lo)}, {_bound(hi)}]"
        elif lo is not None:
            rng = f"below the minimum {_bound(lo)}"
        else:
            rng = f"above the maximum {_bound(hi)}"  # type: ignore[arg-type]
        return f"{column} {_num(value)} is {rng} ({what}; expect_column_values_to_be_between)"

    return reason


def _why(concern: str, why: str, **extra: Any) -> dict[str, Any]:
    """``meta`` and ``notes`` kwargs of one expectation: the concern and why it matters."""
    return {"meta": {"concern": concern, "notes": why, **extra}, "notes": why}


def _build_checks(
    spec: ManifestSpec, present: set[str], image_of: Mapping[str, str]
) -> list[_Check]:
    """The suite as a list of checks; column checks whose column is absent are left out."""
    gx = _import_gx()
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    checks: list[_Check] = []
    with_mask = Column("has_mask") == True  # noqa: E712 - builds a GX condition, not a bool

    def add(
        concern: str, expectation: Any, reason: Callable | None, *columns: str, kind: str = "rows"
    ) -> None:
        missing = [c for c in columns if c not in present]
        if missing:
            name = type(expectation).__name__
            logger.info("skipping %s on %s: column(s) %s absent", name, columns, missing)
            return
        checks.append(_Check(concern, expectation, reason, columns, kind))

    # columns present (table level)
    add(
        "columns_present",
        E.ExpectTableColumnsToMatchSet(
            column_set=spec.required_columns,
            exact_match=False,
            **_why("columns_present", "downstream nodes read every one of these columns"),
        ),
        None,
        kind="columns",
    )

    # sample_id
    add(
        "sample_id",
        E.ExpectColumnValuesToNotBeNull(
            column="sample_id",
            **_why("sample_id", "sample_id keys the splits, caches and reports"),
        ),
        None,
        "sample_id",
        kind="null_ids",
    )
    add(
        "sample_id",
        E.ExpectColumnValuesToBeUnique(
            column="sample_id",
            **_why("sample_id", "two samples with one id would overwrite each other"),
        ),
        None,
        "sample_id",
        kind="unique",
    )

    # shape and dtype
    for col in ("height", "width"):
        add(
            "shape",
            E.ExpectColumnValuesToBeBetween(
                column=col,
                min_value=spec.min_side,
                max_value=spec.max_side,
                **_why("shape", "images too small to crop or too large to fit in memory"),
            ),
            _between_reason(col, spec.min_side, spec.max_side, "image side limits"),
            col,
        )
    add(
        "dtype",
        E.ExpectColumnValuesToBeInSet(
            column="dtype",
            value_set=list(spec.allowed_dtypes),
            **_why("dtype", "the loaders and intensity normalisation support only these dtypes"),
        ),
        lambda e: (
            f"dtype {e.get('dtype')!r} is not one of the allowed dtypes "
            f"{list(spec.allowed_dtypes)} (expect_column_values_to_be_in_set)"
        ),
        "dtype",
    )

    # intensities
    lo, hi = spec.intensity_range
    add(
        "intensity_range",
        E.ExpectColumnValuesToBeBetween(
            column="intensity_min",
            min_value=lo,
            **_why("intensity_range", "pixels below the expected range point to a bad decode"),
        ),
        _between_reason("intensity_min", lo, None, "intensity range"),
        "intensity_min",
    )
    add(
        "intensity_range",
        E.ExpectColumnValuesToBeBetween(
            column="intensity_max",
            max_value=hi,
            **_why("intensity_range", "pixels above the expected range point to a bad decode"),
        ),
        _between_reason("intensity_max", None, hi, "intensity range"),
        "intensity_max",
    )
    add(
        "nonfinite",
        E.ExpectColumnValuesToBeBetween(
            column="nonfinite_count",
            min_value=0,
            max_value=0,
            **_why("nonfinite", "NaN/inf pixels poison normalisation and the loss"),
        ),
        lambda e: (
            f"nonfinite_count {_num(e.get('nonfinite_count'))} is not 0: the image has NaN/inf "
            "pixels (expect_column_values_to_be_between)"
        ),
        "nonfinite_count",
    )
    add(
        "constant_image",
        E.ExpectColumnValuesToBeBetween(
            column="intensity_std",
            min_value=0,
            strict_min=True,
            **_why("constant_image", "a constant image carries no signal (blank or failed export)"),
        ),
        lambda e: (
            f"intensity_std {_num(e.get('intensity_std'))} is not > 0: the image is constant "
            "(expect_column_values_to_be_between)"
        ),
        "intensity_std",
    )

    # label set: a comma-joined list of declared labels, checked only where there is a mask
    declared = sorted(spec.classes)
    alternation = "|".join(re.escape(str(k)) for k in declared)
    label_regex = rf"^(?:{alternation})(?:,(?:{alternation}))*$"

    def label_reason(e: dict) -> str:
        value = e.get("labels")
        extra = []
        if isinstance(value, str):
            extra = [t for t in value.split(",") if not (t.isdigit() and int(t) in spec.classes)]
        detail = f" (unexpected: {','.join(extra)})" if extra else ""
        return (
            f"labels {value!r} has labels outside the declared set {_set_text(declared)}{detail} "
            "(expect_column_values_to_match_regex)"
        )

    add(
        "label_set",
        E.ExpectColumnValuesToMatchRegex(
            column="labels",
            regex=label_regex,
            row_condition=with_mask,
            **_why(
                "label_set",
                "a mask label outside the declared classes would be trained as the wrong class",
                declared_classes={str(k): v for k, v in spec.classes.items()},
            ),
        ),
        label_reason,
        "labels",
        "has_mask",
    )

    # foreground fractions (NaN where there is no mask: GX counts it as missing, not unexpected)
    for k in spec.foreground_classes:
        col = f"fraction_{k}"
        flo, fhi = spec.bounds_for(k)
        name = spec.classes[k]
        add(
            "fraction_bounds",
            E.ExpectColumnValuesToBeBetween(
                column=col,
                min_value=flo,
                max_value=fhi,
                **_why(
                    "fraction_bounds",
                    f"an implausible area of class {k} ({name}) hints at a wrong or inverted mask",
                ),
            ),
            _between_reason(col, flo, fhi, f"fraction bounds of class {k} ({name})"),
            col,
        )
    glo, ghi = spec.fg_fraction_bounds
    add(
        "fraction_bounds",
        E.ExpectColumnValuesToBeBetween(
            column="fg_fraction",
            min_value=glo,
            max_value=ghi,
            **_why("fraction_bounds", "a mask that is almost all foreground is likely inverted"),
        ),
        _between_reason("fg_fraction", glo, ghi, "foreground fraction bounds"),
        "fg_fraction",
    )

    # exact duplicates
    add(
        "duplicates",
        E.ExpectColumnValuesToBeUnique(
            column="sha256",
            **_why("duplicates", "identical pixels in two samples leak across splits"),
        ),
        None,
        "sha256",
        kind="unique",
    )

    # pairing
    if spec.require_masks:

        def no_mask_reason(e: dict) -> str:
            sid = e.get("sample_id")
            image = image_of.get(sid) if isinstance(sid, str) else None
            return (
                f"has_mask is {_num(e.get('has_mask'))}: image {image!r} has no mask but "
                "require_masks wants every image paired (expect_column_values_to_be_in_set)"
            )

        add(
            "pairing",
            E.ExpectColumnValuesToBeInSet(
                column="has_mask",
                value_set=[True],
                **_why("pairing", "require_masks: supervised training needs every image paired"),
            ),
            no_mask_reason,
            "has_mask",
        )
    for mask_col, img_col in (("mask_height", "height"), ("mask_width", "width")):

        def size_reason(e: dict, mask_col: str = mask_col, img_col: str = img_col) -> str:
            m, i = e.get(mask_col), e.get(img_col)
            if _is_missing(m):
                what = f"{mask_col} is missing although has_mask is true"
            else:
                what = f"{mask_col} {_num(m)} != {img_col} {_num(i)}: mask and image sizes differ"
            return f"{what} (expect_column_pair_values_to_be_equal)"

        add(
            "pairing",
            E.ExpectColumnPairValuesToBeEqual(
                column_A=mask_col,
                column_B=img_col,
                row_condition=with_mask,
                **_why("pairing", "a mask must cover its image pixel for pixel"),
            ),
            size_reason,
            mask_col,
            img_col,
            "has_mask",
        )

    # spacing
    for col in ("spacing_row_mm", "spacing_col_mm"):
        add(
            "spacing",
            E.ExpectColumnValuesToBeBetween(
                column=col,
                min_value=0,
                strict_min=True,
                **_why("spacing", "pixel spacing must be positive where known (NaN = unknown)"),
            ),
            lambda e, col=col: (
                f"{col} {_num(e.get(col))} is not positive (expect_column_values_to_be_between)"
            ),
            col,
        )
    return checks


# --- running ---------------------------------------------------------------------------------


def _prepare(manifest: pd.DataFrame) -> pd.DataFrame:
    """A copy GX can evaluate: nullable numeric columns (Int64 with NA) become float64 with NaN.

    GX's pandas engine turns ``pd.NA`` comparisons into an ambiguous-truth TypeError, so masked
    integer columns are handed over as plain floats.
    """
    df = manifest.reset_index(drop=True).copy()
    for col in df.columns:
        dtype = df[col].dtype
        if isinstance(dtype, pd.api.extensions.ExtensionDtype) and (
            pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype)
        ):
            df[col] = df[col].astype("float64")
    return df


def _quiet_gx() -> None:
    """GX logs at INFO through its own loggers; keep them at WARNING unless configured."""
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)


def _make_context(docs_dir: Path | None) -> Any:
    """An in-memory GX context without the temporary docs site GX adds by default."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    if docs_dir is not None:
        context.add_data_docs_site(
            SITE_NAME,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def _sid(entry: Any) -> str:
    if isinstance(entry, dict):
        sid = entry.get("sample_id")
        return _NULL_ID if _is_missing(sid) else str(sid)
    return f"<row {entry}>"  # no sample_id column: GX returns the positional index


def _later_copies(entries: list[dict], column: str) -> list[tuple[dict, str]]:
    """For a uniqueness failure: each copy after the first (by sample_id), with the first's id."""
    groups: dict[str, list[dict]] = {}
    for entry in entries:
        key = str(entry.get(column)) if isinstance(entry, dict) else ""
        groups.setdefault(key, []).append(entry)
    out = []
    for group in groups.values():
        ordered = sorted(group, key=_sid)
        first = _sid(ordered[0])
        out.extend((entry, first) for entry in ordered[1:])
    return out


def _row_failures(check: _Check, entries: list) -> list[tuple[str, str]]:
    """(sample_id, reason) for the rows of one failed expectation."""
    if check.kind == "unique":
        col = check.columns[0]
        rows = []
        for entry, first in _later_copies(entries, col):
            value = entry.get(col) if isinstance(entry, dict) else None
            if col == "sha256":
                text = f"sha256 {str(value)[:16]}… duplicates sample {first!r}: identical pixels"
            else:
                count = sum(1 for e in entries if isinstance(e, dict) and e.get(col) == value)
                text = f"{col} {value!r} is not unique: {count} rows share it"
            rows.append((_sid(entry), f"{text} (expect_column_values_to_be_unique)"))
        return rows
    assert check.reason is not None
    return [(_sid(e), check.reason(e if isinstance(e, dict) else {})) for e in entries]


def run_manifest_suite(
    manifest: pd.DataFrame, spec: ManifestSpec, docs_dir: Path | None
) -> SuiteOutcome:
    """Validate ``manifest`` against ``spec``; build Data Docs under ``docs_dir`` when given.

    Returns the per-row and table failures GX found, a summary per expectation, and the Data
    Docs ``index.html`` (or None).  Nothing is written outside ``docs_dir``.
    """
    gx = _import_gx()
    _quiet_gx()
    docs_root = Path(docs_dir).resolve() if docs_dir is not None else None
    df = _prepare(manifest)
    present = {str(c) for c in df.columns}
    image_of: dict[str, str] = {}
    if {"sample_id", "image_path"} <= present:
        for sid, image in zip(df["sample_id"], df["image_path"]):
            if isinstance(sid, str):
                image_of.setdefault(sid, image)

    context = _make_context(docs_root)
    checks = _build_checks(spec, present, image_of)
    suite = gx.ExpectationSuite(
        name=SUITE_NAME,
        notes="sonoseg manifest checks: one expectation per concern (see each expectation's notes)",
        meta={"classes": {str(k): v for k, v in spec.classes.items()}},
    )
    for check in checks:
        suite.add_expectation(check.expectation)
    suite = context.suites.add(suite)
    batch_definition = (
        context.data_sources.add_pandas("manifest_source")
        .add_dataframe_asset("manifest")
        .add_batch_definition_whole_dataframe("whole_manifest")
    )
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name="manifest_validation", data=batch_definition, suite=suite)
    )
    result_format: dict[str, Any] = {"result_format": "COMPLETE"}
    if "sample_id" in present:
        result_format["unexpected_index_column_names"] = ["sample_id"]
    actions = []
    if docs_root is not None:
        actions.append(
            gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=[SITE_NAME])
        )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="manifest_checkpoint",
            validation_definitions=[validation],
            actions=actions,
            result_format=result_format,
        )
    )
    checkpoint_result = checkpoint.run(batch_parameters={"dataframe": df})
    (validation_result,) = checkpoint_result.run_results.values()

    # GX returns results grouped by domain, not in suite order: match them back by expectation id.
    order = {check.expectation.id: position for position, check in enumerate(checks)}
    if None in order or len(order) != len(checks):
        raise RuntimeError("GX did not assign an id to every expectation of the manifest suite")
    results = sorted(validation_result.results, key=lambda er: order[er.expectation_config.id])
    row_failures: list[tuple[str, str]] = []
    table_failures: list[str] = []
    summaries: list[dict] = []
    for er in results:
        config = er.expectation_config
        check = checks[order[config.id]]
        result = dict(er.result or {})
        exception = (er.exception_info or {}) if isinstance(er.exception_info, dict) else {}
        messages = _exception_messages(exception)
        summaries.append(
            {
                "concern": check.concern,
                "type": config.type,
                "column": config.kwargs.get("column"),
                "columns": _expectation_columns(config.kwargs),
                "success": bool(er.success),
                "unexpected_count": result.get("unexpected_count", 0 if er.success else None),
            }
        )
        if er.success:
            continue
        where = ", ".join(check.columns) or "table"
        if messages:
            table_failures.append(
                f"{config.type} on {where} could not be evaluated: {'; '.join(messages)}"
            )
        elif check.kind == "columns":
            missing = result.get("details", {}).get("mismatched", {}).get("missing", [])
            table_failures.extend(
                f"missing required column {name!r} (expect_table_columns_to_match_set)"
                for name in missing
            )
            if not missing:
                table_failures.append(f"{config.type} failed: {result}")
        elif check.kind == "null_ids":
            count = result.get("unexpected_count")
            table_failures.append(
                f"sample_id is null in {count} row(s) (expect_column_values_to_not_be_null)"
            )
        elif result.get("unexpected_index_list") is None:
            table_failures.append(f"{config.type} on {where} failed without row details: {result}")
        else:
            for sid, reason in _row_failures(check, list(result["unexpected_index_list"])):
                if sid.startswith("<"):  # no usable sample_id: cannot be keyed by row
                    table_failures.append(f"{sid}: {reason}")
                else:
                    row_failures.append((sid, reason))

    index = None
    if docs_root is not None:
        index = docs_root / "index.html"
        if not index.is_file():
            table_failures.append(f"Data Docs were not built: {index} is missing")
            index = None
    success = bool(validation_result.success) and not row_failures and not table_failures
    logger.info(
        "manifest suite %s: %d rows, %d expectations, %d row failures, %d table failures",
        "passed" if success else "failed",
        len(df),
        len(summaries),
        len(row_failures),
        len(table_failures),
    )
    return SuiteOutcome(
        success=success,
        row_failures=row_failures,
        table_failures=table_failures,
        expectations=summaries,
        data_docs_index=index,
    )


def _expectation_columns(kwargs: Mapping[str, Any]) -> list[str]:
    """The columns one expectation is about (not those of its row condition)."""
    if kwargs.get("column") is not None:
        return [kwargs["column"]]
    if kwargs.get("column_A") is not None:
        return [kwargs["column_A"], kwargs["column_B"]]
    return list(kwargs.get("column_list") or kwargs.get("column_set") or [])


def _exception_messages(exception_info: dict) -> list[str]:
    """Messages of the exceptions GX caught while evaluating one expectation.

    GX 1.x reports either one ``{raised_exception, exception_message, ...}`` dict or a dict keyed by
    metric id with such dicts as values.
    """
    if exception_info.get("raised_exception"):
        return [str(exception_info.get("exception_message"))]
    messages = []
    for value in exception_info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            message = str(value.get("exception_message"))
            if message not in messages:
                messages.append(message)
    return messages
