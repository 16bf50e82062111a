"""The promotion gate on hand-made metrics dicts: every branch, both ways."""

import pytest

from sonoseg.registry.gate import PromotionPolicy, decide

CLASSES = ["ps", "fh"]
POLICY = PromotionPolicy(metric="dice_mean", higher_is_better=True, margin=0.01, class_tolerance=0.02)


def metrics(mean: float, ps: float | None = None, fh: float | None = None, split: str = "s1") -> dict:
    return {"dice_mean": mean, "dice_ps_mean": mean if ps is None else ps, "dice_fh_mean": mean if fh is None else fh,
            "test_split_sha256": split}  # fmt: skip


def test_no_champion_promotes():
    decision = decide(metrics(0.4), None, POLICY, CLASSES)
    assert decision.promote and "no champion" in decision.reason
    assert decision.challenger_value == 0.4 and decision.champion_value is None


def test_beating_by_the_margin_with_no_class_regression_promotes():
    # 0.82 vs 0.80: gain 0.02 ≥ 0.01; ps 0.81 vs 0.80 (better), fh 0.83 vs 0.80 (better)
    decision = decide(metrics(0.82, ps=0.81, fh=0.83), metrics(0.80), POLICY, CLASSES)
    assert decision.promote
    assert "0.8200" in decision.reason and "0.8000" in decision.reason and "+0.0200" in decision.reason
    assert (decision.challenger_value, decision.champion_value) == (0.82, 0.80)


def test_a_class_drop_within_the_tolerance_still_promotes():
    # fh drops 0.015 ≤ 0.02
    assert decide(metrics(0.83, ps=0.875, fh=0.785), metrics(0.80), POLICY, CLASSES).promote


def test_a_different_test_split_is_not_comparable():
    decision = decide(metrics(0.99, split="aaaa"), metrics(0.50, split="bbbb"), POLICY, CLASSES)
    assert not decision.promote and "not comparable" in decision.reason and "aaaa" in decision.reason and "bbbb" in decision.reason


def test_a_champion_without_a_split_hash_is_not_comparable():
    champion = metrics(0.5)
    del champion["test_split_sha256"]
    assert not decide(metrics(0.9), champion, POLICY, CLASSES).promote


def test_a_gain_short_of_the_margin_is_refused_with_the_numbers():
    decision = decide(metrics(0.805), metrics(0.80), POLICY, CLASSES)
    assert not decision.promote
    assert "0.8050" in decision.reason and "+0.0050" in decision.reason and "margin 0.0100" in decision.reason


def test_a_worse_or_equal_challenger_is_refused():
    assert not decide(metrics(0.70), metrics(0.80), POLICY, CLASSES).promote
    tie = decide(metrics(0.80), metrics(0.80), PromotionPolicy(margin=0.0), CLASSES)
    assert not tie.promote and "does not beat" in tie.reason


def test_a_class_regressing_beyond_the_tolerance_is_refused():
    # mean +0.05, but ps falls 0.80 → 0.75 (0.05 > 0.02)
    decision = decide(metrics(0.85, ps=0.75, fh=0.95), metrics(0.80), POLICY, CLASSES)
    assert not decision.promote
    assert "dice_ps_mean 0.7500 vs 0.8000 (worse by 0.0500)" in decision.reason and "fh" not in decision.reason


def test_lower_is_better_metrics_flip_the_direction():
    policy = PromotionPolicy(metric="hd95_mean", higher_is_better=False, margin=0.5, class_tolerance=1.0, class_metric="hd95")
    champion = {"hd95_mean": 10.0, "hd95_ps_mean": 10.0, "hd95_fh_mean": 10.0, "test_split_sha256": "s"}
    better = {"hd95_mean": 8.0, "hd95_ps_mean": 7.0, "hd95_fh_mean": 9.0, "test_split_sha256": "s"}
    assert decide(better, champion, policy, CLASSES).promote
    one_class_worse = {**better, "hd95_fh_mean": 11.5}  # 1.5 px worse > 1.0
    assert not decide(one_class_worse, champion, policy, CLASSES).promote
    assert not decide({**better, "hd95_mean": 9.8}, champion, policy, CLASSES).promote  # gain 0.2 < 0.5


@pytest.mark.parametrize("value", [None, float("nan"), "n/a"])
def test_a_challenger_without_a_finite_metric_is_refused(value):
    decision = decide({**metrics(0.9), "dice_mean": value}, None, POLICY, CLASSES)
    assert not decision.promote and "no finite dice_mean" in decision.reason


def test_missing_champion_metric_or_class_metric_is_not_comparable():
    assert not decide(metrics(0.9), {"test_split_sha256": "s1"}, POLICY, CLASSES).promote
    champion = metrics(0.5)
    del champion["dice_fh_mean"]
    decision = decide(metrics(0.9), champion, POLICY, CLASSES)
    assert not decision.promote and "dice_fh_mean" in decision.reason


def test_policy_from_parameters_rejects_typos_and_negative_margins():
    policy = PromotionPolicy.from_params({"metric": "iou_mean", "margin": 0, "class_tolerance": 0.1})
    assert (policy.metric, policy.margin, policy.higher_is_better) == ("iou_mean", 0, True)
    with pytest.raises(ValueError, match="unknown registry.gate parameters \\['margn'\\]"):
        PromotionPolicy.from_params({"margn": 0.1})
    with pytest.raises(ValueError, match="registry.gate.margin must be a number ≥ 0"):
        PromotionPolicy(margin=-0.1)
