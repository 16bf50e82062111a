"""The labelled + unlabelled index stream."""

from __future__ import annotations

import pytest

from sonoseg.ssl.sampler import LabelledUnlabelledSampler


def take(sampler: LabelledUnlabelledSampler, steps: int) -> list[tuple[list[int], list[int]]]:
    return [next(sampler) for _ in range(steps)]


def test_batch_sizes_and_each_labelled_index_once_per_epoch() -> None:
    labelled = list(range(10))
    sampler = LabelledUnlabelledSampler(labelled, list(range(100, 130)), 5, 7, seed=0)
    steps = take(sampler, 6)  # 30 labelled draws = 3 epochs
    assert all(len(l) == 5 and len(u) == 7 for l, u in steps)
    drawn = [i for l, _ in steps for i in l]
    for epoch in range(3):
        assert sorted(drawn[10 * epoch : 10 * (epoch + 1)]) == labelled
    assert drawn[:10] != drawn[10:20]  # reshuffled each epoch
    unlabelled = [i for _, u in steps for i in u]
    assert sorted(unlabelled[:30]) == list(range(100, 130))
    assert all(isinstance(i, int) for i in drawn + unlabelled)


def test_batches_straddle_epochs_when_the_batch_does_not_divide_the_pool() -> None:
    sampler = LabelledUnlabelledSampler([7, 8, 9], [], 2, 0, seed=1)
    drawn = [i for l, _ in take(sampler, 6) for i in l]  # 12 draws = 4 epochs of 3
    for epoch in range(4):
        assert sorted(drawn[3 * epoch : 3 * (epoch + 1)]) == [7, 8, 9]


def test_small_and_empty_unlabelled_pools() -> None:
    small = LabelledUnlabelledSampler([0, 1], [5, 6], 2, 5, seed=0)
    for _, unlabelled in take(small, 3):
        assert len(unlabelled) == 5 and set(unlabelled) <= {5, 6}
    empty = LabelledUnlabelledSampler([0, 1], [], 2, 4, seed=0)
    assert all(u == [] and len(l) == 2 for l, u in take(empty, 3))
    none_wanted = LabelledUnlabelledSampler([0, 1], [3, 4], 2, 0, seed=0)
    assert all(u == [] for _, u in take(none_wanted, 2))


def test_empty_labelled_pool_raises() -> None:
    with pytest.raises(ValueError, match="labelled pool is empty"):
        LabelledUnlabelledSampler([], [1, 2], 2, 2, seed=0)
    with pytest.raises(ValueError, match="labelled_batch"):
        LabelledUnlabelledSampler([1], [2], 0, 2, seed=0)


def test_same_seed_same_stream_and_pools_shuffle_independently() -> None:
    a = take(LabelledUnlabelledSampler(range(8), range(8, 20), 3, 4, seed=5), 10)
    assert a == take(LabelledUnlabelledSampler(range(8), range(8, 20), 3, 4, seed=5), 10)
    assert a != take(LabelledUnlabelledSampler(range(8), range(8, 20), 3, 4, seed=6), 10)
    # The labelled stream does not depend on the unlabelled pool or batch.
    other = take(LabelledUnlabelledSampler(range(8), range(8, 40), 3, 9, seed=5), 10)
    assert [l for l, _ in a] == [l for l, _ in other]


def test_state_dict_round_trip_continues_identically() -> None:
    reference = LabelledUnlabelledSampler(range(7), range(7, 12), 3, 4, seed=2)
    take(reference, 5)
    state = reference.state_dict()
    expected = take(reference, 8)
    resumed = LabelledUnlabelledSampler(range(7), range(7, 12), 3, 4, seed=2)
    resumed.load_state_dict(state)
    assert take(resumed, 8) == expected
    assert resumed.step == reference.step == 13
    with pytest.raises(ValueError, match="same pools"):
        LabelledUnlabelledSampler(range(6), range(7, 12), 3, 4, seed=2).load_state_dict(state)
