"""Bad input: every case gets one clear message, a non-zero exit and no partial output.

Flag errors run the real command line (a subprocess: absl parses before any import of JAX, so
each costs a fraction of a second). Errors about the environment, data and checkpoints run
`main.main` in this process after parsing the flags, which is what the command line does after
parsing; each checks the exit status, the one 'vice_gan: error:' line, and that nothing was
left behind (the file tree of the test's folder is the same before and after).
"""

import contextlib
import errno
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from PIL import Image

from vice_gan import checkpointing, main
from vice_gan import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--ngf=4",
    "--ndf=4",
    "--video_batch=2",
    "--image_batch=2",
    "--video_length=13",
    "--ae_size=small",
    "--ae_width_divisor=8",
    "--ae_batch=4",
    "--ae_num_steps=3",
    "--num_steps=2",
    "--sample_every=0",
    "--log_every=1",
    "--checkpoint_every=1",
]


def tree(root) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs
    }


# --- Flags: rejected by absl or by config.validate before anything runs ---------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--foo=1"], "Unknown command line flag 'foo'"),
        (["--num_step=5"], "Did you mean: num_steps"),
        (["--ngf=abc"], "--ngf=abc"),
        (["--reuse_fakes=maybe"], "--reuse_fakes=maybe"),
        (["--lr=-1"], "--lr=-1.0: must be a finite number >= 0"),
        (["--ae_lr=nan"], "--ae_lr=nan: must be a finite number >= 0"),
        (["--beta2=1"], "--beta2=1.0: must be in [0, 1)"),
        (["--keep_checkpoints=0"], "--keep_checkpoints=0: must be an integer >= 1"),
        (["--checkpoint_every=0"], "--checkpoint_every=0: must be an integer >= 1"),
        (["--num_steps=-5"], "--num_steps=-5: must be an integer >= 0"),
        (["--seed=-1"], "--seed=-1: must be an integer >= 0"),
        (["--ae_type=vae", "--ae_kl_weight=0"], "--ae_type=vae with --ae_kl_weight=0"),
        (["--ae_dir=W"], "is the --workdir"),
        (
            ["--coordinator_address=localhost:1", "--num_processes=2", "--process_id=2"],
            "--process_id=2: must be in [0, --num_processes=2)",
        ),
    ],
)
def test_bad_flag(tmp_path, args, message):
    workdir = str(tmp_path / "run")
    args = [a.replace("=W", f"={workdir}") for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "vice_gan.main", f"--workdir={workdir}", *args],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not os.listdir(tmp_path), "a rejected command must not create anything"


