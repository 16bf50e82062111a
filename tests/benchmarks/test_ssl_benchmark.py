"""The SSL benchmark's pure parts: aggregation over cached runs, run variants and the docs section."""

from __future__ import annotations

import json
import statistics

import pytest
from support.scripts import BENCHMARKS, load_script


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCHMARKS / "ssl_benchmark.py")


def entry(method, seed, dice, *, ratio=0.05, spi=0.1, rss=1000.0, resumed=False, variant="cpu-4000it", tuned=None,
          machine="m1"):
    """A cache entry as run_one writes it, with the fields aggregation reads."""
    metrics = {
        "dice_pubic_symphysis_mean": dice - 0.05, "dice_fetal_head_mean": dice + 0.05, "dice_union_mean": dice + 0.02,
        "dice_mean": dice, "iou_pubic_symphysis_mean": 0.7, "iou_fetal_head_mean": 0.8, "iou_union_mean": 0.75,
        "iou_mean": 0.75, "hd95_pubic_symphysis_mean": 4.0, "hd95_fetal_head_mean": 6.0, "hd95_union_mean": 5.0,
        "hd95_mean": 5.0, "assd_mean": 1.5, "aop_abs_err_deg_mean": 5.0 + seed, "hsd_abs_err_mean": 2.0,
        "hc_abs_err_mean": None, "distance_unit": "mm",
    }  # fmt: skip
    return {
        "dataset": "psfhs", "label_ratio": ratio, "method": method, "seed": seed, "budget": "cpu", "iterations": 4000,
        "variant": variant, "tuned": tuned, "metrics": metrics, "setting": {"training.input_size": 128,
        "training.model.name": "unet_small", "training.labelled_batch": 8, "training.unlabelled_batch": 8}, "resumed": resumed, "git_commit": "abc",
        "training": {"seconds_per_iteration": spi, "peak_rss_mb": rss, "peak_gpu_mb": None, "best_val_dice": dice,
                     "n_labelled": 43},
        "benchmark_command": "python benchmarks/ssl_benchmark.py --seeds 0,1,2",
        "host": {"cpu": "AMD EPYC", "logical_cpus": 2, "boot_id": machine} if machine else None,
    }  # fmt: skip


def test_means_and_std_over_seeds_and_ratios_to_supervised(bench):
    entries = [entry("supervised", s, d, spi=0.1, rss=1000) for s, d in [(0, 0.88), (1, 0.90)]]
    entries += [entry("hdc", s, d, spi=0.3, rss=1500) for s, d in [(2, 0.91), (0, 0.93), (1, 0.92)]]
    rows = bench.aggregate(entries)[("psfhs", "0.05", "cpu-4000it")]

    assert list(rows) == ["supervised", "hdc"]
    hdc = rows["hdc"]
    assert hdc["seeds"] == [0, 1, 2]
    assert hdc["dice_mean_per_seed"] == [0.93, 0.92, 0.91]  # ordered by seed
    assert hdc["dice_mean"] == pytest.approx(0.92)
    assert hdc["dice_mean_std"] == pytest.approx(statistics.stdev([0.93, 0.92, 0.91]))  # n - 1
    assert hdc["dice_ps"] == pytest.approx(0.87) and hdc["dice_fh"] == pytest.approx(0.97)
    assert hdc["aop_abs_err_deg"] == pytest.approx(6.0)
    assert hdc["per_class"]["union"]["dice"]["mean"] == pytest.approx(0.94)
    assert list(hdc["per_class"]) == ["pubic_symphysis", "fetal_head", "union"]
    assert hdc["hc_abs_err_mm"] is None
    assert hdc["seconds_per_iter_ratio"] == pytest.approx(3.0)
    assert hdc["peak_memory_ratio"] == pytest.approx(1.5)
    assert rows["supervised"]["seconds_per_iter_ratio"] == pytest.approx(1.0)
    assert (hdc["budget"], hdc["iterations"], hdc["git_commit"]) == ("cpu", 4000, "abc")


