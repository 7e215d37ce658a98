"""Builds the `mug` TFDS data set from a manual MUG download and prints the build report.

MUG is licensed; download it from https://mug.ee.auth.gr/fed/ and extract it so that
`subjects3/` lies inside --manual_dir. Example (thesis setting: takes of >= 64 frames):

  python data_prep/build_mug.py --manual_dir=/data/MUG --data_dir=/data/tfds

The prepared data go to <data_dir>/mug/<config>/1.0.0/ with build_report.json beside them; the
config is 'default' unless options differ (e.g. --min_frames=32 -> 'min32'), and
`--dataset=mug/<config>` selects it for training.
"""

import json
import sys

from absl import app, flags

from vice_gan.datasets import face_crop, mug, takes

_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder holding MUG's subjects3/ (as distributed).", required=True
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data_dir for the prepared data (TFDS default if unset)."
)
_MIN_FRAMES = flags.DEFINE_integer(
    "min_frames", mug.DEFAULT_MIN_FRAMES, "Drop takes with fewer frames (thesis §5.1.1: 64)."
)
_DROP_SUFFIXES = flags.DEFINE_list(
    "drop_suffixes", [], "Take-name suffixes whose takes are dropped (e.g. nsg); '*' = all."
)
_SKIP_CORRUPT = flags.DEFINE_bool(
    "skip_corrupt", False, "Drop takes with an unreadable frame instead of failing."
)
_CROP = flags.DEFINE_enum(
    "crop",
    "auto",
    list(face_crop.CROP_METHODS),
    "Face box per take: haar (needs opencv-python-headless), center, or auto (haar if installed).",
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild even if the data set exists.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        builder, report = mug.prepare(
            _MANUAL_DIR.value,
            _DATA_DIR.value,
            overwrite=_OVERWRITE.value,
            min_frames=_MIN_FRAMES.value,
            drop_suffixes=tuple(_DROP_SUFFIXES.value),
            skip_corrupt=_SKIP_CORRUPT.value,
            crop=_CROP.value,
        )
    except (face_crop.DatasetLayoutError, face_crop.CorruptFrameError) as err:
        sys.exit(f"error: {err}")
    print(json.dumps(report, indent=2))
    print(takes.format_report(report))
    print(f"prepared data: {builder.data_dir} (report: {takes.BuildReport.FILENAME})")


if __name__ == "__main__":
    app.run(main)
