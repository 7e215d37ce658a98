"""TFDS builder `video_folder`: users' own emotion videos, in the shared example schema.

The root folder (passed as TFDS `manual_dir`) holds one of two layouts:

* `mocogan` (MoCoGAN's format): `<root>/<emotion>/<video>.png|jpg|...`, one image per video
  with its square frames tiled along the long side (frame size = the short side, frame count
  = long // short). Subject ids are not in this layout; they come from `subject_map` (a CSV
  of `filename,subject` rows or a JSON object filename -> subject; filenames relative to the
  root like 'happiness/v01.png', or bare) or from `subject_regex`, a regular expression with
  a named group `subject` searched in the file name (e.g. r'^(?P<subject>S\\d+)_').
* `plain`: `<root>/<subject>/<emotion>/<take>/` folders of frame images (sorted by name,
  numbers compared numerically), or `<root>/<subject>/<emotion>/<take>.mp4|avi|gif|...`
  video files, read with imageio (the whole video is decoded into memory).

`layout='auto'` picks `mocogan` when every top-level folder is an emotion name and `plain`
when none is. Emotion folder names must be `vice_gan.labels.ALL_LABELS` (any case); neutral
takes are kept as identity sources (label 6). Frames are face-cropped and resized to 64x64
exactly as for MUG (face_crop.py), takes shorter than `min_frames` dropped, and ids assigned
as in `takes.plan_takes`; `build_report.json` is written next to the data. Use
`crop='center'` for videos that are already cropped to the face.
"""

import csv
import dataclasses
import hashlib
import json
import os
import pathlib
import re

import imageio.v3 as iio
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from vice_gan import labels
from vice_gan.datasets import face_crop, schema, takes
from vice_gan.datasets.face_crop import CorruptFrameError, DatasetLayoutError

LAYOUTS: tuple[str, ...] = ("auto", "mocogan", "plain")
DEFAULT_MIN_FRAMES = 64
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".gif", ".mov", ".mkv", ".webm")
MAX_PROBLEMS = 12

EXPECTED_LAYOUT = f"""Expected one of two layouts under the root folder:
  mocogan: <root>/<emotion>/<video>.png  (frames tiled along the long side) + subject_map or
           subject_regex for subject ids
  plain:   <root>/<subject>/<emotion>/<take>/<frame images>  or
           <root>/<subject>/<emotion>/<take>.{"|".join(s[1:] for s in VIDEO_SUFFIXES)}
with <emotion> one of {", ".join(labels.ALL_LABELS)}."""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Pass the folder holding your videos as manual_dir (CLI: data_prep/build_video_folder.py
--root=...). {EXPECTED_LAYOUT}"""


def natural_key(name: str) -> list:
    """Sort key comparing digit runs as numbers: 'f2.png' < 'f10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def split_tiled(image: np.ndarray) -> np.ndarray:
    """Splits a MoCoGAN video image [H, W, 3] into square frames [T, S, S, 3].

    The frames run along the long side (left to right, or top to bottom); S is the short side.

    Raises:
      ValueError: the long side is not a whole number of frames.
    """
    height, width = image.shape[:2]
    side, long_side = min(height, width), max(height, width)
    if long_side % side:
        raise ValueError(f"{width}x{height} is not a whole number of {side}x{side} frames")
    count = long_side // side
    if width >= height:
        return image.reshape(side, count, side, 3).transpose(1, 0, 2, 3)
    return image.reshape(count, side, side, 3)


def read_video(path: pathlib.Path) -> tuple[np.ndarray, float | None]:
    """Decodes every frame of a video file with imageio.

    Returns:
      (uint8 [T, H, W, 3], frames per second from the file's metadata, or None).

    Raises:
      CorruptFrameError: the file cannot be decoded, has no frames, or changes frame size.
    """
    frames = []
    try:
        meta = iio.immeta(path)
        for frame in iio.imiter(path):
            frames.append(face_crop.to_rgb(np.asarray(frame)))
    # imageio's plugins (pillow, ffmpeg) raise many unrelated exception types on bad input.
    except Exception as err:
        raise CorruptFrameError(path, f"{type(err).__name__}: {err}") from err
    if not frames:
        raise CorruptFrameError(path, "no frames decoded")
    if len({f.shape for f in frames}) > 1:
        raise CorruptFrameError(path, "frame size changes within the video")
    # ffmpeg reports fps; GIF reports each frame's duration in ms.
    fps = meta.get("fps") or (1000.0 / meta["duration"] if meta.get("duration") else None)
    return np.stack(frames), (round(float(fps), 3) if fps else None)


