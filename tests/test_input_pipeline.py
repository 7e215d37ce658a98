"""Tests of the in-memory input pipeline and the data set registry.

The fake table's pixels encode where they come from: channel 0 = video row, channel 1 = frame
index within the video, channel 2 = 255 (so the [-1, 1] range is exercised at both ends).
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import registered

from vice_gan import labels
from vice_gan.datasets import input_pipeline, registry, schema, splits

NUM_SUBJECTS = 10


def encoded_video(row: int, length: int) -> np.ndarray:
    video = np.zeros((length, 64, 64, 3), np.uint8)
    video[..., 0] = row
    video[..., 1] = np.arange(length)[:, None, None]
    video[..., 2] = 255
    return video


@pytest.fixture(scope="module")
def table() -> input_pipeline.VideoTable:
    """10 subjects; 1-2 takes per emotion; a neutral take for all but subject 0; 31-50 frames."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(NUM_SUBJECTS):
        for e in range(labels.NUM_EMOTIONS):
            rows += [(s, e, k) for k in range(1 + (s + e) % 2)]
        if s:
            rows.append((s, labels.NEUTRAL_LABEL, 0))
    lengths = rng.integers(31, 51, len(rows))
    return input_pipeline.VideoTable(
        frames=[encoded_video(i, t) for i, t in enumerate(lengths)],
        subject=np.array([r[0] for r in rows]),
        emotion=np.array([r[1] for r in rows]),
        take=np.array([r[2] for r in rows]),
        num_frames=lengths,
        subject_names=[f"s{s}" for s in range(NUM_SUBJECTS)],
    )


@pytest.fixture(scope="module")
def split(table) -> splits.Split:
    return splits.make_split_for_table(table, seed=0)


