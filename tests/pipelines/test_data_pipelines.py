"""Sliced Kedro pipelines (ingestion, validation, splitting) on in-memory catalogs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.kedro_runs import FixedS3Settings, base_parameters, param_datasets, run_in_memory
from support.layouts import ellipse_mask, textured_image, write_mha, write_png, write_psfhs

from sonoseg.io.samples import SourceError
from sonoseg.pipelines.ingestion import create_pipeline as ingestion_pipeline
from sonoseg.pipelines.splitting import create_pipeline as splitting_pipeline
from sonoseg.pipelines.validation import create_pipeline as validation_pipeline
from sonoseg.validation.report import ValidationFailed

DATA_PIPELINE = ingestion_pipeline() + validation_pipeline() + splitting_pipeline()


def params_for(tmp_path: Path, **ingestion) -> dict:
    params = base_parameters()
    params["ingestion"].update(store_dir=str(tmp_path / "store"), progress=False, **ingestion)
    params["validation"].update(docs_dir=str(tmp_path / "docs"), progress=False)
    return params


def run(pipeline, params, s3_settings=None):
    return run_in_memory(pipeline, {**param_datasets(params), "s3_settings": FixedS3Settings(s3_settings)})


def test_synthetic_data_half_runs_end_to_end(tmp_path):
    params = params_for(tmp_path, source="synthetic")
    params["ingestion"]["synthetic"] = {"n_images": 40, "generator": {"size": 64, "seed": 1, "frames_per_subject": 4}}
    params["splitting"].update(label_ratio=0.2, val_fraction=0.2, test_fraction=0.2)
    out = run(DATA_PIPELINE, params)

    manifest, splits = out["manifest"], out["splits"]
    assert len(manifest) == 40 and out["rejected_files"].empty
    assert out["validation_report"]["success"] and out["quarantine"].empty
    assert list(splits.columns) == ["sample_id", "subject_id", "group_id", "split"]
    assert set(splits["sample_id"]) == set(manifest["sample_id"])
    assert set(splits["split"]) == {"labelled", "unlabelled", "val", "test"}
    # the four frames of a synthetic subject never straddle a train/evaluation boundary
    side = splits["split"].replace({"labelled": "train", "unlabelled": "train"})
    assert (side.groupby(splits["subject_id"]).nunique() == 1).all()
    assert out["split_report"]["counts"]["labelled"] >= 1
    assert (tmp_path / "docs" / "index.html").is_file()
    assert out["validation_preview"].axes  # a real figure with panels


def write_bad_folder(root: Path) -> dict[str, str]:
    """A folder dataset with two good samples and one of every bad input; returns file → expected reason."""
    for seed, name in enumerate(("good1", "good2", "wrong_size", "label7", "constant")):
        mask = ellipse_mask(32, seed, labels=(1,))
        image = np.full((32, 32), 128, np.uint8) if name == "constant" else textured_image(32, seed, mask)
        write_png(root / "images" / f"{name}.png", image)
        if name == "wrong_size":
            mask = np.zeros((20, 24), np.uint8)
            mask[5:10, 5:10] = 1
        if name == "label7":
            mask[mask == 1] = 7
        write_png(root / "masks" / f"{name}.png", mask)
    (root / "images" / "zero.png").write_bytes(b"")
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    nan_image = textured_image(32, 9).astype(np.float32)
    nan_image[3, 3] = np.nan
    write_mha(root / "images" / "nan.mha", nan_image)
    write_png(root / "masks" / "nan.png", ellipse_mask(32, 9, labels=(1,)))
    write_png(root / "masks" / "ghost.png", ellipse_mask(32, 1, labels=(1,)))
    write_png(root / "images" / "good1_copy.png", textured_image(32, 0, ellipse_mask(32, 0, labels=(1,))))
    return {
        "images/zero.png": "empty file",
        "images/corrupt.png": "cannot decode",
        "images/wrong_size.png": "mask size 24x20 differs from image size 32x32",
        "images/label7.png": "outside the declared set",
        "images/nan.mha": "NaN/inf pixels",
        "images/constant.png": "constant",
        "masks/ghost.png": "no matching image",
        "images/good1_copy.png": "duplicates sample 'folder-good1'",
    }


def test_bad_inputs_are_quarantined_with_reasons_and_nothing_is_lost(tmp_path):
    root = tmp_path / "raw"
    expected = write_bad_folder(root)
    params = params_for(tmp_path, source="folder", path=str(root))
    params["validation"]["policy"] = "quarantine"
    out = run(ingestion_pipeline() + validation_pipeline(), params)

    quarantine = out["quarantine"]
    reasons = {str(Path(f).relative_to(root)): r for f, r in zip(quarantine["file"], quarantine["reason"])}
    for file, reason in expected.items():
        assert reason in reasons[file], f"{file}: {reasons.get(file)}"
    accepted = out["validated_manifest"]
    assert sorted(accepted["sample_id"]) == ["folder-good1", "folder-good2"]
    every_file = {str(p) for p in root.rglob("*") if p.is_file()}
    listed = set(out["manifest"]["source_image"]) | set(out["manifest"]["source_mask"].dropna()) | set(quarantine["file"])
    assert every_file <= listed  # nothing silently dropped
    report = out["validation_report"]
    assert report["n_accepted"] == 2 and not report["success"]
    assert {q["sample_id"] for q in report["quarantine"] if q["sample_id"]} >= {"folder-label7", "folder-nan"}


def test_fail_policy_stops_with_one_paragraph_naming_each_file(tmp_path):
    root = tmp_path / "raw"
    expected = write_bad_folder(root)
    params = params_for(tmp_path, source="folder", path=str(root))
    params["validation"]["policy"] = "fail"
    with pytest.raises(Exception) as excinfo:
        run(ingestion_pipeline() + validation_pipeline(), params)
    error = excinfo.value
    while not isinstance(error, ValidationFailed) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, ValidationFailed)
    message = str(error)
    assert "\n" not in message and "validation.policy=quarantine" in message
    for file in expected:
        assert str(root / file) in message


def test_missing_source_folder_fails_with_a_clear_message(tmp_path):
    params = params_for(tmp_path, source="psfhs", path=str(tmp_path / "nowhere"))
    with pytest.raises(Exception, match=r"needs the folder .*nowhere"):
        run(ingestion_pipeline(), params)


def test_s3_source_through_the_pipeline_against_a_real_local_server(tmp_path, moto_s3):
    local = tmp_path / "psfhs_local"
    stems = write_psfhs(local, n=3, size=32)
    client = moto_s3.client()
    client.create_bucket(Bucket="scans")
    for path in sorted(local.rglob("*.mha")):
        client.upload_file(str(path), "scans", f"psfhs/{path.relative_to(local).as_posix()}")
    params = params_for(tmp_path, source="s3", path="s3://scans/psfhs")
    params["ingestion"]["s3"] = {"layout": "psfhs", "cache_dir": str(tmp_path / "cache")}
    from sonoseg.io.s3 import resolve_s3_settings

    settings = resolve_s3_settings({"s3": {**moto_s3.credentials, "endpoint_url": moto_s3.endpoint_url}}, {})
    first = run(ingestion_pipeline(), params, settings)
    assert sorted(first["manifest"]["sample_id"]) == [f"psfhs-{s}" for s in stems]
    mirrored = tmp_path / "cache" / "scans" / "psfhs" / "image_mha" / f"{stems[0]}.mha"
    before = mirrored.stat().st_mtime_ns, mirrored.stat().st_ino
    second = run(ingestion_pipeline(), params, settings)
    assert second["manifest"]["sha256"].tolist() == first["manifest"]["sha256"].tolist()
    assert (mirrored.stat().st_mtime_ns, mirrored.stat().st_ino) == before  # not downloaded again


def test_s3_source_without_credentials_names_where_to_put_them(tmp_path):
    from sonoseg.io.s3 import resolve_s3_settings

    params = params_for(tmp_path, source="s3", path="s3://scans/psfhs")
    with pytest.raises(SourceError) as missing:
        resolve_s3_settings(None, {})
    with pytest.raises(Exception, match="conf/local/credentials.yml"):
        run(ingestion_pipeline(), params, missing.value)
