"""Is a translate input a face of the kind the run was trained on? An in-domain novelty check.

The check uses the run's own pre-trained autoencoder (`--ae_dir`, the one whose encoder gives
the generator its content codes) and no other model. A frame's score is the *edge
disagreement* between the frame and its reconstruction:

    score = 1 - cos(grad(x), grad(AE(x)))

where grad is the horizontal and vertical finite differences of the grey image at 32x32 (2x2
average pooled), and cos the cosine similarity of the two edge fields. An autoencoder trained
on faces turns every input into something face-like, so on a face it puts the contours of
head, eyes, brows and mouth where the input has them (score well below 1, even for an unseen
identity whose colours it gets wrong), while on a non-face its edges are unrelated to the
input's (score ~1: noise, textures, scenes, a face upside down) and on a flat image there are no
input edges at all (score 1). Plain reconstruction MSE does not separate these: it is
dominated by colours, so an unseen identity with an unusual background scores worse than noise
or a flat grey image (measurements in WORKSPACE.md).

The reference is measured when the autoencoder is trained (`train.train_autoencoder`) on
frames of the held-out subjects, which the autoencoder never saw: `<ae_dir>/face_check.json`
holds their score distribution and the threshold, midway between their largest score and 1
(the score of edges unrelated to the input's). A clip is refused when the median of its
frames' scores is above the threshold. For an autoencoder trained before this file existed,
`python -m vice_gan.face_check --checkpoint RUN_DIR` measures it (it loads the run's data set).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import numpy as np

REFERENCE_FILE = "face_check.json"
SCHEMA_VERSION = 1
# At most this many held-out frames (spread evenly over all of them) are scored.
MAX_REFERENCE_FRAMES = 2048
DEFINITION = (
    "1 - cosine similarity between the finite-difference edge fields of the input frame and of "
    "its reconstruction by the run's pre-trained autoencoder (grey, 2x2 average pooled to 32x32)"
)


def edge_fields(frames):
    """[N, 64, 64, 3] in [-1, 1] -> [N, 2 * 31 * 31] horizontal and vertical differences."""
    import jax.numpy as jnp

    grey = jnp.asarray(frames, jnp.float32).mean(-1)
    n, h, w = grey.shape
    grey = grey.reshape(n, h // 2, 2, w // 2, 2).mean((2, 4))
    gx = grey[:, :-1, 1:] - grey[:, :-1, :-1]
    gy = grey[:, 1:, :-1] - grey[:, :-1, :-1]
    return jnp.concatenate([gx.reshape(n, -1), gy.reshape(n, -1)], axis=-1)


def make_score_fn(models):
    """A jitted fn(ae_params, ae_batch_stats, frames [N, 64, 64, 3] in [-1, 1]) -> scores [N]."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def score(params, batch_stats, frames):
        recon, _, _ = models.autoencoder.apply(
            {"params": params, "batch_stats": batch_stats}, frames, train=False
        )
        a, b = edge_fields(frames), edge_fields(recon)
        num = (a * b).sum(-1)
        den = jnp.sqrt((a * a).sum(-1) * (b * b).sum(-1))
        # No edges in the input or in the reconstruction: nothing agrees.
        return 1.0 - jnp.where(den > 1e-12, num / jnp.maximum(den, 1e-12), 0.0)

    return score