# --- Environment, data, checkpoints: main.main in this process ----------------------------------
def run_main(tmp_path, *args, same_tree: bool = True) -> str:
    """Runs the entry point as the CLI would; returns its error line.

    Asserts exit code 1, a single 'vice_gan: error:' line, no traceback and (`same_tree`) that
    the test's folder holds exactly what it held before.
    """
    before = tree(tmp_path)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["vice_gan.main", *TINY, *args])
    err = io.StringIO()
    try:
        with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(err):
            main.main(["vice_gan.main"])
    finally:
        flags.FLAGS.unparse_flags()
    text = err.getvalue()
    assert info.value.code == 1
    lines = [x for x in text.splitlines() if x.startswith("vice_gan: error:")]
    assert len(lines) == 1, text[-2000:]
    assert "Traceback" not in text
    if same_tree:
        assert tree(tmp_path) == before, f"left behind: {sorted(tree(tmp_path) - before)}"
    return text[text.index("vice_gan: error:") :]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The tiny synthetic data set, built once per session (shared with test_resume)."""
    return str(tmp_path_factory.getbasetemp() / "tfds_shared")


def test_workdir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    error = run_main(tmp_path, f"--workdir={tmp_path}/file/run", f"--data_dir={tmp_path}/d")
    assert f"--workdir={tmp_path}/file/run: {tmp_path}/file is not a directory" in error


def test_read_only_workdir(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing: use a read-only mount
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(target)]
        )
        if mounted.returncode:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        target.chmod(0o500)
    try:
        error = run_main(tmp_path, f"--workdir={target}/run", f"--data_dir={tmp_path}/d")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(target)], check=True)
        else:
            target.chmod(0o700)
    assert f"--workdir={target}/run: {target} is not writable" in error


def test_batch_not_divisible_by_devices(tmp_path):
    error = run_main(
        tmp_path, "--mode=train", f"--workdir={tmp_path}/w", "--video_batch=3", "--image_batch=3"
    )
    assert "--video_batch=3 does not divide over the 2 devices" in error


def test_train_without_autoencoder(tmp_path):
    error = run_main(tmp_path, "--mode=train", f"--workdir={tmp_path}/w", f"--data_dir={tmp_path}")
    assert f"no autoencoder checkpoint in --ae_dir={tmp_path}/w/ae: run --mode=train_ae" in error


@pytest.mark.parametrize("mode", ["evaluate", "generate"])
def test_evaluate_or_generate_without_gan_checkpoint(tmp_path, mode):
    os.makedirs(tmp_path / "ae" / "checkpoints" / "3")  # an autoencoder is there
    error = run_main(
        tmp_path, f"--mode={mode}", f"--workdir={tmp_path}/w", f"--ae_dir={tmp_path}/ae"
    )
    assert f"no GAN checkpoint in --workdir={tmp_path}/w: run --mode=train first" in error


@pytest.mark.parametrize("mode", ["train_ae", "train", "evaluate", "generate", "all"])
def test_workdir_of_another_configuration_refused_in_every_mode(tmp_path, mode):
    workdir, ae_dir = str(tmp_path / "w"), str(tmp_path / "w" / "ae")
    other = config_lib.Config(workdir=workdir, ae_dir=ae_dir, ngf=8, ae_width_divisor=4)
    if mode == "train_ae":  # writes the autoencoder's directory only
        stage, directory, flag = "ae", ae_dir, "--ae_width_divisor: directory has 4, this run has 8"
    else:
        stage, directory, flag = "gan", workdir, "--ngf: directory has 8, this run has 4"
    checkpointing.check_fingerprint(directory, config_lib.fingerprint_fields(other, stage))
    error = run_main(tmp_path, f"--mode={mode}", f"--workdir={workdir}")
    assert f"{directory} holds a run of another configuration" in error and flag in error
    assert os.path.join(directory, checkpointing.FINGERPRINT_FILE) in error


def test_corrupt_fingerprint_file(tmp_path):
    os.makedirs(tmp_path / "w")
    (tmp_path / "w" / checkpointing.FINGERPRINT_FILE).write_text("{not json")
    error = run_main(tmp_path, "--mode=train", f"--workdir={tmp_path}/w")
    assert f"{tmp_path}/w/{checkpointing.FINGERPRINT_FILE} is unreadable" in error


# --- Data --------------------------------------------------------------------------------------
def _frames(folder, count, size=80, sizes=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        side = sizes[i] if sizes else size
        pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def _plain_layout(root, count=70, **kw):
    for subject in range(5):
        for emotion in ("anger", "happiness", "neutral"):
            _frames(root / f"s{subject}" / emotion / "take1", count, **kw)
    return root


def run_data(tmp_path, dataset, manual_dir, *extra):
    return run_main(
        tmp_path,
        "--mode=train_ae",
        f"--workdir={tmp_path}/w",
        f"--data_dir={tmp_path}/tfds",
        f"--dataset={dataset}",
        f"--manual_dir={manual_dir}",
        *extra,
    )


def test_missing_data_directory(tmp_path):
    error = run_data(tmp_path, "mug", "/no/such/mug")
    assert "MUG manual_dir /no/such/mug does not exist" in error and "Expected the MUG" in error


def test_malformed_data_directory(tmp_path):
    os.makedirs(tmp_path / "videos" / "happiness")
    os.makedirs(tmp_path / "videos" / "alice")
    error = run_data(tmp_path, "video_folder", tmp_path / "videos")
    assert "mixes emotion folders (happiness) with other folders (alice)" in error


def test_corrupt_frame(tmp_path):
    root = _plain_layout(tmp_path / "videos")
    (root / "s0" / "anger" / "take1" / "001.png").write_bytes(b"\x89PNG not really")
    error = run_data(tmp_path, "video_folder", root)
    assert f"cannot read {root}/s0/anger/take1/001.png" in error and "skip_corrupt" in error


def test_frame_size_changes_within_a_video(tmp_path):
    root = _plain_layout(tmp_path / "videos", sizes=[80] * 35 + [96] * 35)
    error = run_data(tmp_path, "video_folder", root)
    assert "frame size 96x96 differs from the take's 80x80" in error


def test_videos_too_short_for_the_builder(tmp_path):
    root = _plain_layout(tmp_path / "videos", count=10)
    error = run_data(tmp_path, "video_folder", root)
    assert "none of the 15 takes found is kept (min_frames=64)" in error


def test_videos_too_short_for_the_clip(tmp_path, data_dir):
    error = run_main(
        tmp_path,
        "--mode=train_ae",
        f"--workdir={tmp_path}/w",
        f"--data_dir={data_dir}",
        "--dataset=synthetic_faces/small",
        "--video_length=60",
    )
    assert "a clip of --video_length=60 at --frame_stride=2 spans 119 frames" in error


def test_unknown_dataset_config(tmp_path):
    error = run_data(tmp_path, "synthetic_faces/huge", tmp_path)
    assert "BuilderConfig huge not found" in error


# --- Identity clips for --mode=generate (checked before any work) -------------------------------
def _generate(tmp_path, clip_path):
    os.makedirs(tmp_path / "w" / "ae" / "checkpoints" / "3")
    os.makedirs(tmp_path / "w" / "checkpoints" / "2")
    return run_main(
        tmp_path, "--mode=generate", f"--workdir={tmp_path}/w", f"--generate_input={clip_path}"
    )


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("clip.npy", b"not an array", "cannot read"),
        ("clip.npy", np.zeros((30, 64, 64), np.uint8), "expected uint8 frames [T, H, W, 3]"),
        ("clip.npy", np.zeros((30, 64, 64, 3), np.float32), "expected uint8 frames"),
        ("clip.npy", np.zeros((10, 64, 64, 3), np.uint8), "10 frames, a clip of 13"),
        ("clip.gif", b"GIF89a broken", "cannot read"),
    ],
    ids=["garbage", "grey_no_channels", "float_pixels", "too_short", "broken_gif"],
)
def test_unusable_generate_input(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    error = _generate(tmp_path, path)
    assert str(path) in error and message in error, error


# --- Full disk while a checkpoint is written ----------------------------------------------------
def test_disk_full_during_checkpoint(tmp_path, data_dir, monkeypatch):
    """ENOSPC from Orbax's writer, in its background thread, while checkpoint 2 is written:
    one message naming the checkpoint, the half-written one removed, checkpoint 1 intact."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    save = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def full_disk(self, x, directory):
        if os.path.basename(os.path.dirname(os.fspath(directory))).startswith("2."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return await save(self, x, directory)

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full_disk)
    ae = tmp_path / "w" / "ae"
    error = run_main(
        tmp_path,
        "--mode=train_ae",
        f"--workdir={tmp_path}/w",
        f"--data_dir={data_dir}",
        "--dataset=synthetic_faces/small",
        same_tree=False,
    )
    assert f"could not write checkpoint 2 under {ae}/checkpoints" in error
    assert "No space left on device" in error and "The disk is full" in error
    assert "complete checkpoints: [1]" in error
    assert checkpointing.all_steps(str(ae)) == [1]
    assert not [n for n in os.listdir(ae / "checkpoints") if "tmp" in n]
    checkpointing.read_arrays(str(ae))  # the earlier checkpoint is intact
