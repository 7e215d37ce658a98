"""In-memory video table, deterministic training batches and evaluation pairs.

Every video of a data set is decoded once into a `VideoTable` (see `registry.load_videos`);
batches are gathered from its one frame buffer with NumPy indexing, straight into float32
arrays, and built ahead by a worker thread. No TensorFlow, no per-step file I/O. (A grain
MapDataset would add a dependency and buy nothing here: sampling is already a pure function of
the step, and one thread outruns the train step.)

The training loop and the evaluators see only these numpy dicts (pixels float32 in [-1, 1],
RGB, layout [..., H, W, C] with H = W = 64, C = 3):

GAN train batch (`TrainBatches.batch`, video_batch > 0 and image_batch > 0):
  'video'        float32 [Bv, T, 64, 64, 3]  T frames at `frame_stride` from one training video,
                                             starting at a random frame (DESIGN.md, Clips)
  'video_label'  int32   [Bv]                emotion of each clip, 0-5 (vice_gan.labels.EMOTIONS)
  'image'        float32 [Bi, 64, 64, 3]     single frames: a random frame of a random training
                                             video per row (MoCoGAN's image sampler)
AE batch (`TrainBatches` with video_batch=0):
  'image'        float32 [Bi, 64, 64, 3]
Bv and Bi are the per-process shard sizes: global batch // process_count.

Evaluation pairs (`eval_pairs`), one row per test subject x evaluation emotion:
  'input'        float32 [N, T, 64, 64, 3]   that subject's clip of another emotion (or of its
                                             neutral take with input_source='neutral')
  'target'       float32 [N, T, 64, 64, 3]   the real clip of that subject and target emotion
  'target_label' int32   [N]                 0-5, the emotion to generate
  'input_label'  int32   [N]                 0-5, or 6 for a neutral input
  'subject'      int32   [N]                 dense subject id (VideoTable.subject_names)

Sampling is a pure function of (seed, step): the global batch is drawn first and each process
keeps its own rows, so resuming at step k, or running on a different number of processes,
reproduces the exact global batches of an uninterrupted single-process run.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from vice_gan import labels

if TYPE_CHECKING:
    from vice_gan.datasets import splits

FRAME_SHAPE = (64, 64, 3)
INPUT_SOURCES = ("other", "neutral")


class DatasetError(ValueError):
    """The data cannot serve the request (too few subjects or videos, a foreign split file...).

    A user-facing error: the entry point reports it in one line, without a traceback.
    """


@dataclasses.dataclass(frozen=True, eq=False)
class VideoTable:
    """All videos of a data set, decoded into memory.

    Attributes:
      frames: one uint8 array [T_i, 64, 64, 3] (RGB) per video; views into `pixels`.
      subject: int32 [N] dense subject id, an index into `subject_names`.
      emotion: int32 [N] 0-5 emotion, 6 neutral (vice_gan.labels.ALL_LABELS).
      take: int32 [N] take index within (subject, emotion).
      num_frames: int32 [N] T_i.
      subject_names: the data set's own subject ids, indexed by `subject`.
      au: per-video float32 [T_i, NUM_AUS] action-unit intensities, or None when the data set
        has none (only synthetic_faces does).
      pixels: uint8 [sum T_i, 64, 64, 3], every frame of every video, video after video
        (derived; no copy when `frames` already are consecutive views of one buffer).
      offsets: int64 [N + 1], video i is pixels[offsets[i]:offsets[i + 1]] (derived).
    """

    frames: list[np.ndarray]
    subject: np.ndarray
    emotion: np.ndarray
    take: np.ndarray
    num_frames: np.ndarray
    subject_names: list[str]
    au: list[np.ndarray] | None = None
    pixels: np.ndarray = dataclasses.field(init=False, repr=False)
    offsets: np.ndarray = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        n = len(self.frames)
        for name in ("subject", "emotion", "take", "num_frames"):
            value = np.asarray(getattr(self, name), dtype=np.int32)
            if value.shape != (n,):
                raise ValueError(f"VideoTable.{name} has shape {value.shape}, expected ({n},)")
            object.__setattr__(self, name, value)
        for i, video in enumerate(self.frames):
            if video.dtype != np.uint8 or video.ndim != 4 or video.shape[1:] != FRAME_SHAPE:
                raise ValueError(
                    f"video {i} is {video.dtype} {video.shape}, expected uint8 [T, 64, 64, 3]"
                )
        lengths = np.array([len(v) for v in self.frames], dtype=np.int64)
        if not np.array_equal(lengths, self.num_frames):
            raise ValueError("VideoTable.num_frames does not match the frame arrays")
        if n and (self.subject.min() < 0 or self.subject.max() >= len(self.subject_names)):
            raise ValueError("VideoTable.subject holds ids outside subject_names")
        if n and (self.emotion.min() < 0 or self.emotion.max() >= len(labels.ALL_LABELS)):
            raise ValueError(f"VideoTable.emotion must be in 0..{len(labels.ALL_LABELS) - 1}")
        if self.au is not None and len(self.au) != n:
            raise ValueError(f"VideoTable.au has {len(self.au)} entries for {n} videos")
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "pixels", _flatten(self.frames, offsets))
        # From now on the frames are views of `pixels`, so the table holds one copy of them.
        views = [self.pixels[offsets[i] : offsets[i + 1]] for i in range(n)]
        object.__setattr__(self, "frames", views)

    def __len__(self) -> int:
        return len(self.frames)


def _flatten(frames: Sequence[np.ndarray], offsets: np.ndarray) -> np.ndarray:
    """Returns uint8 [sum T_i, 64, 64, 3]; reuses the buffer the frames already are views of."""
    total = int(offsets[-1])
    if not frames:
        return np.zeros((0,) + FRAME_SHAPE, np.uint8)
    base = frames[0].base
    if (
        isinstance(base, np.ndarray)
        and base.ndim == 4
        and base.flags.c_contiguous
        and len(base) >= total
        and all(f.base is base and f.flags.c_contiguous for f in frames)
    ):
        start = base.__array_interface__["data"][0]
        frame_bytes = int(np.prod(FRAME_SHAPE))
        if all(
            f.__array_interface__["data"][0] == start + int(o) * frame_bytes
            for f, o in zip(frames, offsets[:-1], strict=True)
        ):
            return base[:total]
    return np.concatenate(frames, axis=0)


def clip_span(video_length: int, frame_stride: int) -> int:
    """Frames a clip of `video_length` frames at `frame_stride` covers: (T - 1) * stride + 1."""
    return (video_length - 1) * frame_stride + 1


def to_unit_range(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Maps uint8 pixels to float32 x / 127.5 - 1 in [-1, 1] (exactly, 0 -> -1, 255 -> 1).

    Args:
      pixels: uint8 array of any shape.
      out: optional float32 array of the same shape to write into.

    Returns:
      float32 array of the same shape.
    """
    if out is None:
        out = np.empty(pixels.shape, np.float32)
    # Division (not multiplication by 1/127.5) keeps 255 exactly at 1.0; same speed in NumPy.
    np.divide(pixels, np.float32(127.5), out=out, dtype=np.float32)
    np.subtract(out, np.float32(1.0), out=out)
    return out