def score_frames(models, params, batch_stats, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """Scores (module docstring) of frames [N, 64, 64, 3] in [-1, 1]."""
    fn = make_score_fn(models)
    out = [
        np.asarray(fn(params, batch_stats, np.asarray(frames[i : i + batch], np.float32)))
        for i in range(0, len(frames), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def threshold_from(held_out_max: float) -> float:
    """Midway between the largest held-out face score and 1 (unrelated edges)."""
    return float(held_out_max + 0.5 * max(1.0 - held_out_max, 0.0))


def held_out_frames(table, split, max_frames: int = MAX_REFERENCE_FRAMES) -> np.ndarray:
    """uint8 [<= max_frames, 64, 64, 3]: frames of the split's test subjects, evenly spread."""
    test = set(int(s) for s in split.test_subjects)
    rows = [i for i in range(len(table)) if int(table.subject[i]) in test]
    if not rows:
        return np.zeros((0, 64, 64, 3), np.uint8)
    total = int(sum(table.num_frames[i] for i in rows))
    every = max(1, -(-total // max_frames))
    frames = np.concatenate([table.frames[i] for i in rows])[::every]
    return frames[:max_frames]


def make_reference(models, params, batch_stats, table, split, *, dataset: str, ae_step: int):
    """The reference dict (module docstring) from the held-out subjects' frames."""
    from vice_gan.datasets import input_pipeline

    frames = held_out_frames(table, split)
    if not len(frames):
        raise ValueError("the split has no held-out (test) subject to calibrate the face check on")
    scores = score_frames(models, params, batch_stats, input_pipeline.to_unit_range(frames))
    quantiles = {f"q{q}": float(np.quantile(scores, q / 100)) for q in (50, 90, 99)}
    return {
        "schema_version": SCHEMA_VERSION,
        "score": DEFINITION,
        "threshold": threshold_from(float(scores.max())),
        "threshold_rule": "max + (1 - max) / 2 of the held-out faces' scores",
        "held_out_faces": {"max": float(scores.max()), **quantiles, "num_frames": len(scores)},
        "held_out_subjects": [int(s) for s in split.test_subjects],
        "dataset": dataset,
        "ae_step": int(ae_step),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_reference(ae_dir: str, reference: dict) -> str:
    from vice_gan import writers

    path = os.path.join(ae_dir, REFERENCE_FILE)
    writers.write_json(path, reference)
    return path


def read_reference(ae_dir: str) -> dict | None:
    """The stored reference, or None if absent (raises ValueError if unreadable)."""
    path = os.path.join(ae_dir, REFERENCE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            ref = json.load(f)
        float(ref["threshold"]), float(ref["held_out_faces"]["max"]), int(ref["ae_step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is unreadable ({type(e).__name__}); delete it and run "
            "python -m vice_gan.face_check --checkpoint RUN_DIR to measure it again"
        ) from None
    return ref


def load_autoencoder(config):
    """(models, AE params, AE batch_stats, AE step) from `config.ae_dir` on one device."""
    import jax

    from vice_gan import checkpointing
    from vice_gan import config as config_lib
    from vice_gan import state as state_lib

    models = state_lib.build_models(config, axis_name=None)

    def fresh():
        return state_lib.create_ae_state(config, models, state_lib.adam(config.ae_lr, config), 0)

    template = state_lib.abstract_state(fresh, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    fields = config_lib.fingerprint_fields(config, "ae")
    state, _, step = checkpointing.restore_from_directory(
        os.path.abspath(config.ae_dir), template, fields
    )
    return models, state.params, state.batch_stats, step


class NotAFaceError(ValueError):
    """The input's score is above the run's threshold."""


def check_clip(config, clip: np.ndarray, name: str, skip_flag: str) -> str | None:
    """Refuses a clip that does not look like the run's faces.

    Args:
      config: the GAN run's Config (its ae_dir holds the autoencoder and the reference).
      clip: [1, T, 64, 64, 3] in [-1, 1], as evaluate.read_clip returns.
      name: how the input is named in messages (e.g. '--input=x.png').
      skip_flag: the flag that overrides the check, named in messages.
    Returns:
      None when checked and accepted, else a warning: the check could not be made (no
      autoencoder or no reference), with what to do about it.
    Raises:
      NotAFaceError: the clip's median frame score is above the threshold.
      ValueError: the reference file is unreadable.
    """
    from vice_gan import checkpointing

    remedy = f"measure one with: python -m vice_gan.face_check --checkpoint {config.workdir}"
    ref = read_reference(config.ae_dir)
    if ref is None:
        return (
            f"the input is not checked for being a face: the run's autoencoder directory "
            f"{config.ae_dir} holds no {REFERENCE_FILE} (made by autoencoder training since "
            f"this check exists); {remedy}"
        )
    try:
        models, params, stats, step = load_autoencoder(config)
    except checkpointing.CheckpointError as e:
        return f"the input is not checked for being a face: {e}"
    if step != ref["ae_step"]:
        return (
            f"the input is not checked for being a face: {REFERENCE_FILE} was measured on "
            f"autoencoder step {ref['ae_step']}, {config.ae_dir} now holds step {step}; {remedy}"
        )
    frames = np.asarray(clip).reshape((-1,) + np.asarray(clip).shape[-3:])
    score = float(np.median(score_frames(models, params, stats, frames)))
    if score > ref["threshold"]:
        raise NotAFaceError(
            f"{name} does not look like a face this model was trained on (edge disagreement "
            f"with the autoencoder's reconstruction {score:.3f}; faces of held-out subjects: "
            f"<= {ref['held_out_faces']['max']:.3f}, refused above {ref['threshold']:.3f}); "
            f"pass {skip_flag} to translate it anyway"
        )
    return None


def measure(config, data=None) -> dict:
    """Computes and writes the reference for `config.ae_dir`'s latest autoencoder."""
    from vice_gan import train

    data = data or train.load_data(config)
    models, params, stats, step = load_autoencoder(config)
    ref = make_reference(
        models, params, stats, data.table, data.split, dataset=config.dataset, ae_step=step
    )
    write_reference(config.ae_dir, ref)
    return ref


def main(argv: list[str] | None = None) -> int:
    """CLI: measure (or re-measure) a run's face-check reference."""
    parser = argparse.ArgumentParser(
        prog="python -m vice_gan.face_check",
        description="Measure the face check's reference for a GAN run's autoencoder "
        f"(writes <ae_dir>/{REFERENCE_FILE}; loads the run's data set).",
    )
    parser.add_argument("--checkpoint", required=True, help="a GAN run's --workdir")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    import logging

    from vice_gan import checkpointing, translate
    from vice_gan.datasets import registry

    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        config, _ = translate.read_run_config(args.checkpoint)
        ref = measure(config)
    except (translate.TranslateError, checkpointing.CheckpointError, registry.DatasetError) as e:
        print(f"vice_gan.face_check: error: {e}", file=sys.stderr)
        return 1
    faces = ref["held_out_faces"]
    print(
        f"wrote {os.path.join(config.ae_dir, REFERENCE_FILE)}: {faces['num_frames']} held-out "
        f"frames, scores median {faces['q50']:.3f}, max {faces['max']:.3f}; "
        f"threshold {ref['threshold']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
