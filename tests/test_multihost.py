"""Multi-device and multi-process training equal single-device training on the same global batch.

* 8 host CPU devices (a subprocess: conftest fixes 2 for this process): one SGD step of the GAN
  and of the autoencoder on 8 devices against 1 device. SGD, because Adam's scale invariance
  would hide an N x gradient error (STYLE.md section 1).
* Two processes on localhost (`jax.distributed` over gloo, one CPU device each) train the GAN
  together through the real entry point (--coordinator_address/--num_processes/--process_id)
  and match a one-process run on the same global batch: same losses at every step, same
  parameters. Only process 0 writes logs and samples; both write the checkpoints, collectively.
"""

import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from vice_gan import checkpointing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EIGHT_DEVICES = r"""
import dataclasses, jax, numpy as np, optax
from vice_gan import config as config_lib, parallel, state as state_lib, steps

assert len(jax.devices()) == 8, jax.devices()
config = config_lib.Config(
    workdir="/unused", ngf=4, ndf=4, video_batch=8, image_batch=8, video_length=13,
    ae_size="small", ae_width_divisor=8,
)
rng = np.random.default_rng(0)
batch = {
    "video": rng.uniform(-1, 1, (8, 13, 64, 64, 3)).astype(np.float32),
    "video_label": (np.arange(8) % 6).astype(np.int32),
    "image": rng.uniform(-1, 1, (8, 64, 64, 3)).astype(np.float32),
}
models = state_lib.build_models(config)
ae = state_lib.create_ae_state(config, models, optax.sgd(1.0), 0)
sgd = {k: optax.sgd(1.0) for k in ("gen", "dimg", "dvid")}
initial = state_lib.create_gan_state(
    config, models, sgd, ae.params["encoder"], ae.batch_stats["encoder"], 0
)
noise = steps.sample_gan_noise(jax.random.PRNGKey(1), config)

def update(tree0, tree1):
    return [np.asarray(a) - np.asarray(b) for a, b in
            zip(jax.tree.leaves(jax.device_get(tree0)), jax.tree.leaves(jax.device_get(tree1)))]

def worst(u1, u8):  # largest per-leaf difference relative to the leaf's largest change
    return max(float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12)) for a, b in zip(u1, u8))

results = {}
for name in ("gan", "ae"):
    out = []
    for n in (1, 8):
        mesh = parallel.make_mesh(jax.devices()[:n])
        if name == "gan":
            fn, st = steps.make_gan_step(config, models, sgd), initial
            b = {**batch, **jax.device_get(noise)}
        else:
            fn, st = steps.make_ae_step(config, models, optax.sgd(1.0)), ae
            b = {"image": batch["image"], "eps": np.zeros((8, 50), np.float32)}
        step = parallel.shard_step(fn, mesh, donate_state=False)
        new, metrics = step(parallel.put_replicated(st, mesh), parallel.put_batch(b, mesh))
        params = (new.gen_params, new.dimg_params, new.dvid_params) if name == "gan" else new.params
        old = (st.gen_params, st.dimg_params, st.dvid_params) if name == "gan" else st.params
        out.append((update(old, params), jax.device_get(metrics)))
    (u1, m1), (u8, m8) = out
    results[name] = {
        "update": worst(u1, u8),
        "metrics": max(abs(float(m1[k]) - float(m8[k])) / (abs(float(m1[k])) + 1e-6) for k in m1),
    }
print("RESULT", __import__("json").dumps(results))
"""


def _env(**extra) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **extra}
    return env


def test_eight_devices_match_one_device_with_sgd():
    flags = "--xla_force_host_platform_device_count=8"
    result = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES],
        cwd=REPO,
        env=_env(XLA_FLAGS=flags),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
    results = json.loads(line[len("RESULT ") :])
    for name, diffs in results.items():
        # A device-count bug (N x gradient, per-shard BatchNorm) shows as O(1) differences.
        assert diffs["update"] < 1e-3, (name, diffs)
        assert diffs["metrics"] < 1e-4, (name, diffs)


