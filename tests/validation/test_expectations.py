"""The Great Expectations manifest suite, run for real on small hand-made manifests."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sonoseg.validation.expectations import (
    CONCERNS,
    SUITE_NAME,
    ManifestSpec,
    SuiteOutcome,
    run_manifest_suite,
)

CLASSES = {0: "background", 1: "ps", 2: "fh"}


@pytest.fixture(scope="module", autouse=True)
def _gx_env():
    """GX analytics off for this module; the first run pays GX's import (seconds) once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GX_ANALYTICS_ENABLED", "false")
        yield


def _row(i: int) -> dict:
    return {
        "sample_id": f"s{i}",
        "source": "hc18",
        "subject_id": f"subj{i // 2}",
        "has_mask": True,
        "image_path": f"data/02_intermediate/images/s{i}.png",
        "mask_path": f"data/02_intermediate/masks/s{i}.png",
        "source_image": f"raw/s{i}.png",
        "source_mask": f"raw/s{i}_annotation.png",
        "height": 64 + i,
        "width": 80,
        "mask_height": 64 + i,
        "mask_width": 80,
        "dtype": "uint8",
        "spacing_row_mm": 0.1 if i % 3 else math.nan,  # unknown spacing is allowed
        "spacing_col_mm": 0.1 if i % 3 else math.nan,
        "sha256": f"{i:064x}",
        "intensity_min": 0.0,
        "intensity_max": 200.0 + i,
        "intensity_mean": 60.0,
        "intensity_std": 12.5,
        "nonfinite_count": 0,
        "labels": "0,1,2" if i % 2 else "0,1",
        "fg_fraction": 0.3,
        "fraction_1": 0.2 if i % 2 else 0.3,
        "fraction_2": 0.1 if i % 2 else 0.0,
    }


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in ("mask_height", "mask_width"):
        df[col] = df[col].astype("Int64")
    return df


def make_manifest(n: int = 6, **changes: dict) -> pd.DataFrame:
    """A clean manifest of n rows; ``changes`` maps a sample_id to the column values to override."""
    rows = [_row(i) for i in range(n)]
    for row in rows:
        row.update(changes.get(row["sample_id"], {}))
    return _frame(rows)


def unmask(**extra) -> dict:
    """The column values of a row without a mask."""
    return {
        "has_mask": False,
        "mask_path": None,
        "source_mask": None,
        "mask_height": None,
        "mask_width": None,
        "labels": "",
        "fg_fraction": math.nan,
        "fraction_1": math.nan,
        "fraction_2": math.nan,
        **extra,
    }


def run(df: pd.DataFrame, docs_dir: Path | None = None, **spec_kw) -> SuiteOutcome:
    return run_manifest_suite(df, ManifestSpec(classes=CLASSES, **spec_kw), docs_dir)


# --- a clean manifest --------------------------------------------------------------------------


def test_clean_manifest_passes_and_covers_every_concern():
    outcome = run(make_manifest())

    assert outcome.success, (outcome.row_failures, outcome.table_failures)
    assert outcome.row_failures == []
    assert outcome.table_failures == []
    assert outcome.data_docs_index is None
    assert {e["concern"] for e in outcome.expectations} == set(CONCERNS)
    assert all(e["success"] for e in outcome.expectations)
    assert all(e["unexpected_count"] in (0, None) for e in outcome.expectations)

    by_column = {(e["type"], tuple(e["columns"])) for e in outcome.expectations}
    expected = {
        ("expect_column_values_to_not_be_null", ("sample_id",)),
        ("expect_column_values_to_be_unique", ("sample_id",)),
        ("expect_column_values_to_be_between", ("height",)),
        ("expect_column_values_to_be_between", ("width",)),
        ("expect_column_values_to_be_in_set", ("dtype",)),
        ("expect_column_values_to_be_between", ("intensity_min",)),
        ("expect_column_values_to_be_between", ("intensity_max",)),
        ("expect_column_values_to_be_between", ("nonfinite_count",)),
        ("expect_column_values_to_be_between", ("intensity_std",)),
        ("expect_column_values_to_match_regex", ("labels",)),
        ("expect_column_values_to_be_between", ("fraction_1",)),
        ("expect_column_values_to_be_between", ("fraction_2",)),
        ("expect_column_values_to_be_between", ("fg_fraction",)),
        ("expect_column_values_to_be_unique", ("sha256",)),
        ("expect_column_values_to_be_in_set", ("has_mask",)),
        ("expect_column_pair_values_to_be_equal", ("mask_height", "height")),
        ("expect_column_pair_values_to_be_equal", ("mask_width", "width")),
        ("expect_column_values_to_be_between", ("spacing_row_mm",)),
        ("expect_column_values_to_be_between", ("spacing_col_mm",)),
    }
    assert expected <= by_column
    table = [e for e in outcome.expectations if e["type"] == "expect_table_columns_to_match_set"]
    assert len(table) == 1 and "fraction_2" in table[0]["columns"]


