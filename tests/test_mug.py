"""Tests of the MUG builder and the face crop it shares with video_folder, on a miniature tree.

MUG itself is licensed and absent, so the tests write a tiny tree in MUG's exact layout
(`subjects3/<subject>/[session<N>/]<emotion>/take<NNN>[suffix]/img_NNNN.jpg`, 80x60 JPEGs)
with a session subject, a suffixed take, short takes and, where needed, a corrupt frame.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vice_gan import labels
from vice_gan.datasets import face_crop, mug, takes
from vice_gan.datasets.face_crop import Box, CorruptFrameError, DatasetLayoutError

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "fer_mini_xception_golden.npz"
WIDTH, HEIGHT = 80, 60

# (take folder under subjects3, frame count). min_frames=4 in the tests drops the 2/3-frame
# takes; subject 004 then has no take left, so the kept subjects are 001, 002, 003.
TREE = [
    ("001/anger/take000", 5),
    ("001/anger/take001end", 4),
    ("001/happiness/take000", 6),
    ("001/neutral/take000", 4),
    ("001/sadness/take000", 2),
    ("002/session1/anger/take000", 4),
    ("002/session2/anger/take000", 5),
    ("002/session1/neutral/take000", 4),
    ("003/fear/take000", 4),
    ("003/surprise/take000", 3),
    ("004/disgust/take000", 2),
]
OPTIONS = {"min_frames": 4, "crop": "center"}


def frame(seed: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Grey frame with red side bands that a centred square crop of a wide frame removes."""
    image = np.full((height, width, 3), 40 + 10 * (seed % 16), np.uint8)
    band = (width - height) // 2
    image[:, :band] = image[:, width - band :] = (255, 0, 0)
    return image


def write_take(folder: pathlib.Path, count: int, seed: int = 0, **kwargs) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(frame(seed + i, **kwargs)).save(folder / f"img_{i:04d}.jpg", quality=95)