# --- Two processes ------------------------------------------------------------------------------
TINY = [
    "--dataset=synthetic_faces/small",
    "--ngf=4",
    "--ndf=4",
    "--video_batch=2",
    "--image_batch=2",
    "--video_length=13",
    "--ae_size=small",
    "--ae_width_divisor=8",
    "--ae_batch=4",
    "--ae_num_steps=2",
    "--num_steps=3",
    "--checkpoint_every=2",
    "--sample_every=3",
    "--log_every=1",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _main(*flags, env, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "vice_gan.main", *TINY, *flags],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A one-process reference (two devices) and the same run on two processes (one device
    each): the same global mesh and batch, so every step must agree."""
    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("multihost")
    # The run's XLA cache (conftest.py), shared with test_resume, whose children compile the
    # same one-process steps (conftest's two devices), on whichever xdist worker they run.
    cache = dict(
        JAX_COMPILATION_CACHE_DIR=os.environ["JAX_COMPILATION_CACHE_DIR"],
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    data = f"--data_dir={base / 'tfds_shared'}"
    ae = f"--ae_dir={root / 'ae'}"
    # The autoencoder (one process) is shared: this test is about the GAN stage.
    for mode in ("train_ae", "train"):
        proc = _main(f"--mode={mode}", f"--workdir={root / 'single'}", ae, data, env=_env(**cache))
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    port = _free_port()
    one_device = _env(XLA_FLAGS="--xla_force_host_platform_device_count=1", **cache)
    procs = [
        _main(
            "--mode=train",
            f"--workdir={root / 'multi'}",
            ae,
            data,
            f"--coordinator_address=localhost:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            env=one_device,
        )
        for i in range(2)
    ]
    outs = []
    for proc in procs:
        try:
            outs.append(proc.communicate(timeout=600)[0])
        finally:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    return {"single": str(root / "single"), "multi": str(root / "multi"), "logs": outs}


def test_two_processes_form_one_job(runs):
    for i, out in enumerate(runs["logs"]):
        assert f"Rank {i} is connected to 1 peer ranks" in out, out[-2000:]  # gloo collectives
        assert "[gan] step 3/3" in out  # both run every step (the logger is not process 0's only)


def test_two_processes_match_one_process(runs):
    lines = {
        k: [json.loads(x) for x in open(os.path.join(runs[k], "logs", "metrics.jsonl"))]
        for k in ("single", "multi")
    }
    single = [x for x in lines["single"] if "train/g_loss" in x]
    multi = [x for x in lines["multi"] if "train/g_loss" in x]
    assert [x["step"] for x in single] == [x["step"] for x in multi] == [1, 2, 3]
    for a, b in zip(single, multi, strict=True):
        for key in a:
            if (
                key.startswith(("train/", "param_norm/", "grad_norm/"))
                and key != "train/steps_per_sec"
            ):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
    step_a, xs = checkpointing.read_arrays(runs["single"])
    step_b, ys = checkpointing.read_arrays(runs["multi"])
    assert step_a == step_b == 3 and xs.keys() == ys.keys()
    for key in xs:
        # Adam after 3 steps: float noise of the 2-device reductions stays far below lr=2e-4.
        np.testing.assert_allclose(ys[key], xs[key], rtol=1e-4, atol=2e-5, err_msg=key)


def test_only_process_zero_writes_logs_and_samples(runs):
    multi, single = runs["multi"], runs["single"]
    assert len(glob.glob(os.path.join(multi, "logs", "events.out.tfevents.*"))) == 1
    steps = [json.loads(x)["step"] for x in open(os.path.join(multi, "logs", "metrics.jsonl"))]
    assert steps == [0, 1, 2, 3], "each step logged once, by process 0"
    assert os.listdir(os.path.join(multi, "samples")) == os.listdir(os.path.join(single, "samples"))
    assert checkpointing.all_steps(multi) == [2, 3]
