"""TFDS builder `mug`: the MUG Facial Expression Database, read from a manual download.

MUG's licence forbids redistribution, so the builder reads the database as distributed:

  <manual_dir>/subjects3/<3-digit subject>/[session<N>/]<emotion>/take<NNN>[suffix]/img_NNNN.jpg

Subjects 002, 003 and 049 have the extra `session<N>/` level; some take folders carry a suffix
such as `end` or `nsg` (kept unless `drop_suffixes` names them; counted in the build report);
the emotion folders are anger, disgust, fear, happiness, sadness, surprise and neutral (the
neutral take is kept as an identity source, label 6, thesis §5.1). Frame size and count are
read from the data (a JPEG sequence carries no frame rate; MUG was recorded at 19 fps, thesis
§5.1, and nothing here depends on it). Each take becomes one example of the shared schema
(`schema.py`): one face box per take, frames cropped and resized to 64x64 (face_crop.py),
takes shorter than `min_frames` (64, thesis §5.1.1) dropped.

Ids: `subject` is dense 0..S-1 in sorted order of the subject folder names that keep at least
one take; `take` counts the kept takes of (subject, emotion) in sorted order of `take_name`,
which is the take folder name, prefixed by the session for session subjects
('session1/take000'). All takes are in the single split 'train'; the subject-disjoint
train/test split is a separate split file.

The whole folder tree is checked before anything is decoded; a corrupt frame fails the build
(naming the file) or, with `skip_corrupt=True`, drops its take. TFDS writes into an
`incomplete.*` folder and renames it only on success, so a failed build leaves no data set.
"""

import dataclasses
import pathlib
import re

import tensorflow_datasets as tfds

from vice_gan import labels
from vice_gan.datasets import face_crop, schema, takes
from vice_gan.datasets.face_crop import DatasetLayoutError

SUBJECTS_DIR = "subjects3"
DEFAULT_MIN_FRAMES = 64
SUBJECT_RE = re.compile(r"^\d{3}$")
SESSION_RE = re.compile(r"^session\d+$")
TAKE_RE = re.compile(r"^take(\d+)(.*)$")
FRAME_RE = re.compile(r"^img_(\d+)\.jpe?g$", re.IGNORECASE)
# At most this many layout problems are listed in the one error message.
MAX_PROBLEMS = 12