@pytest.fixture
def mug_root(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "mug_download"
    for seed, (take, count) in enumerate(TREE):
        write_take(root / "subjects3" / take, count, seed)
    # Files the scan must ignore rather than trip over.
    (root / "subjects3" / "readme.txt").write_text("MUG")
    (root / "subjects3/001/anger/take000/Thumbs.db").write_bytes(b"\0")
    return root


def read_all(builder) -> dict[str, dict]:
    source = builder.as_data_source()["train"]
    examples = [source[i] for i in range(len(source))]
    return {
        f"{ex['subject_name'].decode()}/{ex['take_name'].decode()}/{ex['emotion']}": ex
        for ex in examples
    }


def test_build_counts_ids_and_report(mug_root, tmp_path):
    builder, report = mug.prepare(mug_root, tmp_path / "data", **OPTIONS)
    assert builder.builder_config.name == "min4-center"
    examples = read_all(builder)
    anger, neutral = labels.emotion_index("anger"), labels.NEUTRAL_LABEL
    assert sorted(examples) == sorted(
        [
            f"001/take000/{anger}",
            f"001/take001end/{anger}",
            f"001/take000/{labels.emotion_index('happiness')}",
            f"001/take000/{neutral}",
            f"002/session1/take000/{anger}",
            f"002/session2/take000/{anger}",
            f"002/session1/take000/{neutral}",
            f"003/take000/{labels.emotion_index('fear')}",
        ]
    )
    ex = examples[f"001/take001end/{anger}"]
    assert (ex["subject"], ex["take"], ex["num_frames"]) == (0, 1, 4)
    assert examples[f"002/session2/take000/{anger}"]["take"] == 1
    assert examples[f"002/session1/take000/{neutral}"]["subject"] == 1
    assert examples[f"003/take000/{labels.emotion_index('fear')}"]["subject"] == 2
    for ex in examples.values():
        assert ex["frames"].dtype == np.uint8
        assert ex["frames"].shape == (ex["num_frames"], 64, 64, 3)
        # The centred square of an 80x60 frame excludes the red side bands (the outermost
        # columns may take a tint from JPEG chroma blocks and the Lanczos support).
        red = ex["frames"][..., 0].astype(int) - ex["frames"][..., 2]
        assert np.abs(red[..., 2:-2]).max() < 20

    assert report == takes.load_report(builder.data_dir)
    assert report["subjects"] == {
        "found": 4,
        "kept": 3,
        "ids": {"001": 0, "002": 1, "003": 2},
        "without_kept_takes": ["004"],
    }
    assert report["takes"] == {"found": 11, "kept": 8}
    assert report["per_emotion"]["anger"] == {"takes": 4, "subjects": 2}
    assert report["per_emotion"]["neutral"] == {"takes": 2, "subjects": 2}
    assert report["dropped_counts"] == {"short": 3}
    assert {d["take"]: d["frames"] for d in report["dropped"]} == {
        "001/sadness/take000": 2,
        "003/surprise/take000": 3,
        "004/disgust/take000": 2,
    }
    assert report["suffix_counts"] == {"end": 1}
    assert report["ignored_files"] == 2
    assert report["frame_sizes"] == {"80x60": 8}
    assert report["face_box"] == {"center": 8}
    assert report["options"]["crop_used"] == "center"

    # The same options, given as a config name (as in --dataset=mug/min4-center), read back.
    again = mug.Mug(data_dir=str(tmp_path / "data"), config="min4-center")
    assert again.is_prepared() and len(again.as_data_source()["train"]) == 8


def test_drop_suffixes(mug_root, tmp_path):
    builder, report = mug.prepare(mug_root, tmp_path / "data", drop_suffixes=["end"], **OPTIONS)
    assert builder.builder_config.name == "min4-drop-end-center"
    assert report["takes"]["kept"] == 7
    assert report["dropped_counts"] == {"short": 3, "suffix": 1}


def test_default_min_frames_drops_short_take(tmp_path):
    root = tmp_path / "mug"
    write_take(root / "subjects3/001/anger/take000", 64, width=16, height=12)
    write_take(root / "subjects3/001/anger/take001", 63, width=16, height=12)
    builder, report = mug.prepare(root, tmp_path / "data")
    assert builder.builder_config.name == "default"
    assert report["takes"] == {"found": 2, "kept": 1}
    assert report["dropped"] == [{"take": "001/anger/take001", "reason": "short", "frames": 63}]
    assert len(builder.as_data_source()["train"]) == 1


def test_corrupt_frame_fails_whole_build(mug_root, tmp_path):
    bad = mug_root / "subjects3/003/fear/take000/img_0002.jpg"
    bad.write_bytes(b"not a jpeg")
    data_dir = tmp_path / "data"
    with pytest.raises(CorruptFrameError, match=r"img_0002\.jpg.*skip_corrupt") as err:
        mug.prepare(mug_root, data_dir, **OPTIONS)
    assert err.value.path == str(bad)
    # 003/fear is the last take, so 7 examples had been generated when the build failed.
    # TFDS built into an incomplete.* folder and removed it: no half-built data set remains.
    assert not list(data_dir.glob("mug/*/*1.0.0*"))
    assert not mug.Mug(data_dir=str(data_dir), **OPTIONS).is_prepared()

    builder, report = mug.prepare(mug_root, data_dir, skip_corrupt=True, **OPTIONS)
    assert len(builder.as_data_source()["train"]) == 7
    assert report["dropped_counts"] == {"short": 3, "corrupt": 1}
    corrupt = [d for d in report["dropped"] if d["reason"] == "corrupt"]
    assert corrupt[0]["take"] == "003/fear/take000" and corrupt[0]["file"] == str(bad)
    assert "003" in report["subjects"]["without_kept_takes"]
    assert [p.name for p in data_dir.glob("mug/*/*1.0.0*")] == ["1.0.0"]


def _layout(root: pathlib.Path, case: str) -> None:
    if case == "empty":
        root.mkdir()
    elif case == "no_subjects3":
        write_take(root / "videos/001/anger/take000", 1)
    elif case == "bad_emotion":
        write_take(root / "subjects3/001/joy/take000", 1)
    elif case == "bad_subject":
        write_take(root / "subjects3/alice/anger/take000", 1)
    elif case == "frames_without_take":
        write_take(root / "subjects3/001/anger", 1)
    elif case == "bad_take":
        write_take(root / "subjects3/001/anger/clip1", 1)
    elif case == "no_frames":
        (root / "subjects3/001/anger/take000").mkdir(parents=True)
        (root / "subjects3/001/anger/take000/frame1.png").write_bytes(b"")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", r"manual_dir .*missing does not exist"),
        ("empty", r"manual_dir .*empty is empty"),
        ("no_subjects3", r"has no 'subjects3' folder \(found: videos/\)"),
        ("bad_emotion", r"subjects3/001/joy: not an emotion folder \(anger, disgust"),
        ("bad_subject", r"subjects3/alice: not a 3-digit subject folder"),
        ("frames_without_take", r"subjects3/001/anger/img_0000.jpg: frame outside a take"),
        ("bad_take", r"subjects3/001/anger/clip1: not a take<NNN>\[suffix\] folder"),
        ("no_frames", r"take000: no img_NNNN.jpg frames \(found: frame1.png\)"),
    ],
)
def test_layout_errors(tmp_path, case, message):
    root = tmp_path / case
    _layout(root, case)
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetLayoutError, match=message) as err:
        mug.prepare(root, data_dir, **OPTIONS)
    assert isinstance(err.value, ValueError)
    assert "Expected the MUG database as distributed" in str(err.value)
    assert not list(data_dir.glob("mug/*/*1.0.0*"))


