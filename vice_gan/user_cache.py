"""vice-gan's folder for what it keeps between runs: the FER classifier's weights
(`evaluation.fer`) and, in its `jax/` subfolder, compiled XLA programs (`xla_options`)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

CACHE_ENV_VAR = "VICE_GAN_CACHE"


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> pathlib.Path:
    """`$VICE_GAN_CACHE` if set, else `~/.cache/vice_gan`."""
    env = environ.get(CACHE_ENV_VAR)
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "vice_gan"
