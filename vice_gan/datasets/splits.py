"""Subject-disjoint train/test splits and the Seen / Unseen training conditions (thesis §5.3.1).

A `Split` puts 80% of the subjects in training and 20% in test, from a seed, and picks for each
test subject the 2 emotions that the 'seen' condition trains on:

  seen    training = every clip of the training subjects + each test subject's clips of its 2
          seen emotions; evaluation = the test subjects' other 4 emotions.
  unseen  training = the training subjects' clips only; evaluation = all 6 emotions of the test
          subjects.

Neutral takes (label 6) are identity sources, never a class: `train_indices` leaves them out
of GAN video batches unless asked (`include_neutral=True`, e.g. for autoencoder images), and
they are never evaluation targets (they may be evaluation inputs, see input_pipeline).

Splits are saved as JSON beside the data (committed for MUG), so every run of a study uses the
same subjects.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from vice_gan import labels
from vice_gan.datasets.input_pipeline import DatasetError, VideoTable

CONDITIONS = ("seen", "unseen")
NUM_SEEN_EMOTIONS = 2
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Split:
    """A subject split and the seen emotions of its test subjects.

    Attributes:
      seed: the seed it was drawn from.
      test_fraction: requested share of test subjects.
      train_subjects: sorted dense subject ids (VideoTable.subject) used for training.
      test_subjects: sorted dense subject ids held out for evaluation.
      seen_emotions: test subject -> its 2 seen emotions (sorted, each 0-5).
      subject_names: subject id -> the data set's own name (e.g. MUG '001'); may be empty.
        When present, it is checked against the data so a split file cannot silently be
        applied to another data set.
    """

    seed: int
    test_fraction: float
    train_subjects: tuple[int, ...]
    test_subjects: tuple[int, ...]
    seen_emotions: Mapping[int, tuple[int, ...]]
    subject_names: Mapping[int, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        overlap = set(self.train_subjects) & set(self.test_subjects)
        if overlap:
            raise ValueError(f"subjects {sorted(overlap)} are both train and test subjects")
        if not self.train_subjects or not self.test_subjects:
            raise ValueError("a split needs at least one train and one test subject")
        if set(self.seen_emotions) != set(self.test_subjects):
            raise ValueError("seen_emotions must name exactly the test subjects")
        for subject, emotions in self.seen_emotions.items():
            if len(set(emotions)) != NUM_SEEN_EMOTIONS or not all(
                0 <= e < labels.NUM_EMOTIONS for e in emotions
            ):
                raise ValueError(
                    f"test subject {subject} has seen emotions {emotions}; expected "
                    f"{NUM_SEEN_EMOTIONS} distinct emotions in 0..{labels.NUM_EMOTIONS - 1}"
                )


def make_split(
    subject_ids: Sequence[int] | np.ndarray,
    seed: int,
    test_fraction: float = 0.2,
    *,
    subject_names: Mapping[int, str] | None = None,
    available_emotions: Mapping[int, Collection[int]] | None = None,
) -> Split:
    """Draws a subject-disjoint split and each test subject's 2 seen emotions from `seed`.

    Args:
      subject_ids: subject ids, repeats allowed (e.g. VideoTable.subject, one per video).
      seed: fixes the split; the same ids and seed give the same split.
      test_fraction: share of subjects held out, rounded to the nearest count and kept
        between 1 and (number of subjects - 1).
      subject_names: optional id -> name, recorded in the split file.
      available_emotions: optional id -> emotions the subject has clips of. When a test
        subject has at least 3 of them, its seen emotions are drawn from those, so it keeps
        at least one emotion to evaluate (MUG subjects lack some emotions); otherwise from
        all 6.

    Returns:
      the Split.

    Raises:
      DatasetError: fewer than 2 subjects.
      ValueError: test_fraction outside (0, 1).
    """
    ids = np.unique(np.asarray(subject_ids, dtype=np.int64))
    if len(ids) < 2:
        raise DatasetError(
            f"a subject-disjoint split needs at least 2 subjects; the data has {len(ids)}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    num_test = min(max(math.floor(len(ids) * test_fraction + 0.5), 1), len(ids) - 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(ids)
    test = tuple(sorted(int(s) for s in order[:num_test]))
    train = tuple(sorted(int(s) for s in order[num_test:]))
    seen = {}
    for subject in test:
        pool = np.arange(labels.NUM_EMOTIONS)
        if available_emotions is not None:
            have = sorted({int(e) for e in available_emotions.get(subject, ())})
            have = [e for e in have if e < labels.NUM_EMOTIONS]
            if len(have) > NUM_SEEN_EMOTIONS:
                pool = np.asarray(have)
        chosen = rng.choice(pool, NUM_SEEN_EMOTIONS, replace=False)
        seen[subject] = tuple(sorted(int(e) for e in chosen))
    names = {}
    if subject_names is not None:
        names = {int(s): str(subject_names[int(s)]) for s in ids}
    return Split(
        seed=int(seed),
        test_fraction=float(test_fraction),
        train_subjects=train,
        test_subjects=test,
        seen_emotions=seen,
        subject_names=names,
    )


def make_split_for_table(table: VideoTable, seed: int, test_fraction: float = 0.2) -> Split:
    """`make_split` over a table's subjects, with their names and available emotions."""
    available = {}
    for subject, emotion in zip(table.subject.tolist(), table.emotion.tolist(), strict=True):
        available.setdefault(subject, set()).add(emotion)
    names = dict(enumerate(table.subject_names))
    return make_split(
        table.subject,
        seed,
        test_fraction,
        subject_names=names,
        available_emotions=available,
    )