def test_scan_reports_frame_number_gaps(tmp_path):
    take = tmp_path / "subjects3/001/anger/take000"
    write_take(take, 3)
    (take / "img_0001.jpg").unlink()
    specs, facts = mug.scan_layout(tmp_path)
    assert [p.name for p in specs[0].frame_paths] == ["img_0000.jpg", "img_0002.jpg"]
    assert facts["frame_number_gaps"] == ["001/anger/take000"]


def test_names_and_configs():
    assert mug.parse_take_name("take001end") == (1, "end")
    assert mug.parse_take_name("take000") == (0, "")
    assert mug.parse_take_name("clip1") is None
    config = mug.make_config(min_frames=8, drop_suffixes=("*",), skip_corrupt=True, crop="haar")
    assert config.name == "min8-drop-suffixed-skipcorrupt-haar"
    assert mug.config_from_name(config.name).options() == config.options()
    assert mug.make_config() is mug.DEFAULT_CONFIG
    with pytest.raises(ValueError, match="min_frames"):
        mug.make_config(min_frames=0)
    with pytest.raises(ValueError, match="either config or option"):
        mug.Mug(config="default", min_frames=3)


def test_plan_takes_ids():
    specs = [
        takes.TakeSpec(s, e, t, pathlib.Path(t), "frames", num_frames=n)
        for s, e, t, n in [("b", "anger", "t1", 9), ("b", "anger", "t0", 9), ("a", "fear", "x", 1)]
    ]
    planned, dropped = takes.plan_takes(specs, min_frames=2)
    assert [(p.spec.take_name, p.subject, p.take) for p in planned] == [("t0", 0, 0), ("t1", 0, 1)]
    assert dropped == [{"take": "a/fear/x", "reason": "short", "frames": 1}]


def test_boxes():
    assert face_crop.center_square_box(60, 80) == Box(0, 10, 60)
    assert face_crop.center_square_box(90, 40) == Box(25, 0, 40)
    # Shifted inside the frame, and shrunk to it.
    assert face_crop.square_box_around(5, 75, 20, 60, 80) == Box(0, 60, 20)
    assert face_crop.square_box_around(30, 40, 500, 60, 80) == Box(0, 10, 60)
    dets = [(10, 20, 20, 20), (12, 22, 20, 20), (50, 50, 5, 5)]  # one outlier
    assert face_crop.box_from_detections(dets, 100, 100, scale=1.0) == Box(12, 22, 20)
    assert face_crop.box_from_detections([], 100, 100) is None


def test_choose_box_scales_detections_and_falls_back():
    samples = [np.zeros((30, 40, 3), np.uint8)] * 3  # half-size copies of 60x80 frames
    box, how = face_crop.choose_box(samples, (60, 80), "haar", detector=lambda f: (5, 10, 10, 10))
    assert how == "haar" and box == Box(6, 16, 28)  # (10, 20, 20, 20) x 1.4 around (20, 30)
    box, how = face_crop.choose_box(samples, (60, 80), "haar", detector=lambda f: None)
    assert (box, how) == (Box(0, 10, 60), "center_fallback")
    assert face_crop.choose_box(samples, (60, 80), "center")[1] == "center"