# --- one broken row per concern ----------------------------------------------------------------

BROKEN = [
    pytest.param({"labels": "0,1,7"}, "labels", {}, id="label-outside-declared-set"),
    pytest.param({"labels": ""}, "labels", {}, id="mask-without-labels"),
    pytest.param({"fraction_1": 0.99, "fg_fraction": 0.5}, "fraction_1", {}, id="class-fraction"),
    pytest.param(
        {"fraction_2": 0.2}, "fraction_2", {"fraction_bounds": {2: (0.0, 0.15)}}, id="class-bounds"
    ),
    pytest.param({"fg_fraction": 0.97, "fraction_1": 0.5}, "fg_fraction", {}, id="fg-fraction"),
    pytest.param({"nonfinite_count": 12}, "nonfinite_count", {}, id="nan-pixels"),
    pytest.param(
        {"intensity_std": 0.0, "intensity_min": 7.0, "intensity_max": 7.0},
        "intensity_std",
        {},
        id="constant-image",
    ),
    pytest.param({"spacing_row_mm": 0.0}, "spacing_row_mm", {}, id="zero-spacing"),
    pytest.param({"spacing_col_mm": -0.2}, "spacing_col_mm", {}, id="negative-spacing"),
    pytest.param({"mask_width": 81}, "mask_width", {}, id="mask-size-mismatch"),
    pytest.param({"mask_height": None}, "mask_height", {}, id="mask-size-missing"),
    pytest.param({"dtype": "int16"}, "dtype", {}, id="bad-dtype"),
    pytest.param({"height": 8, "mask_height": 8}, "height", {}, id="too-small"),
    pytest.param({"width": 5000, "mask_width": 5000}, "width", {"max_side": 4096}, id="too-large"),
    pytest.param({"intensity_max": 300.0}, "intensity_max", {}, id="intensity-above-range"),
    pytest.param({"intensity_min": -4.0}, "intensity_min", {}, id="intensity-below-range"),
]


@pytest.mark.parametrize(("change", "column", "spec_kw"), BROKEN)
def test_one_broken_row_is_reported_by_its_sample_id(change, column, spec_kw):
    outcome = run(make_manifest(s3=change), **spec_kw)

    assert not outcome.success
    assert outcome.table_failures == []
    assert {sid for sid, _ in outcome.row_failures} == {"s3"}
    assert len(outcome.row_failures) == 1, outcome.row_failures
    reason = outcome.row_failures[0][1]
    assert column in reason
    failed = [e for e in outcome.expectations if not e["success"]]
    assert len(failed) == 1 and column in failed[0]["columns"]
    assert failed[0]["unexpected_count"] == 1


def test_label_reason_names_value_and_declared_set():
    outcome = run(make_manifest(s2={"labels": "0,1,7"}))
    assert outcome.row_failures == [
        (
            "s2",
            "labels '0,1,7' has labels outside the declared set {0,1,2} (unexpected: 7) "
            "(expect_column_values_to_match_regex)",
        )
    ]


