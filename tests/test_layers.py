"""Tests of vice_gan.models.layers: sub-pixel UpConv2x and Project1x1To4x4 equal ConvTranspose2d."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from vice_gan.models import layers

# (kernel_size, padding) pairs giving exactly 2H: the AEs' K2 P0 / K3 P1, and G's K4 P1.
KP = [(2, 0), (3, 1), (4, 1)]
IMPLS = ["phases", "fused", "reference"]


def _rand(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _torch_conv_transpose_numpy(x, w, stride, padding, out_hw):
    """PyTorch's ConvTranspose2d definition as a scatter loop: out[s*i - p + a] += x[i] * W[a].

    x: [N, H, W, Cin]; w: [k, k, Cin, Cout] (PyTorch weight transposed (2, 3, 0, 1)).
    """
    n, h, wd, _ = x.shape
    k, _, _, cout = w.shape
    out = np.zeros((n, out_hw[0], out_hw[1], cout), np.float64)
    for i in range(h):
        for j in range(wd):
            for a in range(k):
                for b in range(k):
                    oy, ox = stride * i - padding + a, stride * j - padding + b
                    if 0 <= oy < out_hw[0] and 0 <= ox < out_hw[1]:
                        out[:, oy, ox] += x[:, i, j] @ w[a, b]
    return out


def _apply_upconv(impl, x, kernel, k, p, features):
    module = layers.UpConv2x(features, kernel_size=k, padding=p, impl=impl)
    return module.apply({"params": {"kernel": kernel}}, x)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k,p", KP)
def test_upconv_equals_reference(impl, k, p):
    x, w = _rand(0, (2, 5, 7, 3)), _rand(1, (k, k, 3, 5))
    out = _apply_upconv(impl, x, w, k, p, 5)
    assert out.shape == (2, 10, 14, 5)
    np.testing.assert_allclose(out, layers.conv_transpose_reference(x, w, p), atol=1e-5)


@pytest.mark.parametrize("k,p", KP)
def test_reference_equals_pytorch_scatter_definition(k, p):
    x, w = _rand(2, (1, 3, 4, 3)), _rand(3, (k, k, 3, 2))
    want = _torch_conv_transpose_numpy(np.asarray(x), np.asarray(w), 2, p, (6, 8))
    np.testing.assert_allclose(layers.conv_transpose_reference(x, w, p), want, atol=1e-5)
    np.testing.assert_allclose(_apply_upconv("phases", x, w, k, p, 2), want, atol=1e-5)


@pytest.mark.parametrize("k,p", KP)
def test_upconv_equals_flax_conv_transpose(k, p):
    # Mapping: flax nn.ConvTranspose(transpose_kernel=False) correlates the lhs-dilated input with
    # its kernel as given, so it equals PyTorch's layer with kernel = W[::-1, ::-1] (spatial flip,
    # same [k, k, Cin, Cout] axes) and explicit padding (k-1-p, k-1-p+output_padding) per side.
    x, w = _rand(4, (2, 4, 5, 3)), _rand(5, (k, k, 3, 5))
    lo = k - 1 - p
    hi = lo + layers.output_padding(k, p)
    flax_ct = nn.ConvTranspose(
        5, (k, k), strides=(2, 2), padding=((lo, hi), (lo, hi)), use_bias=False
    )
    want = flax_ct.apply({"params": {"kernel": w[::-1, ::-1]}}, x)
    np.testing.assert_allclose(_apply_upconv("phases", x, w, k, p, 5), want, atol=1e-5)


@pytest.mark.parametrize("impl", ["phases", "fused"])
@pytest.mark.parametrize("k,p", KP)
def test_upconv_vjp_equals_reference(impl, k, p):
    x, w = _rand(6, (2, 4, 6, 3)), _rand(7, (k, k, 3, 5))
    ct = _rand(8, (2, 8, 12, 5))
    _, vjp = jax.vjp(lambda x, w: _apply_upconv(impl, x, w, k, p, 5), x, w)
    _, vjp_ref = jax.vjp(lambda x, w: layers.conv_transpose_reference(x, w, p), x, w)
    for got, want in zip(vjp(ct), vjp_ref(ct), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_upconv_rejects_sizes_that_do_not_double():
    x = jnp.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="output_padding"):
        layers.UpConv2x(3, kernel_size=2, padding=1).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="impl"):
        layers.UpConv2x(3, impl="nope").init(jax.random.key(0), x)


def test_upconv_mixed_precision_keeps_float32_params():
    x = _rand(9, (2, 4, 4, 3))
    module = layers.UpConv2x(5, dtype=jnp.bfloat16)
    variables = module.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].dtype == jnp.float32
    out = module.apply(variables, x)
    assert out.dtype == jnp.bfloat16
    want = layers.conv_transpose_reference(x, variables["params"]["kernel"], 1)
    np.testing.assert_allclose(out.astype(jnp.float32), want, atol=0.05, rtol=0.05)


def test_depth_to_space_layout():
    x = _rand(10, (1, 2, 3, 4 * 5))
    y = layers.depth_to_space(x, 2)
    assert y.shape == (1, 4, 6, 5)
    for ry in range(2):
        for rx in range(2):
            c0 = (ry * 2 + rx) * 5
            np.testing.assert_array_equal(y[:, ry::2, rx::2], x[..., c0 : c0 + 5])


def test_project_1x1_to_4x4_equals_conv_transpose():
    # ConvTranspose2d(Cin, F, 4, stride=1, padding=0) on a 1x1 map = correlation of the 1x1 map,
    # padded by k-1 = 3, with the flipped kernel.
    z, w = _rand(11, (3, 7)), _rand(12, (4, 4, 7, 5))
    got = layers.Project1x1To4x4(5).apply({"params": {"kernel": w}}, z)
    want = lax.conv_general_dilated(
        z[:, None, None, :], w[::-1, ::-1], (1, 1), ((3, 3), (3, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    assert got.shape == (3, 4, 4, 5)
    np.testing.assert_allclose(got, want, atol=1e-5)
    scatter = _torch_conv_transpose_numpy(np.asarray(z)[:, None, None], np.asarray(w), 1, 0, (4, 4))
    np.testing.assert_allclose(got, scatter, atol=1e-5)


def test_initialisers_match_pytorch_statistics():
    # DCGAN N(0, 0.02) kernels, BN scale N(1, 0.02); He-normal std sqrt(2 / (k*k*Cin)).
    key = jax.random.key(14)
    w = layers.dcgan_kernel_init(key, (4, 4, 64, 32))
    assert w.shape == (4, 4, 64, 32) and abs(float(jnp.std(w)) - 0.02) < 0.001
    s = layers.dcgan_scale_init(key, (4096,))
    assert abs(float(jnp.mean(s)) - 1.0) < 0.002 and abs(float(jnp.std(s)) - 0.02) < 0.001
    h = layers.he_normal_init(key, (3, 3, 64, 32))
    assert abs(float(jnp.std(h)) / np.sqrt(2.0 / (3 * 3 * 64)) - 1.0) < 0.05
