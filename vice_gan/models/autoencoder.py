"""Content autoencoders (thesis §4.1, Appendix A.1 Tables 6-8): SAE / VAE x small / medium / large.

Every variant maps a frame [N, 64, 64, 3] in [-1, 1] to a 50-d code (VAE: mean and log-variance)
and back to [N, 64, 64, 3] in [-1, 1] (tanh, matching the data's range). Encoders are the tables'
layers exactly (Conv + BN + ReLU, no conv bias, He-normal init), then flatten (NHWC order) and a
Dense with bias to the code (VAE: two Dense heads, mean and log-variance). Large is the PyTorch
peer's `Encoder` (shared/bench/torch_peer.py) up to the flatten order.

Decoders. Every decoder starts with Dense(code -> S x S x C, no bias) + BN + ReLU, mirroring the
encoder's last conv (C = the encoder's last width), followed by the tables' deconvs (+ BN + ReLU,
as `layers.UpConv2x`, each exactly 2x). The tables' decoders do not all return to 64x64x3, so:
  - large (Table 6: 5 stride-2 convs, 4 deconvs N256..N32 K3 S2 P1): S = 2 (the encoder's 2x2x512
    output, exact mirror); the 4 deconvs reach 32x32x32; ADDED one output layer
    Deconv-N3 K3 S2 P1 + tanh (no BN) -> 64x64x3. (Table 1 counts 4 deconvs; we have 5.)
  - medium (Table 7: convs K4 S4, K4 S4, K3 S3, K3 S3 reach 1x1x256; 3 deconvs N128..N32 K3 S2
    P1): S = 4 (1x1 + 3 table deconvs + 1 output deconv cannot reach 64, so the Dense decompresses
    to 4x4x256); the 3 deconvs reach 32x32x32; ADDED Deconv-N3 K3 S2 P1 + tanh -> 64x64x3.
  - small (Table 8: Conv-N16 K3 S1, Conv-N4 K3 S2, MaxPool K2 S2 P1 -> 17x17x4; deconvs N4, N16,
    N64, all K2 S2 P1, last with BN + Sigmoid): S = 8, C = 4; NO layer added: the last deconv
    (the table's output layer) is made the RGB output, N64 -> N3, BN + Sigmoid -> tanh. CHANGED
    all three deconvs' padding P1 -> P0: K2 S2 P1 gives 2H-2 (PyTorch allows no output_padding
    of 2), K2 S2 P0 gives exactly 2H. The encoder keeps the table's MaxPool K2 S2 P1 (-inf
    padding, as PyTorch), hence 17x17x4 = 1156 features into the Dense.
Decoder deconvs use He-normal init too; BN scales start at 1 (PyTorch defaults, as the peer's
encoder). `width_divisor` shrinks every hidden width (not the code, not RGB) for tests.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from vice_gan.models import layers

AE_TYPES = ("sae", "vae")
SIZES = ("small", "medium", "large")


@dataclasses.dataclass(frozen=True)
class _Conv:
    features: int
    kernel: int
    stride: int
    padding: int


@dataclasses.dataclass(frozen=True)
class _Arch:
    encoder: tuple[_Conv, ...]
    pool: bool  # MaxPool K2 S2 P1 after the convs (small only)
    start: int  # spatial size S of the decoder's Dense output
    deconvs: tuple[int, ...]  # hidden deconv widths (each + BN + ReLU, exactly 2x)
    deconv_kernel: int
    deconv_padding: int


_ARCHS = {
    "large": _Arch(
        encoder=tuple(_Conv(c, 3, 2, 1) for c in (32, 64, 128, 256, 512)),
        pool=False,
        start=2,
        deconvs=(256, 128, 64, 32),
        deconv_kernel=3,
        deconv_padding=1,
    ),
    "medium": _Arch(
        encoder=(_Conv(32, 4, 4, 1), _Conv(64, 4, 4, 1), _Conv(128, 3, 3, 1), _Conv(256, 3, 3, 1)),
        pool=False,
        start=4,
        deconvs=(128, 64, 32),
        deconv_kernel=3,
        deconv_padding=1,
    ),
    "small": _Arch(
        encoder=(_Conv(16, 3, 1, 1), _Conv(4, 3, 2, 1)),
        pool=True,
        start=8,
        deconvs=(4, 16),
        deconv_kernel=2,
        deconv_padding=0,
    ),
}


def _check(ae_type: str, size: str) -> _Arch:
    if ae_type not in AE_TYPES:
        raise ValueError(f"ae_type must be one of {AE_TYPES}, got {ae_type!r}")
    if size not in SIZES:
        raise ValueError(f"autoencoder size must be one of {SIZES}, got {size!r}")
    return _ARCHS[size]


def _width(channels: int, divisor: int) -> int:
    return max(1, channels // divisor)


class Encoder(nn.Module):
    """Content encoder I_e: frames [N, 64, 64, 3] in [-1, 1] -> 50-d codes.

    Attributes:
        size: 'small' | 'medium' | 'large' (Tables 8, 7, 6).
        ae_type: 'sae' (one code) | 'vae' (mean and log-variance).
        code_dim: code size (thesis: 50).
        width_divisor: divides every conv width (min 1); 1 = the thesis, tests use 8.
        conv_impl: `layers.StridedConv.impl`: 'auto' (per layer: 'block' on the RGB input,
            'gemm' on maps of 2x2 or less, else 'mixed'), 'mixed' (lax forward, products
            backward), 'gemm', 'block' or 'native' (nn.Conv's lax conv, whose backward pass is
            3.6x slower here); equal outputs and gradients.
        dtype: computation dtype (parameters stay float32).
        axis_name: mapped axis over which BatchNorm averages its statistics (global batch).
    """

    size: str
    ae_type: str
    code_dim: int = 50
    width_divisor: int = 1
    conv_impl: str = "auto"
    dtype: layers.Dtype = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array | None]:
        """Encodes frames.

        Args:
            x: [N, 64, 64, 3] in [-1, 1].
            train: batch statistics if True, else running averages.

        Returns:
            (mean [N, code_dim], logvar [N, code_dim] or None for 'sae'), float32. For the SAE
            `mean` is the code itself; for the VAE it is the content code used by the GAN.
        """
        arch = _check(self.ae_type, self.size)
        h = x
        for i, spec in enumerate(arch.encoder):
            h = layers.StridedConv(
                _width(spec.features, self.width_divisor),
                spec.kernel,
                stride=spec.stride,
                padding=spec.padding,
                impl=self.conv_impl,
                kernel_init=layers.he_normal_init,
                dtype=self.dtype,
                name=f"Conv_{i}",  # nn.Conv's auto-name: same parameter tree
            )(h)
            h = nn.relu(layers.batch_norm(train, self.axis_name, self.dtype)(h))
        if arch.pool:
            h = nn.max_pool(h, (2, 2), strides=(2, 2), padding=((1, 1), (1, 1)))
        h = h.reshape(h.shape[0], -1)
        mean = nn.Dense(self.code_dim, dtype=self.dtype, name="fc_mean")(h).astype(jnp.float32)
        if self.ae_type == "sae":
            return mean, None
        logvar = nn.Dense(self.code_dim, dtype=self.dtype, name="fc_logvar")(h)
        return mean, logvar.astype(jnp.float32)


class Decoder(nn.Module):
    """Decoder: codes [N, code_dim] -> frames [N, 64, 64, 3] in [-1, 1] (module docstring).

    Attributes: as `Encoder`.
    """

    size: str
    ae_type: str
    code_dim: int = 50
    width_divisor: int = 1
    dtype: layers.Dtype = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
        """Decodes codes.

        Args:
            z: [N, code_dim] codes (VAE: sampled or mean).
            train: batch statistics if True, else running averages.

        Returns:
            [N, 64, 64, 3] float32 in [-1, 1].
        """
        arch = _check(self.ae_type, self.size)
        c0 = _width(arch.encoder[-1].features, self.width_divisor)
        s = arch.start
        h = nn.Dense(s * s * c0, use_bias=False, dtype=self.dtype, name="fc")(z)
        h = h.reshape(z.shape[0], s, s, c0)
        h = nn.relu(layers.batch_norm(train, self.axis_name, self.dtype)(h))
        up = functools.partial(
            layers.UpConv2x,
            kernel_size=arch.deconv_kernel,
            padding=arch.deconv_padding,
            kernel_init=layers.he_normal_init,
            dtype=self.dtype,
        )
        for features in arch.deconvs:
            h = up(_width(features, self.width_divisor))(h)
            h = nn.relu(layers.batch_norm(train, self.axis_name, self.dtype)(h))
        h = up(3)(h)  # RGB output layer (added for large/medium, the table's last for small)
        return jnp.tanh(h).astype(jnp.float32)


class Autoencoder(nn.Module):
    """Encoder + decoder; submodules 'encoder' / 'decoder' so the GAN can apply `Encoder` alone.

    Attributes: as `Encoder`.
    """

    size: str
    ae_type: str
    code_dim: int = 50
    width_divisor: int = 1
    dtype: layers.Dtype = jnp.float32
    axis_name: str | None = None

    def setup(self):
        _check(self.ae_type, self.size)
        kw = dict(
            size=self.size,
            ae_type=self.ae_type,
            code_dim=self.code_dim,
            width_divisor=self.width_divisor,
            dtype=self.dtype,
            axis_name=self.axis_name,
        )
        self.encoder = Encoder(**kw)
        self.decoder = Decoder(**kw)

    def encode(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array | None]:
        """[N, 64, 64, 3] -> (mean, logvar or None), see `Encoder`."""
        return self.encoder(x, train=train)

    def decode(self, z: jax.Array, *, train: bool) -> jax.Array:
        """[N, code_dim] -> [N, 64, 64, 3] in [-1, 1], see `Decoder`."""
        return self.decoder(z, train=train)

    def __call__(
        self, x: jax.Array, eps: jax.Array | None = None, *, train: bool
    ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """Reconstructs frames.

        Args:
            x: [N, 64, 64, 3] in [-1, 1].
            eps: [N, code_dim] standard-normal noise for the VAE's reparameterisation (drawn by
                the caller, so the step stays deterministic given its inputs); None decodes the
                mean. Ignored by the SAE.
            train: batch statistics if True, else running averages.

        Returns:
            (recon [N, 64, 64, 3] in [-1, 1], mean [N, code_dim], logvar [N, code_dim] or None).
        """
        mean, logvar = self.encoder(x, train=train)
        z = mean
        if self.ae_type == "vae" and eps is not None:
            z = mean + jnp.exp(0.5 * logvar) * eps
        return self.decoder(z, train=train), mean, logvar


def make_autoencoder(ae_type: str, size: str, **kw) -> Autoencoder:
    """Builds one of the six autoencoders.

    Args:
        ae_type: 'sae' | 'vae'.
        size: 'small' | 'medium' | 'large'.
        **kw: other `Autoencoder` fields (code_dim, width_divisor, dtype, axis_name).

    Raises:
        ValueError: unknown ae_type or size.
    """
    _check(ae_type, size)
    return Autoencoder(size=size, ae_type=ae_type, **kw)
