"""Translate a face video (or image) into another emotion with a trained VICE-GAN run.

    python -m vice_gan.translate --checkpoint RUN_DIR --input face.mp4 --emotion happiness \\
        --output happy.gif
    python -m vice_gan.translate --checkpoint RUN_DIR --input frames/ --emotion all --output all.mp4

RUN_DIR is a GAN run's --workdir. Its configuration is rebuilt from the latest checkpoint's
metadata (the flags the run was trained with; checked against the checkpoint's fingerprint and
the directory's fingerprint.json), so no flag of the training run is needed. The input is a
video file (anything imageio reads: .mp4, .gif, ...), a folder of frames, a .npy uint8
[T, H, W, 3] array, or a single image (repeated over the clip); it is centre-cropped to a square
and resized to 64x64 like the training data (evaluate.read_clip). `--emotion all` writes the
input beside the six emotions in one strip.

The input must look like the faces the run was trained on (vice_gan/face_check.py: the run's
own autoencoder's edge agreement, against a threshold measured on held-out subjects when the
autoencoder was trained); anything else (a landscape, a flat colour, noise) is refused unless
`--skip_face_check` is given. A run whose autoencoder has no stored reference is translated
with a warning.

Failures a user can cause (unknown emotion, unreadable or non-face input, a directory that is not a GAN run
or whose checkpoint does not match its recorded configuration, an unwritable output) end with
one message and exit code 1 (2 for bad arguments), and no output file is left behind: the
output is written to a temporary name and renamed only when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

OUTPUT_FORMATS = (".gif", ".mp4")


class TranslateError(RuntimeError):
    """A user-facing failure; the message says what is wrong and where."""


def _parse(argv: list[str]) -> argparse.Namespace:
    from vice_gan import labels

    parser = argparse.ArgumentParser(
        prog="python -m vice_gan.translate",
        description="Re-render a face video in another emotion with a trained VICE-GAN run.",
    )
    parser.add_argument("--checkpoint", required=True, help="a GAN run's --workdir")
    parser.add_argument(
        "--input", required=True, help="video file, folder of frames, .npy clip, or one image"
    )
    parser.add_argument(
        "--emotion", required=True, help=f"one of {', '.join(labels.EMOTIONS)}, or 'all'"
    )
    parser.add_argument("--output", required=True, help="output file, .gif or .mp4")
    parser.add_argument("--seed", type=int, default=0, help="motion noise seed")
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second of the output")
    parser.add_argument(
        "--skip_face_check",
        action="store_true",
        help="translate the input even if the run's autoencoder finds it unlike the faces it "
        "was trained on (vice_gan/face_check.py)",
    )
    args = parser.parse_args(argv)
    emotion = args.emotion.strip().lower()
    if emotion != "all" and emotion not in labels.EMOTIONS:
        parser.error(
            f"--emotion={args.emotion!r}: expected one of {', '.join(labels.EMOTIONS)}, or 'all'"
        )
    args.emotion = emotion
    if os.path.splitext(args.output)[1].lower() not in OUTPUT_FORMATS:
        parser.error(f"--output={args.output}: the file name must end in .gif or .mp4")
    if not os.path.exists(args.input):
        parser.error(f"--input={args.input}: no such file or folder")
    if args.fps <= 0:
        parser.error(f"--fps={args.fps}: must be > 0")
    return args


def read_run_config(workdir: str):
    """The `Config` a GAN run was trained with, from its latest checkpoint's metadata.

    Returns:
      (config with workdir set to `workdir`, checkpoint step).
    Raises:
      TranslateError: not a GAN run directory, no complete checkpoint, or a checkpoint whose
        recorded configuration does not match its fingerprint or the directory's.
    """
    import orbax.checkpoint as ocp

    from vice_gan import checkpointing
    from vice_gan import config as config_lib

    workdir = os.path.abspath(workdir)  # Orbax takes absolute paths only
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(workdir):
        raise TranslateError(f"--checkpoint={workdir}: no such directory")
    if not os.path.isdir(ckpt_dir):
        raise TranslateError(
            f"--checkpoint={workdir} is not a vice-gan run directory (no checkpoints/ in it); "
            "pass the --workdir of a GAN training run"
        )
    manager = ocp.CheckpointManager(
        ckpt_dir, item_names=("state", "meta"), options=ocp.CheckpointManagerOptions(read_only=True)
    )
    step = manager.latest_step()
    if step is None:
        raise TranslateError(f"{ckpt_dir} holds no complete checkpoint")
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as e:  # noqa: BLE001 - any failure means "not a readable vice-gan checkpoint"
        raise TranslateError(
            f"checkpoint {step} in {ckpt_dir} has no readable metadata ({type(e).__name__}); "
            "is it a vice-gan checkpoint?"
        ) from None
    finally:
        manager.close()
    if meta.get("stage") != "gan":
        raise TranslateError(
            f"{workdir} holds a checkpoint of stage {meta.get('stage')!r}, not a GAN run "
            "(an autoencoder directory?); pass the --workdir of a GAN training run"
        )
    fields = {f.name for f in dataclasses.fields(config_lib.Config)}
    stored = meta.get("config", {})
    if set(stored) != fields:
        raise TranslateError(
            f"checkpoint {step} in {ckpt_dir} was made by another version of vice-gan "
            f"(settings differ: {sorted(set(stored) ^ fields)})"
        )
    config = config_lib.Config(**stored).replace(workdir=os.path.abspath(workdir), mode="generate")
    if config_lib.fingerprint(config, "gan") != meta.get("fingerprint"):
        raise TranslateError(
            f"checkpoint {step} in {ckpt_dir}: its recorded configuration does not match its "
            "fingerprint; it was made by another configuration or version of vice-gan"
        )
    recorded = os.path.join(workdir, checkpointing.FINGERPRINT_FILE)
    if os.path.exists(recorded):
        with open(recorded) as f:
            if json.load(f) != config_lib.fingerprint_fields(config, "gan"):
                raise TranslateError(
                    f"{workdir}: the checkpoint's configuration differs from the directory's "
                    f"{checkpointing.FINGERPRINT_FILE}; the directory mixes two configurations"
                )
    return config, step


def load_run(workdir: str):
    """Rebuilds a GAN run from its directory alone (no autoencoder directory needed).

    Returns:
      (config, models built with axis_name=None, GanState on one device, step).
    Raises:
      TranslateError / checkpointing.CheckpointError: see `read_run_config`; a checkpoint that
        does not fit its configuration's networks.
    """
    import jax

    from vice_gan import checkpointing
    from vice_gan import config as config_lib
    from vice_gan import state as state_lib

    workdir = os.path.abspath(workdir)  # Orbax takes absolute paths only
    config, _ = read_run_config(workdir)
    models = state_lib.build_models(config, axis_name=None)
    txs = state_lib.gan_optimizers(config)

    def fresh():
        ae = state_lib.create_ae_state(config, models, state_lib.adam(config.ae_lr, config), 0)
        return state_lib.create_gan_state(
            config, models, txs, ae.params["encoder"], ae.batch_stats["encoder"], 0
        )

    # Shapes only (nothing is computed); restored onto this process's first device.
    template = state_lib.abstract_state(fresh, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    fields = config_lib.fingerprint_fields(config, "gan")
    state, _, step = checkpointing.restore_from_directory(workdir, template, fields)
    return config, models, state, step


def translate(args: argparse.Namespace) -> str:
    """Runs one translation; returns the written path."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vice_gan import face_check, generate, labels, writers
    from vice_gan.evaluation import evaluate
    from vice_gan.state import MOTION_DIM

    config, models, state, step = load_run(args.checkpoint)
    clip = evaluate.read_clip(args.input, config.video_length, config.frame_stride)
    if not args.skip_face_check:
        try:
            warning = face_check.check_clip(
                config, clip, f"--input={args.input}", "--skip_face_check"
            )
        except face_check.NotAFaceError as e:
            raise TranslateError(str(e)) from None
        if warning:
            print(f"vice_gan.translate: warning: {warning}", file=sys.stderr)
    fn = generate.make_translate_fn(config, models)
    key = jax.random.PRNGKey(args.seed)
    if args.emotion == "all":
        grid = generate.emotion_grid(fn, state, clip, key)  # [1, 6, T, 64, 64, 3]
        frames = writers.video_grid(np.concatenate([clip[:, None], grid], axis=1))
    else:
        # The same noise draw as emotion_grid's row 0: the clip equals that emotion's column of
        # `--emotion all` with the same --seed.
        k0, k1 = jax.random.split(key)
        h0 = jax.random.normal(k0, (1, MOTION_DIM))
        eps = jax.random.normal(k1, (1, config.video_length, MOTION_DIM))
        cats = jnp.array([labels.EMOTIONS.index(args.emotion)], jnp.int32)
        frames = writers.to_uint8(np.asarray(fn(state, jnp.asarray(clip), cats, h0, eps))[0])
    write = writers.write_gif if args.output.lower().endswith(".gif") else writers.write_mp4
    write(args.output, frames, args.fps)
    print(
        f"wrote {args.output}: {args.emotion}, {len(frames)} frames of {frames.shape[2]}x"
        f"{frames.shape[1]} (run {config.workdir}, step {step})"
    )
    return args.output


def main(argv: list[str] | None = None) -> int:
    """CLI entry; returns the exit code (argument errors exit 2 from argparse)."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    import logging

    from vice_gan import checkpointing

    # Orbax logs a warning for every read-only checkpoint directory; the user asked for a file.
    logging.getLogger("absl").setLevel(logging.ERROR)

    try:
        translate(args)
    except (TranslateError, checkpointing.CheckpointError, ValueError, OSError) as e:
        print(f"vice_gan.translate: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
