"""Leak-aware splitting: grouping, determinism, stability on append, class guarantee, leak check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sonoseg.splitting.leak_aware import (
    SplitConfig,
    assign_splits,
    consecutive_pairs,
    cross_split_similarity,
    group_samples,
    image_signatures,
    split_report,
    unit_hash,
)

SHARED_PSFHS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "psfhs"


def test_signatures_are_pearson_correlations():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16)).astype(np.float32)
    sig = image_signatures([a, 2 * a + 5, -a, np.ones((16, 16))], size=16)
    assert sig[0] @ sig[1] == pytest.approx(1.0, abs=1e-5)  # affine copy: correlation 1
    assert sig[0] @ sig[2] == pytest.approx(-1.0, abs=1e-5)
    assert np.all(sig[3] == 0)  # a constant image is similar to nothing


def test_groups_join_subjects_and_near_duplicates_transitively():
    ids = ["a", "b", "c", "d", "e"]
    subjects = ["s1", None, "s1", None, None]
    # b~d and d~e by similarity; a and c share a subject
    sig = np.zeros((5, 3), np.float32)
    sig[0] = [1, 0, 0]
    sig[2] = [0, 0, 1]
    sig[1] = sig[3] = sig[4] = [0, 1, 0]
    groups = group_samples(ids, subjects, sig, threshold=0.9)
    assert groups[0] == groups[2] == "s1"
    assert groups[1] == groups[3] == groups[4] == "b"  # named after the smallest member
    assert len(set(groups)) == 2
    assert group_samples(ids, subjects, None, None) == ["s1", "b", "s1", "d", "e"]


def test_consecutive_frames_link_at_the_lower_neighbour_threshold():
    ids = ["p-0007", "p-0008", "p-0010", "q-0009"]
    assert consecutive_pairs(ids) == [(0, 1)]  # 0010 is two apart; q- is another prefix
    sig = np.array([[1, 0], [0.8, 0.6], [0.8, 0.6], [0.8, 0.6]], np.float32)  # 0.8 to the first
    assert group_samples(ids, [None] * 4, sig, threshold=0.95, neighbour_threshold=0.7)[:2] == ["p-0007", "p-0007"]
    assert group_samples(ids, [None] * 4, sig, threshold=0.95, neighbour_threshold=0.85)[:2] == ["p-0007", "p-0008"]


def table_of(n: int, with_class_2_every: int = 1) -> pd.DataFrame:
    ids = [f"s{i:04d}" for i in range(n)]
    return pd.DataFrame(
        {
            "sample_id": ids,
            "group_id": [f"g{i // 3:04d}" for i in range(n)],
            "has_mask": True,
            "fraction_1": 0.02,
            "fraction_2": [0.2 if i % with_class_2_every == 0 else 0.0 for i in range(n)],
        }
    )


def test_split_is_deterministic_respects_groups_and_fractions():
    table = table_of(900)
    config = SplitConfig(label_ratio=0.1, val_fraction=0.2, test_fraction=0.1, seed=3)
    split = assign_splits(table, config, ["fraction_1", "fraction_2"])
    assert split.equals(assign_splits(table, config, ["fraction_1", "fraction_2"]))
    assert not split.equals(assign_splits(table, SplitConfig(label_ratio=0.1, val_fraction=0.2, test_fraction=0.1, seed=4), ["fraction_1"]))
    side = split.map(lambda s: "train" if s in ("labelled", "unlabelled") else s)
    assert (side.groupby(table["group_id"]).nunique() == 1).all()  # no group crosses a boundary
    shares = split.value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.1, abs=0.05)
    assert shares["val"] == pytest.approx(0.2, abs=0.06)
    train = split.isin(["labelled", "unlabelled"])
    assert (split[train] == "labelled").mean() == pytest.approx(0.1, abs=0.04)


def test_split_is_stable_when_samples_are_appended():
    config = SplitConfig(label_ratio=0.2, val_fraction=0.15, test_fraction=0.15, seed=0)
    before = assign_splits(table_of(300), config, ["fraction_1"])
    after = assign_splits(table_of(360), config, ["fraction_1"])
    assert after.iloc[:300].equals(before)


def test_balanced_strategy_meets_the_fractions_to_within_one_group():
    table = table_of(300)  # 100 groups of 3
    split = assign_splits(table, SplitConfig(val_fraction=0.15, test_fraction=0.15, strategy="balanced"), ["fraction_1"])
    assert abs((split == "test").sum() - 45) <= 3 and abs((split == "val").sum() - 45) <= 3
    side = split.map(lambda s: "train" if s in ("labelled", "unlabelled") else s)
    assert (side.groupby(table["group_id"]).nunique() == 1).all()


def test_every_present_class_gets_a_labelled_sample_even_at_a_tiny_ratio():
    table = table_of(60, with_class_2_every=29)  # class 2 in only 3 samples
    split = assign_splits(table, SplitConfig(label_ratio=0.001, val_fraction=0.1, test_fraction=0.1), ["fraction_1", "fraction_2"])
    labelled = table[split == "labelled"]
    assert (labelled["fraction_1"] > 0).any() and (labelled["fraction_2"] > 0).any()


def test_samples_without_masks_never_become_labelled_and_small_sets_get_val_and_test():
    table = table_of(12)
    table.loc[::2, "has_mask"] = False
    split = assign_splits(table, SplitConfig(label_ratio=1.0, val_fraction=0.1, test_fraction=0.1), ["fraction_1"])
    assert not (split[~table["has_mask"]] == "labelled").any()
    assert (split == "val").any() and (split == "test").any()


def test_cross_split_similarity_finds_the_worst_pair():
    sig = np.eye(4, dtype=np.float32)
    sig[3] = sig[0] * 0.6 + sig[1] * 0.8  # unit norm; 0.8 similar to sample 1
    leak = cross_split_similarity(sig, ["labelled", "val", "test", "unlabelled"], ["a", "b", "c", "d"])
    assert leak["train/val"] == {"max_similarity": 0.8, "pair": ["d", "b"]}
    assert leak["val/test"]["max_similarity"] == 0.0


@pytest.mark.parametrize("bad", [{"label_ratio": 1.5}, {"val_fraction": 0.6, "test_fraction": 0.5}, {"similarity_threshold": 2}, {"strategy": "random"}])
def test_bad_config_names_the_parameter(bad):
    with pytest.raises(ValueError, match="splitting"):
        SplitConfig(**bad)


def test_unit_hash_is_uniform_enough_and_stable():
    draws = np.array([unit_hash(0, "g", i) for i in range(4000)])
    assert unit_hash(0, "g", 1) == unit_hash(0, "g", 1)
    assert abs(draws.mean() - 0.5) < 0.02 and draws.min() >= 0 and draws.max() < 1


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_PSFHS.is_dir(), reason="../shared/data/psfhs is absent")
def test_real_psfhs_split_is_deterministic_and_leak_free_at_the_threshold():
    from sonoseg.io.readers import PsfhsReader

    reader = PsfhsReader(SHARED_PSFHS)
    refs = reader.scan().refs
    samples = [reader.load(ref) for ref in refs]
    config = SplitConfig()
    sig = image_signatures((s.image for s in samples), config.signature_size)
    ids = [s.sample_id for s in samples]
    table = pd.DataFrame(
        {
            "sample_id": ids,
            "group_id": group_samples(ids, [None] * len(ids), sig, config.similarity_threshold, config.neighbour_threshold),
            "has_mask": True,
            "fraction_1": [float((s.mask == 1).mean()) for s in samples],
            "fraction_2": [float((s.mask == 2).mean()) for s in samples],
        }
    )
    table["split"] = assign_splits(table, config, ["fraction_1", "fraction_2"])
    assert table["split"].equals(assign_splits(table, config, ["fraction_1", "fraction_2"]))
    leak = cross_split_similarity(sig, table["split"].tolist(), ids)
    report = split_report(table, ["fraction_1", "fraction_2"], leak, config)
    assert report["leak_check"]["below_threshold"] is True
    assert report["leak_check"]["largest"] < config.similarity_threshold
    counts = report["counts"]
    assert sum(counts.values()) == 1050 and min(counts.values()) > 0
    # Grouping matters: a naive random split of the same data would put near-duplicates across.
    rng = np.random.default_rng(0)
    naive = rng.choice(["unlabelled", "val", "test"], size=len(ids), p=[0.7, 0.15, 0.15]).tolist()
    naive_worst = max(v["max_similarity"] for v in cross_split_similarity(sig, naive, ids).values())
    assert naive_worst > 0.98
