"""The co-training drift probe: its starting maps and the records it writes."""

from __future__ import annotations

import json

import pytest
from support.scripts import BENCHMARKS, load_script


@pytest.fixture(scope="module")
def probe():
    return load_script(BENCHMARKS / "cotrain_dice_drift.py")


def test_the_starting_argmax_is_exactly_the_disks(probe):
    logits = probe.disk_logits(ramp=3.0)
    labels = logits.argmax(1)[0]
    assert labels[90, 40] == 1 and labels[90, 47] == 0  # the small disk's centre, 7 px out
    assert labels[50, 75] == 2 and labels[50, 106] == 0
    assert probe.class_areas(logits) == probe.class_areas(probe.disk_logits(ramp=1.0))  # the ramp leaves the argmax


def test_writes_one_record_per_variant_ramp_and_step_and_only_the_soft_target_moves_the_areas(probe, tmp_path):
    probe.main(["--ramps", "2", "--checkpoints", "1", "5", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "cotrain_dice_drift.json").read_text())
    assert result["command"] == ".venv/bin/python benchmarks/cotrain_dice_drift.py --ramps 2 --checkpoints 1 5 --out " + str(tmp_path)
    by_variant = {(r["variant"], r["step"]): r for r in result["records"]}
    assert set(by_variant) == {(variant, step) for variant in probe.VARIANTS for step in (1, 5)}
    small = "area_ratio small (r 6)"
    assert by_variant[("soft Dice + KL (default)", 5)][small] > 1.1
    assert by_variant[("hard Dice + KL", 5)][small] == 1.0 and by_variant[("KL only", 5)][small] == 1.0
    assert "| soft Dice + KL (default) | 2 | 5 |" in (tmp_path / "cotrain_dice_drift.md").read_text()
