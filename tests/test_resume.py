"""Resume and determinism: SIGKILL at chosen moments, restart, same bits; NaN stops cleanly;
corrupt or foreign checkpoints give one clear message.

Runs the real entry point in subprocesses (tiny config) with kill hooks installed by a small
driver (`CHILD`): 'save:K' kills right after checkpoint K's asynchronous write has started,
'finalize:K' once its files are written but before Orbax's atomic rename, 'step:K' after step
K is computed but before it is saved, 'nan:K' feeds NaN images to step K. A persistent
XLA cache shared by all children keeps each restart at a few seconds.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from vice_gan import checkpointing

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))

import bench_restore  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import os, signal, sys

def die():
    os.kill(os.getpid(), signal.SIGKILL)

kind, _, at = os.environ.get("VICE_GAN_HOOK", "none:0").partition(":")
at = int(at)
if kind == "save":
    from vice_gan import checkpointing
    save = checkpointing.save
    def hooked_save(manager, step, *args, **kwargs):
        saved = save(manager, step, *args, **kwargs)
        if step == at:
            die()  # the write of this checkpoint is in flight in Orbax's threads
        return saved
    checkpointing.save = hooked_save
elif kind == "finalize":
    from orbax.checkpoint._src.path import atomicity
    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def hooked_finalize(self, *args, **kwargs):
        if self._final_path.name == str(at):
            die()  # every file is written; the rename that commits it is not done
        return await finalize(self, *args, **kwargs)
    atomicity.AtomicRenameTemporaryPath.finalize = hooked_finalize
elif kind == "step":
    from vice_gan import writers
    write = writers.MetricWriter.write_scalars
    def hooked_write(self, step, scalars):
        write(self, step, scalars)
        if step == at:
            die()  # step computed and logged, not checkpointed
    writers.MetricWriter.write_scalars = hooked_write
elif kind == "nan":
    # NaN pixels in the real images of step `at` (batch index at - 1): the compiled step is
    # unchanged (the XLA cache still serves it); D_I's loss, gradients and parameters turn NaN.
    import numpy as np
    from vice_gan.datasets import input_pipeline
    batch = input_pipeline.TrainBatches.batch
    def hooked_batch(self, step):
        out = batch(self, step)
        if step == at - 1:
            out["image"] = np.full_like(out["image"], np.nan)
        return out
    input_pipeline.TrainBatches.batch = hooked_batch

from absl import app
from vice_gan import main
sys.argv[0] = "vice_gan.main"
app.run(main.main)
"""

TINY_FLAGS = [
    "--dataset=synthetic_faces/small",
    "--ngf=4",
    "--ndf=4",
    "--video_batch=2",
    "--image_batch=2",
    "--video_length=13",
    "--ae_size=small",
    "--ae_width_divisor=8",
    "--ae_batch=4",
    "--checkpoint_every=1",
    "--sample_every=0",
    "--log_every=1",
]
AE_STEPS, GAN_STEPS = 4, 5


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Data set shared by every child of this worker; the run's XLA cache (conftest.py)."""
    base = tmp_path_factory.getbasetemp()
    return {"data_dir": str(base / "tfds_shared"), "cache": os.environ["JAX_COMPILATION_CACHE_DIR"]}