def test_time_ratios_divide_each_seed_by_supervised_on_its_own_machine(bench):
    # supervised: 0.1 s on the fast machine, 0.2 s on the slow one; hdc is 3x supervised on both
    entries = [entry("supervised", 0, 0.88, spi=0.1, machine="fast"),
               entry("supervised", 1, 0.89, spi=0.2, machine="slow"), entry("supervised", 2, 0.90, spi=0.1, machine=None),
               entry("hdc", 0, 0.91, spi=0.3, machine="fast"), entry("hdc", 1, 0.92, spi=0.6, machine="slow"),
               entry("hdc", 2, 0.93, spi=0.9, machine="third"), entry("hdc", 3, 0.94, spi=0.3, machine=None),
               entry("cps", 0, 0.90, spi=1.0, machine="third")]  # fmt: skip
    rows = bench.aggregate(entries)[("psfhs", "0.05", "cpu-4000it")]

    # pooled means would give 0.525 / 0.1333 = 3.94; seeds 2 and 3 have no supervised run on a recorded machine of theirs
    assert rows["hdc"]["seconds_per_iter_ratio"] == pytest.approx(3.0)
    assert rows["hdc"]["seconds_per_iter_ratio_seeds"] == [0, 1]
    assert rows["supervised"]["seconds_per_iter_ratio"] == pytest.approx(1.0)
    assert rows["supervised"]["seconds_per_iter_ratio_seeds"] == [0, 1]  # the unrecorded seed 2 has no machine
    assert rows["cps"]["seconds_per_iter_ratio"] is None and rows["cps"]["seconds_per_iter_ratio_seeds"] == []
    assert rows["hdc"]["peak_memory_ratio"] == pytest.approx(1.0)  # memory still compares all runs

    markdown = bench.render_markdown({("psfhs", "0.05", "cpu-4000it"): rows}, "python benchmarks/ssl_benchmark.py", "abc")
    assert "| 3.00 (seeds 0, 1) | 1.00 |" in markdown
    cps_line = next(line for line in markdown.splitlines() if line.startswith("| cps | 1 | 43 |"))
    assert cps_line.endswith("| – | 1.00 |")


def test_missing_supervised_gives_null_ratios_and_one_seed_no_std(bench):
    rows = bench.aggregate([entry("hdc", 0, 0.9, ratio=0.01)])[("psfhs", "0.01", "cpu-4000it")]
    assert rows["hdc"]["seconds_per_iter_ratio"] is None
    assert rows["hdc"]["peak_memory_ratio"] is None
    assert rows["hdc"]["dice_mean_std"] is None


def test_groups_apart_by_ratio_variant_and_tuning_and_resumed_runs_do_not_time(bench):
    entries = [entry("supervised", 0, 0.8, spi=0.1), entry("supervised", 0, 0.9, ratio=1.0),
               entry("hdc", 0, 0.85, spi=9.0, resumed=True), entry("hdc", 1, 0.86, spi=0.2),
               entry("hdc", 0, 0.87, tuned={"params": {"lr": 3e-4}}),
               entry("hdc", 0, 0.5, variant="cpu-20it-1234abcd")]  # fmt: skip
    table = bench.aggregate(entries)
    assert set(table) == {("psfhs", "0.05", "cpu-4000it"), ("psfhs", "1.0", "cpu-4000it"), ("psfhs", "0.05", "cpu-20it-1234abcd")}
    rows = table[("psfhs", "0.05", "cpu-4000it")]
    assert list(rows) == ["supervised", "hdc", "hdc+tuned"]
    assert rows["hdc"]["seconds_per_iter_ratio"] == pytest.approx(2.0)  # the resumed seed's 9 s is left out
    assert rows["hdc"]["dice_mean"] == pytest.approx(0.855)  # but its accuracy counts
    assert bench.results_name("psfhs", "0.05", "cpu-4000it") == "psfhs_0.05"
    assert bench.results_name("psfhs", "0.05", "gpu-30000it") == "psfhs_0.05_gpu-30000it"


