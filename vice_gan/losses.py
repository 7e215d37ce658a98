"""Pure loss functions of VICE-GAN (thesis §4.3.5); no module calls, no randomness.

Every loss is a mean over the local shard's examples; the step pmean's it over the batch axis,
so with equal shard sizes the result is the global-batch mean.
"""

import jax
import jax.numpy as jnp
import optax


def bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
    """Mean binary cross-entropy of `logits` (any shape) against a constant 0/1 target.

    The sigmoid of the thesis's D_I / D_V outputs is folded in here, which is the numerically
    stable form of -[t log D + (1 - t) log(1 - D)].
    """
    labels = jnp.full(logits.shape, target, jnp.float32)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Adversarial loss of a discriminator: real -> 1, fake -> 0 (thesis terms 1-2 / 3-4)."""
    return bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0)


def generator_adversarial_loss(fake_logits: jax.Array) -> jax.Array:
    """Non-saturating generator loss: -log D(G(z)), as MoCoGAN (fakes -> 1)."""
    return bce_with_logits(fake_logits, 1.0)


def category_loss(class_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy. class_logits [B, 6], labels int [B] in 0..5.

    D_V minimises it on real clips with their labels; G and R_m minimise it on fakes with the
    requested categories (thesis §4.3.5, category loss).
    """
    return jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(class_logits.astype(jnp.float32), labels)
    )


def content_loss(real_codes: jax.Array, fake_codes: jax.Array) -> jax.Array:
    """Content consistency: MSE between encoder codes of paired real and generated frames.

    real_codes, fake_codes: [B, T, D]; frame t of the input clip is paired with frame t of the
    generated clip (DESIGN.md). The thesis writes E[z_c(v) - z_c(v~)] and calls it an MSE.
    """
    diff = real_codes.astype(jnp.float32) - fake_codes.astype(jnp.float32)
    return jnp.mean(jnp.square(diff))


def reconstruction_loss(x: jax.Array, recon: jax.Array) -> jax.Array:
    """Autoencoder MSE over all pixels (thesis §4.1.3). x, recon: [N, 64, 64, 3] in [-1, 1]."""
    return jnp.mean(jnp.square(x.astype(jnp.float32) - recon.astype(jnp.float32)))


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over code dims, averaged over examples.

    mean, logvar: [N, D]. Closed form: -0.5 * sum(1 + logvar - mean^2 - exp(logvar)).
    """
    mean = mean.astype(jnp.float32)
    logvar = logvar.astype(jnp.float32)
    per_example = -0.5 * jnp.sum(1.0 + logvar - jnp.square(mean) - jnp.exp(logvar), axis=-1)
    return jnp.mean(per_example)
