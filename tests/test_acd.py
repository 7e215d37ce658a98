"""Tests for vice_gan.evaluation.acd: known displacements give known ACD."""

import jax.numpy as jnp
import numpy as np
import pytest

from vice_gan.evaluation import acd


def test_constant_step_gives_its_norm():
    # Features move by (1, 2, 2) (norm 3) every frame in clip 0 and stay put in clip 1.
    t = np.arange(5, dtype=np.float32)[:, None]
    moving = np.array([4.0, -1.0, 0.5], np.float32) + t * np.array([1.0, 2.0, 2.0], np.float32)
    still = np.tile(np.array([7.0, 7.0, 7.0], np.float32), (5, 1))
    np.testing.assert_allclose(np.asarray(acd.acd(np.stack([moving, still]))), [3.0, 0.0])


def test_mean_of_unequal_steps_and_spatial_features():
    # Steps of norm 1 and 5 average to 3; [h, w, c] features are flattened.
    f = np.zeros((1, 3, 2, 2, 1), np.float32)
    f[0, 1, 0, 0, 0] = 1.0
    f[0, 2, 0, 0, 0] = 1.0 + 3.0
    f[0, 2, 1, 1, 0] = 4.0
    np.testing.assert_allclose(np.asarray(acd.acd(f)), [3.0], rtol=1e-6)


def test_acd_with_encoder_batches_frames():
    # Encoder: mean colour of each frame; clip 0 brightens by 0.1 per frame in every channel.
    b, t = 2, 4
    clips = np.zeros((b, t, 8, 8, 3), np.float32)
    clips[0] += (0.1 * np.arange(t, dtype=np.float32))[:, None, None, None]
    clips[1] = 0.3
    encode = lambda frames: jnp.mean(frames, axis=(1, 2))  # noqa: E731
    want = [0.1 * np.sqrt(3.0), 0.0]
    for batch_size in (None, 3):
        got = np.asarray(acd.acd_with_encoder(encode, clips, batch_size=batch_size))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_single_frame_rejected():
    with pytest.raises(ValueError, match="T >= 2"):
        acd.acd(np.zeros((2, 1, 4), np.float32))
