"""Tests of vice_gan.datasets.splits: subject-disjoint 80/20 splits and Seen / Unseen rules."""

import numpy as np
import pytest

from vice_gan import labels
from vice_gan.datasets import input_pipeline, splits


def make_table(num_subjects: int = 10, takes: int = 2) -> input_pipeline.VideoTable:
    """Every subject has `takes` one-frame takes of each emotion and one neutral take."""
    subject, emotion, take = [], [], []
    for s in range(num_subjects):
        for e in range(labels.NUM_EMOTIONS):
            for k in range(takes):
                subject.append(s), emotion.append(e), take.append(k)
        subject.append(s), emotion.append(labels.NEUTRAL_LABEL), take.append(0)
    n = len(subject)
    return input_pipeline.VideoTable(
        frames=list(np.zeros((n, 1, 64, 64, 3), np.uint8)),
        subject=np.array(subject),
        emotion=np.array(emotion),
        take=np.array(take),
        num_frames=np.ones(n),
        subject_names=[f"{s + 1:03d}" for s in range(num_subjects)],
    )


@pytest.mark.parametrize("num_subjects,num_test", [(2, 1), (5, 1), (10, 2), (50, 10), (52, 10)])
def test_split_is_subject_disjoint_80_20(num_subjects, num_test):
    split = splits.make_split(np.repeat(np.arange(num_subjects), 3), seed=0)
    assert len(split.test_subjects) == num_test
    assert len(split.train_subjects) == num_subjects - num_test
    assert not set(split.train_subjects) & set(split.test_subjects)
    assert set(split.train_subjects) | set(split.test_subjects) == set(range(num_subjects))
    assert set(split.seen_emotions) == set(split.test_subjects)
    for emotions in split.seen_emotions.values():
        assert len(set(emotions)) == 2 and all(0 <= e < 6 for e in emotions)


def test_split_is_deterministic_and_seed_dependent():
    ids = np.arange(50)
    assert splits.make_split(ids, seed=3) == splits.make_split(ids, seed=3)
    others = [splits.make_split(ids, seed=s) for s in range(4, 8)]
    assert all(o.test_subjects != splits.make_split(ids, 3).test_subjects for o in others)
    # Seen emotions vary across test subjects too (not one fixed pair).
    assert len(set(splits.make_split(ids, 3).seen_emotions.values())) > 1


def test_split_errors():
    with pytest.raises(input_pipeline.DatasetError, match="at least 2 subjects"):
        splits.make_split([4, 4, 4], seed=0)
    with pytest.raises(ValueError, match="test_fraction"):
        splits.make_split(np.arange(10), seed=0, test_fraction=1.0)
    table = make_table()
    split = splits.make_split_for_table(table, seed=0)
    with pytest.raises(ValueError, match="unknown condition"):
        splits.train_indices(table, split, "half_seen")
    with pytest.raises(ValueError, match="unknown condition"):
        splits.eval_targets(table, split, "Seen")


def test_unseen_trains_on_no_test_subject_and_evaluates_all_six():
    table = make_table()
    split = splits.make_split_for_table(table, seed=1)
    rows = splits.train_indices(table, split, "unseen")
    assert set(table.subject[rows]) == set(split.train_subjects)
    assert np.all(table.emotion[rows] < labels.NUM_EMOTIONS)  # neutral never a class
    # Every non-neutral take of every training subject is there.
    assert len(rows) == len(split.train_subjects) * labels.NUM_EMOTIONS * 2
    targets = splits.eval_targets(table, split, "unseen")
    assert targets.dtype == np.int32 and targets.shape == (len(split.test_subjects) * 6, 2)
    for s in split.test_subjects:
        assert sorted(targets[targets[:, 0] == s, 1]) == list(range(6))


def test_seen_trains_on_two_emotions_and_evaluates_the_other_four():
    table = make_table()
    split = splits.make_split_for_table(table, seed=2)
    rows = splits.train_indices(table, split, "seen")
    unseen_rows = splits.train_indices(table, split, "unseen")
    assert set(unseen_rows) < set(rows)
    targets = splits.eval_targets(table, split, "seen")
    for s in split.test_subjects:
        trained = set(table.emotion[rows][table.subject[rows] == s])
        assert trained == set(split.seen_emotions[s]) and len(trained) == 2
        evaluated = set(targets[targets[:, 0] == s, 1])
        assert len(evaluated) == 4 and not evaluated & trained
        assert evaluated | trained == set(range(6))
    assert set(targets[:, 0]) == set(split.test_subjects)


def test_include_neutral_adds_neutral_takes_only():
    table = make_table()
    split = splits.make_split_for_table(table, seed=0)
    for condition in splits.CONDITIONS:
        rows = splits.train_indices(table, split, condition)
        with_neutral = splits.train_indices(table, split, condition, include_neutral=True)
        extra = np.setdiff1d(with_neutral, rows)
        assert np.all(table.emotion[extra] == labels.NEUTRAL_LABEL)
        subjects = set(split.train_subjects)
        if condition == "seen":
            subjects |= set(split.test_subjects)
        assert set(table.subject[extra]) == subjects


def test_available_emotions_leave_something_to_evaluate():
    # Subject 0 has only 3 emotions: its 2 seen emotions must come from those 3.
    available = {s: range(6) for s in range(10)}
    available[0] = [1, 4, 5]
    for seed in range(20):
        split = splits.make_split(range(10), seed, available_emotions=available)
        if 0 in split.test_subjects:
            assert set(split.seen_emotions[0]) < {1, 4, 5}


def test_json_round_trip_and_describe(tmp_path):
    table = make_table()
    split = splits.make_split_for_table(table, seed=5)
    path = tmp_path / "new_dir" / "split.json"  # save_split creates the directory
    splits.save_split(split, path)
    assert splits.load_split(path) == split
    text = splits.describe(split)
    assert "8 train / 2 test" in text
    for s in split.test_subjects:
        assert table.subject_names[s] in text
    (tmp_path / "bad.json").write_text('{"format_version": 1, "seed": 0}')
    with pytest.raises(ValueError, match="not a valid split file"):
        splits.load_split(tmp_path / "bad.json")


def test_split_of_another_data_set_is_refused():
    split = splits.make_split_for_table(make_table(), seed=0)
    renamed = make_table()
    renamed.subject_names[0] = "xyz"
    with pytest.raises(ValueError, match="another data set"):
        splits.train_indices(renamed, split, "seen")
    with pytest.raises(ValueError, match="in neither half"):
        splits.eval_targets(make_table(num_subjects=12), split, "unseen")