def test_variants_keep_different_settings_apart(bench):
    cpu = bench.budget_params("cpu", None, None, None)
    assert bench.variant_name("cpu", cpu) == "cpu-4000it"
    assert bench.variant_name("cpu", bench.budget_params("cpu", 8000, None, None)) == "cpu-8000it"
    small = bench.variant_name("cpu", bench.budget_params("cpu", 20, 64, None))
    assert small.startswith("cpu-20it-") and small != bench.variant_name("cpu", bench.budget_params("cpu", 20, 96, None))
    gpu = bench.budget_params("gpu", None, None, None)
    assert gpu["training.input_size"] == 256 and gpu["training.model.name"] == "deeplabv3plus"
    unext = bench.budget_params("cpu", None, None, None, "unext")
    assert unext == {**cpu, "training.model.name": "unext"}
    assert bench.variant_name("cpu", unext).startswith("cpu-4000it-")
    gpu_unext = bench.budget_params("gpu", None, None, None, "unext")
    assert gpu_unext["training.model.name"] == "unext" and "training.model.encoder" not in gpu_unext
    assert bench.run_key("psfhs", 1, "supervised", 2, "cpu-4000it", False) == "psfhs_1.0_supervised_seed2_cpu-4000it"
    assert bench.format_params({"a.b": None, "c": False, "d": 0.05}) == "a.b=null,c=false,d=0.05"


def test_docs_section_is_replaced_between_markers_or_appended(bench):
    document = f"# B\n\nbefore\n\n{bench.DOCS_START}\nold table\n{bench.DOCS_END}\n\nafter\n"
    replaced = bench.replace_docs_section(document, "new table\n")
    assert "old table" not in replaced and "new table" in replaced
    assert replaced.startswith("# B\n\nbefore\n\n") and replaced.endswith("\n\nafter\n")
    assert bench.replace_docs_section(replaced, "new table\n") == replaced
    appended = bench.replace_docs_section("# B\n", "t")
    assert appended == f"# B\n\n{bench.DOCS_START}\nt\n{bench.DOCS_END}\n"


def test_markdown_has_mean_std_rows_and_the_marked_anchors(bench):
    entries = [entry("supervised", s, d) for s, d in [(0, 0.88), (1, 0.90)]]
    markdown = bench.render_markdown(bench.aggregate(entries), "python benchmarks/ssl_benchmark.py", "abc")
    assert "| supervised | 2 | 43 | 0.8400 ± 0.0141 |" in markdown
    assert "### psfhs, label ratio 0.05 (budget `cpu-4000it`: CPU: 128², unet_small, 4000 iterations of batch 8+8)" in markdown
    assert "not comparable split for split" in markdown and "DSC 0.918" in markdown and "94.57" in markdown


def test_set_overrides_get_their_own_key_and_row_and_concern_their_method_only(bench):
    overrides = {"training.hdc.pix_average": "class", "training.lr": "0.0005"}
    assert bench.overrides_for("hdc", overrides) == overrides
    assert bench.overrides_for("supervised", overrides) == {"training.lr": "0.0005"}
    plain = bench.run_key("psfhs", 0.01, "hdc", 0, "cpu-4000it", False)
    changed = bench.run_key("psfhs", 0.01, "hdc", 0, "cpu-4000it", False, {"training.hdc.pix_average": "class"})
    assert plain == "psfhs_0.01_hdc_seed0_cpu-4000it" and changed.startswith(plain + "_set-") and changed != plain
    assert bench.run_key("psfhs", 0.01, "hdc", 0, "cpu-4000it", False, {}) == plain

    balanced = entry("hdc", 0, 0.9) | {"overrides": {"training.hdc.pix_average": "class"}}
    rows = bench.aggregate([entry("supervised", 0, 0.8), entry("hdc", 0, 0.85), balanced])[("psfhs", "0.05", "cpu-4000it")]
    assert list(rows) == ["supervised", "hdc", "hdc [pix_average=class]"]
    assert rows["hdc [pix_average=class]"]["dice_mean"] == pytest.approx(0.9)
    assert rows["hdc [pix_average=class]"]["seconds_per_iter_ratio"] == pytest.approx(1.0)


