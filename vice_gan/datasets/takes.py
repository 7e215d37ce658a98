"""Takes as both builders see them: scan result, numbering, example generation, build report.

A builder's layout scan lists `TakeSpec`s without decoding anything; `plan_takes` drops the
takes known to be too short (thesis §5.1.1) and assigns the schema's dense subject and take
ids; `generate_examples` decodes and crops each take (face_crop) and yields examples in the
shared schema; `BuildReport` records what was found, kept and dropped, and is written as
`build_report.json` next to the prepared data. `TakeBuilder` is the TFDS builder base both
use, and `prepare` drives a build from the data_prep CLIs and tests.
"""

import abc
import collections
import dataclasses
import inspect
import json
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from vice_gan import labels
from vice_gan.datasets import face_crop
from vice_gan.datasets.face_crop import CorruptFrameError, DatasetLayoutError


@dataclasses.dataclass(frozen=True)
class TakeSpec:
    """One take found by a layout scan, before anything is decoded.

    Attributes:
      subject_name: the data set's own subject id.
      emotion: one of `vice_gan.labels.ALL_LABELS`.
      take_name: the data set's own take id, unique within (subject, emotion).
      path: the take's folder, video file or tiled image (named in messages).
      kind: 'frames' (one image file per frame), 'video' or 'tiled' (MoCoGAN image).
      frame_paths: the frame files in order, for kind 'frames'.
      num_frames: the frame count if known without decoding (None for video files).
    """

    subject_name: str
    emotion: str
    take_name: str
    path: pathlib.Path
    kind: str
    frame_paths: tuple[pathlib.Path, ...] = ()
    num_frames: int | None = None

    @property
    def key(self) -> str:
        """The example key and the take's name in reports: subject/emotion/take."""
        return f"{self.subject_name}/{self.emotion}/{self.take_name}"


@dataclasses.dataclass(frozen=True)
class PlannedTake:
    """A take that passed the frame-count check, with its dense ids (schema `subject`, `take`)."""

    spec: TakeSpec
    subject: int
    take: int


def plan_takes(specs: Sequence[TakeSpec], min_frames: int) -> tuple[list[PlannedTake], list[dict]]:
    """Drops takes known to be short and numbers the rest.

    Subjects are numbered 0..S-1 in sorted order of their names, counting only subjects with
    a kept take; takes are numbered from 0 within (subject, emotion) in sorted name order.

    Args:
      specs: every take found.
      min_frames: takes with fewer frames are dropped (thesis §5.1.1 uses 64). Takes whose
        count is unknown until decoding (video files) are kept here and checked later.

    Returns:
      (planned takes in (subject, emotion, take) order, dropped-take records for the report).
    """
    kept, dropped = [], []
    for spec in specs:
        if spec.num_frames is not None and spec.num_frames < min_frames:
            dropped.append({"take": spec.key, "reason": "short", "frames": spec.num_frames})
        else:
            kept.append(spec)
    subject_ids = {name: i for i, name in enumerate(sorted({s.subject_name for s in kept}))}
    kept.sort(key=lambda s: (s.subject_name, labels.emotion_index(s.emotion), s.take_name))
    planned, counters = [], {}
    for spec in kept:
        group = (spec.subject_name, spec.emotion)
        counters[group] = counters.get(group, -1) + 1
        planned.append(PlannedTake(spec, subject_ids[spec.subject_name], counters[group]))
    return planned, dropped


