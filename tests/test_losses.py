"""Each loss of vice_gan.losses against a value computed by hand."""

import math

import numpy as np
import pytest

from vice_gan import losses


def test_bce_with_logits_hand_values():
    # sigmoid(0) = 1/2 -> -log(1/2) = log 2 for either target.
    assert float(losses.bce_with_logits(np.zeros((3, 4, 4, 1)), 1.0)) == pytest.approx(math.log(2))
    # target 1, logit 2: -log(sigmoid(2)) = log(1 + e^-2).
    assert float(losses.bce_with_logits(np.array([2.0]), 1.0)) == pytest.approx(
        math.log1p(math.exp(-2.0)), rel=1e-6
    )
    # target 0, logit 2: -log(1 - sigmoid(2)) = log(1 + e^2); mean with logit -1 (log(1+e^-1)).
    expect = (math.log1p(math.exp(2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert float(losses.bce_with_logits(np.array([2.0, -1.0]), 0.0)) == pytest.approx(
        expect, rel=1e-6
    )


def test_discriminator_and_generator_losses():
    real, fake = np.array([3.0]), np.array([-1.0])
    expect_d = math.log1p(math.exp(-3.0)) + math.log1p(math.exp(-1.0))
    assert float(losses.discriminator_loss(real, fake)) == pytest.approx(expect_d, rel=1e-6)
    # Non-saturating: -log sigmoid(fake).
    assert float(losses.generator_adversarial_loss(fake)) == pytest.approx(
        math.log1p(math.exp(1.0)), rel=1e-6
    )


def test_category_loss_hand_values():
    # Uniform logits over 6 classes: log 6.
    assert float(losses.category_loss(np.zeros((2, 6)), np.array([0, 5]))) == pytest.approx(
        math.log(6)
    )
    logits = np.array([[1.0, 2.0, 0.0, 0.0, 0.0, 0.0]])
    z = math.e + math.e**2 + 4
    assert float(losses.category_loss(logits, np.array([1]))) == pytest.approx(
        -math.log(math.e**2 / z), rel=1e-6
    )


def test_content_loss_hand_values():
    real = np.array([[[1.0, 2.0]], [[0.0, 0.0]]])  # [B=2, T=1, D=2]
    fake = np.array([[[3.0, 5.0]], [[0.0, 1.0]]])
    # squared diffs 4, 9, 0, 1 -> mean 3.5
    assert float(losses.content_loss(real, fake)) == pytest.approx(3.5)


def test_reconstruction_and_kl():
    x = np.zeros((1, 2, 2, 1))
    r = np.full((1, 2, 2, 1), 0.5)
    assert float(losses.reconstruction_loss(x, r)) == pytest.approx(0.25)
    assert float(losses.kl_divergence(np.zeros((3, 50)), np.zeros((3, 50)))) == pytest.approx(0.0)
    # mean 1 in two dims, unit variance: 0.5 * (1 + 1) = 1 per example.
    mean = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert float(losses.kl_divergence(mean, np.zeros((2, 2)))) == pytest.approx(1.0)
    # mean 0, logvar log 2 in one dim: -0.5 (1 + log 2 - 2) = 0.5 - 0.5 log 2.
    assert float(losses.kl_divergence(np.zeros((1, 1)), np.full((1, 1), math.log(2)))) == (
        pytest.approx(0.5 - 0.5 * math.log(2), rel=1e-6)
    )
