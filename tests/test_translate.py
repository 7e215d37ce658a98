"""`python -m vice_gan.translate`: output files, and one clear error for each user mistake.

The run directory is an untrained but complete GAN run (`make_untrained_run`: initial states
saved as checkpoints, as training would save them), so no training is needed.
"""

import dataclasses
import json
import os
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

from vice_gan import checkpointing, train
from vice_gan import config as config_lib
from vice_gan import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(
    dataset="synthetic_faces/small",
    ngf=4,
    ndf=4,
    video_batch=2,
    image_batch=2,
    video_length=13,
    ae_size="small",
    ae_width_divisor=8,
    ae_batch=4,
    ae_num_steps=1,
    num_steps=1,
    num_generate=2,
)


def make_untrained_run(root, **overrides) -> config_lib.Config:
    """An autoencoder and a GAN run directory holding freshly initialised states at step 1.

    Args:
      root: a folder; gets ae/, run/ (and tfds/ once data are loaded).
      overrides: Config fields replacing TINY's.
    """
    config = config_lib.Config(
        mode="all",
        workdir=str(root / "run"),
        ae_dir=str(root / "ae"),
        data_dir=str(root / "tfds"),
        **{**TINY, **overrides},
    )
    config_lib.validate(config)
    models = state_lib.build_models(config, axis_name=None)
    ae = state_lib.create_ae_state(config, models, state_lib.adam(config.ae_lr, config), 0)
    gan = state_lib.create_gan_state(
        config,
        models,
        state_lib.gan_optimizers(config),
        ae.params["encoder"],
        ae.batch_stats["encoder"],
        0,
    )
    for directory, stage, state in ((config.ae_dir, "ae", ae), (config.workdir, "gan", gan)):
        checkpointing.check_fingerprint(directory, config_lib.fingerprint_fields(config, stage))
        with checkpointing.open_manager(directory, 1) as manager:
            state = state.replace(step=np.int32(1))
            checkpointing.save(manager, 1, state, train._meta(config, stage), force=True)
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_untrained_run(tmp_path_factory.mktemp("translate"))


