"""The training-speed benchmark's method specs: settings over a method's defaults, each spec a row."""

from __future__ import annotations

import pytest
from support.scripts import BENCHMARKS, load_script


@pytest.fixture(scope="module")
def training_speed():
    return load_script(BENCHMARKS / "training_speed.py")


def test_a_spec_nests_dotted_keys_and_reads_values_as_yaml(training_speed):
    assert training_speed.parse_method_spec("hdc") == ("hdc", {})
    assert training_speed.parse_method_spec("infodiv:transformer_options.patch_size=4,ict_weight=0.2,cnn=unext") == (
        "infodiv", {"transformer_options": {"patch_size": 4}, "ict_weight": 0.2, "cnn": "unext"},
    )  # fmt: skip


def test_a_spec_item_without_a_value_is_refused(training_speed):
    with pytest.raises(ValueError, match="'ict_weight' is not key=value"):
        training_speed.parse_method_spec("infodiv:ict_weight")


def test_the_settings_reach_the_method(training_speed, tmp_path):
    training_speed.prepare_store(tmp_path, 32, 12)
    common = dict(store_dir=str(tmp_path), size=32, model={"name": "unet_small"}, batch=2, warmup=1, steps=2,
                  device="cpu")  # fmt: skip
    row = training_speed.measure("mean_teacher", settings={"ema_decay": 0.9}, **common)
    assert row["method"] == "mean_teacher" and row["seconds_per_step"] > 0
    with pytest.raises(ValueError, match=r"unknown settings \['nope'\]"):
        training_speed.measure("mean_teacher", settings={"nope": 1}, **common)