def test_crop_resize_on_reduced_decode_matches_full():
    # A linear ramp: Lanczos reproduces it, so each output pixel shows where it was sampled.
    yy, xx = np.mgrid[0:128, 0:128]
    full = np.stack([xx * 2, yy * 2, np.full_like(xx, 100)], -1).astype(np.uint8)
    half = full.reshape(64, 2, 64, 2, 3).mean((1, 3)).round().astype(np.uint8)
    box = Box(top=32, left=40, side=64)
    a = face_crop.crop_resize(full, box, 8)
    b = face_crop.crop_resize(half, box, 8, full_hw=(128, 128))
    centres = (np.arange(8) + 0.5) * 8 - 0.5  # output pixel centres in box pixels
    assert a.shape == (8, 8, 3) and a.dtype == np.uint8
    np.testing.assert_allclose(a[0, :, 0], 2 * (40 + centres), atol=1.5)
    np.testing.assert_allclose(a[:, 0, 1], 2 * (32 + centres), atol=1.5)
    np.testing.assert_allclose(a, b, atol=2)


def test_decode_image(tmp_path):
    image = np.zeros((256, 320, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "a.jpg")
    pixels, hw = face_crop.decode_image(tmp_path / "a.jpg", min_short_side=64)
    assert hw == (256, 320) and pixels.shape == (64, 80, 3)  # JPEG decoded at 1/4 scale
    Image.fromarray(image[..., 0]).save(tmp_path / "grey.png")
    assert face_crop.decode_image(tmp_path / "grey.png")[0].shape == (256, 320, 3)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFrameError, match=r"cut\.jpg"):
        face_crop.decode_image(tmp_path / "cut.jpg")


def _face_canvas() -> np.ndarray:
    """A real face (the golden FER fixture's widest astronaut crop) on a plain 400x500 canvas."""
    gray = np.round((np.load(FIXTURE)["inputs"][19, ..., 0] / 2 + 0.5) * 255).astype(np.uint8)
    canvas = np.full((400, 500), 120, np.uint8)
    canvas[50:306, 150:406] = np.asarray(Image.fromarray(gray).resize((256, 256), Image.BICUBIC))
    return np.repeat(canvas[..., None], 3, axis=-1)


@pytest.mark.skipif(
    not (face_crop.haar_available() and FIXTURE.exists()), reason="needs OpenCV and fixture"
)
def test_haar_finds_real_face_in_build(tmp_path):
    y, x, h, w = face_crop.detect_face_haar(_face_canvas())
    assert 150 < y + h / 2 < 200 and 250 < x + w / 2 < 310 and 90 < h < 180
    assert face_crop.detect_face_haar(np.full((200, 200, 3), 120, np.uint8)) is None
    take = tmp_path / "mug/subjects3/001/happiness/take000"
    take.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_face_canvas()).save(take / f"img_{i:04d}.jpg")
    _, report = mug.prepare(tmp_path / "mug", tmp_path / "data", min_frames=3, crop="haar")
    assert report["face_box"] == {"haar": 1}
    assert report["frame_sizes"] == {"500x400": 1}


def test_cli_prints_report(mug_root, tmp_path):
    repo = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    cli = [sys.executable, str(repo / "data_prep/build_mug.py"), f"--data_dir={tmp_path / 'd'}"]
    run = subprocess.run(
        cli + [f"--manual_dir={mug_root}", "--min_frames=4", "--crop=center"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert '"suffix_counts": {\n    "end": 1\n  }' in run.stdout
    assert "mug: kept 8 of 11 takes, 3 of 4 subjects" in run.stdout
    assert "mug/min4-center/1.0.0" in run.stdout
    run = subprocess.run(
        cli + [f"--manual_dir={tmp_path / 'nowhere'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 1
    assert "error: MUG manual_dir" in run.stderr and "does not exist" in run.stderr


def test_crop_falls_back_without_opencv(monkeypatch):
    monkeypatch.setattr(face_crop, "haar_available", lambda: False)
    assert face_crop.resolve_crop("auto") == "center"
    with pytest.raises(ValueError, match="needs OpenCV.*opencv-python-headless"):
        face_crop.resolve_crop("haar")
    with pytest.raises(ValueError, match="unknown crop 'mtcnn'"):
        face_crop.resolve_crop("mtcnn")