def tiled_frame_count(path: pathlib.Path) -> int | None:
    """Frames in a MoCoGAN image from its header alone; None if the header is unreadable."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, ValueError, SyntaxError):
        return None  # reported as a corrupt take when it is decoded
    return max(width, height) // min(width, height) if min(width, height) else None


def load_subject_map(path: pathlib.Path | str) -> dict[str, str]:
    """Reads a filename -> subject map from JSON (an object) or CSV (`filename,subject` rows).

    Raises:
      DatasetLayoutError: the file is missing or not in either form.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f"subject_map {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetLayoutError(f"subject_map {path} is not valid JSON: {err}") from None
        if not isinstance(mapping, dict):
            raise DatasetLayoutError(f"subject_map {path} must hold a JSON object")
        return {str(k): str(v) for k, v in mapping.items()}
    rows = [row for row in csv.reader(text.splitlines()) if row and any(c.strip() for c in row)]
    if rows and rows[0][-1].strip().lower() == "subject":  # optional header row
        rows = rows[1:]
    bad = [i for i, row in enumerate(rows) if len(row) != 2]
    if bad:
        raise DatasetLayoutError(
            f"subject_map {path}: CSV rows must be 'filename,subject'; row {bad[0] + 1} is "
            f"{rows[bad[0]]}"
        )
    return {name.strip(): subject.strip() for name, subject in rows}


def resolve_layout(root: pathlib.Path, layout: str) -> str:
    """'mocogan' or 'plain': `layout` itself, or for 'auto' what the top-level folders say.

    Raises:
      DatasetLayoutError: the root is missing or empty, or 'auto' sees a mix of emotion
        folders and other folders.
    """
    if not root.is_dir():
        raise DatasetLayoutError(f"video_folder root {root} does not exist.\n{EXPECTED_LAYOUT}")
    folders = [p for p in _visible(root) if p.is_dir()]
    if not folders:
        raise DatasetLayoutError(f"video_folder root {root} has no folders.\n{EXPECTED_LAYOUT}")
    if layout != "auto":
        return layout
    emotions = [p.name for p in folders if p.name.lower() in labels.ALL_LABELS]
    if len(emotions) == len(folders):
        return "mocogan"
    if not emotions:
        return "plain"
    others = [p.name for p in folders if p.name.lower() not in labels.ALL_LABELS]
    raise DatasetLayoutError(
        f"video_folder root {root} mixes emotion folders ({', '.join(emotions[:5])}) with "
        f"other folders ({', '.join(others[:5])}): in the mocogan layout every top-level "
        f"folder is an emotion, in the plain layout every one is a subject.\n{EXPECTED_LAYOUT}"
    )


def scan_mocogan(
    root: pathlib.Path, subject_map: dict[str, str] | None, subject_regex: str | None
) -> tuple[list[takes.TakeSpec], list[str], int]:
    """Takes of the mocogan layout -> (specs, layout problems, ignored file count)."""
    if subject_map is None and subject_regex is None:
        return [], ["the mocogan layout has no subject ids: give subject_map or subject_regex"], 0
    pattern = re.compile(subject_regex) if subject_regex else None
    specs, problems, ignored = [], [], 0
    for category in _visible(root):
        if not category.is_dir():
            ignored += 1
            continue
        if category.name.lower() not in labels.ALL_LABELS:
            problems.append(f"{category.name}/: not an emotion folder")
            continue
        for path in _visible(category):
            if path.is_dir():
                problems.append(f"{_rel(path, root)}/: folder inside an emotion folder")
                continue
            if path.suffix.lower() not in face_crop.IMAGE_SUFFIXES:
                ignored += 1
                continue
            rel = _rel(path, root)
            if subject_map is not None:
                subject = subject_map.get(rel, subject_map.get(path.name))
                if subject is None:
                    problems.append(f"{rel}: not in subject_map")
                    continue
            else:
                match = pattern.search(path.name)
                if match is None or not match.group("subject"):
                    problems.append(f"{rel}: subject_regex {subject_regex!r} does not match")
                    continue
                subject = match.group("subject")
            count = tiled_frame_count(path)
            specs.append(
                takes.TakeSpec(subject, category.name.lower(), path.stem, path, "tiled", (), count)
            )
    return specs, problems, ignored


def scan_plain(root: pathlib.Path) -> tuple[list[takes.TakeSpec], list[str], int]:
    """Takes of the plain layout -> (specs, layout problems, ignored file count)."""
    specs, problems, ignored = [], [], 0
    for subject in _visible(root):
        if not subject.is_dir():
            ignored += 1
            continue
        for category in _visible(subject):
            if not category.is_dir():
                ignored += 1
            elif category.name.lower() not in labels.ALL_LABELS:
                problems.append(f"{_rel(category, root)}/: not an emotion folder")
            else:
                ignored += _scan_plain_category(category, root, specs, problems)
    return specs, problems, ignored


