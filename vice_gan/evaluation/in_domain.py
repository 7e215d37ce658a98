"""In-domain evaluation networks: an emotion video classifier and an identity embedding network.

The thesis's CAS-M classifier was trained on FER-2013 photographs and is weak on other data
(DESIGN.md, Evaluation), and its ACD uses the autoencoder the generator was trained against. So
two small networks are trained here on the *real training clips* of the evaluated data set,
split and condition (never on generated clips), and score generated clips beside real ones
(in_domain_scores.py):

  `EmotionNet`   clip [B, T, 64, 64, 3] -> 6 emotion logits. A per-frame conv trunk at 32x32
                 (expressions are visible at half resolution; 4x cheaper), per-frame features
                 pooled over time by mean, max and min (any T; the apex may lie anywhere in a
                 clip), then a Dense layer.
  `IdentityNet`  frame [N, 64, 64, 3] -> 64-d embedding, L2-normalised. Trained as a
                 cosine-softmax classifier over the training subjects (logits = s * <e, w_k> with
                 unit e and w_k, NormFace). Evaluation drops the classifier and compares the
                 normalised embeddings, so the network also applies to subjects it never trained
                 on (the test subjects under 'unseen').

Both are trained with Adam on random horizontal flips, and cached once per (data set, split
seed, condition, T, stride) as `nets.npz` + `meta.json` under
`<data_dir>/vice_gan_eval_nets/<name>/`; a cache made from other data (checked by a fingerprint
of the table and split) or with other `TrainSettings` is retrained and replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import traverse_util

from vice_gan import labels
from vice_gan.datasets import input_pipeline, splits

CACHE_DIRNAME = "vice_gan_eval_nets"
EMBED_DIM = 64
_FORMAT_VERSION = 1
_APPLY_CHUNK = 32  # clips per compiled inference call (one shape, compiled once)


class ConvTrunk(nn.Module):
    """Stride-2 3x3 convs with ReLU: [N, H, W, C] -> flattened [N, (H / 2^k) * (W / 2^k) * w_k]."""

    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.widths:
            x = nn.relu(nn.Conv(width, (3, 3), strides=(2, 2), padding="SAME")(x))
        return x.reshape(x.shape[0], -1)


class EmotionNet(nn.Module):
    """Emotion video classifier: clips [B, T, 64, 64, 3] in [-1, 1] -> logits [B, 6]."""

    width: int = 16
    num_classes: int = labels.NUM_EMOTIONS

    @nn.compact
    def __call__(self, clips: jax.Array) -> jax.Array:
        b, t = clips.shape[:2]
        x = clips.reshape((b * t,) + clips.shape[2:]).astype(jnp.float32)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = ConvTrunk((self.width, 2 * self.width, 4 * self.width))(x)
        x = nn.relu(nn.Dense(64)(x)).reshape(b, t, -1)
        # Mean, max and min over time: the expression's onset and apex may fall anywhere.
        x = jnp.concatenate([x.mean(axis=1), x.max(axis=1), x.min(axis=1)], axis=-1)
        return nn.Dense(self.num_classes)(x)


class IdentityNet(nn.Module):
    """Identity embedding: frames [N, 64, 64, 3] in [-1, 1] -> unit vectors [N, embed_dim].

    `__call__` gives cosine-softmax logits [N, num_subjects] for training; `embed` the
    normalised embedding used for retrieval and ACD.
    """

    num_subjects: int
    width: int = 16
    embed_dim: int = EMBED_DIM
    scale: float = 16.0  # softmax temperature of the cosine logits (NormFace uses ~16-32)

    def setup(self):
        self.trunk = ConvTrunk((self.width, 2 * self.width, 4 * self.width, 4 * self.width))
        self.project = nn.Dense(self.embed_dim)
        self.classes = self.param(
            "classes", nn.initializers.normal(1.0), (self.embed_dim, self.num_subjects)
        )

    def embed(self, frames: jax.Array) -> jax.Array:
        """Frames [N, 64, 64, 3] in [-1, 1] -> unit embeddings [N, embed_dim]."""
        e = self.project(self.trunk(frames.astype(jnp.float32)))
        return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-6)

    def __call__(self, frames: jax.Array) -> jax.Array:
        """Frames [N, 64, 64, 3] -> cosine-softmax logits [N, num_subjects]."""
        w = self.classes / jnp.maximum(jnp.linalg.norm(self.classes, axis=0, keepdims=True), 1e-6)
        return self.scale * self.embed(frames) @ w


@dataclasses.dataclass(frozen=True)
class InDomainNets:
    """Trained networks, ready for inference.

    Attributes:
      emotion: the `EmotionNet`; emotion_params its parameters.
      identity: the `IdentityNet`; identity_params its parameters.
      meta: how they were trained (data fingerprint, steps, training-set accuracies).
    """

    emotion: EmotionNet
    emotion_params: dict
    identity: IdentityNet
    identity_params: dict
    meta: dict

    def __post_init__(self):
        # Compiled once per instance (frozen dataclass: set through object.__setattr__).
        def logits(params, clips):
            return self.emotion.apply({"params": params}, clips)

        def embed(params, frames):
            return self.identity.apply({"params": params}, frames, method=IdentityNet.embed)

        object.__setattr__(self, "_logits", jax.jit(logits))
        object.__setattr__(self, "_embed", jax.jit(embed))

    def emotion_logits(self, clips: np.ndarray) -> np.ndarray:
        """Clips [B, T, 64, 64, 3] in [-1, 1] -> float32 logits [B, 6] (labels.EMOTIONS)."""
        return _chunked(lambda x: self._logits(self.emotion_params, x), clips)

    def frame_embeddings(self, clips: np.ndarray) -> np.ndarray:
        """Clips [B, T, 64, 64, 3] in [-1, 1] -> unit embeddings [B, T, EMBED_DIM]."""
        b, t = clips.shape[:2]
        frames = np.asarray(clips).reshape((b * t,) + clips.shape[2:])
        out = _chunked(lambda x: self._embed(self.identity_params, x), frames, _APPLY_CHUNK * 8)
        return out.reshape(b, t, -1)

    def clip_embeddings(self, clips: np.ndarray) -> np.ndarray:
        """Clips [B, T, 64, 64, 3] -> [B, EMBED_DIM]: normalised mean of frame embeddings."""
        return normalise(self.frame_embeddings(clips).mean(axis=1))


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of x [..., D] scaled to unit L2 norm."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def _chunked(fn: Callable, x: np.ndarray, chunk: int = _APPLY_CHUNK) -> np.ndarray:
    """fn over fixed-size chunks of x's first axis (the last padded), so one shape compiles."""
    n = len(x)
    if n == 0:
        raise ValueError("no clips to score")
    size = min(chunk, n)
    pad = -n % size
    x = np.asarray(x, np.float32)
    if pad:
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    out = [np.asarray(fn(jnp.asarray(x[i : i + size]))) for i in range(0, n + pad, size)]
    return np.concatenate(out)[:n]


