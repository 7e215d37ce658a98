"""The entry point: clear errors for bad flags, and a tiny end-to-end run of every mode."""

import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest

from vice_gan import checkpointing, main
from vice_gan import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args: str, cwd: str = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vice_gan.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir=W", "--video_length=5"], "--video_length=5: must be an integer >= 13"),
        (["--workdir=W", "--mode=fly"], "--mode"),
        (["--video_length=16"], "--workdir is required"),
        (["--workdir=W", "--dataset=imagenet"], "--dataset='imagenet'"),
        (["--workdir=W", "--lr=0"], "zero learning rate"),
        (["--workdir=W", "--beta1=1.5"], "--beta1=1.5"),
        (["--workdir=W", "--ngf=0"], "--ngf=0"),
        (["--workdir=W", "--process_id=1"], "go together"),
        (["--workdir=W", "--generate_input=/no/such/clip.gif"], "no such file"),
        (["--workdir=W", "--flagfile=/no/such.flags"], "such.flags"),
        (["--workdir=W", "stray_argument"], "unexpected arguments"),
    ],
)
def test_bad_flags_one_clear_message_no_output(tmp_path, args, message):
    result = _cli(*[a.replace("W", str(tmp_path / "run")) for a in args])
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists(), "a rejected command must not create its workdir"


def test_every_experiment_flagfile_parses_and_validates(tmp_path, monkeypatch):
    from absl import flags

    monkeypatch.chdir(REPO)  # flagfiles include each other by repo-relative path
    paths = sorted(glob.glob(os.path.join(REPO, "experiments", "*.flags")))
    assert len(paths) >= 10  # quickstart, paper, and the eight thesis variants
    for path in paths:
        try:
            flags.FLAGS(["prog", f"--flagfile={path}", f"--workdir={tmp_path}"])
            config_lib.validate(config_lib.from_flags(flags.FLAGS))
        finally:
            flags.FLAGS.unparse_flags()


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
    ae_num_steps=3,
    num_steps=3,
    checkpoint_every=2,
    sample_every=2,
    log_every=1,
    num_generate=2,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    config = config_lib.Config(
        mode="all",
        workdir=str(root / "run"),
        ae_dir=str(root / "run/ae"),
        data_dir=str(root / "tfds"),
        **TINY,
    )
    config_lib.validate(config)
    main.run(config)
    return config


def test_end_to_end_writes_every_output(tiny_run):
    w = tiny_run.workdir
    assert sorted(os.listdir(os.path.join(w, "checkpoints")))[-1] == "3"
    assert os.listdir(os.path.join(tiny_run.ae_dir, "checkpoints"))
    assert glob.glob(os.path.join(w, "logs", "events.out.tfevents.*"))
    lines = [json.loads(x) for x in open(os.path.join(w, "logs", "metrics.jsonl"))]
    assert {"train/d_image", "train/g_content", "train/steps_per_sec"} <= set(lines[-1])
    assert os.path.exists(os.path.join(w, "samples", "step_0000002.gif"))
    metrics = json.load(open(os.path.join(w, "metrics.json")))
    assert metrics["condition"] == "seen" and metrics["step"] == 3
    for name in ("ssim", "mse", "acd_encoder", "acd_encoder_real", "cas_m", "cas_m_real"):
        entry = metrics["metrics"][name]
        assert entry["num_clips"] > 0 and entry["definition"]
        assert entry["value"] == entry["value"], f"{name} is NaN"
    generated = glob.glob(os.path.join(w, "generate", "*"))
    assert {os.path.splitext(p)[1] for p in generated} == {".gif", ".mp4", ".npz"}
    assert glob.glob(os.path.join(w, "split_*.json"))


def test_rerun_resumes_and_does_nothing(tiny_run, caplog):
    import logging

    from absl import logging as absl_logging

    from vice_gan import train

    absl_logging.set_verbosity(absl_logging.INFO)  # flag parsing elsewhere may have reset it
    caplog.set_level(logging.INFO)
    state = train.train_gan(dataclasses.replace(tiny_run, mode="train"))
    assert int(state.step) == 3
    assert "already trained" in caplog.text


def test_workdir_of_other_configuration_refused(tiny_run):
    from vice_gan import train

    with pytest.raises(checkpointing.CheckpointError, match="--ngf"):
        train.train_gan(dataclasses.replace(tiny_run, ngf=8))


def test_generate_from_a_clip_file(tiny_run, tmp_path):
    import numpy as np

    from vice_gan.evaluation import evaluate

    clip = np.random.default_rng(0).integers(0, 255, (30, 80, 80, 3), dtype=np.uint8)
    np.save(tmp_path / "face.npy", clip)
    config = dataclasses.replace(
        tiny_run, mode="generate", generate_input=str(tmp_path / "face.npy")
    )
    paths = evaluate.generate_samples(config)
    assert sorted(os.path.basename(p) for p in paths) == ["face.gif", "face.mp4", "face.npz"]
    arrays = np.load(paths[-1])
    assert arrays["generated"].shape == (1, 6, 13, 64, 64, 3)


def test_compilation_cache_flag_keeps_the_programs(tiny_run, tmp_path):
    # --compilation_cache_dir reaches JAX: the command's compiled programs land in that folder
    # (every one: the threshold is 0 here), whatever JAX_COMPILATION_CACHE_DIR says.
    import numpy as np

    clip = np.random.default_rng(1).integers(0, 255, (30, 80, 80, 3), dtype=np.uint8)
    np.save(tmp_path / "face.npy", clip)
    flags = [f"--{k}={v}" for k, v in TINY.items()]
    result = _cli(
        *flags,
        "--mode=generate",
        f"--workdir={tiny_run.workdir}",
        f"--ae_dir={tiny_run.ae_dir}",
        f"--generate_input={tmp_path / 'face.npy'}",
        f"--compilation_cache_dir={tmp_path / 'cache'}",
        env={"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(name.endswith("-cache") for name in os.listdir(tmp_path / "cache"))


def test_orbax_routine_logging_quiet_at_default_verbosity():
    # Orbax's per-save INFO lines and its read-only-manager warnings are dropped at
    # --verbosity=0; its other warnings and our own INFO lines pass; --verbosity=1 keeps all.
    import logging

    from absl import logging as absl_logging

    def record(path, level, msg):
        return logging.LogRecord("absl", level, path, 1, msg, None, None)

    orbax = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
    quiet = main._NoLibraryTracebacks()
    old = absl_logging.get_verbosity()
    try:
        absl_logging.set_verbosity(absl_logging.INFO)
        assert not quiet.filter(record(orbax, logging.INFO, "Saving checkpoint"))
        assert not quiet.filter(record(orbax, logging.WARNING, "Given directory is read only=x"))
        assert quiet.filter(record(orbax, logging.WARNING, "Something went wrong"))
        assert quiet.filter(record("/repo/vice_gan/train.py", logging.INFO, "[gan] step 1"))
        absl_logging.set_verbosity(1)
        assert quiet.filter(record(orbax, logging.INFO, "Saving checkpoint"))
    finally:
        absl_logging.set_verbosity(old)
