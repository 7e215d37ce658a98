"""Frame-quality metrics of thesis §5.4.1-5.4.2: SSIM and MSE against the real clip.

Per-frame metrics take frames in [0, 1]; clip metrics take the model's [-1, 1] clips, map them
to [0, 1] with (x + 1) / 2 and average over frames (DESIGN.md, Evaluation). SSIM is dm-pix's
single-scale SSIM (Wang et al. 2004) with an 11x11 Gaussian window of sigma 1.5 and max value 1,
averaged over the three colour channels, as dm-pix (and tf.image.ssim) do.
"""

import dm_pix as pix
import jax
import jax.numpy as jnp

SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5


def _check_pair(a: jax.Array, b: jax.Array, rank: int) -> None:
    if a.shape != b.shape or a.ndim != rank:
        raise ValueError(f"expected two rank-{rank} arrays of one shape, got {a.shape}, {b.shape}")


@jax.jit
def ssim_per_frame(a: jax.Array, b: jax.Array) -> jax.Array:
    """SSIM of each frame pair.

    Args:
      a: [N, H, W, C] float frames in [0, 1]; H, W >= 11.
      b: [N, H, W, C] float frames in [0, 1].

    Returns:
      [N] float32 SSIM, 1 for identical frames.
    """
    _check_pair(a, b, 4)
    return pix.ssim(
        a.astype(jnp.float32),
        b.astype(jnp.float32),
        max_val=1.0,
        filter_size=SSIM_FILTER_SIZE,
        filter_sigma=SSIM_FILTER_SIGMA,
    )


@jax.jit
def mse_per_frame(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared error of each frame pair over pixels and channels.

    Args:
      a: [N, H, W, C] float frames in [0, 1].
      b: [N, H, W, C] float frames in [0, 1].

    Returns:
      [N] float32 MSE.
    """
    _check_pair(a, b, 4)
    diff = a.astype(jnp.float32) - b.astype(jnp.float32)
    return jnp.mean(jnp.square(diff), axis=(1, 2, 3))


def _per_clip(frame_metric, a: jax.Array, b: jax.Array) -> jax.Array:
    _check_pair(a, b, 5)
    to_unit = lambda x: (x.astype(jnp.float32) + 1.0) / 2.0  # noqa: E731
    frames = lambda x: to_unit(x).reshape((-1,) + x.shape[2:])  # noqa: E731
    per_frame = frame_metric(frames(a), frames(b))
    return jnp.mean(per_frame.reshape(a.shape[:2]), axis=1)


@jax.jit
def clip_ssim(generated: jax.Array, real: jax.Array) -> jax.Array:
    """Mean per-frame SSIM of each clip against its reference.

    Args:
      generated: [B, T, H, W, 3] float clips in [-1, 1].
      real: [B, T, H, W, 3] float reference clips in [-1, 1].

    Returns:
      [B] float32 SSIM averaged over the T frames.
    """
    return _per_clip(ssim_per_frame, generated, real)


@jax.jit
def clip_mse(generated: jax.Array, real: jax.Array) -> jax.Array:
    """Mean per-frame MSE of each clip against its reference, on the [0, 1] scale.

    Args:
      generated: [B, T, H, W, 3] float clips in [-1, 1].
      real: [B, T, H, W, 3] float reference clips in [-1, 1].

    Returns:
      [B] float32 MSE averaged over the T frames.
    """
    return _per_clip(mse_per_frame, generated, real)
