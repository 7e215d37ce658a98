"""Entry point: `python -m vice_gan.main --flagfile=experiments/quickstart.flags`.

Parses and validates the flags (one clear message and exit code 2 for a bad command line,
before any work or output), starts jax.distributed when asked, and runs --mode. A user-facing
failure (bad data, unusable checkpoint, diverged training) ends with one message and exit
code 1; only a bug shows a traceback.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from vice_gan import config as config_lib

FLAGS = flags.FLAGS


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the input or environment is wrong", not "vice-gan is wrong".

    Data problems (unknown data set, bad layout, corrupt frame) are ValueErrors with a message
    naming what was expected where; OSError covers an unwritable workdir or a full disk.
    """
    from vice_gan import checkpointing, train

    return (
        config_lib.ConfigError,
        checkpointing.CheckpointError,
        train.TrainingDivergedError,
        ValueError,
        OSError,
    )


def run(config: config_lib.Config) -> None:
    """Runs `config.mode` (library entry; never reads FLAGS)."""
    from vice_gan import parallel, train
    from vice_gan.evaluation import evaluate

    parallel.initialize_distributed(config)
    needs_data = config.mode != "generate" or config.generate_input is None
    data = train.load_data(config) if needs_data else None
    if config.mode in ("train_ae", "all"):
        train.train_autoencoder(config, data)
    if config.mode in ("train", "all"):
        train.train_gan(config, data)
    if config.mode in ("evaluate", "all"):
        evaluate.evaluate(config, data)
    if config.mode in ("generate", "all"):
        evaluate.generate_samples(config, data)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags start with --)")
    try:
        config = config_lib.from_flags(FLAGS)
        config_lib.validate(config)
    except config_lib.ConfigError as e:
        raise app.UsageError(str(e)) from None
    try:
        run(config)
    except _user_errors() as e:
        logging.error("%s", e)
        print(f"vice_gan: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
