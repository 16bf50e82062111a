"""Search spaces: parsing, suggestions, conditional entries, applying values, and the project's spaces."""

from __future__ import annotations

import optuna
import pytest
from support.kedro_runs import base_parameters

from sonoseg.ssl.base import method_class
from sonoseg.training.config import TrainerConfig
from sonoseg.tuning import SearchSpace, apply_params

HDC_LIKE = {
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "hdc.cg_positions": {"type": "int", "low": 16, "high": 64, "step": 16},
    "hdc.perturbation": {"type": "categorical", "choices": ["uniform", "vat", "none"]},
    "hdc.perturbation_strength": {
        "depends_on": "hdc.perturbation",
        "cases": {"uniform": {"type": "float", "low": 0.1, "high": 0.6}, "vat": {"type": "float", "low": 0.5, "high": 5.0}},
    },
}


def test_suggest_gives_training_paths_and_conditional_cases_have_their_own_names():
    space = SearchSpace.from_config(HDC_LIKE)
    trial = optuna.trial.FixedTrial(
        {"lr": 0.001, "hdc.cg_positions": 32, "hdc.perturbation": "vat", "hdc.perturbation_strength|vat": 2.0}
    )
    assert space.suggest(trial) == {"lr": 0.001, "hdc.cg_positions": 32, "hdc.perturbation": "vat",
                                    "hdc.perturbation_strength": 2.0}  # fmt: skip
    # a choice without a case leaves the parameter alone
    trial = optuna.trial.FixedTrial({"lr": 0.001, "hdc.cg_positions": 16, "hdc.perturbation": "none"})
    assert "hdc.perturbation_strength" not in space.suggest(trial)
    assert space.training_values({"lr": 0.002, "hdc.perturbation_strength|uniform": 0.3}) == {
        "lr": 0.002, "hdc.perturbation_strength": 0.3}  # fmt: skip
    assert space.paths == ["lr", "hdc.cg_positions", "hdc.perturbation", "hdc.perturbation_strength"]


def test_sampled_values_stay_in_their_ranges():
    space = SearchSpace.from_config(HDC_LIKE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        values = space.suggest(study.ask())
        assert 1.0e-4 <= values["lr"] <= 1.0e-2 and values["hdc.cg_positions"] in (16, 32, 48, 64)
        if values["hdc.perturbation"] == "vat":
            assert 0.5 <= values["hdc.perturbation_strength"] <= 5.0
        elif values["hdc.perturbation"] == "uniform":
            assert 0.1 <= values["hdc.perturbation_strength"] <= 0.6


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"lr": {"type": "normal", "low": 0, "high": 1}}, "type: float | int | categorical"),
        ({"lr": {"type": "float", "low": 1.0, "high": 0.5}}, "must be below high"),
        ({"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log range needs low > 0"),
        ({"lr": {"type": "float", "low": "tiny", "high": 1.0}}, "must be a number"),
        ({"lr": {"type": "float", "low": 0.1, "high": 1.0, "choices": [1]}}, "unknown keys"),
        ({"x": {"type": "int", "low": 0.5, "high": 3}}, "integer low and high"),
        ({"x": {"type": "categorical", "choices": []}}, "non-empty list"),
        ({"x": {"depends_on": "y", "cases": {}}}, "must name a categorical entry listed above"),
        ({"y": {"type": "categorical", "choices": ["a"]},
          "x": {"depends_on": "y", "cases": {"b": {"type": "float", "low": 0, "high": 1}}}}, "case 'b' is not a choice"),  # fmt: skip
        ({}, "is empty"),
    ],
)
def test_malformed_entries_are_refused_with_the_entry_named(entries, message):
    with pytest.raises(ValueError, match=message) as error:
        SearchSpace.from_config(entries, where="tuning.search_spaces.hdc")
    assert "tuning.search_spaces.hdc" in str(error.value)


def test_apply_params_sets_dotted_paths_on_a_copy_and_refuses_unknown_ones():
    training = {"lr": 0.001, "hdc": {"lambda_pix": 1.0, "threshold": 0.8}}
    applied = apply_params(training, {"lr": 0.01, "hdc.lambda_pix": 2.5})
    assert applied == {"lr": 0.01, "hdc": {"lambda_pix": 2.5, "threshold": 0.8}}
    assert training["hdc"]["lambda_pix"] == 1.0  # untouched
    for path in ("hdc.lamda_pix", "nope.lambda_pix", "lr.x"):
        with pytest.raises(KeyError, match=path):
            apply_params(training, {path: 1.0})


def test_check_paths_names_foreign_methods_and_missing_settings():
    training = base_parameters()["training"]
    with pytest.raises(ValueError, match="tunes method 'cps' but the study tunes 'hdc'"):
        SearchSpace.from_config({"cps.cps_weight": {"type": "float", "low": 0.1, "high": 1}}).check_paths(training, "hdc")
    with pytest.raises(ValueError, match="no training.hdc.lambda_pixel parameter"):
        SearchSpace.from_config({"hdc.lambda_pixel": {"type": "float", "low": 0.1, "high": 1}}).check_paths(training, "hdc")


def test_every_project_search_space_parses_and_sets_real_settings():
    params = base_parameters()
    spaces, training = params["tuning"]["search_spaces"], params["training"]
    assert set(spaces) == {"hdc", "infodiv", "simcvd", "mean_teacher", "fixmatch", "cps"}
    trainer_settings = set(TrainerConfig.__dataclass_fields__)
    for method, entries in spaces.items():
        space = SearchSpace.from_config(entries, where=f"tuning.search_spaces.{method}")
        space.check_paths(training, method)
        defaults = method_class(method).defaults()
        for path in space.paths:
            head, _, setting = path.partition(".")
            assert (head == method and setting in defaults) or (not setting and head in trainer_settings), path
        assert "lr" in space.paths, method
        if "rampup_fraction" in defaults:
            assert f"{method}.rampup_fraction" in space.paths, method


def test_the_hdc_space_covers_the_issue_list():
    paths = SearchSpace.from_config(base_parameters()["tuning"]["search_spaces"]["hdc"]).specs
    names = {spec.name for spec in paths}
    for name in ("hdc.lambda_pix", "hdc.lambda_cg", "hdc.lambda_mi", "hdc.threshold", "hdc.input_noise_sigma",
                 "hdc.perturbation_strength|uniform", "hdc.perturbation_strength|dropout",
                 "hdc.perturbation_strength|vat"):  # fmt: skip
        assert name in names
