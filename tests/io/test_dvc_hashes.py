from sonoseg.io.dvc_hashes import stage_data_hashes

PIPELINE = {"stages": {
    "splitting": {"deps": ["src/sonoseg/splitting", "data/03_primary/manifest.parquet"], "outs": ["data/03_primary/splits.csv"]},
    "training": {"deps": ["src/sonoseg/training", "data/03_primary/splits.csv", "data/02_intermediate/images/",
                          {"data/05_model_input": {}}]},
}}  # fmt: skip
LOCK = {"schema": "2.0", "stages": {
    "ingestion": {"outs": [{"path": "data/02_intermediate/images", "md5": "aa.dir"}]},
    "splitting": {"outs": [{"path": "data/03_primary/splits.csv", "md5": "bb"}]},
    # training's own entry describes its previous run: never the source
    "training": {"deps": [{"path": "data/03_primary/splits.csv", "md5": "stale"}], "outs": [{"path": "data/06_models", "md5": "cc.dir"}]},
}}  # fmt: skip


def test_hashes_come_from_the_producing_stages_for_data_deps_only():
    assert stage_data_hashes(PIPELINE, LOCK, "training") == {
        "data/03_primary/splits.csv": "bb",
        "data/02_intermediate/images": "aa.dir",
    }  # code deps and data/05_model_input (no producing stage) are left out


def test_without_dvc_or_before_the_first_repro_there_are_no_hashes():
    assert stage_data_hashes({}, {}, "training") == {}
    assert stage_data_hashes(PIPELINE, {}, "training") == {}
    assert stage_data_hashes(PIPELINE, LOCK, "no_such_stage") == {}
