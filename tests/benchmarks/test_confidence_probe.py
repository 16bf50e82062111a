"""The confidence probe: per-class confidence and head input by hand on a two-pixel network; the whole
command on a tiny synthetic store with a saved checkpoint."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from support.scripts import BENCHMARKS, load_script
from torch import nn

from sonoseg.io.readers import SyntheticReader
from sonoseg.io.store import SampleStore, ingest
from sonoseg.ssl.base import build_method


@pytest.fixture(scope="module")
def probe():
    return load_script(BENCHMARKS / "confidence_probe.py")


class TwoFeatureNet(nn.Module):
    """The image's two channels are the head's input, so each pixel's features are set by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(2, 3, kernel_size=1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[0, 0] = 2.0
            self.head.bias.copy_(torch.tensor([0.0, 0.0, math.log(3.0)]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images)


def test_class_confidence_by_hand_a_class_with_no_head_input_is_capped_at_softmax_of_the_bias(probe):
    # pixel 1: features (0, 0), so logits = bias (0, 0, ln 3): class 2 at 3/5; pixel 2: features (5, 0), logits (10, 0, ln 3)
    images = torch.tensor([[[[0.0, 5.0]], [[0.0, 0.0]]]])
    rows = probe.class_confidence(TwoFeatureNet(), images, threshold=0.95)
    background, first, second = rows
    confident = math.exp(10) / (math.exp(10) + 1 + 3)
    assert background["pixel_share"] == 0.5 and background["max_top_probability"] == pytest.approx(confident)
    assert background["share_at_threshold"] == 1.0 and background["mean_abs_head_input"] == 2.5
    assert second["max_top_probability"] == pytest.approx(0.6) and second["share_at_threshold"] == 0.0
    assert second["mean_abs_head_input"] == 0.0 and second["head_bias"] == pytest.approx(math.log(3.0))
    assert second["softmax_of_bias"] == pytest.approx(0.6) and first["softmax_of_bias"] == pytest.approx(0.2)
    assert first["pixel_share"] == 0.0 and first["max_top_probability"] is None and first["head_bias"] == 0.0
    assert all(row["dice_against_mask"] is None for row in rows)


def test_class_confidence_scores_each_class_against_the_masks_by_hand(probe):
    # predicted (class 2, background) against the mask (2, 2): class 2 Dice 2 * 1 / (1 + 2), background 0, class 1 in neither
    images = torch.tensor([[[[0.0, 5.0]], [[0.0, 0.0]]]])
    rows = probe.class_confidence(TwoFeatureNet(), images, threshold=0.95, masks=torch.tensor([[[2, 2]]]))
    assert [row["dice_against_mask"] for row in rows] == pytest.approx([0.0, None, 2 / 3])


def test_the_command_probes_a_saved_checkpoint_on_the_work_directory_split(probe, tmp_path):
    work = tmp_path / "work" / "synthetic"
    store = work / "data" / "02_intermediate"
    manifest, _ = ingest(SyntheticReader(6, {"size": 32, "seed": 0}), SampleStore(store), progress=False)
    manifest.to_parquet(store / "manifest.parquet")
    (store / "dataset.json").write_text(json.dumps({"classes": {"0": "background", "1": "ps", "2": "fh"}}))
    (work / "data/03_primary").mkdir(parents=True)
    split = ["val", "labelled", "unlabelled", "labelled", "test", "labelled"]
    pd.DataFrame({"sample_id": manifest["sample_id"], "split": split}).to_csv(work / "data/03_primary/splits.csv", index=False)
    method = build_method("supervised", {}, {"name": "unet_small"}, num_classes=3)
    checkpoint = tmp_path / "best.pt"
    torch.save({"method": "supervised", "networks": {role: method.inner(role).state_dict() for role in method.networks},
                "model": {"name": "unet_small"}, "settings": {}, "num_classes": 3, "input_size": 16}, checkpoint)  # fmt: skip
    out = tmp_path / "out"

    probe.main(["--dataset", "synthetic", "--workdir", str(tmp_path / "work"), "--images", "2", "--checkpoint", str(checkpoint),
                "--name", "tiny", "--out", str(out)])  # fmt: skip

    report = json.loads((out / "tiny.json").read_text())
    rows = report["results"][0]["classes"]
    assert report["split"] == "labelled" and report["images"] == 2 and len(rows) == 3
    assert sum(row["pixel_share"] for row in rows) == pytest.approx(1.0)
    assert all(row["dice_against_mask"] is not None for row in rows if row["pixel_share"] > 0)  # the synthetic images have masks
    assert "| fh |" in (out / "tiny.md").read_text()
    with pytest.raises(ValueError, match="no sample in split 'missing'"):
        probe.main(["--dataset", "synthetic", "--workdir", str(tmp_path / "work"), "--split", "missing",
                    "--checkpoint", str(checkpoint), "--out", str(out)])  # fmt: skip