class BuildReport:
    """Counts what a build found, kept and dropped; written as JSON next to the data."""

    FILENAME = "build_report.json"

    def __init__(self, dataset: str, root: pathlib.Path, options: dict):
        self.dataset = dataset
        self.root = str(root)
        self.options = dict(options)
        self.takes_found = 0
        self.subjects_found: set[str] = set()
        self.dropped: list[dict] = []
        self.kept: list[dict] = []
        self.box_methods: collections.Counter = collections.Counter()
        self.frame_sizes: collections.Counter = collections.Counter()
        self.frame_rates: collections.Counter = collections.Counter()
        # Builder-specific sections (e.g. MUG's suffix counts).
        self.extra: dict = {}

    def add_found(self, specs: Sequence[TakeSpec]) -> None:
        """Records every take the layout scan found."""
        self.takes_found += len(specs)
        self.subjects_found.update(s.subject_name for s in specs)

    def add_kept(self, planned: PlannedTake, num_frames: int, info: dict) -> None:
        """Records a take written to the data set with its `process_*` info."""
        self.kept.append(
            {
                "take": planned.spec.key,
                "subject": planned.subject,
                "subject_name": planned.spec.subject_name,
                "emotion": planned.spec.emotion,
                "frames": num_frames,
                "box_method": info["box_method"],
            }
        )
        self.box_methods[info["box_method"]] += 1
        self.frame_sizes[info["frame_size"]] += 1
        if info.get("fps"):  # only video files carry a frame rate
            self.frame_rates[f"{info['fps']:g}"] += 1

    def to_dict(self) -> dict:
        """The report as plain JSON-able data."""
        per_emotion = {}
        for emotion in labels.ALL_LABELS:
            chosen = [k for k in self.kept if k["emotion"] == emotion]
            per_emotion[emotion] = {
                "takes": len(chosen),
                "subjects": len({k["subject"] for k in chosen}),
            }
        frames = [k["frames"] for k in self.kept]
        kept_subjects = {k["subject_name"]: k["subject"] for k in self.kept}
        dropped_counts = collections.Counter(d["reason"] for d in self.dropped)
        return {
            "dataset": self.dataset,
            "root": self.root,
            "options": self.options,
            "subjects": {
                "found": len(self.subjects_found),
                "kept": len(kept_subjects),
                "ids": dict(sorted(kept_subjects.items(), key=lambda kv: kv[1])),
                "without_kept_takes": sorted(self.subjects_found - set(kept_subjects)),
            },
            "takes": {"found": self.takes_found, "kept": len(self.kept)},
            "per_emotion": per_emotion,
            "frames": {
                "total": int(sum(frames)),
                "min": int(min(frames, default=0)),
                "max": int(max(frames, default=0)),
                "mean": round(float(np.mean(frames)), 2) if frames else 0.0,
            },
            "frame_sizes": dict(self.frame_sizes),
            "frame_rates": dict(self.frame_rates),
            "face_box": dict(self.box_methods),
            # Takes where Haar found no face on any sample frame: worth a look.
            "face_box_fallback_takes": [
                k["take"] for k in self.kept if k["box_method"] == "center_fallback"
            ],
            "dropped_counts": dict(dropped_counts),
            "dropped": self.dropped,
            **self.extra,
        }

    def write(self, directory: pathlib.Path | str) -> pathlib.Path:
        """Writes `build_report.json` into `directory` and returns its path."""
        path = pathlib.Path(directory) / self.FILENAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def generate_examples(
    planned: Sequence[PlannedTake],
    process: Callable[[TakeSpec], tuple[np.ndarray, dict]],
    *,
    min_frames: int,
    skip_corrupt: bool,
    report: BuildReport,
) -> Iterator[tuple[str, dict]]:
    """Yields (key, example) in the shared schema for every planned take.

    Args:
      planned: takes from `plan_takes`.
      process: decodes and crops one take -> (uint8 [T, 64, 64, 3], info).
      min_frames: re-checked after decoding, for takes whose count was unknown before.
      skip_corrupt: skip a take with an unreadable file (recorded in the report) instead of
        raising.
      report: receives kept and dropped takes.

    Raises:
      CorruptFrameError: an unreadable file, unless `skip_corrupt`.
    """
    for item in planned:
        spec = item.spec
        try:
            frames, info = process(spec)
        except CorruptFrameError as err:
            if not skip_corrupt:
                raise CorruptFrameError(
                    err.path, f"{err.reason} (take {spec.key}; skip_corrupt=True skips the take)"
                ) from err
            report.dropped.append(
                {"take": spec.key, "reason": "corrupt", "file": err.path, "error": err.reason}
            )
            continue
        if len(frames) < min_frames:
            report.dropped.append({"take": spec.key, "reason": "short", "frames": len(frames)})
            continue
        report.add_kept(item, len(frames), info)
        yield (
            spec.key,
            {
                "frames": frames,
                "num_frames": len(frames),
                "subject": item.subject,
                "subject_name": spec.subject_name,
                "emotion": labels.emotion_index(spec.emotion),
                "take": item.take,
                "take_name": spec.take_name,
            },
        )


class TakeBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared TFDS plumbing of the `mug` and `video_folder` builders.

    A subclass supplies its config class and `make_config`, its layout scan and per-take
    decoding. Its options may be passed as a config or as constructor keyword arguments. The
    single split 'train' holds every take; the subject-disjoint split is a separate file.
    """

    # Constructor keywords that are config options rather than TFDS arguments.
    OPTION_NAMES: tuple[str, ...] = ()

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The builder's source file.

        TFDS 4.9.10 finds it for a builder inside a package through `importlib_resources`,
        which neither it nor etils installs (ModuleNotFoundError at download_and_prepare);
        the module file is the path it would have found.
        """
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, config: tfds.core.BuilderConfig | str | None = None, **kwargs):
        """Builder; options may be given as a config or as keyword arguments.

        Args:
          config: a config from the subclass's `make_config`, or a config name.
          **kwargs: `make_config` options (see `OPTION_NAMES`), then TFDS builder arguments
            (data_dir, version, file_format). The file format defaults to array_record, which
            `tfds.data_source` reads without TensorFlow.
        """
        options = {k: kwargs.pop(k) for k in self.OPTION_NAMES if k in kwargs}
        if options:
            if config is not None:
                raise ValueError("give either config or option keyword arguments, not both")
            config = self.make_config(**options)
        elif isinstance(config, str):
            config = self.config_from_name(config)
        kwargs.setdefault("file_format", "array_record")
        self._report: BuildReport | None = None
        super().__init__(config=config, **kwargs)

    @classmethod
    def make_config(cls, **options) -> tfds.core.BuilderConfig:
        """A validated config for `options`, named after its non-default ones."""
        raise NotImplementedError

    @classmethod
    def config_from_name(cls, name: str) -> tfds.core.BuilderConfig | str:
        """The config a name stands for; the name itself if the subclass cannot parse it."""
        return name

    @abc.abstractmethod
    def _scan(self, root: pathlib.Path) -> tuple[list[TakeSpec], dict]:
        """Lists the takes under `root` -> (specs, report facts); raises DatasetLayoutError."""

    @abc.abstractmethod
    def _check_root(self, root: pathlib.Path) -> None:
        """Raises DatasetLayoutError naming what is wrong with a missing or empty root."""

    @abc.abstractmethod
    def _process(self, spec: TakeSpec, method: str) -> tuple[np.ndarray, dict]:
        """Decodes and crops one take -> (uint8 [T, 64, 64, 3], info)."""

    def _select(self, specs: list[TakeSpec], report: BuildReport) -> list[TakeSpec]:
        """Hook to drop takes by builder-specific rules before planning (recorded in report)."""
        del report
        return specs

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        method = face_crop.resolve_crop(config.crop)
        root = self._manual_dir(dl_manager)
        # The whole tree is scanned and checked before the first frame is decoded.
        specs, facts = self._scan(root)
        report = BuildReport(self.name, root, {**config.options(), "crop_used": method})
        report.add_found(specs)
        report.extra.update(facts)
        planned, dropped = plan_takes(self._select(specs, report), config.min_frames)
        report.dropped.extend(dropped)
        if not planned:
            raise DatasetLayoutError(
                f"{self.name} data in {root}: none of the {len(specs)} takes found is kept "
                f"(min_frames={config.min_frames}); nothing to build"
            )
        self._report = report
        return {"train": self._generate_examples(planned, method)}

    def _generate_examples(self, planned: list[PlannedTake], method: str):
        yield from generate_examples(
            planned,
            lambda spec: self._process(spec, method),
            min_frames=self.builder_config.min_frames,
            skip_corrupt=self.builder_config.skip_corrupt,
            report=self._report,
        )

    def _download_and_prepare(self, dl_manager, download_config):
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
        if self._report is None:  # max_examples_per_split=0: TFDS generated nothing
            return
        # data_dir is still TFDS's incomplete.* folder here, so the report is renamed into
        # place together with the data, or removed with it if the build fails.
        path = self._report.write(self.data_dir)
        logging.info("%s build report written to %s", self.name, path)

    def _manual_dir(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
        try:
            return pathlib.Path(os.fspath(dl_manager.manual_dir))
        except AssertionError as err:
            # TFDS refuses a missing or empty manual_dir with an AssertionError that does not
            # say which; the subclass's check names the case and the expected layout.
            path = getattr(dl_manager, "_manual_dir", None)
            if path is not None:
                self._check_root(pathlib.Path(os.fspath(path)))
            raise DatasetLayoutError(str(err)) from None


def load_report(data_dir: pathlib.Path | str) -> dict:
    """Reads `build_report.json` from a prepared data set's version folder."""
    return json.loads((pathlib.Path(data_dir) / BuildReport.FILENAME).read_text())


def prepare(
    builder_class: type[TakeBuilder],
    manual_dir: pathlib.Path | str,
    data_dir: pathlib.Path | str | None,
    *,
    overwrite: bool = False,
    **options,
) -> tuple[TakeBuilder, dict]:
    """Builds (or reuses) a prepared data set and returns (builder, build report).

    Args:
      builder_class: `Mug` or `VideoFolder`.
      manual_dir: the input folder (TFDS manual_dir).
      data_dir: TFDS data_dir; the data go to `<data_dir>/<name>/<config>/<version>/`.
      overwrite: rebuild even if the prepared data set exists.
      **options: the builder's `make_config` options.
    """
    data_dir = os.fspath(data_dir) if data_dir is not None else None  # None: TFDS default
    builder = builder_class(data_dir=data_dir, **options)
    mode = (
        tfds.download.GenerateMode.FORCE_REDOWNLOAD
        if overwrite
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(manual_dir), download_mode=mode
        )
    )
    return builder, load_report(builder.data_dir)


