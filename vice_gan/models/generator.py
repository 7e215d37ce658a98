"""Image generator G_I: MoCoGAN's DCGAN decoder, one 64x64 RGB frame per latent vector.

Thesis Table 9 lists "K6 S0" for the first layer and LeakyReLU (+BN) on the output, which give
neither a 64x64 image nor values in [-1, 1]; DESIGN.md settles on MoCoGAN's generator, which is
the PyTorch peer's `ImageGenerator` (shared/bench/torch_peer.py), reproduced here layer for layer.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from vice_gan.models import layers

# The G update keeps of G's forward pass only each layer's conv output, by this name
# (steps.render, `remat.recompute_in_backward`): BatchNorm's centred values and the ReLU
# outputs, two more activations per layer, are recomputed from it in the backward pass.
CONV_OUT = "generator_conv_out"
KEEP_FOR_BACKWARD = jax.checkpoint_policies.save_only_these_names(CONV_OUT)


class Generator(nn.Module):
    """G_I: latent [N, Dz] -> frame [N, 64, 64, 3] in [-1, 1].

    Layers (PyTorch peer, all transposed convs without bias, N(0, 0.02) init, BN scale N(1, 0.02)):
    ConvT(Dz->8ngf, k4, s1, p0) on a 1x1 map (4x4) + BN + ReLU, then ConvT(k4, s2, p1) to 4ngf
    (8x8), 2ngf (16x16), ngf (32x32), each + BN + ReLU, and ConvT(ngf->3, k4, s2, p1) + tanh
    (64x64).

    Attributes:
        ngf: base width (thesis/MoCoGAN: 64).
        upconv_impl: `layers.UpConv2x.impl` ('auto' picks the fastest on XLA:CPU per layer).
        dtype: computation dtype (parameters stay float32).
        axis_name: mapped axis over which BatchNorm averages its statistics (global batch).
    """

    ngf: int = 64
    upconv_impl: str = "auto"
    dtype: layers.Dtype = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
        """Renders frames.

        Args:
            z: [N, Dz] per-frame latents, by default [z_c (50); z_a one-hot (6); z_m (10)].
            train: batch statistics (and running-average updates) if True, else running averages.

        Returns:
            [N, 64, 64, 3] float32 in [-1, 1].
        """

        def bn_relu(h):
            h = checkpoint_name(h, CONV_OUT)
            h = layers.batch_norm(train, self.axis_name, self.dtype, layers.dcgan_scale_init)(h)
            return nn.relu(h)

        h = bn_relu(layers.Project1x1To4x4(8 * self.ngf, dtype=self.dtype)(z))  # 4x4
        for mult in (4, 2, 1):  # 8x8, 16x16, 32x32
            up = layers.UpConv2x(mult * self.ngf, impl=self.upconv_impl, dtype=self.dtype)
            h = bn_relu(up(h))
        h = layers.UpConv2x(3, impl=self.upconv_impl, dtype=self.dtype)(h)  # 64x64, no BN
        return jnp.tanh(h).astype(jnp.float32)