def decode(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float pixels [..., 64, 64, 3] -> (video row, frame index) per frame."""
    assert pixels.dtype == np.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    np.testing.assert_array_equal(pixels[..., 2], 1.0)
    values = np.rint((pixels[..., 0, 0, :2] + 1.0) * 127.5).astype(np.int64)
    # Each frame is constant: the corner value stands for the whole frame.
    assert np.all(pixels == pixels[..., :1, :1, :])
    return values[..., 0], values[..., 1]


def make_batches(table, split, **kwargs) -> input_pipeline.TrainBatches:
    args = dict(video_batch=4, image_batch=6, video_length=8, frame_stride=3, seed=7)
    args.update(kwargs)
    return input_pipeline.TrainBatches(table, splits.train_indices(table, split, "seen"), **args)


def test_table_shares_one_buffer(table):
    assert table.pixels.shape == (int(table.num_frames.sum()), 64, 64, 3)
    assert all(np.shares_memory(f, table.pixels) for f in table.frames)
    rebuilt = input_pipeline.VideoTable(
        table.frames, table.subject, table.emotion, table.take, table.num_frames,
        table.subject_names,
    )  # fmt: skip
    assert rebuilt.pixels is not None and np.shares_memory(rebuilt.pixels, table.pixels)


def test_clips_are_consecutive_frames_at_the_stride(table, split):
    batches = make_batches(table, split)
    train = set(splits.train_indices(table, split, "seen").tolist())
    for step in range(5):
        batch = batches.batch(step)
        assert batch["video"].shape == (4, 8, 64, 64, 3)
        assert batch["video_label"].dtype == np.int32 and batch["video_label"].shape == (4,)
        video, frame = decode(batch["video"])
        assert np.all(video == video[:, :1])  # one source video per clip
        assert set(video[:, 0].tolist()) <= train
        np.testing.assert_array_equal(np.diff(frame, axis=1), 3)
        assert np.all(frame[:, -1] < table.num_frames[video[:, 0]])
        np.testing.assert_array_equal(batch["video_label"], table.emotion[video[:, 0]])
        assert np.all(batch["video_label"] < labels.NUM_EMOTIONS)
        assert batch["image"].shape == (6, 64, 64, 3)
        image_video, image_frame = decode(batch["image"])
        assert set(image_video.tolist()) <= train
        assert np.all(image_frame < table.num_frames[image_video])


def test_batches_are_pure_functions_of_step(table, split):
    a, b = make_batches(table, split), make_batches(table, split)
    for step in (0, 3, 1000):
        for key, value in a.batch(step).items():
            np.testing.assert_array_equal(value, b.batch(step)[key])
    assert not np.array_equal(a.batch(0)["video"], a.batch(1)["video"])
    assert not np.array_equal(a.batch(0)["image"], a.batch(1)["image"])
    other_seed = make_batches(table, split, seed=8)
    assert not np.array_equal(a.batch(0)["video"], other_seed.batch(0)["video"])
    # Resuming the prefetching iterator at step k gives the uninterrupted run's batches.
    for threads in (1, 2):
        resumed = list(a.iterate(start_step=3, num_steps=5, num_threads=threads))
        assert len(resumed) == 5
        for offset, batch in enumerate(resumed):
            np.testing.assert_array_equal(batch["video"], a.batch(3 + offset)["video"])
            np.testing.assert_array_equal(batch["image"], a.batch(3 + offset)["image"])


def test_every_video_once_per_epoch(table, split):
    indices = splits.train_indices(table, split, "seen")
    batches = make_batches(table, split, video_batch=len(indices), image_batch=0)
    for step in range(2):
        video, _ = decode(batches.batch(step)["video"][:, 0])
        assert sorted(video.tolist()) == indices.tolist()
    assert set(batches.batch(0)) == {"video", "video_label"}


def test_process_shards_split_the_global_batch(table, split):
    whole = make_batches(table, split, video_batch=8, image_batch=4).batch(5)
    shards = [
        make_batches(
            table, split, video_batch=8, image_batch=4, process_index=p, process_count=2
        ).batch(5)
        for p in range(2)
    ]
    assert shards[0]["video"].shape == (4, 8, 64, 64, 3) and shards[0]["image"].shape[0] == 2
    assert not np.array_equal(shards[0]["video"], shards[1]["video"])
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([s[key] for s in shards]), whole[key])
    with pytest.raises(ValueError, match="not divisible by process_count=2"):
        make_batches(table, split, video_batch=3, process_count=2)


def test_autoencoder_batches_are_images_only(table, split):
    indices = splits.train_indices(table, split, "unseen", include_neutral=True)
    batches = input_pipeline.TrainBatches(table, indices, 0, 5, 16, 2, seed=1)
    batch = batches.batch(0)
    assert set(batch) == {"image"} and batch["image"].shape == (5, 64, 64, 3)


def test_construction_errors(table, split):
    indices = splits.train_indices(table, split, "seen", include_neutral=True)
    with pytest.raises(ValueError, match="neutral"):
        input_pipeline.TrainBatches(table, indices, 2, 2, 8, 1, seed=0)
    with pytest.raises(ValueError, match=r"shorter than the 46 frames .*min_frames=46"):
        make_batches(table, split, video_length=16, frame_stride=3)
    with pytest.raises(ValueError, match="at least one > 0"):
        make_batches(table, split, video_batch=0, image_batch=0)


def test_eval_pairs(table, split):
    for condition in splits.CONDITIONS:
        pairs = input_pipeline.eval_pairs(table, split, condition, 8, 2, seed=0)
        targets = splits.eval_targets(table, split, condition)
        n = len(targets)
        assert pairs["input"].shape == pairs["target"].shape == (n, 8, 64, 64, 3)
        for key in ("target_label", "input_label", "subject"):
            assert pairs[key].dtype == np.int32 and pairs[key].shape == (n,)
        np.testing.assert_array_equal(
            np.stack([pairs["subject"], pairs["target_label"]], 1), targets
        )
        input_video, input_frame = decode(pairs["input"])
        target_video, target_frame = decode(pairs["target"])
        np.testing.assert_array_equal(np.diff(input_frame, axis=1), 2)
        np.testing.assert_array_equal(np.diff(target_frame, axis=1), 2)
        np.testing.assert_array_equal(table.subject[input_video[:, 0]], pairs["subject"])
        np.testing.assert_array_equal(table.subject[target_video[:, 0]], pairs["subject"])
        np.testing.assert_array_equal(table.emotion[target_video[:, 0]], pairs["target_label"])
        np.testing.assert_array_equal(table.emotion[input_video[:, 0]], pairs["input_label"])
        assert np.all(pairs["input_label"] != pairs["target_label"])
        assert np.all(pairs["input_label"] < labels.NUM_EMOTIONS)
        if condition == "seen":
            for s, e in targets:
                assert e not in split.seen_emotions[int(s)]
        again = input_pipeline.eval_pairs(table, split, condition, 8, 2, seed=0)
        np.testing.assert_array_equal(again["input"], pairs["input"])


def test_eval_pairs_from_neutral_takes(table, split):
    # Subject 0 has no neutral take: its pairs fall back to another emotion, with a warning.
    force = splits.Split(0, 0.2, tuple(range(1, 9)), (0, 9), {0: (0, 1), 9: (2, 3)})
    with pytest.warns(UserWarning, match="no neutral take"):
        plan = input_pipeline.eval_pair_indices(table, force, "seen", 8, 2, 0, "neutral")
    neutral = plan["subject"] == 9
    assert np.all(plan["input_label"][neutral] == labels.NEUTRAL_LABEL)
    assert np.all(plan["input_label"][~neutral] < labels.NUM_EMOTIONS)
    np.testing.assert_array_equal(table.subject[plan["input_video"]], plan["subject"])


# Not registered under a name: a test data set must not leak into the TFDS catalogue.
with registered.skip_registration():

    class TinyVideos(tfds.core.GeneratorBasedBuilder):
        """A six-video data set in the shared schema, registered under no name."""

        VERSION = tfds.core.Version("1.0.0")
        # Written in a scrambled order: load_videos must sort it.
        ROWS = [(1, 3, 0, 9), (0, 6, 0, 5), (0, 0, 0, 7), (1, 0, 1, 4), (1, 0, 0, 6), (0, 5, 0, 3)]

        def _info(self) -> tfds.core.DatasetInfo:
            return tfds.core.DatasetInfo(builder=self, features=schema.video_features())

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for key, (s, e, k, t) in enumerate(self.ROWS):
                yield (
                    key,
                    {
                        "frames": encoded_video(key, t),
                        "num_frames": t,
                        "subject": s,
                        "subject_name": f"subj{s}",
                        "emotion": e,
                        "take": k,
                        "take_name": f"take{k:03d}",
                    },
                )


def test_registry_loads_a_builder(tmp_path, capsys):
    table = registry.load_videos(TinyVideos, str(tmp_path), min_frames=4)
    assert "Preparing" in capsys.readouterr().out
    # Sorted by (subject, emotion, take); the 3-frame video is dropped.
    assert table.subject.tolist() == [0, 0, 1, 1, 1]
    assert table.emotion.tolist() == [0, 6, 0, 0, 3]
    assert table.take.tolist() == [0, 0, 0, 1, 0]
    assert table.num_frames.tolist() == [7, 5, 6, 4, 9]
    assert table.subject_names == ["subj0", "subj1"] and table.au is None
    for row, written in enumerate([2, 1, 4, 3, 0]):
        np.testing.assert_array_equal(
            table.frames[row], encoded_video(written, len(table.frames[row]))
        )
    again = registry.load_videos(TinyVideos, str(tmp_path))  # prepared: read only
    assert "Preparing" not in capsys.readouterr().out and len(again) == 6


def test_registry_unknown_name(tmp_path):
    with pytest.raises(registry.DatasetError, match="'synthetic_faces', 'mug', 'video_folder'"):
        registry.load_videos("mnist", str(tmp_path))