def test_a_setting_with_fewer_seeds_does_not_compete_however_good_its_seed(bench):
    plain = [entry("simcvd", s, d) for s, d in [(0, 0.89), (1, 0.86), (2, 0.88)]]  # mean 0.8767, 0.86 on seed 1
    lower_weight = [entry("simcvd", 1, 0.87) | {"overrides": {"training.simcvd.contrastive_weight": "0.1"}}]
    rows = bench.aggregate([*plain, *lower_weight])[("psfhs", "0.05", "cpu-4000it")]

    view = bench.per_method(rows)["simcvd"]  # seed 1 against seed 1 it would win: 0.87 > 0.86

    assert view["settings"] == "simcvd" and view["compared_settings"] == ["simcvd"] and view["selection_seeds"] == [0, 1, 2]
    assert view["val_dice_by_setting"] == {"simcvd": pytest.approx(0.8767, abs=1e-4), "simcvd [contrastive_weight=0.1]": pytest.approx(0.87)}
    markdown = bench.render_markdown({("psfhs", "0.05", "cpu-4000it"): rows}, "python benchmarks/ssl_benchmark.py", "abc")
    assert ("simcvd → `simcvd` (seeds 0, 1, 2: 0.8767; `simcvd [contrastive_weight=0.1]` 0.8700 on seed 1 only, "
            "too few seeds to compete)") in markdown

    lower_weight += [entry("simcvd", s, d) | {"overrides": {"training.simcvd.contrastive_weight": "0.1"}} for s, d in [(0, 0.90), (2, 0.87)]]
    view = bench.per_method(bench.aggregate([*plain, *lower_weight])[("psfhs", "0.05", "cpu-4000it")])["simcvd"]
    assert view["settings"] == "simcvd [contrastive_weight=0.1]" and view["val_dice_mean"] == pytest.approx(0.88)
    assert view["compared_settings"] == ["simcvd", "simcvd [contrastive_weight=0.1]"]


def test_competing_settings_are_compared_on_the_seeds_they_share_or_else_on_their_own(bench):
    plain = [entry("simcvd", s, d) for s, d in [(0, 0.95), (1, 0.80)]]  # 0.875 on its own seeds, 0.80 on seed 1
    later = [entry("simcvd", s, d) | {"overrides": {"training.simcvd.contrastive_weight": "0.1"}} for s, d in [(1, 0.82), (2, 0.70)]]
    view = bench.per_method(bench.aggregate([*plain, *later])[("psfhs", "0.05", "cpu-4000it")])["simcvd"]
    assert view["selection_seeds"] == [1] and view["settings"] == "simcvd [contrastive_weight=0.1]"
    assert view["val_dice_by_setting"]["simcvd"] == pytest.approx(0.80)

    apart = [entry("simcvd", 2, 0.70) | {"overrides": {"training.simcvd.contrastive_weight": "0.1"}}]
    rows = bench.aggregate([entry("simcvd", 0, 0.80), *apart])[("psfhs", "0.05", "cpu-4000it")]
    view = bench.per_method(rows)["simcvd"]
    assert view["selection_seeds"] == [] and view["settings"] == "simcvd"
    markdown = bench.render_markdown({("psfhs", "0.05", "cpu-4000it"): rows}, "python benchmarks/ssl_benchmark.py", "abc")
    assert "simcvd → `simcvd` (no shared seed, so each on its own: 0.8000; `simcvd [contrastive_weight=0.1]` 0.7000)" in markdown


