"""Compiler options of the train steps: CPU-only, never over the user's XLA_FLAGS, accepted."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vice_gan import parallel, xla_options

LEGACY = {"xla_cpu_use_fusion_emitters": False}


def test_cpu_gets_the_options_other_backends_none():
    assert xla_options.step_options("cpu", "") == LEGACY
    assert xla_options.step_options("gpu", "") == {}
    assert xla_options.step_options("tpu", "") == {}


def test_users_xla_flags_win():
    others = "--xla_force_host_platform_device_count=2"
    assert xla_options.step_options("cpu", others) == LEGACY
    for given in ("--xla_cpu_use_fusion_emitters=true", f"{others} --xla_cpu_use_fusion_emitters"):
        assert xla_options.step_options("cpu", given) == {}


def test_environment_is_read_by_default(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert xla_options.step_options("cpu") == {}
    monkeypatch.setenv("XLA_FLAGS", "")
    assert xla_options.step_options("cpu") == LEGACY


def test_a_sharded_step_compiles_and_runs_with_them():
    # An unknown option name would fail here (XLA rejects it at compile time).
    def fn(state, batch):
        total = parallel.pmean(jnp.sum(batch["x"] * state["w"]))
        return {"w": state["w"] + total}, {"total": total}

    mesh = parallel.make_mesh()
    step = parallel.shard_step(fn, mesh, donate_state=False)
    state = parallel.put_replicated({"w": jnp.ones(3)}, mesh)
    x = np.arange(2 * 4 * 3, dtype=np.float32).reshape(8, 3)
    new, metrics = step(state, parallel.put_batch({"x": x}, mesh))
    # pmean over devices of per-shard sums = the global sum / devices.
    expected = x.sum() / len(jax.devices())
    np.testing.assert_allclose(float(metrics["total"]), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new["w"]), 1 + expected, rtol=1e-6)


def test_shard_step_compiles_with_the_step_options(monkeypatch):
    # Proof that the options reach XLA: a name it does not know makes the compile fail.
    monkeypatch.setattr(xla_options, "CPU_STEP_OPTIONS", {"xla_cpu_no_such_option": False})
    monkeypatch.setenv("XLA_FLAGS", "")
    mesh = parallel.make_mesh()
    step = parallel.shard_step(lambda s, b: (s, {"n": parallel.pmean(b["x"].sum())}), mesh)
    state = parallel.put_replicated({"w": jnp.ones(3)}, mesh)
    batch = parallel.put_batch({"x": np.ones((8, 3), np.float32)}, mesh)
    with pytest.raises(Exception, match="xla_cpu_no_such_option"):
        step.lower(state, batch).compile()


DFS_FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"


def test_process_flags_are_added_once_and_never_over_the_users():
    assert xla_options.with_process_flags("") == f"--{DFS_FLAG}=false"
    others = "--xla_force_host_platform_device_count=2"
    once = xla_options.with_process_flags(others)
    assert once == f"{others} --{DFS_FLAG}=false"
    assert xla_options.with_process_flags(once) == once
    assert xla_options.with_process_flags(f"--{DFS_FLAG}=true") == f"--{DFS_FLAG}=true"
    env = {"XLA_FLAGS": others}
    xla_options.set_process_flags(env)
    assert env == {"XLA_FLAGS": once}


# Eight independent chains of three products, each reduced to a scalar: breadth-first, XLA
# holds every chain's intermediates at once; depth-first, one chain's (~2 MiB here).
_SCRATCH_PROBE = """
import vice_gan
import jax, jax.numpy as jnp

def f(xs, w):
    total = 0.0
    for i in range(8):
        h = xs[i]
        for _ in range(3):
            h = jnp.maximum(h @ w, 0.0)
        total = total + jnp.sum(h)
    return total

compiled = jax.jit(f).lower(jnp.ones((8, 512, 512)), jnp.ones((512, 512))).compile()
print(compiled.memory_analysis().temp_size_in_bytes)
"""


def _probe_scratch_bytes(xla_flags: str) -> int:
    env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile here, never read back
    out = subprocess.run(
        [sys.executable, "-c", _SCRATCH_PROBE], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_importing_vice_gan_gives_the_depth_first_schedule():
    # Proof that the flag reaches XLA through the environment: the same program needs less
    # scratch than with the user's explicit breadth-first choice, which import keeps.
    depth_first = _probe_scratch_bytes("")
    breadth_first = _probe_scratch_bytes(f"--{DFS_FLAG}=true")
    assert depth_first < breadth_first / 2, (depth_first, breadth_first)


def test_cache_folder_from_the_flag():
    env = {"JAX_COMPILATION_CACHE_DIR": "/somewhere/jax"}
    assert xla_options.cache_dir_from_flag(None, env) == "/somewhere/jax"
    assert xla_options.cache_dir_from_flag(None, {}) == os.path.expanduser("~/.cache/vice_gan/jax")
    assert xla_options.cache_dir_from_flag(None, {"VICE_GAN_CACHE": "/vg"}) == "/vg/jax"
    assert xla_options.cache_dir_from_flag("", env) == ""  # '' switches it off
    assert xla_options.cache_dir_from_flag("~/c", env) == os.path.expanduser("~/c")
    assert xla_options.cache_dir_from_flag("rel", {}) == os.path.abspath("rel")


@pytest.fixture
def restore_cache_dir():
    before = jax.config.jax_compilation_cache_dir
    yield
    xla_options.use_compilation_cache(before or "")


def test_switching_the_cache_folder_logs_nothing(tmp_path, restore_cache_dir, caplog):
    import logging

    caplog.set_level(logging.INFO)
    assert xla_options.use_compilation_cache(str(tmp_path / "c")) == str(tmp_path / "c")
    assert "Resetting cache" not in caplog.text  # JAX's INFO line, which reads like a deletion


def test_unusable_cache_folder_only_warns(tmp_path, restore_cache_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert xla_options.use_compilation_cache(str(blocker / "cache")) == ""
    assert jax.config.jax_compilation_cache_dir is None
    assert xla_options.use_compilation_cache(str(tmp_path / "c")) == str(tmp_path / "c")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")


_COMPILE_TWICE = """
import sys
import jax, jax.numpy as jnp, numpy as np
from vice_gan import xla_options
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
xla_options.use_compilation_cache(sys.argv[1])
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(axis=0))
y = f(np.arange(64, dtype=np.float32).reshape(8, 8) / 64)
print(len(hits), " ".join(np.asarray(y).astype(str)))
"""


def test_a_second_process_reads_the_program_back(tmp_path):
    # The cache as main uses it: the first process compiles and stores, the next reads it back
    # (a cache hit, no new entry) and computes the same numbers.
    env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    cache = tmp_path / "cache"
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", _COMPILE_TWICE, str(cache)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append((out.stdout.split(" ", 1), sorted(os.listdir(cache))))
    (hits_1, y_1), entries_1 = runs[0]
    (hits_2, y_2), entries_2 = runs[1]
    assert (hits_1, hits_2) == ("0", "1")
    assert y_1 == y_2
    assert entries_1 and entries_1 == entries_2