def _check_condition(condition: str) -> None:
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")


def check_table(table: VideoTable, split: Split) -> None:
    """Raises DatasetError when `split` was not made for `table`'s subjects."""
    known = set(split.train_subjects) | set(split.test_subjects)
    missing = sorted(set(np.unique(table.subject).tolist()) - known)
    if missing:
        raise DatasetError(
            f"subjects {missing} of the data are in neither half of the split; the split was "
            "made for another data set (make a new one with make_split_for_table)"
        )
    for subject, name in split.subject_names.items():
        if subject < len(table.subject_names) and table.subject_names[subject] != name:
            raise DatasetError(
                f"subject {subject} is {table.subject_names[subject]!r} in the data but "
                f"{name!r} in the split; the split was made for another data set"
            )


def _seen_mask(split: Split, num_subjects: int) -> np.ndarray:
    """bool [num_subjects, 7]: (subject, emotion) is a test subject's seen emotion."""
    mask = np.zeros((num_subjects, len(labels.ALL_LABELS)), bool)
    for subject, emotions in split.seen_emotions.items():
        if subject < num_subjects:
            mask[subject, list(emotions)] = True
    return mask


def train_indices(
    table: VideoTable, split: Split, condition: str, *, include_neutral: bool = False
) -> np.ndarray:
    """Rows of `table` the models train on under `condition`.

    Args:
      table: the decoded data set.
      split: the subject split.
      condition: 'seen' or 'unseen' (module docstring).
      include_neutral: also return neutral takes (of training subjects; under 'seen' also of
        test subjects), for image-only uses such as the autoencoder. GAN video batches must
        not hold them.

    Returns:
      int64 [M], sorted row indices.
    """
    _check_condition(condition)
    check_table(table, split)
    emotion_ok = table.emotion < labels.NUM_EMOTIONS
    if include_neutral:
        emotion_ok |= table.emotion == labels.NEUTRAL_LABEL
    keep = np.isin(table.subject, split.train_subjects)
    if condition == "seen":
        seen = _seen_mask(split, len(table.subject_names))[table.subject, table.emotion]
        neutral_test = np.isin(table.subject, split.test_subjects) & (
            table.emotion == labels.NEUTRAL_LABEL
        )
        keep |= seen | neutral_test
    return np.flatnonzero(keep & emotion_ok).astype(np.int64)


def eval_targets(table: VideoTable, split: Split, condition: str) -> np.ndarray:
    """(test subject, emotion) pairs to generate and score under `condition`.

    Only pairs with at least one clip in `table` are returned, since the real clip is the
    reference of SSIM/MSE.

    Returns:
      int32 [K, 2]: rows (subject, emotion 0-5), sorted by subject then emotion.
    """
    _check_condition(condition)
    check_table(table, split)
    present = np.zeros((len(table.subject_names), len(labels.ALL_LABELS)), bool)
    present[table.subject, table.emotion] = True
    wanted = np.zeros_like(present)
    wanted[list(split.test_subjects), : labels.NUM_EMOTIONS] = True
    if condition == "seen":
        wanted &= ~_seen_mask(split, len(table.subject_names))
    return np.argwhere(present & wanted).astype(np.int32)


def describe(split: Split) -> str:
    """A few lines for the run log: sizes, seed, and each test subject's seen emotions."""

    def name(subject: int) -> str:
        return split.subject_names.get(subject, str(subject))

    lines = [
        f"split seed={split.seed}: {len(split.train_subjects)} train / "
        f"{len(split.test_subjects)} test subjects (test_fraction={split.test_fraction})",
        "test subjects (seen emotions, trained on only under 'seen'):",
    ]
    for subject in split.test_subjects:
        emotions = ", ".join(labels.EMOTIONS[e] for e in split.seen_emotions[subject])
        lines.append(f"  {name(subject)}: {emotions}")
    return "\n".join(lines)


def save_split(split: Split, path: str | os.PathLike) -> None:
    """Writes `split` as JSON (emotions by name, so the file reads without the code).

    Creates the parent directory if needed.
    """
    record = {
        "format_version": _FORMAT_VERSION,
        "seed": split.seed,
        "test_fraction": split.test_fraction,
        "train_subjects": list(split.train_subjects),
        "test_subjects": list(split.test_subjects),
        "seen_emotions": {
            str(s): [labels.EMOTIONS[e] for e in split.seen_emotions[s]]
            for s in split.test_subjects
        },
        "subject_names": {str(s): n for s, n in sorted(split.subject_names.items())},
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


def load_split(path: str | os.PathLike) -> Split:
    """Reads a split written by `save_split`.

    Raises:
      DatasetError: the file is not a valid split (names what is wrong).
    """
    with open(path) as f:
        record = json.load(f)
    try:
        if record["format_version"] != _FORMAT_VERSION:
            raise ValueError(f"format_version {record['format_version']} != {_FORMAT_VERSION}")
        return Split(
            seed=int(record["seed"]),
            test_fraction=float(record["test_fraction"]),
            train_subjects=tuple(int(s) for s in record["train_subjects"]),
            test_subjects=tuple(int(s) for s in record["test_subjects"]),
            seen_emotions={
                int(s): tuple(sorted(labels.emotion_index(e) for e in emotions))
                for s, emotions in record["seen_emotions"].items()
            },
            subject_names={int(s): str(n) for s, n in record.get("subject_names", {}).items()},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path} is not a valid split file: {e}") from e
