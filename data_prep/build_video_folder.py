"""Builds the `video_folder` TFDS data set from your own videos and prints the build report.

Two layouts are read (see vice_gan/datasets/video_folder.py):

  # MoCoGAN's format: <root>/<emotion>/<video>.png, frames tiled along the long side
  python data_prep/build_video_folder.py --root=/data/mocogan_mug --layout=mocogan \\
      --subject_regex='^(?P<subject>\\d+)_' --data_dir=/data/tfds
  # plain: <root>/<subject>/<emotion>/<take>/<frames> or <take>.mp4|avi|gif
  python data_prep/build_video_folder.py --root=/data/my_videos --data_dir=/data/tfds

The prepared data go to <data_dir>/video_folder/<config>/1.0.0/ with build_report.json beside
them; the config name is printed (or set with --config_name) and read back by constructing
`VideoFolder` with the same options.
"""

import json
import sys

from absl import app, flags

from vice_gan.datasets import face_crop, takes, video_folder

_ROOT = flags.DEFINE_string("root", None, "Folder holding the videos.", required=True)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data_dir for the prepared data (TFDS default if unset)."
)
_LAYOUT = flags.DEFINE_enum(
    "layout", "auto", list(video_folder.LAYOUTS), "Folder layout; auto decides from the folders."
)
_SUBJECT_REGEX = flags.DEFINE_string(
    "subject_regex", None, "mocogan layout: regex with a group (?P<subject>...) on file names."
)
_SUBJECT_MAP = flags.DEFINE_string(
    "subject_map", None, "mocogan layout: CSV (filename,subject) or JSON file of subjects."
)
_MIN_FRAMES = flags.DEFINE_integer(
    "min_frames", video_folder.DEFAULT_MIN_FRAMES, "Drop takes with fewer frames."
)
_SKIP_CORRUPT = flags.DEFINE_bool(
    "skip_corrupt", False, "Drop takes with an unreadable file instead of failing."
)
_CROP = flags.DEFINE_enum(
    "crop",
    "auto",
    list(face_crop.CROP_METHODS),
    "Face box per take: haar (needs opencv-python-headless), center (use for videos already "
    "cropped to the face), or auto (haar if installed).",
)
_CONFIG_NAME = flags.DEFINE_string(
    "config_name", None, "Name of the builder config (default: derived from the options)."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild even if the data set exists.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        builder, report = video_folder.prepare(
            _ROOT.value,
            _DATA_DIR.value,
            overwrite=_OVERWRITE.value,
            layout=_LAYOUT.value,
            subject_regex=_SUBJECT_REGEX.value,
            subject_map=_SUBJECT_MAP.value,
            min_frames=_MIN_FRAMES.value,
            skip_corrupt=_SKIP_CORRUPT.value,
            crop=_CROP.value,
            config_name=_CONFIG_NAME.value,
        )
    except ValueError as err:  # DatasetLayoutError, CorruptFrameError, bad option values
        sys.exit(f"error: {err}")
    print(json.dumps(report, indent=2))
    print(takes.format_report(report))
    print(f"prepared data: {builder.data_dir} (config {builder.builder_config.name})")


if __name__ == "__main__":
    app.run(main)