def run_child(shared, *flags, hook=None, timeout=300):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": shared["cache"],
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "VICE_GAN_HOOK": hook or "none:0",
    }
    return subprocess.run(
        [sys.executable, "-c", CHILD, *TINY_FLAGS, f"--data_dir={shared['data_dir']}", *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_killed(result):
    assert result.returncode == -9, result.stderr[-3000:]


def assert_ok(result):
    assert result.returncode == 0, result.stderr[-3000:]


def arrays(directory, step=None):
    return checkpointing.read_arrays(directory, step)


def assert_same_bits(a, b):
    (step_a, xs), (step_b, ys) = a, b
    assert step_a == step_b
    assert xs.keys() == ys.keys()
    differ = [k for k in xs if xs[k].tobytes() != ys[k].tobytes()]
    assert not differ, f"{len(differ)} arrays differ, e.g. {differ[:3]}"


def no_temporary_dirs(directory):
    return not glob.glob(os.path.join(directory, "checkpoints", "*tmp*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared):
    """Uninterrupted runs: the autoencoder, then the GAN on it; every checkpoint kept."""
    root = tmp_path_factory.mktemp("reference")
    ae = str(root / "ae")
    keep = "--keep_checkpoints=100"
    ae_run = run_child(
        shared,
        "--mode=train_ae",
        f"--workdir={root}/unused",
        f"--ae_dir={ae}",
        f"--ae_num_steps={AE_STEPS}",
        keep,
    )
    assert_ok(ae_run)
    gan = str(root / "gan")
    gan_run = run_child(
        shared,
        "--mode=train",
        f"--workdir={gan}",
        f"--ae_dir={ae}",
        f"--num_steps={GAN_STEPS}",
        keep,
    )
    assert_ok(gan_run)
    # The compile before the first step is announced and timed (the run's longest silence).
    for stage, result in (("ae", ae_run), ("gan", gan_run)):
        assert f"[{stage}] compiling the step" in result.stderr
        assert re.search(rf"\[{stage}\] step compiled in \d+\.\d s", result.stderr)
    return {"ae": ae, "gan": gan}


def test_autoencoder_killed_mid_save_resumes_bit_identical(tmp_path, shared, reference):
    ae = str(tmp_path / "ae")
    flags = (
        "--mode=train_ae",
        f"--workdir={tmp_path}/unused",
        f"--ae_dir={ae}",
        f"--ae_num_steps={AE_STEPS}",
        "--keep_checkpoints=2",
    )
    assert_killed(run_child(shared, *flags, hook="save:2"))
    assert checkpointing.latest_step(ae) in (1, 2)  # 2 only if its write beat the kill
    assert_same_bits(arrays(ae), arrays(reference["ae"], checkpointing.latest_step(ae)))
    assert_ok(run_child(shared, *flags))
    assert no_temporary_dirs(ae)
    assert_same_bits(arrays(ae), arrays(reference["ae"]))


def test_gan_killed_at_several_points_resumes_bit_identical(tmp_path, shared, reference):
    gan = str(tmp_path / "gan")
    flags = (
        "--mode=train",
        f"--workdir={gan}",
        f"--ae_dir={reference['ae']}",
        f"--num_steps={GAN_STEPS}",
        "--keep_checkpoints=2",
    )
    # Killed after writing checkpoint 2 but before committing it: the torn copy is ignored.
    assert_killed(run_child(shared, *flags, hook="finalize:2"))
    assert checkpointing.latest_step(gan) == 1
    assert glob.glob(os.path.join(gan, "checkpoints", "2.orbax-checkpoint-tmp*"))
    # Resumes from 1 (removing the torn 2), killed after computing step 4, before saving it.
    assert_killed(run_child(shared, *flags, hook="step:4"))
    # (3 unless its asynchronous write was still in flight at the kill)
    assert checkpointing.latest_step(gan) in (2, 3)
    assert_same_bits(arrays(gan), arrays(reference["gan"], checkpointing.latest_step(gan)))
    # Resumes from 3, killed while the last checkpoint is being written.
    assert_killed(run_child(shared, *flags, hook=f"save:{GAN_STEPS}"))
    assert_ok(run_child(shared, *flags))
    assert no_temporary_dirs(gan)
    assert_same_bits(arrays(gan), arrays(reference["gan"]))
    assert checkpointing.all_steps(gan) == [GAN_STEPS - 1, GAN_STEPS]  # --keep_checkpoints=2
    # The log holds each step once, as the uninterrupted run's (step 4 was logged before the
    # kill, then again after resuming from 3).
    assert logged_steps(gan) == logged_steps(reference["gan"]) == list(range(GAN_STEPS + 1))


def logged_steps(directory):
    with open(os.path.join(directory, "logs", "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


def test_metric_log_rewound_to_the_restored_step(tmp_path):
    from vice_gan import writers

    writer = writers.MetricWriter(str(tmp_path))
    for step in (0, 1, 2, 3, 4):
        writer.write_scalars(step, {"loss": float(step)})
    writer.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # torn by a kill
    writer = writers.MetricWriter(str(tmp_path))
    writer.write_scalars(0, {"param_count/x": 7.0})  # written again at every start
    writer.rewind(2)  # restored from checkpoint 2
    writer.write_scalars(3, {"loss": 30.0})
    writer.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2, 3]
    assert lines[0]["param_count/x"] == 7.0 and lines[3]["loss"] == 30.0
    assert "metrics.jsonl.tmp" not in os.listdir(tmp_path)


def test_metrics_hold_param_norms_of_all_three_players(reference):
    lines = [json.loads(x) for x in open(os.path.join(reference["gan"], "logs", "metrics.jsonl"))]
    last = lines[-1]
    for player in ("gen", "dimg", "dvid"):
        assert np.isfinite(last[f"param_norm/{player}"]) and last[f"param_norm/{player}"] > 0


def test_nan_stops_without_saving_that_step(tmp_path, shared, reference):
    gan = str(tmp_path / "gan")
    result = run_child(
        shared,
        "--mode=train",
        f"--workdir={gan}",
        f"--ae_dir={reference['ae']}",
        f"--num_steps={GAN_STEPS}",
        hook="nan:3",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("vice_gan: error: [gan] step 3: "), message
    for name in ("train/d_image=nan", "param_norm/dimg=nan", "grad_norm/dimg=nan"):
        assert name in message, message
    assert "stopped without saving step 3" in message
    assert checkpointing.all_steps(gan) == [1, 2]
    assert_same_bits(arrays(gan), arrays(reference["gan"], 2))


def test_huge_learning_rate_stops_at_first_non_finite_step(tmp_path, shared):
    """The autoencoder with lr 1e30: its parameters overflow at step 1; nothing is saved."""
    ae = str(tmp_path / "ae")
    result = run_child(
        shared,
        "--mode=train_ae",
        f"--workdir={tmp_path}/w",
        f"--ae_dir={ae}",
        "--ae_num_steps=4",
        "--ae_lr=1e30",
    )
    assert result.returncode == 1, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("vice_gan: error: [ae] step 1: param_norm/ae=inf"), message
    assert checkpointing.all_steps(ae) == []


# --- Corrupt or foreign checkpoints: one message naming the place and the cause -------------------
def _copy(reference, tmp_path):
    ae = str(tmp_path / "ae")
    shutil.copytree(reference["ae"], ae)
    return ae, os.path.join(ae, "checkpoints", str(AE_STEPS))


def _largest_array_file(step_dir):
    files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*"))
    return max(files, key=os.path.getsize)


def _flip_bytes(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        data = f.read(64)
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(b ^ 0xFF for b in data))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip_first_bytes(path):
    """Breaks the first compressed frame's header: decoding must fail, whatever the layout."""
    with open(path, "r+b") as f:
        data = f.read(64)
        f.seek(0)
        f.write(bytes(b ^ 0xFF for b in data))


def _alter_saved_digest(step_dir):
    """Leaves the arrays intact and changes the digest saved beside them in `meta`."""
    path = os.path.join(step_dir, "meta", "metadata")
    with open(path) as f:
        meta = json.load(f)
    meta[checkpointing._DIGEST_KEY] = "0" * 64
    with open(path, "w") as f:
        json.dump(meta, f)


# Flipped bytes inside the data are caught by the decompressor (a compressed block) or by the
# digest (a stored block); which one depends on where the write order put each array, so the
# middle-of-file case asks only for "corrupt", which both messages say.
CORRUPTIONS = {
    "flipped_array_bytes": (lambda d: _flip_bytes(_largest_array_file(d)), "corrupt"),
    "flipped_frame_header": (
        lambda d: _flip_first_bytes(_largest_array_file(d)),
        "cannot be restored into this configuration's state (corrupt or incomplete",
    ),
    "digest_mismatch": (_alter_saved_digest, "is corrupt: the bytes read from its 'state' folder"),
    "truncated_array_file": (lambda d: _truncate(_largest_array_file(d)), "cannot be restored"),
    "missing_state_item": (lambda d: shutil.rmtree(os.path.join(d, "state")), "cannot be"),
    "garbage_meta": (
        lambda d: open(os.path.join(d, "meta", "metadata"), "w").write("{oops"),
        "unreadable 'meta'",
    ),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_checkpoint_one_clear_message(tmp_path, reference, name):
    from vice_gan import config as config_lib
    from vice_gan import parallel, train
    from vice_gan import state as state_lib

    ae, step_dir = _copy(reference, tmp_path)
    corrupt, expected = CORRUPTIONS[name]
    corrupt(step_dir)
    config = config_lib.Config(
        workdir=str(tmp_path / "w"), ae_dir=ae, ae_size="small", ae_width_divisor=8, ae_batch=4
    )
    mesh = parallel.make_mesh()
    _, template = train._ae_template(config, state_lib.build_models(config), mesh)
    manager = checkpointing.make_manager(ae, keep=3)
    with pytest.raises(checkpointing.CheckpointError) as info:
        checkpointing.restore_latest(manager, template)
    manager.close()
    message = str(info.value)
    assert step_dir in message and expected in message, message
    assert "TensorStore details" not in message and "<bound method" not in message, message
    assert f"to resume from step {AE_STEPS - 1}" in message, message


def test_corrupt_checkpoint_via_cli(tmp_path, shared, reference):
    ae, step_dir = _copy(reference, tmp_path)
    _flip_bytes(_largest_array_file(step_dir))
    result = run_child(
        shared,
        "--mode=train_ae",
        f"--workdir={tmp_path}/w",
        f"--ae_dir={ae}",
        f"--ae_num_steps={AE_STEPS + 2}",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    # Caught by the decompressor or by the digest (see CORRUPTIONS): either way one line that
    # names the checkpoint, says it is corrupt, and says how to go on.
    assert last.startswith(f"vice_gan: error: checkpoint {step_dir} "), last
    assert "corrupt" in last and f"to resume from step {AE_STEPS - 1}." in last, last


def test_restore_template_by_tracing_compiles_nothing(tmp_path, reference):
    """The GAN stage's encoder template (`state.abstract_state`) is traced, not built: no XLA
    compilation, and the checkpoint restores into it exactly as into a built state."""
    from vice_gan import config as config_lib
    from vice_gan import parallel, train
    from vice_gan import state as state_lib

    ae, _ = _copy(reference, tmp_path)
    config = config_lib.Config(
        workdir=str(tmp_path / "w"), ae_dir=ae, ae_size="small", ae_width_divisor=8, ae_batch=4
    )
    models, mesh = state_lib.build_models(config), parallel.make_mesh()
    tx = state_lib.adam(config.ae_lr, config)
    template, compilations = bench_restore.compilations_during(
        lambda: state_lib.abstract_state(
            lambda: state_lib.create_ae_state(config, models, tx, config.seed),
            parallel.replicated(mesh),
        )
    )
    assert compilations == 0
    # The counter counts: building the same state compiles its initialiser.
    _, built_compilations = bench_restore.compilations_during(
        lambda: state_lib.create_ae_state(config, models, tx, config.seed)
    )
    assert built_compilations >= 1
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(template))
    traced, _, _ = checkpointing.restore_from_directory(ae, template)
    built, _, _ = checkpointing.restore_from_directory(
        ae, train._ae_template(config, models, mesh)[1]
    )
    assert jax.tree.structure(traced) == jax.tree.structure(built)
    for a, b in zip(jax.tree.leaves(traced), jax.tree.leaves(built), strict=True):
        assert a.sharding == b.sharding
        np.testing.assert_array_equal(a, b)


def test_bench_restore_reports_no_compilation(tmp_path, reference):
    """experiments/bench_restore.py on a real autoencoder run: one JSON line, and the GAN
    stage's encoder restore compiles nothing."""
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "experiments", "bench_restore.py"),
            *TINY_FLAGS,
            f"--workdir={tmp_path}/w",
            f"--ae_dir={reference['ae']}",
        ],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["compilations"] == 0, row
    assert set(row) == {
        "ae_dir",
        "load_encoder_s",
        "compilations",
        "peak_rss_before_mb",
        "peak_rss_after_mb",
    }, row
    assert row["ae_dir"] == reference["ae"] and row["load_encoder_s"] > 0, row


def test_checkpoint_of_other_configuration_names_the_flags(tmp_path, reference):
    """Even without fingerprint.json the checkpoint's own record names what differs."""
    from vice_gan import config as config_lib
    from vice_gan import parallel, train
    from vice_gan import state as state_lib

    ae, _ = _copy(reference, tmp_path)
    os.remove(os.path.join(ae, checkpointing.FINGERPRINT_FILE))
    config = config_lib.Config(
        workdir=str(tmp_path / "w"),
        ae_dir=ae,
        dataset="synthetic_faces/small",
        ae_size="small",
        ae_width_divisor=8,
        ae_batch=4,
        ae_lr=0.001,
    )
    _, template = train._ae_template(config, state_lib.build_models(config), parallel.make_mesh())
    manager = checkpointing.make_manager(ae, keep=3)
    with pytest.raises(checkpointing.CheckpointError, match="--ae_lr: checkpoint has 0.005"):
        checkpointing.restore_latest(manager, template, config_lib.fingerprint_fields(config, "ae"))
    manager.close()
