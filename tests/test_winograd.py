"""Tests of vice_gan.models.winograd: the Toom-Cook matrices and the temporal Winograd conv."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.ad_checkpoint import print_saved_residuals

from vice_gan.models import layers, winograd


@pytest.mark.parametrize("m,r", [(1, 4), (2, 4), (3, 4), (4, 4), (2, 3), (4, 3), (3, 2)])
def test_toom_cook_computes_the_correlation(m, r):
    at, g, bt = winograd.toom_cook(m, r)
    a = m + r - 1
    assert at.shape == (m, a) and g.shape == (a, r) and bt.shape == (a, a)
    rng = np.random.default_rng(m * 10 + r)
    for _ in range(3):
        d, w = rng.normal(size=a), rng.normal(size=r)
        want = [sum(d[i + k] * w[k] for k in range(r)) for i in range(m)]
        np.testing.assert_allclose(at @ ((g @ w) * (bt @ d)), want, atol=1e-12)


def test_toom_cook_counts_and_limits():
    # F(4, 4): 7 products for 4 outputs of a 4-tap filter (direct: 16).
    assert winograd.toom_cook(4, 4)[0].shape == (4, 7)
    with pytest.raises(ValueError, match="points"):
        winograd.toom_cook(8, 4)
    assert [winograd.num_tiles(n, 4) for n in (1, 4, 5, 13)] == [1, 1, 2, 4]


def _conv3d(x, w, s, p):
    # nn.Conv's 3-D computation on [B, T, H, W, C]: the definition.
    pad = ((0, 0), (p, p), (p, p))
    conv = nn.Conv(w.shape[-1], w.shape[:3], strides=(1, s, s), padding=pad, use_bias=False)
    return conv.apply({"params": {"kernel": w}}, x)


def _winograd(x, w, s, p, m, forward="products", loop=True):
    def spatial(frames, k2):
        return layers.conv_taps(frames, k2[None], s, p, forward=forward)

    y = winograd.conv_time_winograd(jnp.swapaxes(x, 0, 1), w, m, spatial, loop)
    return jnp.swapaxes(y, 0, 1)


def _assert_close(got, want, rel=2e-5):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * float(np.max(np.abs(want))))


@pytest.mark.parametrize("t", [4, 5, 7, 8, 10, 13])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("forward", ["products", "lax"])
def test_winograd_conv_equals_nn_conv3d_with_gradients(t, m, forward):
    _check_against_nn_conv3d(t, m, forward, loop=True)


@pytest.mark.parametrize("t", [5, 13])
def test_winograd_products_unrolled_equal_nn_conv3d_with_gradients(t):
    # The large-layer form (`layers.choose_winograd_loop`): seven separate products.
    _check_against_nn_conv3d(t, 4, "products", loop=False)


def _check_against_nn_conv3d(t, m, forward, loop):
    # D_V's layer: kernel (4, 4, 4), stride (1, 2, 2), padding (0, 1, 1); output lengths that
    # fill the last tile and ones that do not (zero-padded, cropped).
    key = jax.random.split(jax.random.key(t * 10 + m), 3)
    x = jax.random.normal(key[0], (2, t, 8, 6, 3))
    w = jax.random.normal(key[1], (4, 4, 4, 3, 5))
    ct = jax.random.normal(key[2], (2, t - 3, 4, 3, 5))

    @jax.jit
    def both(x, w):
        out = {}
        for name, fn in {
            "ref": lambda x, w: _conv3d(x, w, 2, 1),
            "wino": lambda x, w: _winograd(x, w, 2, 1, m, forward, loop),
        }.items():
            y, vjp = jax.vjp(fn, x, w)
            out[name] = (y, *vjp(ct))
        return out

    got = both(x, w)
    for a, b in zip(got["wino"], got["ref"], strict=True):
        _assert_close(a, b)


@pytest.mark.parametrize("impl", ["winograd", "winograd_mixed"])
def test_video_conv_winograd_impl_equals_native(impl):
    # The module path (and kt = 1, or a single output frame, fall back to the direct form).
    x = jax.random.normal(jax.random.key(3), (7, 2, 8, 8, 4))  # time-major
    for kt, s, p in ((4, 2, 1), (1, 2, 1), (7, 1, 0)):
        k = 4 if s == 2 else 8
        w = jax.random.normal(jax.random.key(kt), (kt, k, k, 4, 3))
        ours = layers.VideoConv(3, kt, k, stride=s, padding=p, impl=impl)
        ref = layers.VideoConv(3, kt, k, stride=s, padding=p, impl="native")
        y = ours.apply({"params": {"kernel": w}}, x)
        _assert_close(y, ref.apply({"params": {"kernel": w}}, x))


def test_auto_picks_winograd_on_d_v_hidden_layers_of_real_size():
    # [T', B, Ho, Wo, C_out] per device; ndf=16, 8 clips: layers 2-4 in Winograd form.
    assert layers.choose_video_impl((10, 8, 16, 16, 32), 4, 16) == "winograd"
    assert layers.choose_video_impl((4, 8, 4, 4, 128), 4, 64) == "winograd"
    assert layers.choose_video_impl((13, 8, 32, 32, 16), 4, 3) == "mixed"  # RGB input layer
    assert layers.choose_video_impl((1, 8, 1, 1, 7), 4, 128) == "mixed"  # head: one frame
    assert layers.choose_video_impl((4, 2, 4, 4, 16), 4, 8) == "mixed"  # tiny


def test_winograd_loop_on_small_layers_only():
    # D_V's hidden layers at ndf=16 with 8 clips (layers 2-4) loop; at ndf=64 with 32 they don't.
    for out in ((10, 8, 16, 16, 32), (7, 8, 8, 8, 64), (4, 8, 4, 4, 128)):
        assert layers.choose_winograd_loop(out)
    for out in ((10, 32, 16, 16, 128), (7, 32, 8, 8, 256), (4, 32, 4, 4, 512)):
        assert not layers.choose_winograd_loop(out)


@pytest.mark.parametrize("m,r,tiles", [(4, 4, 3), (2, 4, 5), (1, 4, 4), (3, 2, 2), (4, 4, 1)])
def test_input_transform_gradient_equals_autodiff(m, r, tiles):
    # The written-out gradient of the input transform (one interleaved run per tile shift)
    # equals autodiff of the strided slices it replaces, also when the kt - 1 shared frames
    # span more than one tile (m < r - 1).
    _, _, bt = winograd.toom_cook(m, r)
    a = m + r - 1
    length = tiles * m + r - 1
    x = jax.random.normal(jax.random.key(m * 100 + r * 10 + tiles), (length, 2, 3, 5))
    bt_key = tuple(map(tuple, bt.tolist()))

    def plain(x):
        frames = [x[i : i + m * (tiles - 1) + 1 : m] for i in range(a)]
        return tuple(winograd._combine(bt[j], frames) for j in range(a))

    got_y, got_vjp = jax.vjp(lambda x: winograd._tile_points(bt_key, m, tiles, x), x)
    want_y, want_vjp = jax.vjp(plain, x)
    cot = tuple(jax.random.normal(jax.random.key(j), y.shape) for j, y in enumerate(want_y))
    for g, w in zip(got_y, want_y, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_vjp(cot)[0], want_vjp(cot)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loop", [True, False])
def test_backward_keeps_the_input_not_the_transformed_points(loop, capsys):
    # The a = m + kt - 1 transformed inputs (together a / m times the input's size) are
    # recomputed in the backward pass: what the forward pass keeps for it is the (zero-padded)
    # input and the a combined 2-D kernels, nothing of the points' size.
    t, n, h, w, c, o, m = 13, 2, 8, 8, 16, 8, 4
    x = jnp.ones((t, n, h, w, c))
    kernel = jnp.ones((4, 4, 4, c, o))

    def loss(x, kernel):
        def spatial(frames, k2):
            return layers.conv_taps(frames, k2[None], 2, 1)

        return winograd.conv_time_winograd(x, kernel, m, spatial, loop).sum()

    print_saved_residuals(loss, x, kernel)
    shapes = re.findall(r"^f32\[([\d,]*)\]", capsys.readouterr().out, flags=re.M)
    sizes = [int(np.prod([int(d) for d in s.split(",")])) for s in shapes if s]
    tiles = winograd.num_tiles(t - 3, m)
    padded_input = (tiles * m + 3) * n * h * w * c
    a = m + 3
    assert sum(sizes) <= padded_input + a * 4 * 4 * c * o, sorted(sizes)
