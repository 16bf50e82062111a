import pytest

from sonoseg.sweeps import SweepError, SweepRun, experiment_name, markdown_table, params_file, parse_grid, run_sweep, summarise
from support.kedro_runs import PROJECT_ROOT


def test_parse_grid_keeps_order_and_rejects_what_it_cannot_read():
    grid = parse_grid(["splitting.label_ratio=0.05, 0.1", "training.method=hdc"])
    assert grid == {"splitting.label_ratio": ["0.05", "0.1"], "training.method": ["hdc"]}
    for bad in (["training.method"], ["=hdc"], ["training.method="], ["a.b=1", "a.b=2"]):
        with pytest.raises(SweepError, match="KEY=V"):
            parse_grid(bad)


def test_params_file_finds_the_kedro_file_that_defines_a_key():
    assert params_file("training.hdc.lambda_pix", PROJECT_ROOT).name == "parameters_training.yml"
    assert params_file("splitting.label_ratio", PROJECT_ROOT).name == "parameters_splitting.yml"
    with pytest.raises(SweepError, match="defines 'training.no_such_key'"):
        params_file("training.no_such_key", PROJECT_ROOT)


def test_experiment_names_are_git_ref_safe():
    name = experiment_name("sweep-1", {"splitting.label_ratio": "0.05", "training.method": "hdc/x y"}, 2)
    assert name == "sweep-1-label_ratio_0.05-method_hdc-x-y-seed2"


def test_run_sweep_refuses_a_bad_request_before_running_anything(tmp_path):
    with pytest.raises(SweepError, match="repeats must be >= 1"):
        run_sweep({"training.method": ["hdc"]}, repeats=0, project=PROJECT_ROOT)
    with pytest.raises(SweepError, match="set by repeats"):
        run_sweep({"training.seed": ["1"]}, project=PROJECT_ROOT)


def test_summarise_gives_mean_and_sample_std_over_seeds_per_combination():
    runs = [SweepRun({"training.method": "hdc"}, 0, "a", {"dice_mean": 0.8, "hd95_mean": None, "cases": 5}),
            SweepRun({"training.method": "hdc"}, 1, "b", {"dice_mean": 0.6, "hd95_mean": 4.0, "cases": 5}),
            SweepRun({"training.method": "cps"}, 0, "c", {"dice_mean": 0.7, "hd95_mean": 3.0, "cases": 5})]  # fmt: skip
    hdc, cps = summarise(runs)
    assert hdc["seeds"] == [0, 1] and hdc["experiments"] == ["a", "b"]
    assert hdc["dice_mean"] == pytest.approx(0.7) and hdc["dice_mean_std_over_seeds"] == pytest.approx(0.1414214, rel=1e-6)
    assert hdc["dice_mean_per_seed"] == [0.8, 0.6] and "cases" not in hdc
    assert cps["dice_mean"] == 0.7 and cps["dice_mean_std_over_seeds"] is None  # one seed: no spread to report
    table = markdown_table([hdc, cps], ["training.method"], ["dice_mean", "hd95_mean"])
    assert "| hdc | 2 | 0.7000 ± 0.1414 | 4.0000 |" in table and "| cps | 1 | 0.7000 | 3.0000 |" in table