def format_report(report: dict) -> str:
    """A few human-readable lines summarising a build report (the CLIs print them)."""
    per_emotion = ", ".join(
        f"{name} {v['takes']} ({v['subjects']} subj)" for name, v in report["per_emotion"].items()
    )
    lines = [
        f"{report['dataset']}: kept {report['takes']['kept']} of {report['takes']['found']} "
        f"takes, {report['subjects']['kept']} of {report['subjects']['found']} subjects, "
        f"{report['frames']['total']} frames (per take {report['frames']['min']}-"
        f"{report['frames']['max']}, mean {report['frames']['mean']})",
        f"per emotion: {per_emotion}",
        "dropped: "
        + (", ".join(f"{k} {v}" for k, v in report["dropped_counts"].items()) or "none"),
        "face box: " + ", ".join(f"{k} {v}" for k, v in report["face_box"].items()),
        "frame sizes: " + ", ".join(f"{k} ({v} takes)" for k, v in report["frame_sizes"].items()),
    ]
    if report.get("suffix_counts") is not None:
        suffixes = ", ".join(f"{k} {v}" for k, v in report["suffix_counts"].items())
        lines.append(f"take-name suffixes found: {suffixes or 'none'}")
    if report["subjects"]["without_kept_takes"]:
        lines.append(
            "subjects without kept takes: " + ", ".join(report["subjects"]["without_kept_takes"])
        )
    return "\n".join(lines)
