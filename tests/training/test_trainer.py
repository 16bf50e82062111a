"""The trainer with every method: short runs, falling losses, kill-and-resume, NaN handling, devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from support.training import make_trainer, train

from sonoseg.ssl.base import METHODS, Method, method_class, register_method
from sonoseg.ssl.losses import supervised_loss
from sonoseg.training.config import TrainerConfig
from sonoseg.training.trainer import TrainingDiverged, choose_device, dice_per_class

ALL_METHODS = ["supervised", "fully_supervised", "mean_teacher", "fixmatch", "cps", "hdc", "infodiv", "simcvd", "cotrain"]
PROJECT = Path(__file__).resolve().parents[2]


def test_every_contract_method_is_registered():
    for name in ALL_METHODS:
        assert method_class(name).name == name
    with pytest.raises(ValueError, match="expected one of"):
        method_class("nope")


def test_parameter_file_defaults_match_each_method():
    params = yaml.safe_load((PROJECT / "conf/base/parameters_training.yml").read_text())["training"]
    for name in ALL_METHODS:
        assert params[name] == method_class(name).defaults(), name
    TrainerConfig.from_params(params)  # every other key is a trainer setting


@pytest.mark.parametrize("method", ALL_METHODS)
def test_each_method_trains_checkpoints_and_validates(method, tmp_path):
    trainer, result = train(method, tmp_path / "data", tmp_path / "models")
    assert result.iterations_done == 4 and len(result.history) == 4
    assert all(torch.isfinite(torch.tensor(h["total"])) for h in result.history)
    assert (tmp_path / "models" / method / "last.pt").is_file()
    assert (tmp_path / "models" / method / "best.pt").is_file()
    assert [v["iteration"] for v in result.val_history] == [2, 4]
    assert 0.0 <= result.best_val_dice <= 1.0
    state = torch.load(tmp_path / "models" / method / "last.pt", weights_only=False)
    assert set(state["networks"]) == set(trainer.method.networks)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_each_method_lowers_its_supervised_loss_over_50_iterations(method, tmp_path):
    _, result = train(method, tmp_path / "data", tmp_path / "models", iterations=50, val_every=50, checkpoint_every=50,
                      lr=3e-3)  # fmt: skip
    first = sum(h["sup"] for h in result.history[:10]) / 10
    last = sum(h["sup"] for h in result.history[-10:]) / 10
    assert last < 0.8 * first, f"{method}: supervised loss {first:.3f} → {last:.3f}"


def run_script(config: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / f"config_{len(list(tmp_path.glob('config_*')))}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "tests"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "support.training", str(path)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_a_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    common = {"method": "hdc", "data_dir": str(tmp_path / "data"), "iterations": 10, "checkpoint_every": 4, "val_every": 5}
    straight = run_script({**common, "out_dir": str(tmp_path / "straight")}, tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed = run_script({**common, "out_dir": str(tmp_path / "resumed"), "kill_at": 6}, tmp_path)
    assert killed.returncode == -9  # SIGKILL after iteration 6: the last checkpoint is iteration 4
    assert torch.load(tmp_path / "resumed/hdc/last.pt", weights_only=False)["iteration"] == 4
    resumed = run_script({**common, "out_dir": str(tmp_path / "resumed")}, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = torch.load(tmp_path / "straight/hdc/last.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed/hdc/last.pt", weights_only=False)
    assert a["iteration"] == b["iteration"] == 10
    for role in a["networks"]:
        for key, value in a["networks"][role].items():
            assert torch.equal(value, b["networks"][role][key]), f"{role}.{key} differs after resume"
    assert [h["total"] for h in a["history"]] == [h["total"] for h in b["history"]]


@pytest.fixture
def nan_method():
    @register_method
    class NanAtThree(Method):
        name = "test_nan_at_3"
        uses_unlabelled = False

        def build_networks(self):
            return {"student": self.network()}

        def losses(self, labelled, unlabelled, context):
            loss = supervised_loss(self.run("student", labelled.images), labelled.masks)
            return {"total": loss * float("nan") if context.iteration == 3 else loss}

    yield NanAtThree.name
    METHODS.pop(NanAtThree.name)


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(nan_method, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"not finite at iteration 3 .*last good checkpoint"):
        train(nan_method, tmp_path / "data", tmp_path / "models", iterations=6)
    state = torch.load(tmp_path / "models" / nan_method / "last.pt", weights_only=False)
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["networks"]["student"].values() if v.is_floating_point())


def test_early_stopping_ends_when_val_dice_stops_improving(tmp_path):
    _, result = train("supervised", tmp_path / "data", tmp_path / "models", iterations=40, val_every=1, lr=0.0,
                      early_stopping_patience=2)  # fmt: skip
    # lr 0 leaves the weights (not BN statistics) fixed, so val Dice soon stops improving
    scores = [v["val_dice"] for v in result.val_history]
    assert result.iterations_done < 40 and result.iterations_done == len(scores)
    assert max(scores[-2:]) <= max(scores[:-2])


def test_device_choice():
    assert choose_device("auto").type in ("cuda", "mps", "cpu")
    assert choose_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            choose_device("cuda")


def test_dice_per_class_hand_computed():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, :] = 5  # predicts class 1 on the top row
    masks = torch.tensor([[[1, 0], [0, 0]]])  # one pixel of class 1, no class 2
    dice = dice_per_class(logits, masks, 3)
    assert dice[0, 0].item() == pytest.approx(2 * 1 / (2 + 1))
    assert dice[0, 1].item() == 1.0  # both empty


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"optimizer": "lion"}, {"model": {}}])
def test_bad_trainer_settings_name_the_parameter(bad):
    with pytest.raises(ValueError, match="training"):
        TrainerConfig(**bad)


def test_unknown_method_setting_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"training.hdc has unknown settings \['lambda_typo'\]"):
        make_trainer("hdc", tmp_path, settings={"lambda_typo": 1.0})


def test_a_method_trains_with_its_inherited_defaults_under_the_configured_settings(tmp_path):
    trainer = make_trainer("hdc", tmp_path, settings={"threshold": 0.7})
    expected = {"ema_decay": 0.99, "teacher_norm": "running", "threshold": 0.7, "pix_dice": 0.0}  # EMA's, hdc's, conf's
    assert {name: trainer.method.settings[name] for name in expected} == expected