EXPECTED_LAYOUT = f"""Expected the MUG database as distributed:
  <manual_dir>/subjects3/<NNN subject>/[session<N>/]<emotion>/take<NNN>[suffix]/img_NNNN.jpg
with <emotion> one of {", ".join(labels.ALL_LABELS)}."""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MUG is available to authorised users only (https://mug.ee.auth.gr/fed/). After approval,
extract the image sequences so that `subjects3/` lies directly inside `manual_dir`, then pass
`manual_dir` (CLI: data_prep/build_mug.py --manual_dir=...). {EXPECTED_LAYOUT}"""


def parse_take_name(name: str) -> tuple[int, str] | None:
    """Splits a take folder name: 'take001end' -> (1, 'end'); None if it is not a take."""
    match = TAKE_RE.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def find_subjects_dir(manual_dir: pathlib.Path | str) -> pathlib.Path:
    """The `subjects3` folder of a manual download (`manual_dir` itself may be it).

    Raises:
      DatasetLayoutError: `manual_dir` is missing, empty or has no `subjects3` folder.
    """
    root = pathlib.Path(manual_dir)
    if not root.exists():
        raise DatasetLayoutError(f"MUG manual_dir {root} does not exist.\n{EXPECTED_LAYOUT}")
    if not root.is_dir():
        raise DatasetLayoutError(f"MUG manual_dir {root} is not a folder.\n{EXPECTED_LAYOUT}")
    entries = _visible(root)
    if not entries:
        raise DatasetLayoutError(f"MUG manual_dir {root} is empty.\n{EXPECTED_LAYOUT}")
    if (root / SUBJECTS_DIR).is_dir():
        return root / SUBJECTS_DIR
    if root.name == SUBJECTS_DIR:
        return root
    raise DatasetLayoutError(
        f"MUG manual_dir {root} has no '{SUBJECTS_DIR}' folder (found: "
        f"{_names(entries)}).\n{EXPECTED_LAYOUT}"
    )


def scan_layout(manual_dir: pathlib.Path | str) -> tuple[list[takes.TakeSpec], dict]:
    """Lists every take of a MUG manual download and checks the layout, decoding nothing.

    Args:
      manual_dir: the folder holding `subjects3/`.

    Returns:
      (takes sorted by subject, emotion and take name; report facts: take-name suffix counts,
      ignored non-frame files, takes whose frame numbers have gaps).

    Raises:
      DatasetLayoutError: listing every layout problem found (up to `MAX_PROBLEMS`).
    """
    subjects_dir = find_subjects_dir(manual_dir)
    problems, specs = [], []
    facts = {"suffix_counts": {}, "ignored_files": 0, "frame_number_gaps": []}
    for subject in _visible(subjects_dir):
        if not subject.is_dir():
            facts["ignored_files"] += 1
        elif not SUBJECT_RE.match(subject.name):
            problems.append(f"{_rel(subject, subjects_dir)}: not a 3-digit subject folder")
        else:
            _scan_subject(subject, subjects_dir, specs, problems, facts)
    if not specs and not problems:
        problems.append(f"{subjects_dir}: no subject folder holds a take")
    if problems:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        raise DatasetLayoutError(
            f"MUG data in {subjects_dir} is not laid out as expected:\n  "
            + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more else "")
            + f"\n{EXPECTED_LAYOUT}"
        )
    facts["suffix_counts"] = dict(sorted(facts["suffix_counts"].items()))
    return sorted(specs, key=lambda s: s.key), facts


def _scan_subject(
    subject: pathlib.Path, subjects_dir: pathlib.Path, specs: list, problems: list, facts: dict
) -> None:
    # Subjects 002, 003 and 049 hold session<N>/ folders, each laid out like a subject.
    groups = [(subject, "")]
    for entry in _visible(subject):
        if entry.is_dir() and SESSION_RE.match(entry.name):
            groups.append((entry, entry.name + "/"))
    found_emotion = False
    for folder, prefix in groups:
        for entry in _visible(folder):
            if not entry.is_dir():
                facts["ignored_files"] += 1
            elif entry.name.lower() in labels.ALL_LABELS:
                found_emotion = True
                _scan_emotion(entry, subject.name, prefix, subjects_dir, specs, problems, facts)
            elif not (folder is subject and SESSION_RE.match(entry.name)):
                problems.append(
                    f"{_rel(entry, subjects_dir)}: not an emotion folder "
                    f"({', '.join(labels.ALL_LABELS)}) or session<N>"
                )
    if not found_emotion:
        problems.append(f"{_rel(subject, subjects_dir)}: no emotion folders")


def _scan_emotion(
    folder: pathlib.Path,
    subject_name: str,
    prefix: str,
    subjects_dir: pathlib.Path,
    specs: list,
    problems: list,
    facts: dict,
) -> None:
    for take in _visible(folder):
        if not take.is_dir():
            if FRAME_RE.match(take.name):
                problems.append(f"{_rel(take, subjects_dir)}: frame outside a take<NNN> folder")
            else:
                facts["ignored_files"] += 1
            continue
        parsed = parse_take_name(take.name)
        if parsed is None:
            problems.append(f"{_rel(take, subjects_dir)}: not a take<NNN>[suffix] folder")
            continue
        numbered, others = [], []
        for entry in _visible(take):
            match = FRAME_RE.match(entry.name) if entry.is_file() else None
            (numbered if match else others).append((int(match.group(1)) if match else 0, entry))
        if others and not numbered:
            problems.append(
                f"{_rel(take, subjects_dir)}: no img_NNNN.jpg frames (found: "
                f"{_names([e for _, e in others])})"
            )
            continue
        facts["ignored_files"] += len(others)
        numbered.sort()
        spec = takes.TakeSpec(
            subject_name=subject_name,
            emotion=folder.name.lower(),
            take_name=prefix + take.name,
            path=take,
            kind="frames",
            frame_paths=tuple(path for _, path in numbered),
            num_frames=len(numbered),
        )
        # MUG numbers frames from 0000; a gap is reported, the frames are kept in order.
        if [n for n, _ in numbered] != list(range(len(numbered))):
            facts["frame_number_gaps"].append(spec.key)
        suffix = parsed[1]
        if suffix:
            facts["suffix_counts"][suffix] = facts["suffix_counts"].get(suffix, 0) + 1
        specs.append(spec)


def _visible(folder: pathlib.Path) -> list[pathlib.Path]:
    # Hidden entries (.DS_Store, ._* resource forks) are never part of the data.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _names(entries: list[pathlib.Path], limit: int = 5) -> str:
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    return ", ".join(names) + (", ..." if len(entries) > limit else "")


def _rel(path: pathlib.Path, subjects_dir: pathlib.Path) -> str:
    return f"{SUBJECTS_DIR}/{path.relative_to(subjects_dir)}"


def take_suffix(spec: takes.TakeSpec) -> str:
    """The suffix of a take's folder name ('' for a plain take<NNN>)."""
    parsed = parse_take_name(spec.take_name.rsplit("/", 1)[-1])
    return parsed[1] if parsed else ""


@dataclasses.dataclass(eq=False)
class MugConfig(tfds.core.BuilderConfig):
    """Options of the MUG build; non-default options get their own config name.

    Attributes:
      min_frames: takes with fewer frames are dropped (thesis §5.1.1: 64).
      drop_suffixes: take-name suffixes (e.g. 'nsg') whose takes are dropped; '*' drops every
        suffixed take. Empty keeps them all.
      skip_corrupt: drop a take with an unreadable frame instead of failing the build.
      crop: face box method, see `face_crop.resolve_crop` ('auto', 'haar', 'center').
    """

    min_frames: int = DEFAULT_MIN_FRAMES
    drop_suffixes: tuple[str, ...] = ()
    skip_corrupt: bool = False
    crop: str = "auto"

    def options(self) -> dict:
        """The data-shaping options, as recorded in the build report."""
        return {
            "min_frames": self.min_frames,
            "drop_suffixes": list(self.drop_suffixes),
            "skip_corrupt": self.skip_corrupt,
            "crop": self.crop,
        }


DEFAULT_CONFIG = MugConfig(
    name="default",
    description="All takes of >= 64 frames, suffixed takes kept, face box per take.",
)


def make_config(
    *,
    min_frames: int = DEFAULT_MIN_FRAMES,
    drop_suffixes: tuple[str, ...] | list[str] = (),
    skip_corrupt: bool = False,
    crop: str = "auto",
) -> MugConfig:
    """A validated `MugConfig` named after its non-default options ('default' if none).

    E.g. min_frames=16, skip_corrupt=True -> 'min16-skipcorrupt'.
    """
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    if crop not in face_crop.CROP_METHODS:
        raise ValueError(f"crop must be one of {face_crop.CROP_METHODS}, got {crop!r}")
    drop_suffixes = tuple(sorted(set(drop_suffixes)))
    for suffix in drop_suffixes:
        if not re.fullmatch(r"\*|[A-Za-z0-9_]+", suffix):
            raise ValueError(f"drop_suffixes entries must be '*' or alphanumeric: {suffix!r}")
    parts = []
    if min_frames != DEFAULT_MIN_FRAMES:
        parts.append(f"min{min_frames}")
    if drop_suffixes:
        parts.append("drop-" + ("suffixed" if "*" in drop_suffixes else "+".join(drop_suffixes)))
    if skip_corrupt:
        parts.append("skipcorrupt")
    if crop != "auto":
        parts.append(crop)
    if not parts:
        return DEFAULT_CONFIG
    return MugConfig(
        name="-".join(parts),
        min_frames=min_frames,
        drop_suffixes=drop_suffixes,
        skip_corrupt=skip_corrupt,
        crop=crop,
    )


def config_from_name(name: str) -> MugConfig | str:
    """Parses a `make_config` name back into its config ('min16-center' -> min_frames=16, ...).

    Returns the name unchanged when it is not such a name, so TFDS reports it as unknown.
    """
    options, parts = {}, name.split("-") if name != DEFAULT_CONFIG.name else []
    while parts:
        part = parts.pop(0)
        if re.fullmatch(r"min\d+", part):
            options["min_frames"] = int(part[3:])
        elif part == "drop" and parts:
            value = parts.pop(0)
            options["drop_suffixes"] = ("*",) if value == "suffixed" else tuple(value.split("+"))
        elif part == "skipcorrupt":
            options["skip_corrupt"] = True
        elif part in face_crop.CROP_METHODS:
            options["crop"] = part
        else:
            return name
    config = make_config(**options)
    return config if config.name == name else name


class Mug(takes.TakeBuilder):
    """MUG Facial Expression Database takes, face-cropped to 64x64 (shared schema).

    Options (keyword arguments or `make_config`): min_frames, drop_suffixes, skip_corrupt,
    crop. A config name such as 'min16-skipcorrupt' also selects them.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [DEFAULT_CONFIG]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    OPTION_NAMES = ("min_frames", "drop_suffixes", "skip_corrupt", "crop")
    make_config = staticmethod(make_config)
    config_from_name = staticmethod(config_from_name)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="MUG facial expression takes (52 public subjects, 6 emotions + neutral),"
            " one face box per take, frames resized to 64x64 RGB.",
            features=schema.video_features(),
            homepage="https://mug.ee.auth.gr/fed/",
            citation="Aifanti, Papachristou, Delopoulos. The MUG facial expression database. "
            "WIAMIS 2010.",
        )

    def _scan(self, root: pathlib.Path) -> tuple[list[takes.TakeSpec], dict]:
        return scan_layout(root)

    def _check_root(self, root: pathlib.Path) -> None:
        find_subjects_dir(root)

    def _process(self, spec: takes.TakeSpec, method: str):
        return face_crop.process_frame_files(spec.frame_paths, method)

    def _select(self, specs, report):
        drop = self.builder_config.drop_suffixes
        kept = []
        for spec in specs:
            suffix = take_suffix(spec)
            if suffix and ("*" in drop or suffix in drop):
                report.dropped.append({"take": spec.key, "reason": "suffix", "suffix": suffix})
            else:
                kept.append(spec)
        return kept


def prepare(
    manual_dir: pathlib.Path | str,
    data_dir: pathlib.Path | str | None,
    *,
    overwrite: bool = False,
    **options,
) -> tuple[Mug, dict]:
    """Builds (or reuses) the prepared MUG data set and returns (builder, build report).

    Args:
      manual_dir: folder holding `subjects3/`.
      data_dir: TFDS data_dir; the data go to `<data_dir>/mug/<config>/1.0.0/`.
      overwrite: rebuild even if the prepared data set exists.
      **options: `make_config` options.
    """
    return takes.prepare(Mug, manual_dir, data_dir, overwrite=overwrite, **options)
