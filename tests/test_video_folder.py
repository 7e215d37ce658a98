"""Tests of the video_folder builder on tiny synthetic trees of both layouts.

Every frame is one flat grey level (frame i of a take: 20 + 30 * i), so after the centre crop
and resize each output frame is still flat and its level tells which source frame it was.
"""

import json
import os
import pathlib
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from vice_gan import labels
from vice_gan.datasets import video_folder
from vice_gan.datasets.face_crop import CorruptFrameError, DatasetLayoutError

SIDE = 32
OPTIONS = {"min_frames": 4, "crop": "center"}
REGEX = r"^(?P<subject>S\d+)_"


def frames(count: int) -> np.ndarray:
    levels = 20 + 30 * np.arange(count, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, SIDE, SIDE, 3)).copy()


def write_tiled(path: pathlib.Path, count: int, vertical: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tiled = np.concatenate(list(frames(count)), axis=0 if vertical else 1)
    Image.fromarray(tiled).save(path)


def levels(example: dict) -> list[int]:
    return [int(round(f.mean())) for f in example["frames"]]


def read_all(builder) -> dict[str, dict]:
    source = builder.as_data_source()["train"]
    out = {}
    for i in range(len(source)):
        ex = source[i]
        emotion = labels.ALL_LABELS[ex["emotion"]]
        out[f"{ex['subject_name'].decode()}/{emotion}/{ex['take_name'].decode()}"] = ex
    return out


@pytest.fixture
def mocogan_root(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "mocogan"
    write_tiled(root / "happiness/S01_a.png", 5)
    write_tiled(root / "happiness/S02_b.png", 4, vertical=True)
    write_tiled(root / "Anger/S01_c.png", 6)
    write_tiled(root / "neutral/S02_n.png", 4)
    write_tiled(root / "surprise/S01_short.png", 2)
    (root / "happiness/notes.txt").write_text("ignored")
    return root


@pytest.fixture
def plain_root(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "plain"
    take = root / "alice/anger/take1"
    take.mkdir(parents=True)
    for i, frame in enumerate(frames(6)):  # f1 .. f6 must sort 1, 2, ..., not 1, 10, 2
        Image.fromarray(frame).save(take / f"f{[1, 2, 3, 4, 5, 10][i]}.png")
    (root / "alice/happiness").mkdir(parents=True)
    iio.imwrite(root / "alice/happiness/clip.gif", frames(5), duration=50, loop=0)
    (root / "bob/neutral").mkdir(parents=True)
    iio.imwrite(root / "bob/neutral/t0.mp4", frames(4), fps=10, macro_block_size=1)
    short = root / "bob/fear/take1"
    short.mkdir(parents=True)
    for i, frame in enumerate(frames(2)):
        Image.fromarray(frame).save(short / f"{i}.png")
    return root


def test_mocogan_with_regex(mocogan_root, tmp_path):
    builder, report = video_folder.prepare(
        mocogan_root, tmp_path / "data", subject_regex=REGEX, **OPTIONS
    )
    examples = read_all(builder)
    assert sorted(examples) == [
        "S01/anger/S01_c",
        "S01/happiness/S01_a",
        "S02/happiness/S02_b",
        "S02/neutral/S02_n",
    ]
    assert levels(examples["S01/happiness/S01_a"]) == [20, 50, 80, 110, 140]
    assert levels(examples["S02/happiness/S02_b"]) == [20, 50, 80, 110]  # tiled vertically
    assert examples["S02/neutral/S02_n"]["emotion"] == labels.NEUTRAL_LABEL
    assert [examples[k]["subject"] for k in sorted(examples)] == [0, 0, 1, 1]
    for ex in examples.values():
        assert ex["frames"].shape == (ex["num_frames"], 64, 64, 3)
        assert ex["frames"].dtype == np.uint8
    assert report["layout"] == "mocogan"
    assert report["subjects"]["ids"] == {"S01": 0, "S02": 1}
    assert report["dropped"] == [{"take": "S01/surprise/S01_short", "reason": "short", "frames": 2}]
    assert report["ignored_files"] == 1
    assert report["frame_sizes"] == {"32x32": 4}
    assert report["frame_rates"] == {}


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_mocogan_with_subject_map(mocogan_root, tmp_path, kind):
    mapping = {
        "happiness/S01_a.png": "ann",
        "S02_b.png": "ben",
        "Anger/S01_c.png": "ann",
        "S02_n.png": "ben",
        "S01_short.png": "ann",
    }
    path = tmp_path / f"subjects.{kind}"
    if kind == "json":
        path.write_text(json.dumps(mapping))
    else:
        path.write_text("filename,subject\n" + "".join(f"{k},{v}\n" for k, v in mapping.items()))
    builder, report = video_folder.prepare(
        mocogan_root, tmp_path / "data", layout="mocogan", subject_map=str(path), **OPTIONS
    )
    assert builder.builder_config.name.startswith("mocogan-min4-center-subj-")
    assert report["subjects"]["ids"] == {"ann": 0, "ben": 1}
    assert report["takes"] == {"found": 5, "kept": 4}


def test_plain_frames_gif_and_mp4(plain_root, tmp_path):
    builder, report = video_folder.prepare(plain_root, tmp_path / "data", **OPTIONS)
    examples = read_all(builder)
    assert sorted(examples) == ["alice/anger/take1", "alice/happiness/clip", "bob/neutral/t0"]
    assert levels(examples["alice/anger/take1"]) == [20, 50, 80, 110, 140, 170]
    assert levels(examples["alice/happiness/clip"]) == [20, 50, 80, 110, 140]
    # H.264 is lossy; the levels still come out in order, within a few grey levels.
    np.testing.assert_allclose(levels(examples["bob/neutral/t0"]), [20, 50, 80, 110], atol=4)
    assert examples["bob/neutral/t0"]["subject"] == 1
    assert report["layout"] == "plain"
    assert report["frame_rates"] == {"20": 1, "10": 1}  # GIF 50 ms/frame, MP4 10 fps
    assert report["dropped"] == [{"take": "bob/fear/take1", "reason": "short", "frames": 2}]
    assert report["takes"] == {"found": 4, "kept": 3}


def test_corrupt_video(plain_root, tmp_path):
    bad = plain_root / "alice/happiness/clip.gif"
    bad.write_bytes(b"GIF89a broken")
    data_dir = tmp_path / "data"
    with pytest.raises(CorruptFrameError, match=r"clip\.gif.*skip_corrupt"):
        video_folder.prepare(plain_root, data_dir, **OPTIONS)
    assert not list(data_dir.glob("video_folder/*/*1.0.0*"))
    _, report = video_folder.prepare(plain_root, data_dir, skip_corrupt=True, **OPTIONS)
    assert report["takes"]["kept"] == 2
    assert report["dropped_counts"] == {"short": 1, "corrupt": 1}


def test_video_shorter_than_min_frames_dropped_after_decoding(plain_root, tmp_path):
    _, report = video_folder.prepare(plain_root, tmp_path / "data", min_frames=6, crop="center")
    assert report["takes"]["kept"] == 1
    assert {"take": "alice/happiness/clip", "reason": "short", "frames": 5} in report["dropped"]


def _tree(root: pathlib.Path, case: str) -> dict:
    if case == "empty":
        root.mkdir()
    elif case == "bad_category":
        write_tiled(root / "happiness/S01_a.png", 4)
        write_tiled(root / "happy/S01_b.png", 4)
        return {"layout": "mocogan", "subject_regex": REGEX}
    elif case == "mixed":
        write_tiled(root / "happiness/S01_a.png", 4)
        write_tiled(root / "alice/anger/take1/0.png", 4)
    elif case == "no_subjects":
        write_tiled(root / "happiness/S01_a.png", 4)
    elif case == "regex_mismatch":
        write_tiled(root / "happiness/x_a.png", 4)
        return {"subject_regex": REGEX}
    elif case == "plain_bad_category":
        write_tiled(root / "alice/joy/take1/0.png", 4)
    elif case == "plain_loose_image":
        write_tiled(root / "alice/anger/0.png", 4)
    return {}


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", r"root .*missing does not exist"),
        ("empty", r"root .*empty has no folders"),
        ("bad_category", r"happy/: not an emotion folder.*\nValid emotion folder names: anger,"),
        ("mixed", r"mixes emotion folders \(happiness\) with other folders \(alice\)"),
        ("no_subjects", r"no subject ids: give subject_map or subject_regex"),
        ("regex_mismatch", r"happiness/x_a.png: subject_regex .* does not match"),
        ("plain_bad_category", r"alice/joy/: not an emotion folder"),
        ("plain_loose_image", r"alice/anger/0.png: image outside a take folder"),
    ],
)
def test_layout_errors(tmp_path, case, message):
    root = tmp_path / case
    options = _tree(root, case)
    with pytest.raises(DatasetLayoutError, match=message) as err:
        video_folder.prepare(root, tmp_path / "data", **{**OPTIONS, **options})
    assert isinstance(err.value, ValueError)
    assert not list((tmp_path / "data").glob("video_folder/*/*1.0.0*"))


def test_option_errors(tmp_path):
    with pytest.raises(ValueError, match=r"named group \(\?P<subject>"):
        video_folder.make_config(subject_regex=r"(\d+)")
    with pytest.raises(ValueError, match="layout must be one of auto, mocogan, plain"):
        video_folder.make_config(layout="tiles")
    bad = tmp_path / "map.csv"
    bad.write_text("a.png,S1,extra\n")
    with pytest.raises(DatasetLayoutError, match="rows must be 'filename,subject'"):
        video_folder.load_subject_map(bad)


def test_split_tiled_and_natural_key():
    image = np.concatenate(list(frames(3)), axis=1)
    np.testing.assert_array_equal(video_folder.split_tiled(image), frames(3))
    np.testing.assert_array_equal(video_folder.split_tiled(image.transpose(1, 0, 2)), frames(3))
    with pytest.raises(ValueError, match="not a whole number"):
        video_folder.split_tiled(np.zeros((32, 80, 3), np.uint8))
    names = ["f10.png", "f2.png", "F1.png"]
    assert sorted(names, key=video_folder.natural_key) == ["F1.png", "f2.png", "f10.png"]
    assert video_folder.make_config() is video_folder.DEFAULT_CONFIG
    assert video_folder.make_config(config_name="mine", min_frames=8).name == "mine"


def test_cli_prints_report(mocogan_root, tmp_path):
    repo = pathlib.Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [
            sys.executable,
            str(repo / "data_prep/build_video_folder.py"),
            f"--root={mocogan_root}",
            f"--data_dir={tmp_path / 'd'}",
            f"--subject_regex={REGEX}",
            "--min_frames=4",
            "--crop=center",
            "--config_name=mine",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "video_folder: kept 4 of 5 takes, 2 of 2 subjects" in run.stdout
    assert "(config mine)" in run.stdout