def test_fraction_reason_names_value_and_bounds():
    (failure,) = run(make_manifest(s1={"fraction_1": 0.99})).row_failures
    assert failure[0] == "s1"
    assert "fraction_1 0.99" in failure[1] and "[0, 0.95]" in failure[1]


def test_duplicate_sha_reports_only_later_copy_naming_the_first():
    df = make_manifest(s4={"sha256": f"{1:064x}"})
    df = df.iloc[::-1].reset_index(drop=True)  # s4 now comes first by row; s1 is first by sample_id

    outcome = run(df)

    dup = [e for e in outcome.expectations if e["columns"] == ["sha256"]]
    assert dup[0]["unexpected_count"] == 2  # GX flags both copies
    assert len(outcome.row_failures) == 1
    sid, reason = outcome.row_failures[0]
    assert sid == "s4"
    assert "sha256" in reason and "'s1'" in reason


def test_three_copies_report_the_two_later_ones():
    same = {"sha256": "f" * 64}
    outcome = run(make_manifest(s0=same, s2=same, s5=same))
    assert sorted(sid for sid, _ in outcome.row_failures) == ["s2", "s5"]
    assert all("'s0'" in reason for _, reason in outcome.row_failures)


def test_missing_mask_is_a_failure_when_masks_are_required():
    outcome = run(make_manifest(s2=unmask()))

    assert outcome.row_failures and {sid for sid, _ in outcome.row_failures} == {"s2"}
    (reason,) = [r for _, r in outcome.row_failures]
    assert "has_mask" in reason and "data/02_intermediate/images/s2.png" in reason


def test_rows_without_mask_pass_when_masks_are_not_required():
    df = make_manifest(s1=unmask(), s4=unmask())
    assert df["mask_height"].isna().sum() == 2  # nullable Int64 with NA

    outcome = run(df, require_masks=False)

    assert outcome.success, outcome.row_failures
    assert outcome.row_failures == [] and outcome.table_failures == []
    assert "expect_column_values_to_be_in_set" not in {
        e["type"] for e in outcome.expectations if e["columns"] == ["has_mask"]
    }


def test_a_row_failing_several_expectations_gets_several_reasons():
    broken = {"dtype": "float64", "height": 4, "mask_height": 4, "nonfinite_count": 3}
    outcome = run(make_manifest(s5=broken))

    assert [sid for sid, _ in outcome.row_failures] == ["s5", "s5", "s5"]
    reasons = " | ".join(r for _, r in outcome.row_failures)
    for column in ("dtype", "height", "nonfinite_count"):
        assert column in reasons


def test_duplicate_and_null_sample_ids():
    df = make_manifest(s3={"sample_id": "s1"}, s5={"sample_id": None, "dtype": "int8"})

    outcome = run(df)

    assert len(outcome.row_failures) == 1
    assert outcome.row_failures[0][0] == "s1"
    assert "sample_id 's1' is not unique: 2 rows share it" in outcome.row_failures[0][1]
    # a row without an id cannot be keyed: its failures are table failures
    assert len(outcome.table_failures) == 2
    assert "sample_id is null in 1 row" in outcome.table_failures[0]
    assert "null sample_id" in outcome.table_failures[1] and "dtype 'int8'" in outcome.table_failures[1]


def test_missing_required_column_is_a_table_failure_naming_it():
    df = make_manifest().drop(columns=["fg_fraction", "fraction_2"])

    outcome = run(df)

    assert not outcome.success
    assert outcome.row_failures == []
    assert len(outcome.table_failures) == 2
    assert any("'fg_fraction'" in t for t in outcome.table_failures)
    assert any("'fraction_2'" in t for t in outcome.table_failures)
    # the checks on the absent columns are left out rather than erroring
    columns = {
        c
        for e in outcome.expectations
        if e["type"] != "expect_table_columns_to_match_set"
        for c in e["columns"]
    }
    assert "fg_fraction" not in columns and "fraction_1" in columns


