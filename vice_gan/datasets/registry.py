"""Data set names -> TFDS builders, and loading a whole data set into a `VideoTable`.

Builder modules are imported only when their data set is asked for, so `mug` and
`video_folder` cost nothing when training on `synthetic_faces`. Data are read through
`tfds.data_source` over ArrayRecord files: TensorFlow is never imported.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import os
import time

import numpy as np
import tensorflow_datasets as tfds

from vice_gan import labels
from vice_gan.datasets import input_pipeline

# User-facing data errors (unknown name, nothing usable in the data, a foreign split...).
DatasetError = input_pipeline.DatasetError

# Data set name -> (module, builder class). A name may carry a builder config: 'name/config'.
DATASETS: dict[str, tuple[str, str]] = {
    "synthetic_faces": ("vice_gan.datasets.synthetic_faces", "SyntheticFaces"),
    "mug": ("vice_gan.datasets.mug", "Mug"),
    "video_folder": ("vice_gan.datasets.video_folder", "VideoFolder"),
}


def make_builder(
    dataset: str | type[tfds.core.DatasetBuilder],
    data_dir: str,
    builder_kwargs: dict | None = None,
) -> tfds.core.DatasetBuilder:
    """Instantiates the builder of `dataset`, writing/reading ArrayRecord under `data_dir`.

    Args:
      dataset: 'synthetic_faces', 'mug', 'video_folder', optionally '/<config>' (e.g.
        'synthetic_faces/small'); or a builder class (tests, users' own builders).
      data_dir: TFDS data directory.
      builder_kwargs: extra constructor arguments of the builder (e.g. {'config': ...}).

    Raises:
      DatasetError: unknown data set name (the valid ones are listed).
    """
    kwargs = dict(builder_kwargs or {})
    if isinstance(dataset, str):
        name, _, config = dataset.partition("/")
        if name not in DATASETS:
            valid = ", ".join(f"'{n}'" for n in DATASETS)
            raise DatasetError(
                f"unknown data set {dataset!r}; expected one of {valid}, optionally followed "
                "by '/<config>' (e.g. 'synthetic_faces/small')"
            )
        module_name, class_name = DATASETS[name]
        module = importlib.import_module(module_name)
        builder_class = getattr(module, class_name, None)
        if builder_class is None:  # a packaging bug, not a user error
            raise ImportError(f"{module_name} does not export the builder class {class_name}")
        if config:
            kwargs["config"] = config
    else:
        builder_class = dataset
    return builder_class(data_dir=data_dir, file_format="array_record", **kwargs)


def load_videos(
    dataset: str | type[tfds.core.DatasetBuilder],
    data_dir: str,
    manual_dir: str | None = None,
    builder_kwargs: dict | None = None,
    min_frames: int = 0,
) -> input_pipeline.VideoTable:
    """Prepares `dataset` if needed and decodes every video of it into memory.

    The TFDS split 'train' holds every video; the train/test split is by subject
    (vice_gan.datasets.splits). Videos are sorted by (subject, emotion, take), so row
    indices do not depend on the order the builder wrote them in.

    Args:
      dataset: data set name or builder class (see `make_builder`).
      data_dir: TFDS data directory (prepared data are reused).
      manual_dir: directory holding manually downloaded data (MUG, video_folder).
      builder_kwargs: extra builder constructor arguments.
      min_frames: drop videos with fewer frames (e.g. the clip span (T - 1) * stride + 1).

    Returns:
      the VideoTable (frames uint8 [T_i, 64, 64, 3]).
    """
    builder = make_builder(dataset, data_dir, builder_kwargs)
    label = (
        f"{builder.name}/{builder.builder_config.name}"
        if builder.builder_config
        else (builder.name)
    )
    if not builder.is_prepared():
        print(f"Preparing data set {label} in {builder.data_dir} (manual_dir={manual_dir}) ...")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    start = time.perf_counter()
    source = builder.as_data_source()["train"]
    frames, subject, emotion, take, take_names, au = [], [], [], [], [], []
    subject_names: dict[int, str] = {}
    dropped = 0
    # Decoding is mostly zlib, which releases the GIL: threads scale it with the cores.
    num_threads = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        examples = list(pool.map(source.__getitem__, range(len(source))))
    for example in examples:
        if int(example["num_frames"]) < min_frames:
            dropped += 1
            continue
        frames.append(example["frames"])
        subject.append(int(example["subject"]))
        emotion.append(int(example["emotion"]))
        take.append(int(example["take"]))
        take_names.append(_text(example["take_name"]))
        subject_names[subject[-1]] = _text(example["subject_name"])
        if "au" in example:
            au.append(np.asarray(example["au"], np.float32))
    del examples  # the decoded frames live on in `frames` until copied below
    if not frames:
        raise DatasetError(f"{label} has no video of at least {min_frames} frames")
    # Deterministic row order; take_name breaks ties between same-numbered takes.
    order = sorted(
        range(len(frames)), key=lambda i: (subject[i], emotion[i], take[i], take_names[i])
    )
    lengths = np.array([len(frames[i]) for i in order], np.int64)
    # One buffer for all frames; VideoTable keeps views of it (no second copy).
    pixels = np.empty((int(lengths.sum()),) + input_pipeline.FRAME_SHAPE, np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    views = []
    for row, i in enumerate(order):
        view = pixels[offsets[row] : offsets[row + 1]]
        view[...] = frames[i]
        frames[i] = None  # release each decoded array as soon as it is copied
        views.append(view)
    names = [subject_names.get(s, str(s)) for s in range(max(subject_names) + 1)]
    table = input_pipeline.VideoTable(
        frames=views,
        subject=np.array([subject[i] for i in order]),
        emotion=np.array([emotion[i] for i in order]),
        take=np.array([take[i] for i in order]),
        num_frames=lengths,
        subject_names=names,
        au=[au[i] for i in order] if len(au) == len(order) else None,
    )
    counts = np.bincount(table.emotion, minlength=len(labels.ALL_LABELS))
    print(
        f"Loaded {label}: {len(table)} videos of {len(np.unique(table.subject))} subjects, "
        f"{len(table.pixels)} frames ({table.pixels.nbytes / 2**20:.0f} MiB) in "
        f"{time.perf_counter() - start:.1f} s; per label "
        + ", ".join(f"{n} {c}" for n, c in zip(labels.ALL_LABELS, counts, strict=True))
        + (f"; dropped {dropped} videos shorter than {min_frames} frames" if dropped else "")
    )
    return table


def _text(value: bytes | str) -> str:
    """TFDS Text features decode to bytes without TensorFlow."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