# --------------------------------------------------------------------------------------------
# Training.


def _fit(
    module: nn.Module,
    example: np.ndarray,
    batches: Callable[[int], tuple[np.ndarray, np.ndarray]],
    num_steps: int,
    seed: int,
    lr: float,
    flip_axis: int,
) -> dict:
    """Trains `module` with softmax cross-entropy and Adam; returns its params.

    Args:
      module: the network; its `__call__` gives logits.
      example: an input batch (only its shape is used) for initialisation.
      batches: step -> (inputs, int labels); a pure function of the step.
      flip_axis: the width axis of the inputs; each example is mirrored with probability 1/2
        (faces are near-symmetric; mirroring changes neither emotion nor identity much).
      num_steps, seed, lr: Adam steps, initialisation / flip seed, learning rate.
    """
    key = jax.random.PRNGKey(seed)
    params = jax.jit(module.init)(key, jnp.asarray(example))["params"]
    tx = optax.adam(lr)

    def loss_fn(p, x, y):
        logits = module.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, opt, x, y, k):
        flip = jax.random.bernoulli(k, 0.5, (x.shape[0],) + (1,) * (x.ndim - 1))
        x = jnp.where(flip, jnp.flip(x, axis=flip_axis), x)
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    opt = tx.init(params)
    loss = float("nan")
    for i in range(num_steps):
        x, y = batches(i)
        params, opt, loss = step(
            params, opt, jnp.asarray(x), jnp.asarray(y), jax.random.fold_in(key, i)
        )
    logging.info("in-domain %s: final training loss %.4f", type(module).__name__, float(loss))
    return params


