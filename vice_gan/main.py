"""Entry point: `python -m vice_gan.main --flagfile=experiments/quickstart.flags`.

Parses and validates the flags (one clear message and exit code 1 for a bad command line,
before any work or output), starts jax.distributed when asked, checks the run's directories
(`preflight`), and runs --mode. A user-facing failure (bad data, unusable checkpoint, diverged
training, full disk) ends with one message and exit code 1, and the directories this command
created are removed again unless they hold a complete checkpoint; only a bug shows a traceback.
"""

from __future__ import annotations

import logging as std_logging
import os
import shutil
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


def _stage_dirs(config: config_lib.Config) -> dict[str, str]:
    """Flag name -> directory this mode writes into."""
    dirs = {"workdir": config.workdir}
    if config.mode in ("train_ae", "all"):
        dirs["ae_dir"] = config.ae_dir
    return dirs


def _check_writable(flag: str, path: str) -> None:
    """The directory exists and is writable, or can be created; raises ConfigError if not."""
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise config_lib.ConfigError(f"--{flag}={path}: {probe} is not a directory")
    read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    if read_only or not os.access(probe, os.W_OK | os.X_OK):
        raise config_lib.ConfigError(f"--{flag}={path}: {probe} is not writable")


def preflight(config: config_lib.Config) -> None:
    """Everything about the environment that can be checked before any work or output.

    Directories to write are writable; the devices divide the batches; the run directories
    belong to this configuration (their fingerprint.json, read-only here); and a mode that
    starts from an earlier stage finds that stage's checkpoint.

    Raises:
      ConfigError or CheckpointError, naming the flag, file or directory.
    """
    import jax

    from vice_gan import checkpointing

    mode = config.mode
    for flag, path in _stage_dirs(config).items():
        _check_writable(flag, path)
    needs_data = mode != "generate" or config.generate_input is None
    if needs_data and not os.path.exists(config.data_dir):
        # Only when it must be created: a prepared data set may well lie on a read-only disk.
        _check_writable("data_dir", config.data_dir)
    mesh_size = jax.device_count()
    batches = {"train_ae": ["ae_batch"], "train": ["video_batch", "image_batch"]}
    batches["all"] = batches["train_ae"] + batches["train"]
    for name in batches.get(mode, []):
        size = getattr(config, name)
        if size % mesh_size:
            raise config_lib.ConfigError(
                f"--{name}={size} does not divide over the {mesh_size} devices; use a multiple "
                f"of {mesh_size}"
            )
    ae_fields = config_lib.fingerprint_fields(config, "ae")
    gan_fields = config_lib.fingerprint_fields(config, "gan")
    checkpointing.check_fingerprint(config.ae_dir, ae_fields, record=False)
    if mode != "train_ae":
        checkpointing.check_fingerprint(config.workdir, gan_fields, record=False)
    # Modes that start from an earlier stage: train, evaluate and generate read the
    # autoencoder (the GAN's encoder, and ACD's ruler); evaluate and generate read the GAN.
    if (
        mode in ("train", "evaluate", "generate")
        and checkpointing.latest_step(config.ae_dir) is None
    ):
        raise checkpointing.CheckpointError(
            f"no autoencoder checkpoint in --ae_dir={config.ae_dir}: run --mode=train_ae "
            "first (or point --ae_dir at a finished autoencoder run)"
        )
    if mode in ("evaluate", "generate") and checkpointing.latest_step(config.workdir) is None:
        raise checkpointing.CheckpointError(
            f"no GAN checkpoint in --workdir={config.workdir}: run --mode=train first"
        )
    if mode in ("generate", "all") and config.generate_input is not None:
        from vice_gan.evaluation import evaluate

        # Read now, so an unusable clip costs nothing. read_clip names the file in a ValueError;
        # image plugins raise others too (PIL: SyntaxError for a truncated GIF).
        try:
            evaluate.read_clip(config.generate_input, config.video_length, config.frame_stride)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"cannot read {config.generate_input} as a clip: {type(e).__name__}: {e}"
            ) from None


def run(config: config_lib.Config) -> None:
    """Runs `config.mode` (library entry; never reads FLAGS)."""
    from vice_gan import parallel, train, xla_options
    from vice_gan.evaluation import evaluate

    xla_options.use_compilation_cache(xla_options.cache_dir_from_flag(config.compilation_cache_dir))
    parallel.initialize_distributed(config)
    preflight(config)
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


def _holds_results(path: str) -> bool:
    """Whether a directory holds progress worth keeping: a complete checkpoint (a stage
    directory) or a prepared TFDS data set."""
    from vice_gan import checkpointing

    for root, _, files in os.walk(path):
        if "dataset_info.json" in files or checkpointing.latest_step(root) is not None:
            return True
    return False


def _remove_unfinished(created: list[str]) -> None:
    """Removes directories this command created, unless they hold results (`_holds_results`).

    Called after a user-facing error, so a failed command leaves no partial output behind
    (a workdir with nothing but a split file and a fingerprint would later be mistaken for a
    started run, a data_dir with a failed build for a data set).
    """
    import jax

    if jax.process_index() != 0:
        return
    for path in created:
        if os.path.isdir(path) and not _holds_results(path):
            shutil.rmtree(path, ignore_errors=True)


# Warnings Orbax gives every time a read-only manager opens the autoencoder's checkpoints.
_ORBAX_ROUTINE = ("CheckpointManagerOptions.read_only=True", "Given directory is read only")


class _NoLibraryTracebacks(std_logging.Filter):
    """Quiets Orbax at the default --verbosity=0: drops its routine INFO lines (about 15 per
    checkpoint save or restore, which buried the progress lines) and the tracebacks it logs for
    a failed background save (the failure is reported once, as a `CheckpointError` naming the
    step). Both stay at --verbosity=1."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if "orbax" not in record.pathname or logging.get_verbosity() >= 1:
            return True
        if record.levelno < std_logging.WARNING or record.getMessage().startswith(_ORBAX_ROUTINE):
            return False
        record.exc_info, record.exc_text = None, None
        return True


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags start with --)")
    try:
        config = config_lib.from_flags(FLAGS)
        config_lib.validate(config)
    except config_lib.ConfigError as e:
        raise app.UsageError(str(e)) from None
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _NoLibraryTracebacks) for f in handler.filters):
        handler.addFilter(_NoLibraryTracebacks())
    # What this command creates; removed again if it fails (see `_remove_unfinished`).
    created = [p for p in dict.fromkeys([config.workdir, config.ae_dir, config.data_dir]) if p]
    created = [p for p in created if not os.path.exists(p)]
    try:
        run(config)
    except _user_errors() as e:
        _remove_unfinished(created)
        print(f"vice_gan: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
