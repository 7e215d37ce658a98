"""The GAN stage's start-up: restoring the pre-trained encoder (`train.load_encoder`), timed.

Usage (an autoencoder run first, then this; each its own process, so nothing is compiled or
cached by an earlier call):
  python -m vice_gan.main --flagfile=experiments/quickstart.flags --mode=train_ae \
      --ae_num_steps=2 --workdir=/tmp/qs --data_dir=/tmp/qs_tfds
  python experiments/bench_restore.py --flagfile=experiments/quickstart.flags \
      --workdir=/tmp/qs --data_dir=/tmp/qs_tfds

Takes the run's flags (as `vice_gan.main`) and prints one JSON line: the seconds spent in
`load_encoder`, the XLA compilations it started, and the process's peak RSS before and after
it (MiB).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vice_gan import checkpointing, heap, parallel, train  # noqa: E402
from vice_gan import config as config_lib  # noqa: E402
from vice_gan import state as state_lib  # noqa: E402

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def compilations_during(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), the number of XLA compilations it started)."""
    compiles: list[float] = []

    def listener(event: str, seconds: float, **kwargs) -> None:
        if event == _COMPILE_EVENT:
            compiles.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        return fn(), len(compiles)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = config_lib.from_flags(flags.FLAGS)
        config_lib.validate(config)
    except config_lib.ConfigError as e:
        raise app.UsageError(str(e)) from None
    mesh = parallel.make_mesh()
    models = state_lib.build_models(config)

    def restore():
        params, _ = train.load_encoder(config, models, mesh)
        return jax.block_until_ready(params)

    before = heap.peak_rss_mb()
    start = time.perf_counter()
    try:
        _, compilations = compilations_during(restore)
    except checkpointing.CheckpointError as e:
        sys.exit(f"bench_restore: {e}")
    row = {
        "ae_dir": config.ae_dir,
        "load_encoder_s": round(time.perf_counter() - start, 3),
        "compilations": compilations,
        "peak_rss_before_mb": round(before, 1),
        "peak_rss_after_mb": round(heap.peak_rss_mb(), 1),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    app.run(main)
