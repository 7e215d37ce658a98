"""Average Content Distance (ACD; MoCoGAN, Tulyakov et al. 2018; thesis §5.4.3).

ACD of a clip is the mean L2 distance between the feature vectors of consecutive frames: lower
means the content (the identity) changes less across the clip. The thesis takes features from
the pretrained autoencoder's encoder; DESIGN.md also reports it with an independent identity
network, always beside the same figure on real test clips.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp


@jax.jit
def acd(features: jax.Array) -> jax.Array:
    """ACD of each clip from per-frame features.

    Args:
      features: [B, T, ...] per-frame features, T >= 2; trailing dimensions (a flat [D] vector
        or a spatial code [h, w, c]) are flattened into one vector per frame.

    Returns:
      [B] float32 mean over t of ||f[t + 1] - f[t]||_2.
    """
    if features.ndim < 3 or features.shape[1] < 2:
        raise ValueError(f"features must be [B, T >= 2, ...], got shape {features.shape}")
    flat = features.reshape(features.shape[:2] + (-1,)).astype(jnp.float32)
    steps = jnp.linalg.norm(flat[:, 1:] - flat[:, :-1], axis=-1)
    return jnp.mean(steps, axis=1)


def acd_with_encoder(
    apply_fn: Callable[[jax.Array], jax.Array],
    clips: jax.Array,
    batch_size: int | None = None,
) -> jax.Array:
    """ACD of each clip with features from any frame-level network.

    Args:
      apply_fn: frames [N, H, W, 3] (as in `clips`) -> features [N, ...]; e.g. the autoencoder's
        encoder in inference mode, or an identity embedding network. Jit it for speed.
      clips: [B, T, H, W, 3] clips (usually [B, T, 64, 64, 3] in [-1, 1]).
      batch_size: frames per `apply_fn` call, to bound memory; None runs all B * T at once.

    Returns:
      [B] float32 ACD (see `acd`).
    """
    if clips.ndim != 5:
        raise ValueError(f"clips must be [B, T, H, W, C], got shape {clips.shape}")
    b, t = clips.shape[:2]
    frames = jnp.asarray(clips).reshape((b * t,) + clips.shape[2:])
    step = frames.shape[0] if batch_size is None else batch_size
    features = jnp.concatenate(
        [jnp.asarray(apply_fn(frames[i : i + step])) for i in range(0, frames.shape[0], step)]
    )
    return acd(features.reshape((b, t) + features.shape[1:]))