def test_extra_columns_are_allowed():
    df = make_manifest()
    df["notes"] = "ok"
    df["fraction_7"] = 0.0  # an undeclared class's column is not checked
    assert run(df).success


# --- Data Docs -----------------------------------------------------------------------------------


def test_data_docs_are_built_under_docs_dir_only(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    docs = tmp_path / "reports" / "gx_docs"

    outcome = run(make_manifest(s3={"labels": "0,1,7"}), docs_dir=docs)

    assert outcome.data_docs_index == docs.resolve() / "index.html"
    index = outcome.data_docs_index.read_text(encoding="utf-8")
    assert SUITE_NAME in index
    pages = list((docs / "validations").rglob("*.html"))
    assert len(pages) == 1
    page = pages[0].read_text(encoding="utf-8")
    assert SUITE_NAME in page and "0,1,7" in page  # the failing value is on the result page
    suite_page = (docs / "expectations" / f"{SUITE_NAME}.html").read_text(encoding="utf-8")
    assert "leak across splits" in suite_page  # the expectations' notes (why) are rendered
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "reports"]
    assert [sid for sid, _ in outcome.row_failures] == ["s3"]


def test_no_docs_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome = run(make_manifest(), docs_dir=None)
    assert outcome.data_docs_index is None
    assert list(tmp_path.iterdir()) == []


# --- ManifestSpec --------------------------------------------------------------------------------


def test_spec_from_params_round_trip():
    spec = ManifestSpec(
        classes=CLASSES,
        allowed_dtypes=("uint8",),
        min_side=32,
        max_side=1024,
        intensity_range=(0.0, 1.0),
        fraction_bounds={1: (0.01, 0.5)},
        default_fraction_bounds=(0.0, 0.6),
        fg_fraction_bounds=(0.02, 0.7),
        require_masks=False,
    )
    params = spec.to_params()
    assert params["intensity_range"] == [0.0, 1.0] and params["fraction_bounds"] == {1: [0.01, 0.5]}

    assert ManifestSpec.from_params(params, CLASSES) == spec
    # Kedro hands over YAML/JSON values: lists, and possibly string keys
    yaml_like = {**params, "fraction_bounds": {"1": [0.01, 0.5]}, "intensity_range": [0, 1]}
    assert ManifestSpec.from_params(yaml_like, CLASSES) == spec
    assert ManifestSpec.from_params({}, CLASSES) == ManifestSpec(classes=CLASSES)
    assert spec.bounds_for(1) == (0.01, 0.5) and spec.bounds_for(2) == (0.0, 0.6)


def test_spec_from_params_rejects_unknown_keys():
    with pytest.raises(ValueError, match="max_sides.*min_size|min_size.*max_sides"):
        ManifestSpec.from_params({"min_size": 8, "max_sides": 9, "min_side": 8}, CLASSES)


@pytest.mark.parametrize(
    "params",
    [
        {"fraction_bounds": {5: [0, 1]}},
        {"fraction_bounds": {0: [0, 1]}},
        {"intensity_range": [10, 0]},
        {"min_side": 0},
        {"allowed_dtypes": "uint8"},
        {"require_masks": "false"},
    ],
)
def test_spec_rejects_bad_values(params):
    with pytest.raises(ValueError):
        ManifestSpec.from_params(params, CLASSES)


def test_spec_requires_background_class():
    with pytest.raises(ValueError, match="background"):
        ManifestSpec(classes={1: "ps"})


def test_fraction_columns_follow_declared_classes():
    classes = {0: "bg", 1: "ps", 2: "fh", 3: "x"}
    df = make_manifest()
    df["fraction_3"] = np.where(df["sample_id"] == "s2", 0.99, 0.0)
    df.loc[df["sample_id"] == "s4", "labels"] = "0,3"

    outcome = run_manifest_suite(df, ManifestSpec(classes=classes), None)

    assert [sid for sid, _ in outcome.row_failures] == ["s2"]
    assert "fraction_3" in outcome.row_failures[0][1]
