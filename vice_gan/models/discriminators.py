"""Discriminators: MoCoGAN's patch image discriminator D_I and categorical video discriminator D_V.

Both follow the PyTorch peer (shared/bench/torch_peer.py) layer for layer and return logits; the
sigmoid / softmax are folded into the losses. Thesis Table 9's D_V (stride 1, no padding, one
output) cannot reduce a 64x64 clip and has no category head, so DESIGN.md follows MoCoGAN.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from vice_gan.models import layers

# Temporal extent lost by D_V's four k=4, temporal-stride-1, temporal-VALID convolutions.
_DV_TIME_SHRINK = 4 * 3


class ImageDiscriminator(nn.Module):
    """D_I: frames [N, 64, 64, 3] in [-1, 1] -> patch logits [N, 4, 4, 1].

    Conv(3->ndf, k4, s2, p1) + LReLU(0.2); Conv(->2ndf) + BN + LReLU; Conv(->4ndf) + BN + LReLU;
    Conv(4ndf->1, k4, s2, p1). No conv biases, N(0, 0.02) kernels, BN scale N(1, 0.02).

    Attributes:
        ndf: base width (thesis/MoCoGAN: 64).
        conv_impl: `layers.StridedConv.impl`; 'native' (nn.Conv's lax conv, which XLA:CPU
            runs well for these layers), 'mixed' or 'gemm': equal outputs and gradients.
        dtype: computation dtype (parameters stay float32).
        axis_name: mapped axis over which BatchNorm averages its statistics (global batch).
    """

    ndf: int = 64
    conv_impl: str = "native"
    dtype: layers.Dtype = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Scores 4x4 overlapping patches of each frame.

        Args:
            x: [N, 64, 64, 3] in [-1, 1].
            train: batch statistics if True, else running averages.

        Returns:
            [N, 4, 4, 1] float32 logits (real = positive).
        """

        names = iter(f"Conv_{i}" for i in range(4))  # nn.Conv's auto-names: same param tree

        def conv(features):
            return layers.StridedConv(
                features,
                4,
                stride=2,
                padding=1,
                impl=self.conv_impl,
                kernel_init=layers.dcgan_kernel_init,
                dtype=self.dtype,
                name=next(names),
            )

        h = nn.leaky_relu(conv(self.ndf)(x), 0.2)  # 32x32; no BN on the first layer (DCGAN)
        for mult in (2, 4):  # 16x16, 8x8
            h = conv(mult * self.ndf)(h)
            h = layers.batch_norm(train, self.axis_name, self.dtype, layers.dcgan_scale_init)(h)
            h = nn.leaky_relu(h, 0.2)
        return conv(1)(h).astype(jnp.float32)  # 4x4


class VideoDiscriminator(nn.Module):
    """D_V: clips [B, T, 64, 64, 3] in [-1, 1] -> [B, 1 + num_classes] logits.

    Conv3d(3->ndf, k4, stride (1,2,2), padding (0,1,1)) + LReLU(0.2); the same to 2ndf, 4ndf, 8ndf,
    each + BN + LReLU (time T -> T-12, space 64 -> 4); Conv3d(8ndf -> 1 + num_classes, kernel
    (kt, 4, 4), VALID) with kt = min(4, T - 12); logits averaged over the remaining T - 12 - kt + 1
    time steps (1 for T = 16). No conv biases, N(0, 0.02) kernels, BN scale N(1, 0.02).

    Attributes:
        ndf: base width (thesis/MoCoGAN: 64).
        num_classes: number of emotion categories (6).
        conv_impl: `layers.VideoConv.impl`: 'auto' (per layer, the fastest on XLA:CPU:
            Winograd along time for layers 2-4, `layers.choose_video_impl`), 'winograd',
            'winograd_mixed', 'gemm', 'mixed', 'slices' or 'native' (nn.Conv's 3-D lax conv,
            whose gradients XLA:CPU runs ~50x slower); equal outputs and gradients.
        dtype: computation dtype (parameters stay float32).
        axis_name: mapped axis over which BatchNorm averages its statistics (global batch).
    """

    ndf: int = 64
    num_classes: int = 6
    conv_impl: str = "auto"
    dtype: layers.Dtype = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Scores whole clips and classifies their emotion.

        Args:
            x: [B, T, 64, 64, 3] in [-1, 1], T >= 13.
            train: batch statistics if True, else running averages.

        Returns:
            [B, 1 + num_classes] float32: column 0 the real/fake logit, columns 1.. category logits.

        Raises:
            ValueError: if T < 13 (the four temporal-VALID k=4 convs need T - 12 >= 1).
        """
        t = x.shape[1]
        if x.ndim != 5 or t - _DV_TIME_SHRINK < 1:
            raise ValueError(
                f"VideoDiscriminator needs clips [B, T, H, W, C] with T >= {_DV_TIME_SHRINK + 1} "
                f"(four temporal-VALID k=4 convs), got shape {tuple(x.shape)}"
            )

        names = iter(f"Conv_{i}" for i in range(5))  # nn.Conv's auto-names: same param tree

        def conv(features, kernel_time=4, kernel_size=4, stride=2, padding=1):
            return layers.VideoConv(
                features,
                kernel_time,
                kernel_size,
                stride=stride,
                padding=padding,
                impl=self.conv_impl,
                kernel_init=layers.dcgan_kernel_init,
                dtype=self.dtype,
                name=next(names),
            )

        # Time-major inside ([T, B, H, W, C]): each temporal tap of a conv is then a contiguous
        # slice (layers.video_conv). BatchNorm reduces over all axes but channels either way.
        h = jnp.swapaxes(x, 0, 1)
        h = nn.leaky_relu(conv(self.ndf)(h), 0.2)
        for mult in (2, 4, 8):
            h = conv(mult * self.ndf)(h)
            h = layers.batch_norm(train, self.axis_name, self.dtype, layers.dcgan_scale_init)(h)
            h = nn.leaky_relu(h, 0.2)
        kt = min(4, t - _DV_TIME_SHRINK)
        # [t', B, 1, 1, 1 + num_classes]: on the 4x4 map this is one product per time step.
        h = conv(1 + self.num_classes, kt, 4, stride=1, padding=0)(h)
        return jnp.mean(h.astype(jnp.float32), axis=(0, 2, 3))