def _scan_plain_category(
    category: pathlib.Path, root: pathlib.Path, specs: list, problems: list[str]
) -> int:
    ignored = 0
    subject, emotion = category.parent.name, category.name.lower()
    for take in _visible(category):
        suffix = take.suffix.lower()
        if take.is_dir():
            frames = [
                p
                for p in _visible(take)
                if p.is_file() and p.suffix.lower() in face_crop.IMAGE_SUFFIXES
            ]
            if not frames:
                problems.append(f"{_rel(take, root)}/: no frame images")
                continue
            frames.sort(key=lambda p: natural_key(p.name))
            spec = takes.TakeSpec(
                subject, emotion, take.name, take, "frames", tuple(frames), len(frames)
            )
        elif suffix in VIDEO_SUFFIXES:
            spec = takes.TakeSpec(subject, emotion, take.stem, take, "video")
        elif suffix in face_crop.IMAGE_SUFFIXES:
            problems.append(f"{_rel(take, root)}: image outside a take folder")
            continue
        else:
            ignored += 1
            continue
        specs.append(spec)
    return ignored


def scan_layout(
    root: pathlib.Path | str,
    layout: str = "auto",
    subject_map: str | None = None,
    subject_regex: str | None = None,
) -> tuple[list[takes.TakeSpec], dict]:
    """Lists and checks every take under `root` without decoding frames.

    Returns:
      (takes, report facts: the layout used and the ignored file count).

    Raises:
      DatasetLayoutError: listing every problem found (up to `MAX_PROBLEMS`).
    """
    root = pathlib.Path(root)
    layout = resolve_layout(root, layout)
    if layout == "mocogan":
        mapping = load_subject_map(_find_map(subject_map, root)) if subject_map else None
        specs, problems, ignored = scan_mocogan(root, mapping, subject_regex)
    else:
        if subject_map or subject_regex:
            raise DatasetLayoutError(
                f"{root} is in the plain layout, whose subject ids are the folder names; "
                "subject_map and subject_regex apply to the mocogan layout only"
            )
        specs, problems, ignored = scan_plain(root)
    seen = {}
    for spec in specs:
        if spec.key in seen:
            problems.append(f"{spec.path.name} and {seen[spec.key].name}: same take {spec.key}")
        seen[spec.key] = spec.path
    if not specs and not problems:
        problems.append("no takes found")
    if problems:
        shown, more = problems[:MAX_PROBLEMS], len(problems) - MAX_PROBLEMS
        raise DatasetLayoutError(
            f"video_folder root {root} ({layout} layout) is not laid out as expected:\n  "
            + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more > 0 else "")
            + f"\nValid emotion folder names: {', '.join(labels.ALL_LABELS)}.\n{EXPECTED_LAYOUT}"
        )
    return sorted(specs, key=lambda s: s.key), {"layout": layout, "ignored_files": ignored}


def process_take(spec: takes.TakeSpec, method: str) -> tuple[np.ndarray, dict]:
    """Decodes and face-crops one take of any kind -> (uint8 [T, 64, 64, 3], info)."""
    if spec.kind == "frames":
        return face_crop.process_frame_files(spec.frame_paths, method)
    if spec.kind == "video":
        frames, fps = read_video(spec.path)
        out, info = face_crop.process_frame_array(frames, method)
        return out, {**info, "fps": fps}
    image, _ = face_crop.decode_image(spec.path)
    try:
        frames = split_tiled(image)
    except ValueError as err:
        raise CorruptFrameError(spec.path, str(err)) from None
    return face_crop.process_frame_array(frames, method)


def _find_map(subject_map: str, root: pathlib.Path) -> pathlib.Path:
    # A relative map path is taken from the working directory, else from the root folder.
    path = pathlib.Path(subject_map)
    return path if path.is_absolute() or path.exists() else root / path


