"""The package's import-time settings."""

import os
import subprocess
import sys
import warnings

import jax
import numpy as np

import vice_gan  # noqa: F401  (sets the environment under test)
from vice_gan import writers


def _fork_warnings(path) -> list[str]:
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writers.write_mp4(str(path), frames)
    assert path.exists()
    return [str(w.message) for w in caught if "os.fork() was called" in str(w.message)]


def test_ffmpeg_starts_without_python_in_the_forked_child(tmp_path, monkeypatch):
    jax.devices()  # JAX installs its at-fork warning with its backend
    # imageio-ffmpeg's default (a preexec_fn): JAX's at-fork hook fires, the test is not moot.
    monkeypatch.setenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "0")
    assert _fork_warnings(tmp_path / "default.mp4")
    # vice-gan's setting: a plain fork + exec, no Python in the child, no warning.
    monkeypatch.setenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    assert _fork_warnings(tmp_path / "ours.mp4") == []


def test_import_sets_the_variable_unless_the_user_did():
    code = "import os, vice_gan; print(os.environ['IMAGEIO_FFMPEG_NO_PREVENT_SIGINT'])"
    env = {k: v for k, v in os.environ.items() if k != "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"}
    for given, want in ((None, "1"), ("0", "0")):
        run_env = env if given is None else {**env, "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT": given}
        out = subprocess.run(
            [sys.executable, "-c", code], env=run_env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == want