def _identity_batches(
    table: input_pipeline.VideoTable,
    indices: np.ndarray,
    classes: np.ndarray,
    batch: int,
    seed: int,
) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """step -> (frames [batch, 64, 64, 3] in [-1, 1], class ids [batch]): random frames."""

    def make(step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, step]))
        videos = indices[rng.integers(0, len(indices), batch)]
        frame = rng.integers(0, table.num_frames[videos])
        pixels = np.take(table.pixels, table.offsets[videos] + frame, axis=0)
        return input_pipeline.to_unit_range(pixels), classes[table.subject[videos]]

    return make


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How the in-domain networks are trained (recorded in the cache; a change retrains).

    Attributes:
      seed: initialisation and batch order.
      emotion_steps, identity_steps: Adam steps of each network.
      clip_batch: clips per emotion step; frame_batch: frames per identity step.
      width: first conv width of both trunks.
      lr: Adam learning rate.
    """

    seed: int = 0
    emotion_steps: int = 400
    identity_steps: int = 300
    clip_batch: int = 16
    frame_batch: int = 64
    width: int = 16
    lr: float = 1e-3


DEFAULT_SETTINGS = TrainSettings()


def train_nets(
    table: input_pipeline.VideoTable,
    split: splits.Split,
    condition: str,
    video_length: int,
    frame_stride: int,
    settings: TrainSettings = DEFAULT_SETTINGS,
) -> InDomainNets:
    """Trains both networks on the real training clips of `condition` (splits.train_indices).

    Args:
      table: the decoded data set; split: its subject split; condition: 'seen' | 'unseen'.
      video_length, frame_stride: clip geometry, as the evaluated clips.
      settings: steps, batches, width, seed.

    Returns:
      the trained `InDomainNets`; `meta` records each network's accuracy on a fresh batch of
      its own training data ('emotion_train_accuracy', 'identity_train_accuracy').
    """
    video_idx = splits.train_indices(table, split, condition)
    frame_idx = splits.train_indices(table, split, condition, include_neutral=True)
    s = settings
    clips = input_pipeline.TrainBatches(
        table, video_idx, s.clip_batch, 0, video_length, frame_stride, s.seed
    )
    emotion = EmotionNet(width=s.width)

    def clip_batch_at(step: int) -> tuple[np.ndarray, np.ndarray]:
        b = clips.batch(step)
        return b["video"], b["video_label"]

    emotion_params = _fit(
        emotion, clip_batch_at(0)[0][:1], clip_batch_at, s.emotion_steps, s.seed, s.lr, 3
    )
    subjects = np.unique(table.subject[frame_idx])
    classes = np.full(len(table.subject_names), -1, np.int64)
    classes[subjects] = np.arange(len(subjects))
    identity = IdentityNet(num_subjects=len(subjects), width=s.width)
    frames_at = _identity_batches(table, frame_idx, classes, s.frame_batch, s.seed)
    identity_params = _fit(
        identity, frames_at(0)[0][:1], frames_at, s.identity_steps, s.seed + 1, s.lr, 2
    )
    meta = {
        "format_version": _FORMAT_VERSION,
        "condition": condition,
        "video_length": video_length,
        "frame_stride": frame_stride,
        "settings": dataclasses.asdict(s),
        "num_train_videos": int(len(video_idx)),
        "num_identity_classes": int(len(subjects)),
        "data_fingerprint": data_fingerprint(table, split),
    }
    nets = InDomainNets(emotion, emotion_params, identity, identity_params, meta)
    # Accuracy on fresh (unaugmented) batches of the training data: a sanity figure, not a
    # generalisation estimate.
    x, y = clip_batch_at(10**6)
    meta["emotion_train_accuracy"] = float(np.mean(nets.emotion_logits(x).argmax(-1) == y))
    x, y = frames_at(10**6)
    logits = np.asarray(jax.jit(identity.apply)({"params": identity_params}, jnp.asarray(x)))
    meta["identity_train_accuracy"] = float(np.mean(logits.argmax(-1) == y))
    return nets


def data_fingerprint(table: input_pipeline.VideoTable, split: splits.Split) -> str:
    """A short hash of the table's layout, a sample of its pixels, and the split."""
    h = hashlib.sha256()
    for arr in (table.subject, table.emotion, table.take, table.num_frames):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(np.ascontiguousarray(table.pixels[:: max(1, len(table.pixels) // 64)]).tobytes())
    h.update(json.dumps([split.train_subjects, split.test_subjects]).encode())
    h.update(json.dumps(sorted((k, list(v)) for k, v in split.seen_emotions.items())).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Cache.


def cache_dir(
    data_dir: str, dataset: str, split_seed: int, condition: str, video_length: int, stride: int
) -> str:
    """`<data_dir>/vice_gan_eval_nets/<dataset>_split<seed>_<condition>_T<T>s<stride>`."""
    name = f"{dataset.replace('/', '-')}_split{split_seed}_{condition}_T{video_length}s{stride}"
    return os.path.join(data_dir, CACHE_DIRNAME, name)


def save_nets(nets: InDomainNets, directory: str) -> None:
    """Writes `nets.npz` (flattened params) and `meta.json` atomically into `directory`."""
    os.makedirs(directory, exist_ok=True)
    arrays = {}
    for prefix, params in (("emotion", nets.emotion_params), ("identity", nets.identity_params)):
        flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
        arrays.update({f"{prefix}/{k}": np.asarray(v) for k, v in flat.items()})
    tmp = os.path.join(directory, "nets.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(directory, "nets.npz"))
    tmp = os.path.join(directory, "meta.json.tmp")
    with open(tmp, "w") as f:
        json.dump(nets.meta, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(directory, "meta.json"))


def load_nets(directory: str) -> InDomainNets:
    """Reads what `save_nets` wrote. Raises OSError/ValueError/KeyError on a broken cache."""
    with open(os.path.join(directory, "meta.json")) as f:
        meta = json.load(f)
    if meta.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"{directory}: cache format {meta.get('format_version')}")
    with np.load(os.path.join(directory, "nets.npz")) as z:
        arrays = {k: z[k] for k in z.files}

    def tree(prefix: str) -> dict:
        flat = {k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
        return traverse_util.unflatten_dict(flat, sep="/")

    return InDomainNets(
        EmotionNet(width=meta["settings"]["width"]),
        tree("emotion"),
        IdentityNet(num_subjects=meta["num_identity_classes"], width=meta["settings"]["width"]),
        tree("identity"),
        meta,
    )


def load_or_train(
    table: input_pipeline.VideoTable,
    split: splits.Split,
    *,
    data_dir: str,
    dataset: str,
    condition: str,
    video_length: int,
    frame_stride: int,
    settings: TrainSettings = DEFAULT_SETTINGS,
) -> InDomainNets:
    """The cached networks of this data set, split and condition; trains and caches them first
    if there are none, or if the cache was made from other data or with other settings."""
    directory = cache_dir(data_dir, dataset, split.seed, condition, video_length, frame_stride)
    want = data_fingerprint(table, split)
    try:
        nets = load_nets(directory)
        same = nets.meta["settings"] == dataclasses.asdict(settings)
        if nets.meta["data_fingerprint"] == want and same:
            logging.info("in-domain nets from %s", directory)
            return nets
        logging.warning("in-domain nets in %s are of other data or settings; retraining", directory)
    except (OSError, ValueError, KeyError) as e:
        logging.info("no usable in-domain nets in %s (%s); training them", directory, e)
    nets = train_nets(table, split, condition, video_length, frame_stride, settings)
    nets.meta["path"] = directory
    save_nets(nets, directory)
    logging.info(
        "in-domain nets trained (emotion %.3f, identity %.3f on training data) -> %s",
        nets.meta["emotion_train_accuracy"],
        nets.meta["identity_train_accuracy"],
        directory,
    )
    return nets