def _visible(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _rel(path: pathlib.Path, root: pathlib.Path) -> str:
    return path.relative_to(root).as_posix()


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
    """Options of a video_folder build (see the module docstring); root is the manual_dir.

    Attributes:
      layout: 'auto', 'mocogan' or 'plain'.
      subject_regex: mocogan layout: regex with a named group `subject`, searched in file names.
      subject_map: mocogan layout: CSV or JSON file mapping file names to subjects.
      min_frames: takes with fewer frames are dropped.
      skip_corrupt: drop a take with an unreadable file instead of failing the build.
      crop: face box method, see `face_crop.resolve_crop`.
    """

    layout: str = "auto"
    subject_regex: str | None = None
    subject_map: str | None = None
    min_frames: int = DEFAULT_MIN_FRAMES
    skip_corrupt: bool = False
    crop: str = "auto"

    def options(self) -> dict:
        """The data-shaping options, as recorded in the build report."""
        return {
            "layout": self.layout,
            "subject_regex": self.subject_regex,
            "subject_map": self.subject_map,
            "min_frames": self.min_frames,
            "skip_corrupt": self.skip_corrupt,
            "crop": self.crop,
        }


DEFAULT_CONFIG = VideoFolderConfig(name="default", description="layout='auto', >= 64 frames.")
OPTION_NAMES = ("layout", "subject_regex", "subject_map", "min_frames", "skip_corrupt", "crop")


def make_config(
    *,
    layout: str = "auto",
    subject_regex: str | None = None,
    subject_map: str | os.PathLike | None = None,
    min_frames: int = DEFAULT_MIN_FRAMES,
    skip_corrupt: bool = False,
    crop: str = "auto",
    config_name: str | None = None,
) -> VideoFolderConfig:
    """A validated `VideoFolderConfig`, named `config_name` or after its non-default options.

    E.g. layout='mocogan', min_frames=16 -> 'mocogan-min16'; a subject regex or map adds a
    short hash of it ('subj-1a2b3c4d'), so different settings never share a folder.

    Raises:
      ValueError: an unknown layout or crop, min_frames < 1, or a regex that does not compile
        or lacks the group `subject`.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if crop not in face_crop.CROP_METHODS:
        raise ValueError(f"crop must be one of {', '.join(face_crop.CROP_METHODS)}, got {crop!r}")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    if subject_regex is not None:
        try:
            compiled = re.compile(subject_regex)
        except re.error as err:
            raise ValueError(f"subject_regex {subject_regex!r} does not compile: {err}") from None
        if "subject" not in compiled.groupindex:
            raise ValueError(
                f"subject_regex {subject_regex!r} needs a named group (?P<subject>...)"
            )
    subject_map = os.fspath(subject_map) if subject_map is not None else None
    parts = [layout] if layout != "auto" else []
    if min_frames != DEFAULT_MIN_FRAMES:
        parts.append(f"min{min_frames}")
    if skip_corrupt:
        parts.append("skipcorrupt")
    if crop != "auto":
        parts.append(crop)
    if subject_regex is not None or subject_map is not None:
        digest = hashlib.sha1(f"{subject_regex}|{subject_map}".encode()).hexdigest()[:8]
        parts.append(f"subj-{digest}")
    if config_name in (None, DEFAULT_CONFIG.name) and not parts:
        return DEFAULT_CONFIG
    return VideoFolderConfig(
        name=config_name or "-".join(parts),
        layout=layout,
        subject_regex=subject_regex,
        subject_map=subject_map,
        min_frames=min_frames,
        skip_corrupt=skip_corrupt,
        crop=crop,
    )


class VideoFolder(takes.TakeBuilder):
    """Users' own emotion videos (mocogan or plain layout), face-cropped to 64x64.

    Options (keyword arguments or `make_config`): layout, subject_regex, subject_map,
    min_frames, skip_corrupt, crop, and `config_name` to name the config. The root folder is the
    TFDS manual_dir.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [DEFAULT_CONFIG]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    OPTION_NAMES = OPTION_NAMES + ("config_name",)
    make_config = staticmethod(make_config)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Emotion videos from a local folder (MoCoGAN or plain layout), one "
            "face box per take, frames resized to 64x64 RGB.",
            features=schema.video_features(),
        )

    def _scan(self, root: pathlib.Path) -> tuple[list[takes.TakeSpec], dict]:
        config = self.builder_config
        return scan_layout(root, config.layout, config.subject_map, config.subject_regex)

    def _check_root(self, root: pathlib.Path) -> None:
        resolve_layout(root, "auto")

    def _process(self, spec: takes.TakeSpec, method: str):
        return process_take(spec, method)


def prepare(
    root: pathlib.Path | str,
    data_dir: pathlib.Path | str | None,
    *,
    overwrite: bool = False,
    **options,
) -> tuple[VideoFolder, dict]:
    """Builds (or reuses) a video_folder data set and returns (builder, build report).

    Args:
      root: the folder of videos (TFDS manual_dir).
      data_dir: TFDS data_dir; the data go to `<data_dir>/video_folder/<config>/1.0.0/`.
      overwrite: rebuild even if the prepared data set exists.
      **options: `make_config` options.
    """
    return takes.prepare(VideoFolder, root, data_dir, overwrite=overwrite, **options)
