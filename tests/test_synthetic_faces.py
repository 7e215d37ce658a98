"""Tests of the embedded synthetic_faces data set: FACS timelines, renderer, TFDS builder."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import ndimage

import vice_gan.datasets.synthetic_faces  # noqa: F401  (registers the builder)
from vice_gan import labels
from vice_gan.datasets.synthetic_faces import builder, facs, identity, renderer

SMALL = next(c for c in builder.SyntheticFaces.BUILDER_CONFIGS if c.name == "small")
BLINK = facs.au_column(facs.BLINK_AU)


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    """The 'small' config built into a temporary data_dir, read back without TensorFlow."""
    data_dir = tmp_path_factory.mktemp("tfds")
    b = tfds.builder("synthetic_faces/small", data_dir=str(data_dir), num_workers=0)
    b.download_and_prepare(file_format="array_record")
    source = b.as_data_source()["train"]
    return [source[i] for i in range(len(source))]


def test_registered_with_configs():
    cls = tfds.builder_cls("synthetic_faces")
    assert cls is builder.SyntheticFaces
    default = next(c for c in cls.BUILDER_CONFIGS if c.name == "default")
    assert default.num_subjects == 50 and default.min_frames >= 64
    assert default.takes_per_emotion >= 2 and default.neutral_takes == 1


def test_small_schema_and_counts(small_source):
    examples = small_source
    assert len(examples) == SMALL.num_subjects * (labels.NUM_EMOTIONS + 1)
    counts = {}
    for ex in examples:
        frames, au = ex["frames"], ex["au"]
        assert frames.dtype == np.uint8 and frames.shape[1:] == (64, 64, 3)
        assert int(ex["num_frames"]) == frames.shape[0] == SMALL.min_frames
        assert au.dtype == np.float32 and au.shape == (frames.shape[0], facs.NUM_AUS)
        assert au.min() >= 0.0 and au.max() <= 1.0
        subject, emotion = int(ex["subject"]), int(ex["emotion"])
        assert 0 <= emotion < len(labels.ALL_LABELS)
        assert ex["subject_name"].decode() == f"s{subject:03d}"
        assert ex["take_name"].decode() == f"take{int(ex['take']):03d}"
        counts[subject, emotion] = counts.get((subject, emotion), 0) + 1
    # Dense subject ids; one take per emotion and one neutral take per subject.
    assert sorted({s for s, _ in counts}) == list(range(SMALL.num_subjects))
    assert all(counts[s, e] == 1 for s in range(SMALL.num_subjects) for e in range(7))
    neutral = [ex for ex in examples if int(ex["emotion"]) == labels.NEUTRAL_LABEL]
    assert len(neutral) == SMALL.num_subjects
    for ex in neutral:  # AUs ~0 apart from blinks
        assert np.all(np.delete(ex["au"], BLINK, axis=1) == 0.0)


def test_dataset_matches_direct_rendering(small_source):
    ex = next(e for e in small_source if int(e["subject"]) == 3 and int(e["emotion"]) == 2)
    _, direct = builder.make_take(SMALL, 3, 2, 0)
    np.testing.assert_array_equal(ex["frames"], direct["frames"])
    np.testing.assert_array_equal(ex["au"], direct["au"])


def test_make_take_is_deterministic():
    _, a = builder.make_take(SMALL, 1, 3, 0)
    _, b = builder.make_take(SMALL, 1, 3, 0)
    np.testing.assert_array_equal(a["frames"], b["frames"])
    np.testing.assert_array_equal(a["au"], b["au"])
    _, other_seed = builder.make_take(builder.SyntheticFacesConfig(name="s1", seed=1), 1, 3, 0)
    assert not np.array_equal(a["au"], other_seed["au"][: len(a["au"])])


def test_subjects_have_distinct_identities():
    idents = [identity.sample_identity(builder.identity_rng(0, s)) for s in range(8)]
    assert len({repr(i) for i in idents}) == len(idents)
    stills = np.stack([renderer.render_still(i).astype(np.float32) for i in idents])
    # Every pair of subjects differs visibly at the neutral face.
    diffs = np.abs(stills[:, None] - stills[None]).mean(axis=(2, 3, 4))
    assert diffs[~np.eye(len(idents), dtype=bool)].min() > 5.0


@pytest.mark.parametrize("emotion", range(len(labels.ALL_LABELS)))
def test_au_timeline(emotion):
    num_frames = 72
    au = facs.au_timeline(np.random.default_rng(emotion), emotion, num_frames)
    assert au.shape == (num_frames, facs.NUM_AUS) and au.dtype == np.float32
    assert au.min() >= 0.0 and au.max() <= 1.0
    expr = np.delete(au, BLINK, axis=1)
    # Neutral at both ends (MUG: neutral -> onset -> apex -> offset -> neutral).
    assert np.all(expr[:2] == 0.0) and np.all(expr[-2:] == 0.0)
    proto = np.delete(facs.prototype_vector(emotion), BLINK)
    if emotion == labels.NEUTRAL_LABEL:
        assert np.all(expr == 0.0)
        return
    # Only prototype AUs move; the apex is mid-take and strong.
    assert np.all(expr[:, proto == 0] == 0.0)
    strength = expr.sum(axis=1)
    apex = int(np.argmax(strength))
    assert 0.2 * num_frames < apex < 0.8 * num_frames
    assert expr.max() > 0.6
    # No blink during the apex, so apex frames show open eyes.
    assert np.all(au[strength > 0.5 * strength.max(), BLINK] == 0.0)


def test_blinks_happen_and_close_the_eyes():
    rng = np.random.default_rng(0)
    tracks = [facs.au_timeline(rng, labels.NEUTRAL_LABEL, 96)[:, BLINK] for _ in range(8)]
    assert sum(t.max() > 0.9 for t in tracks) >= 4
    ident = identity.sample_identity(builder.identity_rng(0, 0))
    closed = np.zeros(facs.NUM_AUS, np.float32)
    closed[BLINK] = 1.0
    diff = np.abs(
        renderer.render_still(ident, closed).astype(int) - renderer.render_still(ident).astype(int)
    ).sum(axis=-1)
    rows = np.nonzero(diff.max(axis=1) > 30)[0]
    # Only the eye band changes.
    assert rows.size > 0 and rows.max() - rows.min() < 10


def test_render_video_output():
    ident = identity.sample_identity(builder.identity_rng(0, 5))
    rng = np.random.default_rng(0)
    au = facs.au_timeline(rng, 5, 20)
    frames = renderer.render_video(ident, au, renderer.head_motion(rng, 20))
    assert frames.dtype == np.uint8 and frames.shape == (20, 64, 64, 3)
    assert frames.min() < 60 and frames.max() > 180  # a full tonal range, not a blank frame
    with pytest.raises(ValueError):
        renderer.render_video(ident, au[:, :3])


def _aligned_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of the inner face (brows to mouth) of two [64, 64, 3] frames
    after aligning `b` to `a` by the best translation (quarter-pixel steps, up to 1.5 px), on
    slightly blurred frames: a take's small head motion counts little, expression changes of a
    few pixels (brows, lids, mouth) count fully."""
    a, b = (ndimage.gaussian_filter(x.mean(-1), 1.0) for x in (a, b))
    r, c = slice(16, 52), slice(16, 48)
    steps = np.arange(-1.5, 1.51, 0.25)
    return min(
        float(np.abs(a[r, c] - ndimage.shift(b, (dy, dx), order=1, mode="nearest")[r, c]).mean())
        for dy in steps
        for dx in steps
    )


def test_apex_differs_from_neutral_more_than_neutral_frames(small_source):
    by_key = {(int(e["subject"]), int(e["emotion"])): e for e in small_source}
    for subject in range(4):
        neutral = by_key[subject, labels.NEUTRAL_LABEL]
        open_eyes = np.nonzero(neutral["au"][:, BLINK] == 0.0)[0]
        n0, n1 = (neutral["frames"][i].astype(np.float32) for i in open_eyes[[0, -1]])
        baseline = _aligned_distance(n0, n1)
        for emotion in range(labels.NUM_EMOTIONS):
            take = by_key[subject, emotion]
            apex = take["frames"][facs.apex_frame(take["au"])].astype(np.float32)
            dist = _aligned_distance(apex, n0)
            assert dist > 1.5 * baseline, (subject, labels.EMOTIONS[emotion], dist, baseline)