def test_set_rejects_malformed_and_reserved_keys(bench):
    assert bench.parse_args(["--set", "training.hdc.pix_average=class"]).overrides == {"training.hdc.pix_average": "class"}
    for bad in ("pix_average=class", "training.hdc.pix_average", "training.seed=3", "training.iterations=10"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--set", bad])


def test_results_json_keys_each_method_to_its_setting_chosen_on_val_not_on_test(bench):
    plain = [entry("hdc", s, d) for s, d in [(0, 0.80), (1, 0.84)]]  # val = test here: 0.82 mean
    dice_term = [entry("hdc", s, d) | {"overrides": {"training.hdc.pix_dice": "1.0"}} for s, d in [(0, 0.86), (1, 0.88), (2, 0.84)]]
    for run in dice_term:  # a better val but a worse test than its Dice: selection must follow val
        run["metrics"] = run["metrics"] | {"dice_mean": 0.5}
    rows = bench.aggregate([entry("supervised", 0, 0.8), *plain, *dice_term])[("psfhs", "0.05", "cpu-4000it")]
    view = bench.per_method(rows)

    assert list(view) == ["supervised", "hdc"]
    assert view["hdc"]["settings"] == "hdc [pix_dice=1.0]"
    assert view["hdc"]["selection_seeds"] == [0, 1, 2]  # the plain setting, on two seeds, does not compete
    assert view["hdc"]["val_dice_mean"] == pytest.approx(0.86)
    assert view["hdc"]["dice_mean"] == pytest.approx(0.5) and view["hdc"]["seeds"] == [0, 1, 2]
    assert list(view["hdc"]["other_settings"]) == ["hdc"]
    assert view["hdc"]["other_settings"]["hdc"]["dice_mean"] == pytest.approx(0.82)
    assert view["supervised"]["settings"] == "supervised" and view["supervised"]["other_settings"] == {}

    markdown = bench.render_markdown({("psfhs", "0.05", "cpu-4000it"): rows}, "python benchmarks/ssl_benchmark.py", "abc")
    assert "hdc → `hdc [pix_dice=1.0]` (seeds 0, 1, 2: 0.8600; `hdc` 0.8200 on seeds 0, 1 only, too few seeds to compete)" in markdown
    assert "supervised →" not in markdown  # one setting under its own name needs no note


def test_checkpoint_commit_is_recorded_fresh_and_read_back_with_a_warning_on_resume(bench, tmp_path, caplog):
    checkpoints = tmp_path / "runs" / "hdc"
    assert bench.checkpoint_commit(checkpoints, "aaa") == "aaa"  # fresh: recorded
    (checkpoints / "last.pt").write_bytes(b"")  # the trainer saved a checkpoint
    with caplog.at_level("WARNING"):
        assert bench.checkpoint_commit(checkpoints, "aaa") == "aaa"  # same code: silent
    assert not caplog.records
    with caplog.at_level("WARNING"):
        assert bench.checkpoint_commit(checkpoints, "bbb") == "aaa"  # code changed since the checkpoint
    assert "started at commit aaa, not at bbb" in caplog.text
    (checkpoints / "started_at_commit.txt").unlink()  # a checkpoint from before the record existed
    assert bench.checkpoint_commit(checkpoints, "bbb") is None


def test_host_facts_read_the_cpu_model_and_boot_id_and_tolerate_their_absence(bench, tmp_path):
    (tmp_path / "sys/kernel/random").mkdir(parents=True)
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: AMD EPYC 9654\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9654\n")
    (tmp_path / "sys/kernel/random/boot_id").write_text("1b2c\n")
    facts = bench.host_facts(tmp_path)
    assert (facts["cpu"], facts["boot_id"]) == ("AMD EPYC 9654", "1b2c") and facts["logical_cpus"] >= 1
    bare = bench.host_facts(tmp_path / "absent")  # not Linux: no /proc
    assert bare["boot_id"] is None and bare["logical_cpus"] >= 1


def test_registry_inputs_name_every_missing_file_and_return_the_reports_when_all_are_there(bench, tmp_path):
    run = {**entry("hdc", 1, 0.92), "key": "psfhs_0.05_hdc_seed1"}
    run["training"]["best_checkpoint"] = "data/06_models/hdc/best.pt"
    with pytest.raises(bench.RunFailed) as error:
        bench.registry_inputs(tmp_path, run)
    message = str(error.value)
    assert "psfhs_0.05_hdc_seed1 (best val Dice 0.9200)" in message
    for name in ("training_summary.json", "metrics.json", "best.pt"):
        assert name in message
    reports = [tmp_path / "runs" / "psfhs_0.05_hdc_seed1" / name for name in ("training_summary.json", "metrics.json")]
    for path in (*reports, tmp_path / "data/06_models/hdc/best.pt"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert bench.registry_inputs(tmp_path, run) == reports
    (tmp_path / "data/06_models/hdc/best.pt").unlink()
    with pytest.raises(bench.RunFailed, match=r"best\.pt is not here"):
        bench.registry_inputs(tmp_path, run)


def test_rerun_drift_names_the_dice_values_a_retrain_did_not_reproduce(bench, tmp_path):
    run = entry("hdc", 1, 0.92)
    run["metrics"]["dice_mean"] = 0.9024
    summary, metrics = tmp_path / "training_summary.json", tmp_path / "metrics.json"
    summary.write_text(json.dumps({"best_val_dice": 0.92}))
    metrics.write_text(json.dumps({"dice_mean": 0.9024}))
    assert bench.rerun_drift([summary, metrics], run) == {}  # the same run, reproduced bit for bit
    metrics.write_text(json.dumps({"dice_mean": 0.9031}))
    assert bench.rerun_drift([summary, metrics], run) == {"dice_mean": {"cached": 0.9024, "registered": 0.9031}}
    summary.write_text(json.dumps({}))
    assert bench.rerun_drift([summary, metrics], run)["best_val_dice"] == {"cached": 0.92, "registered": None}


def test_register_best_takes_the_setting_val_selects_unless_the_command_names_one(bench):
    dice_term = {"overrides": {"training.hdc.pix_dice": "1.0"}}
    plain = [entry("hdc", s, d) for s, d in [(0, 0.95), (1, 0.94)]]  # the best val seeds, but too few to compete
    selected = [entry("hdc", s, d) | dice_term for s, d in [(0, 0.90), (1, 0.93), (2, 0.91)]]
    elsewhere = [entry("hdc", 3, 0.99, ratio=0.01) | dice_term, entry("hdc", 3, 0.99, variant="gpu-20000it") | dice_term]
    entries = [entry("supervised", 0, 0.97), *plain, *selected, *elsewhere]

    setting, runs = bench.registry_runs(entries, "cpu-4000it", None)
    assert setting == "hdc [pix_dice=1.0]" and sorted(r["seed"] for r in runs) == [0, 1, 2]
    setting, runs = bench.registry_runs(entries, "cpu-4000it", "hdc")
    assert setting == "hdc" and sorted(r["seed"] for r in runs) == [0, 1]
    with pytest.raises(bench.RunFailed, match=r"no cached run of 'hdc \[pix_dice=0\]' at psfhs 0\.05 cpu-4000it; "
                                              r"cached settings: \['hdc', 'hdc \[pix_dice=1\.0\]'\]"):
        bench.registry_runs(entries, "cpu-4000it", "hdc [pix_dice=0]")
    with pytest.raises(bench.RunFailed, match="cached settings: none"):
        bench.registry_runs(elsewhere, "cpu-4000it", None)

    assert bench.parse_args([]).register_best is None
    assert bench.parse_args(["--register-best"]).register_best == ""
    assert bench.named_setting("", False, {}) is None  # left to val
    assert bench.named_setting("hdc", False, {}) == "hdc"
    assert bench.named_setting("", False, {"training.hdc.pix_dice": "1.0"}) == "hdc [pix_dice=1.0]"
    assert bench.named_setting("", True, {}) == "hdc+tuned"
    assert bench.named_setting("hdc [pix_dice=1.0]", False, {"training.hdc.pix_dice": "1.0"}) == "hdc [pix_dice=1.0]"
    with pytest.raises(bench.RunFailed, match=r"names 'hdc' but --set/--tuned name 'hdc \[pix_dice=1\.0\]'"):
        bench.named_setting("hdc", False, {"training.hdc.pix_dice": "1.0"})


def cached_fixmatch(bench, cache, settings, overrides=None):
    """A seed-0 fixmatch run at psfhs 0.05 in ``cache`` that recorded ``settings`` as its method settings."""
    params = bench.budget_params("cpu", None, None, None)
    key = bench.run_key("psfhs", 0.05, "fixmatch", 0, bench.variant_name("cpu", params), False, overrides)
    run = entry("fixmatch", 0, 0.9) | {"key": key, "setting": params, "overrides": overrides or {}}
    run["training"]["method_settings"] = settings
    bench.write_json(cache / f"{key}.json", run)
    return run


def test_a_cached_run_whose_method_settings_changed_since_stops_the_plan_and_names_them(bench, tmp_path):
    from sonoseg.ssl.base import method_class

    now = method_class("fixmatch").defaults()  # conf/base gives fixmatch no other values
    args = bench.parse_args(["--ratios", "0.05", "--methods", "fixmatch", "--seeds", "0"])
    cached_fixmatch(bench, tmp_path, {k: v for k, v in now.items() if k != "dice_weight"} | {"retired_setting": 1})
    assert bench.plan_runs(args, "psfhs", "cpu-4000it", {}, tmp_path) == []  # one setting gone, one added since

    run = cached_fixmatch(bench, tmp_path, {**now, "threshold": 0.9, "strong_views": 1})
    with pytest.raises(SystemExit, match=rf"{run['key']}\.json: strong_views 1 then, 2 now, threshold 0\.9 then, 0\.95 now\n"
                                         r"To run them again, move their JSON to benchmarks/results/superseded/"):
        bench.plan_runs(args, "psfhs", "cpu-4000it", {}, tmp_path)

    override = {"training.fixmatch.threshold": "0.9", "training.fixmatch.strong_views": "1"}
    cached_fixmatch(bench, tmp_path, {**now, "threshold": 0.9, "strong_views": 1}, override)
    args = bench.parse_args(["--ratios", "0.05", "--methods", "fixmatch", "--seeds", "0",
                             "--set", "training.fixmatch.threshold=0.9", "--set", "training.fixmatch.strong_views=1"])  # fmt: skip
    assert bench.plan_runs(args, "psfhs", "cpu-4000it", {}, tmp_path) == []  # what it was told to train with


def test_changed_settings_read_the_configuration_and_leave_unrecorded_and_tuned_runs_alone(bench, tmp_path, caplog):
    import shutil

    conf = shutil.copytree(bench.ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (conf / "psfhs" / "parameters_training.yml").write_text("training:\n  fixmatch:\n    unsup_weight: 0.5\n")
    now = bench.method_settings_now(conf, "psfhs", {}, "fixmatch")
    assert now["unsup_weight"] == 0.5 and now["threshold"] == 0.95

    run = cached_fixmatch(bench, tmp_path, {**now, "unsup_weight": 1.0})
    assert bench.changed_settings(run, conf) == {"unsup_weight": (1.0, 0.5)}
    assert bench.changed_settings(run) == {}  # the project's conf gives 1.0
    assert bench.changed_settings(run | {"tuned": {"study_name": "s"}}, conf) == {}
    del run["training"]["method_settings"]
    assert bench.changed_settings(run, conf) == {}

    stale = cached_fixmatch(bench, tmp_path / "results" / "runs", {**now, "unsup_weight": 0.25})
    bench.write_outputs(tmp_path / "results", None, "python benchmarks/ssl_benchmark.py", "abc")
    assert f"{stale['key']}: trained with fixmatch settings the configuration no longer gives (unsup_weight 0.25 then, 1.0 now)" in caplog.text