@pytest.fixture(scope="module")
def face(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "face.png"
    rng = np.random.default_rng(0)
    imageio.imwrite(path, rng.integers(0, 255, (90, 80, 3), dtype=np.uint8))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vice_gan.translate", *args],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_one_emotion_and_all_six(run, face, tmp_path):
    from vice_gan import translate

    out = tmp_path / "happy.gif"
    args = ["--checkpoint", run.workdir, "--input", str(face), "--emotion", "Happiness"]
    assert translate.main(args + ["--output", str(out)]) == 0
    frames = np.stack(imageio.mimread(out))
    assert frames.shape[:3] == (run.video_length, 64, 64)
    strip = tmp_path / "all.gif"
    assert translate.main(args[:-1] + ["all", "--output", str(strip)]) == 0
    grid = np.stack(imageio.mimread(strip))
    assert grid.shape[1:3] == (68, 7 * 66 + 2)  # input + six emotions, 2-pixel padding
    # The happiness column of the strip is the single-emotion clip (same --seed, same noise).
    column = 1 + 3  # input column, then anger, disgust, fear, happiness
    x = 2 + column * 66
    np.testing.assert_allclose(grid[:, 2:66, x : x + 64, :3], frames[..., :3], atol=12)
    assert sorted(os.listdir(tmp_path)) == ["all.gif", "happy.gif"]  # no temporary files


def test_mp4_output_and_relative_paths(run, face, tmp_path, monkeypatch):
    from vice_gan import translate

    monkeypatch.chdir(os.path.dirname(run.workdir))  # Orbax needs absolute paths: made inside
    out = tmp_path / "sad.mp4"
    argv = ["--checkpoint", os.path.basename(run.workdir), "--input", str(face)]
    assert translate.main(argv + ["--emotion", "sadness", "--output", str(out)]) == 0
    assert out.stat().st_size > 0


def _assert_clean_failure(result, message, output):
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not os.path.exists(output), "a failed translation must leave no output file"


@pytest.mark.parametrize(
    "emotion, message",
    [("joy", "--emotion='joy': expected one of anger"), ("neutral", "--emotion='neutral'")],
)
def test_unknown_emotion(run, face, tmp_path, emotion, message):
    out = tmp_path / "o.gif"
    result = _cli(
        "--checkpoint",
        run.workdir,
        "--input",
        str(face),
        "--emotion",
        emotion,
        "--output",
        str(out),
    )
    _assert_clean_failure(result, message, out)


def test_unreadable_input(run, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "o.gif"
    result = _cli(
        "--checkpoint", run.workdir, "--input", str(bad), "--emotion", "fear", "--output", str(out)
    )
    _assert_clean_failure(result, f"cannot read {bad} as a clip", out)
    missing = _cli(
        "--checkpoint", run.workdir, "--input", "/no/such.mp4", "--emotion", "fear",
        "--output", str(out),
    )  # fmt: skip
    _assert_clean_failure(missing, "no such file", out)


def test_wrong_directories(run, face, tmp_path):
    out = tmp_path / "o.gif"
    base = ["--input", str(face), "--emotion", "fear", "--output", str(out)]
    _assert_clean_failure(
        _cli("--checkpoint", str(tmp_path), *base), "is not a vice-gan run directory", out
    )
    _assert_clean_failure(_cli("--checkpoint", run.ae_dir, *base), "stage 'ae'", out)
    _assert_clean_failure(_cli("--checkpoint", "/no/such/run", *base), "no such directory", out)
    bad_ext = _cli("--checkpoint", run.workdir, *base[:-1], str(tmp_path / "o.avi"))
    _assert_clean_failure(bad_ext, "must end in .gif or .mp4", tmp_path / "o.avi")


def test_checkpoint_of_another_configuration(run, face, tmp_path):
    # The directory says ngf=8 while its checkpoint was written with ngf=4.
    other = tmp_path / "mixed"
    other.mkdir()
    os.symlink(os.path.join(run.workdir, "checkpoints"), other / "checkpoints")
    fields = config_lib.fingerprint_fields(dataclasses.replace(run, ngf=8), "gan")
    (other / checkpointing.FINGERPRINT_FILE).write_text(json.dumps(fields))
    out = tmp_path / "o.gif"
    result = _cli(
        "--checkpoint", str(other), "--input", str(face), "--emotion", "fear", "--output", str(out)
    )
    _assert_clean_failure(result, "differs from the directory's fingerprint.json", out)


# --- Face check (vice_gan/face_check.py) ------------------------------------------------------
@pytest.fixture(scope="module")
def checked_run(tmp_path_factory):
    """A run whose autoencoder directory holds a face-check reference (written per test)."""
    return make_untrained_run(tmp_path_factory.mktemp("checked"))


def _reference(config, threshold, ae_step=1):
    from vice_gan import face_check

    faces = {"max": threshold / 2, "q50": threshold / 4, "q90": 0.0, "q99": 0.0, "num_frames": 1}
    face_check.write_reference(
        config.ae_dir, {"threshold": threshold, "held_out_faces": faces, "ae_step": ae_step}
    )


def _score(config, path):
    from vice_gan import face_check
    from vice_gan.evaluation import evaluate

    clip = evaluate.read_clip(str(path), config.video_length, config.frame_stride)
    models, params, stats, _ = face_check.load_autoencoder(config)
    return float(np.median(face_check.score_frames(models, params, stats, clip[0])))


def test_non_face_refused_unless_skipped(checked_run, face, tmp_path, capsys):
    from vice_gan import translate

    score = _score(checked_run, face)
    _reference(checked_run, threshold=score / 2)  # this input scores above the threshold
    out = tmp_path / "o.gif"
    argv = ["--checkpoint", checked_run.workdir, "--input", str(face), "--emotion", "fear"]
    assert translate.main(argv + ["--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--input={face} does not look like a face this model was trained on" in err, err
    assert f"reconstruction {score:.3f}" in err and "pass --skip_face_check" in err
    assert "Traceback" not in err and not out.exists()
    assert translate.main(argv + ["--output", str(out), "--skip_face_check"]) == 0
    assert out.exists()


def test_face_check_passes_below_threshold_and_warns_without_reference(
    checked_run, face, tmp_path, capsys
):
    from vice_gan import face_check, translate

    argv = ["--checkpoint", checked_run.workdir, "--input", str(face), "--emotion", "fear"]
    _reference(checked_run, threshold=1.9)  # scores are <= 2: everything passes
    assert translate.main(argv + ["--output", str(tmp_path / "a.gif")]) == 0
    assert "warning" not in capsys.readouterr().err
    _reference(checked_run, threshold=1.9, ae_step=7)  # measured on another autoencoder step
    assert translate.main(argv + ["--output", str(tmp_path / "b.gif")]) == 0
    err = capsys.readouterr().err
    assert "warning: the input is not checked" in err and "step 7" in err, err
    os.remove(os.path.join(checked_run.ae_dir, face_check.REFERENCE_FILE))
    assert translate.main(argv + ["--output", str(tmp_path / "c.gif")]) == 0
    err = capsys.readouterr().err
    assert f"holds no {face_check.REFERENCE_FILE}" in err and "python -m vice_gan.face_check" in err
    assert sorted(os.listdir(tmp_path)) == ["a.gif", "b.gif", "c.gif"]


def test_face_check_score_separates_edges_from_flat_and_unrelated():
    """The score itself: identical edge fields 0, opposite 2, an image without edges 1."""
    import jax.numpy as jnp

    from vice_gan import face_check

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (3, 64, 64, 3)), jnp.float32)
    a = face_check.edge_fields(x)
    cos = lambda u, v: float((u * v).sum() / jnp.sqrt((u * u).sum() * (v * v).sum()))  # noqa: E731
    assert cos(a[0], a[0]) == pytest.approx(1.0)
    assert cos(a[0], face_check.edge_fields(-x)[0]) == pytest.approx(-1.0)
    assert abs(cos(a[0], a[1])) < 0.1  # unrelated noise images: edges uncorrelated
    assert float(jnp.abs(face_check.edge_fields(jnp.zeros((1, 64, 64, 3)))).max()) == 0.0
    assert face_check.threshold_from(0.6) == pytest.approx(0.8)


def test_reference_from_held_out_subjects(checked_run):
    from vice_gan import face_check
    from vice_gan.datasets import input_pipeline, splits

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8) for _ in range(10)]
    table = input_pipeline.VideoTable(
        frames=frames,
        subject=np.arange(10) // 2,
        emotion=np.arange(10) % 2,
        take=np.zeros(10),
        num_frames=np.full(10, 5),
        subject_names=[str(i) for i in range(5)],
    )
    split = splits.make_split_for_table(table, 0)
    held = face_check.held_out_frames(table, split, max_frames=4)
    test_rows = [i for i in range(10) if table.subject[i] in set(split.test_subjects)]
    assert len(held) == 4 and all(
        any((h == f).all() for i in test_rows for f in frames[i]) for h in held
    )
    models, params, stats, step = face_check.load_autoencoder(checked_run)
    ref = face_check.make_reference(
        models, params, stats, table, split, dataset="toy", ae_step=step
    )
    assert ref["ae_step"] == 1 and ref["held_out_faces"]["num_frames"] == 10
    assert ref["threshold"] == pytest.approx(
        face_check.threshold_from(ref["held_out_faces"]["max"])
    )
