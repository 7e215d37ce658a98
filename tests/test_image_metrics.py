"""Tests for vice_gan.evaluation.image_metrics: SSIM against an independent SciPy reference."""

import numpy as np
import pytest
from scipy import signal

from vice_gan.evaluation import image_metrics


def reference_ssim(a: np.ndarray, b: np.ndarray, max_val: float = 1.0) -> float:
    """Wang et al. 2004 SSIM of one [H, W, C] pair, float64, averaged over channels.

    Their MATLAB ssim_index: 11x11 Gaussian window (sigma 1.5, fspecial) over the 'valid'
    region, K1 = 0.01, K2 = 0.03, L = max_val; colour channels scored separately and averaged.
    """
    r = np.arange(11) - 5.0
    window = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    scores = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        filt = lambda z: signal.convolve2d(z, window, mode="valid")  # noqa: E731
        mu_x, mu_y = filt(x), filt(y)
        var_x = filt(x * x) - mu_x**2
        var_y = filt(y * y) - mu_y**2
        cov = filt(x * y) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
            (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        )
        scores.append(ssim_map.mean())
    return float(np.mean(scores))


def smooth_frames(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    """[n, size, size, 3] frames in [0, 1] with structure at several scales."""
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    frames = []
    for _ in range(n):
        f = rng.uniform(1, 6, size=3)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        img = np.stack(
            [0.5 + 0.4 * np.sin(2 * np.pi * f[c] * (xx + 0.5 * yy) + phase[c]) for c in range(3)],
            axis=-1,
        )
        frames.append(img)
    return np.asarray(frames, np.float32)


def test_identical_frames():
    rng = np.random.default_rng(0)
    a = smooth_frames(rng, 3)
    np.testing.assert_allclose(np.asarray(image_metrics.ssim_per_frame(a, a)), 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(image_metrics.mse_per_frame(a, a)), 0.0)
    clips = a[None] * 2.0 - 1.0
    np.testing.assert_allclose(np.asarray(image_metrics.clip_ssim(clips, clips)), 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(image_metrics.clip_mse(clips, clips)), 0.0)


def test_mse_hand_computed():
    a = np.zeros((2, 1, 2, 1), np.float32)
    b = np.array([[[[0.5], [0.0]]], [[[1.0], [1.0]]]], np.float32)
    # Frame 0: (0.25 + 0) / 2; frame 1: (1 + 1) / 2.
    np.testing.assert_allclose(np.asarray(image_metrics.mse_per_frame(a, b)), [0.125, 1.0])
    # Clips in [-1, 1]: -1 -> 0 and 0 -> 0.5 on the [0, 1] scale, so each pixel differs by 0.5;
    # clip 1 mixes a frame at MSE 0.25 and an identical frame, averaging to 0.125.
    gen = -np.ones((2, 2, 1, 1, 3), np.float32)
    real = gen.copy()
    real[0] = 0.0
    real[1, 0] = 0.0
    np.testing.assert_allclose(np.asarray(image_metrics.clip_mse(gen, real)), [0.25, 0.125])


def test_ssim_matches_reference():
    rng = np.random.default_rng(1)
    a = smooth_frames(rng, 4)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    b[1] = smooth_frames(rng, 1)[0]  # an unrelated frame: low SSIM
    b[2] = np.clip(a[2] * 0.7 + 0.2, 0, 1)  # contrast and brightness change
    got = np.asarray(image_metrics.ssim_per_frame(a, b))
    want = [reference_ssim(x, y) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    clip = np.asarray(image_metrics.clip_ssim(a[None] * 2 - 1, b[None] * 2 - 1))
    np.testing.assert_allclose(clip, [np.mean(want)], rtol=0, atol=1e-4)


def test_ssim_decreases_with_noise():
    rng = np.random.default_rng(2)
    a = smooth_frames(rng, 1)
    noise = rng.normal(0, 1, a.shape).astype(np.float32)
    scores = [
        float(image_metrics.ssim_per_frame(a, np.clip(a + s * noise, 0, 1))[0])
        for s in (0.0, 0.02, 0.05, 0.1, 0.2)
    ]
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert all(x > y for x, y in zip(scores, scores[1:], strict=False)), scores


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        image_metrics.mse_per_frame(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 5, 3)))
