"""Generation: the same identity in each of the six emotions, as arrays, GIF grids and MP4.

Used by the training loop's sample grids, by evaluation, and by `--mode=generate`. The
generator runs in inference mode (BatchNorm running averages), so a clip does not depend on
what else is in the batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vice_gan import labels, steps, writers
from vice_gan.config import Config
from vice_gan.state import MOTION_DIM, GanState, Models


def make_translate_fn(config: Config, models: Models) -> Callable:
    """jit fn(state, input_clips [N, T, 64, 64, 3], cats int [N], h0 [N, 10], eps [N, T, 10])
    -> generated clips [N, T, 64, 64, 3] float32 in [-1, 1].

    The content code comes from the input clip exactly as in training (--content_encoding).
    `models` must be built with axis_name=None (no batch axis outside shard_map).
    """

    def translate(state: GanState, input_clips, cats, h0, eps):
        codes = steps.encode_clips(
            models, state.encoder_params(), state.enc_batch_stats, input_clips
        )
        z_c = steps.content_input(codes, config.content_encoding)
        clips, _ = steps.render(
            models, config, state.gen_params, state.gen_batch_stats, z_c, h0, eps, cats, train=False
        )
        return clips

    return jax.jit(translate)


def emotion_grid(
    translate_fn: Callable,
    state: GanState,
    input_clips: np.ndarray,
    key: jax.Array,
    batch: int = 64,
) -> np.ndarray:
    """Each input identity in all six emotions.

    Args:
      input_clips: [R, T, 64, 64, 3] in [-1, 1], one identity source per row.
      key: motion noise key; one noise draw per row, shared by its six emotions, so the columns
        differ only in the requested emotion.
      batch: clips per generator call (bounds memory).
    Returns:
      [R, 6, T, 64, 64, 3] float32 in [-1, 1], columns in `labels.EMOTIONS` order.
    """
    r, t = input_clips.shape[:2]
    e = labels.NUM_EMOTIONS
    k0, k1 = jax.random.split(key)
    h0 = np.repeat(np.asarray(jax.random.normal(k0, (r, MOTION_DIM))), e, axis=0)
    eps = np.repeat(np.asarray(jax.random.normal(k1, (r, t, MOTION_DIM))), e, axis=0)
    inputs = np.repeat(input_clips, e, axis=0)
    cats = np.tile(np.arange(e, dtype=np.int32), r)
    out = []
    for i in range(0, r * e, batch):
        sl = slice(i, i + batch)
        out.append(
            np.asarray(
                translate_fn(
                    state,
                    jnp.asarray(inputs[sl]),
                    jnp.asarray(cats[sl]),
                    jnp.asarray(h0[sl]),
                    jnp.asarray(eps[sl]),
                )
            )
        )
    return np.concatenate(out).reshape((r, e) + input_clips.shape[1:])


def write_emotion_grid(
    path_stem: str,
    inputs: np.ndarray,
    grid: np.ndarray,
    fps: float = 8.0,
    formats: tuple[str, ...] = ("gif",),
) -> list[str]:
    """Writes the input column + six emotion columns as GIF/MP4, and arrays as .npz.

    Args:
      path_stem: output path without extension.
      inputs: [R, T, 64, 64, 3] identity sources; grid: [R, 6, T, 64, 64, 3] (both in [-1, 1]).
      formats: any of 'gif', 'mp4', 'npz'.
    Returns:
      the written paths.
    """
    tiles = np.concatenate([inputs[:, None], grid], axis=1)  # column 0: the input clip
    frames = writers.video_grid(tiles)
    written = []
    if "gif" in formats:
        writers.write_gif(path_stem + ".gif", frames, fps)
        written.append(path_stem + ".gif")
    if "mp4" in formats:
        writers.write_mp4(path_stem + ".mp4", frames, fps)
        written.append(path_stem + ".mp4")
    if "npz" in formats:
        tmp = path_stem + ".tmp.npz"
        np.savez_compressed(
            tmp,
            inputs=writers.to_uint8(inputs),
            generated=writers.to_uint8(grid),
            emotions=np.array(labels.EMOTIONS),
        )
        os.replace(tmp, path_stem + ".npz")
        written.append(path_stem + ".npz")
    return written
