"""In-domain evaluation networks: training on a tiny table, retrieval, scores and the cache."""

import dataclasses

import numpy as np
import pytest

from vice_gan import labels
from vice_gan.datasets import input_pipeline, splits
from vice_gan.evaluation import in_domain, in_domain_scores

T, STRIDE = 4, 1
TINY_SETTINGS = in_domain.TrainSettings(
    emotion_steps=60, identity_steps=60, clip_batch=12, frame_batch=32, width=8, lr=3e-3
)
FEW_STEPS = in_domain.TrainSettings(emotion_steps=2, identity_steps=2, clip_batch=2, frame_batch=4)
PALETTE = np.array(
    [[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40], [200, 40, 200], [40, 200, 200]]
)


def _video(subject: int, emotion: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Identity = background colour; emotion = the row of a white bar (none for neutral)."""
    video = np.empty((frames, 64, 64, 3), np.uint8)
    video[:] = PALETTE[subject]
    if emotion < labels.NUM_EMOTIONS:
        video[:, 8 + 8 * emotion : 12 + 8 * emotion, 16:48] = 255
    noise = rng.integers(-20, 21, video.shape)
    return np.clip(video.astype(np.int64) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    rows = [(s, e) for s in range(len(PALETTE)) for e in range(len(labels.ALL_LABELS))]
    frames = [_video(s, e, 6, rng) for s, e in rows]
    return input_pipeline.VideoTable(
        frames=frames,
        subject=[s for s, _ in rows],
        emotion=[e for _, e in rows],
        take=[0] * len(rows),
        num_frames=[6] * len(rows),
        subject_names=[f"s{s}" for s in range(len(PALETTE))],
    )


@pytest.fixture(scope="module")
def split(table):
    return splits.make_split_for_table(table, seed=0, test_fraction=0.34)


@pytest.fixture(scope="module")
def nets(table, split):
    return in_domain.train_nets(table, split, "unseen", T, STRIDE, TINY_SETTINGS)


def test_nets_learn_their_training_data(nets, split):
    chance_emotion = 1 / labels.NUM_EMOTIONS
    chance_identity = 1 / len(split.train_subjects)
    assert nets.meta["num_identity_classes"] == len(split.train_subjects)  # unseen: train only
    assert nets.meta["emotion_train_accuracy"] > chance_emotion + 0.3
    assert nets.meta["identity_train_accuracy"] > chance_identity + 0.3


def test_shapes_and_unit_embeddings(nets, table):
    clips = input_pipeline.to_unit_range(np.stack([table.frames[i][:T] for i in range(5)]))
    assert nets.emotion_logits(clips).shape == (5, labels.NUM_EMOTIONS)
    frames = nets.frame_embeddings(clips)
    assert frames.shape == (5, T, in_domain.EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(frames, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(nets.clip_embeddings(clips), axis=-1), 1.0, atol=1e-5)


def test_identity_top1_on_hand_made_embeddings():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [-1.0, 0.0]])
    gallery_subject = np.array([0, 1, 2, 3])
    gallery_video = np.array([10, 11, 12, 13])
    queries = np.array([[1.0, 0.05], [0.1, 1.0], [-0.8, -0.1]])
    hits = in_domain_scores.identity_top1(queries, np.array([0, 1, 2]), gallery, gallery_subject)
    assert hits.tolist() == [True, True, False]  # query 2 is nearest to subject 3
    # Leaving out query 0's own video (10) makes subject 2's clip the nearest: a miss.
    hits = in_domain_scores.identity_top1(
        queries, np.array([0, 1, 3]), gallery, gallery_subject, gallery_video, np.array([10, 0, 0])
    )
    assert hits.tolist() == [False, True, True]
    # Scale does not matter: embeddings are normalised inside.
    assert in_domain_scores.identity_top1(
        queries * 7, np.array([0, 1, 3]), gallery, gallery_subject
    ).all()


def test_scores_of_real_clips(nets, table, split):
    gallery = in_domain_scores.gallery_clips(table, split, T, STRIDE)
    assert set(gallery["subject"].tolist()) == set(split.test_subjects)
    assert gallery["clips"].shape[1:] == (T, 64, 64, 3)
    plan = input_pipeline.eval_pair_indices(table, split, "unseen", T, STRIDE, seed=0)
    pairs = input_pipeline.eval_pairs(table, split, "unseen", T, STRIDE, seed=0)
    real = in_domain_scores.score_clips(
        nets,
        pairs["target"],
        pairs["target_label"],
        pairs["subject"],
        plan["target_video"],
        gallery,
    )
    n = len(pairs["subject"])
    assert real["acd_identity"].shape == (n,)
    assert real["emotion"]["count"] == n
    # Unseen test subjects: their colour was never trained on, yet the embedding separates them.
    assert real["identity_top1"] == 1.0
    assert real["emotion"]["accuracy"] > 1 / labels.NUM_EMOTIONS
    # Clips of the wrong subject are retrieved as that other subject.
    shifted = np.roll(pairs["subject"], labels.NUM_EMOTIONS)
    wrong = in_domain_scores.score_clips(
        nets, pairs["target"], pairs["target_label"], shifted, plan["target_video"], gallery
    )
    assert wrong["identity_top1"] < real["identity_top1"]


def test_cache_is_reused_and_refreshed(table, split, tmp_path, monkeypatch):
    kwargs = dict(
        data_dir=str(tmp_path),
        dataset="tiny/x",
        condition="seen",
        video_length=T,
        frame_stride=STRIDE,
        settings=FEW_STEPS,
    )
    first = in_domain.load_or_train(table, split, **kwargs)
    directory = in_domain.cache_dir(str(tmp_path), "tiny/x", split.seed, "seen", T, STRIDE)
    assert first.meta["path"] == directory
    assert (tmp_path / "vice_gan_eval_nets" / "tiny-x_split0_seen_T4s1" / "nets.npz").exists()

    def no_training(*args, **kw):
        raise AssertionError("the cached nets should have been reused")

    with monkeypatch.context() as m:
        m.setattr(in_domain, "train_nets", no_training)
        again = in_domain.load_or_train(table, split, **kwargs)
    clips = input_pipeline.to_unit_range(np.stack([table.frames[0][:T]]))
    np.testing.assert_allclose(again.emotion_logits(clips), first.emotion_logits(clips), atol=1e-6)
    # Other settings (or other data) retrain and replace the cache.
    kwargs["settings"] = dataclasses.replace(FEW_STEPS, emotion_steps=1)
    third = in_domain.load_or_train(table, split, **kwargs)
    assert third.meta["settings"]["emotion_steps"] == 1
    assert in_domain.load_nets(directory).meta["settings"]["emotion_steps"] == 1