def _gather_clips(
    table: VideoTable, videos: np.ndarray, starts: np.ndarray, length: int, stride: int
) -> np.ndarray:
    """Returns float32 [len(videos), length, 64, 64, 3] in [-1, 1]: clip i is frames
    starts[i], starts[i] + stride, ... of video videos[i]."""
    out = np.empty((len(videos), length) + FRAME_SHAPE, np.float32)
    first = table.offsets[videos] + starts
    # Row by row from a strided view: no uint8 temporary, and each row's conversion stays in
    # the CPU cache (measured 30-40% faster than one fancy-index gather of the whole batch).
    for row, begin in enumerate(first):
        to_unit_range(table.pixels[begin : begin + (length - 1) * stride + 1 : stride], out[row])
    return out


class TrainBatches:
    """Deterministic, shardable, resumable training batches (see module docstring for keys).

    Clips: videos are visited epoch by epoch in a seeded random order (every training video once
    per epoch); each clip starts at a uniformly random frame. Images: a uniformly random training
    video, then a uniformly random frame of it, per row.

    Videos too short for a clip are an error, not a silent filter: a caller that wants them
    dropped says so with `registry.load_videos(min_frames=...)`.
    """

    def __init__(
        self,
        table: VideoTable,
        indices: np.ndarray,
        video_batch: int,
        image_batch: int,
        video_length: int,
        frame_stride: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        """Checks the configuration.

        Args:
          table: the decoded data set.
          indices: int [M] rows of `table` to train on (e.g. `splits.train_indices`).
          video_batch: global clips per step (0 for autoencoder batches of images only).
          image_batch: global single frames per step.
          video_length: T, frames per clip.
          frame_stride: step between consecutive clip frames in the source video.
          seed: sampling seed; with the step it fixes every batch.
          process_index: this process (jax.process_index()).
          process_count: number of processes (jax.process_count()).

        Raises:
          ValueError: bad sizes, a batch not divisible by process_count, or neutral takes in
            video batches.
          DatasetError: no training video, or videos shorter than a clip.
        """
        self.table = table
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.video_batch, self.image_batch = int(video_batch), int(image_batch)
        self.video_length, self.frame_stride = int(video_length), int(frame_stride)
        self.seed = int(seed)
        self.process_index, self.process_count = int(process_index), int(process_count)
        if len(self.indices) == 0:
            raise DatasetError("TrainBatches needs at least one training video; got none")
        if self.indices.min() < 0 or self.indices.max() >= len(table):
            raise ValueError(f"training indices must be in [0, {len(table)})")
        if self.video_batch < 0 or self.image_batch < 0 or self.video_batch + self.image_batch == 0:
            raise ValueError(
                f"video_batch={video_batch}, image_batch={image_batch}: both must be >= 0 "
                "and at least one > 0"
            )
        if self.video_length < 1 or self.frame_stride < 1 or self.seed < 0:
            raise ValueError("video_length and frame_stride must be >= 1 and seed >= 0")
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        for name, size in (("video_batch", self.video_batch), ("image_batch", self.image_batch)):
            if size % self.process_count:
                raise ValueError(
                    f"{name}={size} is not divisible by process_count={self.process_count}; "
                    "each process must get the same number of rows"
                )
        self.span = clip_span(self.video_length, self.frame_stride)
        self.lengths = table.num_frames[self.indices].astype(np.int64)
        if self.video_batch:
            video_labels = table.emotion[self.indices]
            if np.any(video_labels >= labels.NUM_EMOTIONS):
                raise ValueError(
                    f"{int(np.sum(video_labels >= labels.NUM_EMOTIONS))} training videos are "
                    "neutral takes; they are identity sources, not classes, and cannot be in "
                    "video batches (use splits.train_indices(include_neutral=False))"
                )
            short = self.lengths < self.span
            if np.any(short):
                raise DatasetError(
                    f"{int(short.sum())} of {len(self.indices)} training videos are shorter than "
                    f"the {self.span} frames a clip of {self.video_length} frames at stride "
                    f"{self.frame_stride} needs (shortest: {int(self.lengths.min())}); drop them "
                    f"with load_videos(min_frames={self.span}) or shorten the clips"
                )

    def _rows(self, size: int) -> slice:
        local = size // self.process_count
        return slice(self.process_index * local, (self.process_index + 1) * local)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0, epoch]))
        return rng.permutation(len(self.indices))

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The batch of `step` for this process: a pure function of (seed, step, process).

        Args:
          step: training step, >= 0.

        Returns:
          dict with 'video', 'video_label' (when video_batch > 0) and 'image' (when
          image_batch > 0), shapes as in the module docstring, rows of this process only.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        # Separate streams for the epoch orders ([seed, 0, epoch]) and per-step draws.
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, int(step)]))
        out = {}
        if self.video_batch:
            n = len(self.indices)
            # Global positions in the endless sequence of epochs; a step may straddle two.
            position = step * self.video_batch + np.arange(self.video_batch, dtype=np.int64)
            epochs = position // n
            order = np.empty(self.video_batch, np.int64)
            for epoch in np.unique(epochs):
                here = epochs == epoch
                order[here] = self._epoch_order(int(epoch))[position[here] % n]
            starts = rng.integers(0, self.lengths[order] - self.span + 1)
            rows = self._rows(self.video_batch)
            videos = self.indices[order[rows]]
            out["video"] = _gather_clips(
                self.table, videos, starts[rows], self.video_length, self.frame_stride
            )
            out["video_label"] = self.table.emotion[videos].astype(np.int32)
        if self.image_batch:
            pick = rng.integers(0, len(self.indices), self.image_batch)
            frame = rng.integers(0, self.lengths[pick])
            rows = self._rows(self.image_batch)
            flat = self.table.offsets[self.indices[pick[rows]]] + frame[rows]
            out["image"] = to_unit_range(np.take(self.table.pixels, flat, axis=0))
        return out

    def iterate(
        self, start_step: int = 0, num_steps: int | None = None, num_threads: int = 1
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yields `batch(start_step)`, `batch(start_step + 1)`, ... built ahead in threads.

        NumPy releases the GIL while converting, so `num_threads` workers keep 2 * num_threads
        batches in flight while the trainer runs its step. One worker is the default: it
        already outruns the train step (experiments/bench_input_pipeline.py), and on a small
        host more workers fight the consumer for the GIL (2 workers were 1.7-4x slower than 1
        on 2 cores). Every batch is a fresh array (nothing is reused), so a consumer may keep
        or device_put it safely.

        Args:
          start_step: first step (resume point).
          num_steps: number of batches, or None for an endless stream.
          num_threads: worker threads (>= 1).

        Yields:
          batch dicts, in step order.
        """
        stop = None if num_steps is None else start_step + num_steps
        depth = 2 * max(1, num_threads)
        pool = concurrent.futures.ThreadPoolExecutor(max(1, num_threads), "train_batches")
        pending = collections.deque()
        next_step = start_step
        try:
            while True:
                while len(pending) < depth and (stop is None or next_step < stop):
                    pending.append(pool.submit(self.batch, next_step))
                    next_step += 1
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def eval_pair_indices(
    table: VideoTable,
    split: splits.Split,
    condition: str,
    video_length: int,
    frame_stride: int,
    seed: int,
    input_source: str = "other",
) -> dict[str, np.ndarray]:
    """Chooses the videos and clip starts of the evaluation pairs (thesis §5.4), without pixels.

    For each (test subject, evaluation emotion) of `splits.eval_targets`, a seeded generator of
    its own picks the target take (among that subject's takes of the emotion), the input take
    (another emotion of the same subject chosen uniformly, then a take; or its neutral take with
    input_source='neutral', falling back to another emotion when there is none) and both clip
    starts. The generator is seeded by (seed, subject, emotion) alone, so a pair is the same
    under both conditions and whatever other pairs exist. Takes shorter than a clip are not
    eligible; pairs left without an eligible take are skipped with a warning.

    Returns:
      dict of int32 [N] arrays: 'input_video', 'input_start', 'target_video', 'target_start'
      (rows of `table`, first frame), 'input_label', 'target_label', 'subject'.
    """
    # Imported here: splits imports DatasetError from this module.
    from vice_gan.datasets import splits  # noqa: PLC0415

    if input_source not in INPUT_SOURCES:
        raise ValueError(f"input_source {input_source!r} is not one of {INPUT_SOURCES}")
    span = clip_span(video_length, frame_stride)
    long_enough = table.num_frames >= span
    keys = ("input_video", "input_start", "target_video", "target_start")
    plan = {k: [] for k in keys + ("input_label", "target_label", "subject")}
    skipped, fallbacks = 0, 0
    for subject, emotion in splits.eval_targets(table, split, condition):
        rng = np.random.default_rng(np.random.SeedSequence([seed, int(subject), int(emotion)]))
        mine = (table.subject == subject) & long_enough
        targets = np.flatnonzero(mine & (table.emotion == emotion))
        others = mine & (table.emotion != emotion) & (table.emotion < labels.NUM_EMOTIONS)
        neutral = np.flatnonzero(mine & (table.emotion == labels.NEUTRAL_LABEL))
        if len(targets) == 0:
            skipped += 1
            continue
        target = int(rng.choice(targets))
        if input_source == "neutral" and len(neutral):
            source = int(rng.choice(neutral))
        elif others.any():
            if input_source == "neutral":
                fallbacks += 1
            other_emotion = rng.choice(np.unique(table.emotion[others]))
            source = int(rng.choice(np.flatnonzero(others & (table.emotion == other_emotion))))
        else:
            skipped += 1
            continue
        plan["target_video"].append(target)
        plan["input_video"].append(source)
        plan["target_start"].append(int(rng.integers(0, table.num_frames[target] - span + 1)))
        plan["input_start"].append(int(rng.integers(0, table.num_frames[source] - span + 1)))
        plan["target_label"].append(int(emotion))
        plan["input_label"].append(int(table.emotion[source]))
        plan["subject"].append(int(subject))
    if skipped:
        warnings.warn(
            f"{skipped} evaluation pairs skipped: no take of at least {span} frames for the "
            "target or for an input",
            stacklevel=2,
        )
    if fallbacks:
        warnings.warn(
            f"{fallbacks} evaluation pairs use another emotion as input: the subject has no "
            "neutral take",
            stacklevel=2,
        )
    return {k: np.asarray(v, dtype=np.int32) for k, v in plan.items()}


def eval_pairs(
    table: VideoTable,
    split: splits.Split,
    condition: str,
    video_length: int,
    frame_stride: int,
    seed: int,
    input_source: str = "other",
) -> dict[str, np.ndarray]:
    """Evaluation input/target clips for every test subject x evaluation emotion.

    Args:
      table: the decoded data set.
      split: subject split (vice_gan.datasets.splits).
      condition: 'seen' (the 4 emotions not trained on) or 'unseen' (all 6).
      video_length: T.
      frame_stride: step between clip frames.
      seed: fixes takes and clip starts.
      input_source: 'other' (another emotion's clip) or 'neutral' (the neutral take).

    Returns:
      dict 'input', 'target' float32 [N, T, 64, 64, 3] in [-1, 1]; 'target_label',
      'input_label', 'subject' int32 [N] (module docstring). Rows ordered by (subject, emotion).
    """
    plan = eval_pair_indices(
        table, split, condition, video_length, frame_stride, seed, input_source
    )
    return {
        "input": _gather_clips(
            table, plan["input_video"], plan["input_start"], video_length, frame_stride
        ),
        "target": _gather_clips(
            table, plan["target_video"], plan["target_start"], video_length, frame_stride
        ),
        "target_label": plan["target_label"],
        "input_label": plan["input_label"],
        "subject": plan["subject"],
    }
